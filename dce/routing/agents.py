"""Targets that point at a buyer's agent or agent group (``agent:ID``, ``group:ID``): who may take a call now, and
in which order to ring them. Pure and in memory: no clock of its own (``now`` comes in), no I/O.

An agent is *available* when it is enabled, registered (the :class:`Presence` view lists at least one contact) and
idle (its calls in progress are below its maximum). An agent's devices ring together. A group picks among its
available members by its strategy: ``ring_all`` every one at once; ``round_robin`` one after the other in member
order, starting one further each call; ``longest_idle`` one after the other, the agent idle longest first (the time
it last became idle; never busy since loading counts as idle from then).

Calls in progress are counted here, per node (:meth:`AgentDirectory.hold` when an agent is rung, several at once for
a ``ring_all`` wave; :meth:`AgentDirectory.release` when those legs or the call end, keeping the agent who answered).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

AGENT_PREFIX = "agent:"
GROUP_PREFIX = "group:"
Strategy = Literal["ring_all", "round_robin", "longest_idle"]

NO_REGISTERED_AGENT = "no registered agent"
AGENTS_BUSY = "all agents busy"
AGENT_DISABLED = "agent disabled"
UNAVAILABLE_REASONS = (NO_REGISTERED_AGENT, AGENTS_BUSY, AGENT_DISABLED)  # closed set, in decision order


def agent_reference(destination: str) -> tuple[Literal["agent", "group"], str] | None:
    """``("agent", id)`` or ``("group", id)`` for an agent destination; None for a SIP URI or a number."""
    if destination.startswith(AGENT_PREFIX):
        return "agent", destination[len(AGENT_PREFIX):]
    if destination.startswith(GROUP_PREFIX):
        return "group", destination[len(GROUP_PREFIX):]
    return None


@dataclass(frozen=True, slots=True)
class Contact:
    """A registered device: its Contact URI, and where to send to reach it (``(transport, ip, port)``: where its
    REGISTER came from, so a device behind NAT or on a connection of its own is reached there; None: the URI's
    host)."""

    uri: str
    via: tuple[str, str, int] | None = None


class Presence(Protocol):
    """Which devices an agent has registered now (the registrar's bindings on this node)."""

    def contacts(self, agent_id: str) -> tuple[Contact, ...]: ...


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent as routing sees it."""

    id: str
    buyer_id: str
    enabled: bool = True
    max_concurrent: int = 1


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group as routing sees it: ``members`` are agent ids in ring order."""

    id: str
    buyer_id: str
    strategy: Strategy = "ring_all"
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ring:
    """One agent to ring and the contacts of its registered devices."""

    agent_id: str
    contacts: tuple[Contact, ...]


class _NoPresence:
    def contacts(self, agent_id: str) -> tuple[Contact, ...]:
        return ()


class AgentDirectory:
    """Agents and groups, their calls in progress and idle times; answers eligibility and ring order."""

    def __init__(self, presence: Presence | None = None) -> None:
        self.presence: Presence = presence if presence is not None else _NoPresence()
        self._agents: dict[str, AgentInfo] = {}
        self._groups: dict[str, GroupInfo] = {}
        self._calls: dict[str, int] = {}  # agent id -> calls in progress (ringing or talking)
        self._holds: dict[str, str] = {}  # call id -> the agent it holds
        self._idle_since: dict[str, float] = {}  # agent id -> when it last became idle
        self._turn: dict[str, int] = {}  # group id -> round robin position

    def replace(self, agents: Iterable[AgentInfo], groups: Iterable[GroupInfo], now: float) -> None:
        """Swap in the agents and groups (calls in progress are kept); an agent new here is idle from ``now``."""
        self._agents = {agent.id: agent for agent in agents}
        self._groups = {group.id: group for group in groups}
        for agent_id in self._agents:
            self._idle_since.setdefault(agent_id, now)

    def knows(self, destination: str) -> bool:
        """Whether ``destination`` names an agent or a group loaded here."""
        ref = agent_reference(destination)
        if ref is None:
            return False
        return ref[1] in (self._agents if ref[0] == "agent" else self._groups)

    def calls(self, agent_id: str) -> int:
        """The agent's calls in progress on this node."""
        return self._calls.get(agent_id, 0)

    def max_concurrent(self, agent_id: str) -> int:
        """How many calls the agent may have at once (0 for an agent not loaded here)."""
        agent = self._agents.get(agent_id)
        return agent.max_concurrent if agent is not None else 0

    # -- eligibility ------------------------------------------------------------------------------------
    def unavailable(self, destination: str) -> str | None:
        """None when some agent behind ``destination`` may take a call now, else why not (one of
        :data:`UNAVAILABLE_REASONS`: the first that applies to every agent, in that order of precedence)."""
        ref = agent_reference(destination)
        if ref is None:
            return None
        kind, key = ref
        if kind == "agent":
            return self._why_not(key)
        group = self._groups.get(key)
        if group is None:
            return NO_REGISTERED_AGENT
        reasons = set()
        for agent_id in group.members:
            why = self._why_not(agent_id)
            if why is None:
                return None
            reasons.add(why)
        return next((r for r in UNAVAILABLE_REASONS if r in reasons), NO_REGISTERED_AGENT)

    def _why_not(self, agent_id: str) -> str | None:
        agent = self._agents.get(agent_id)
        if agent is None:
            return NO_REGISTERED_AGENT
        if not agent.enabled:
            return AGENT_DISABLED
        if self._calls.get(agent_id, 0) >= agent.max_concurrent:  # before presence: a dict read, not a scan
            return AGENTS_BUSY
        if not self.presence.contacts(agent_id):
            return NO_REGISTERED_AGENT
        return None

    # -- ring order ---------------------------------------------------------------------------------------
    def hunt(self, destination: str) -> list[tuple[Ring, ...]]:
        """The available agents behind ``destination``, each with its contacts, in waves: the agents of a wave are
        rung at once (an agent alone, or a ``ring_all`` group's), the waves one after the other."""
        ref = agent_reference(destination)
        if ref is None:
            return []
        kind, key = ref
        group = self._groups.get(key) if kind == "group" else None
        if kind == "group" and group is None:
            return []
        order = self._ordered(group) if group is not None else [key]
        rings = [Ring(agent_id, self.presence.contacts(agent_id)) for agent_id in order
                 if self._why_not(agent_id) is None]
        if group is not None and group.strategy == "ring_all":
            return [tuple(rings)] if rings else []
        return [(ring,) for ring in rings]

    def _ordered(self, group: GroupInfo) -> list[str]:
        members = list(group.members)
        if group.strategy == "round_robin" and members:
            turn = self._turn.get(group.id, 0)
            self._turn[group.id] = turn + 1
            k = turn % len(members)
            return members[k:] + members[:k]
        if group.strategy == "longest_idle":
            idle = self._idle_since
            return sorted(members, key=lambda agent_id: idle.get(agent_id, 0.0))  # stable: ties in member order
        return members

    # -- calls in progress ----------------------------------------------------------------------------------
    def hold(self, agent_id: str, call_id: str) -> bool:
        """Count ``call_id`` against the agent before ringing it; False (nothing held) when it is not available
        (or this call holds it already)."""
        held = self._holds.setdefault(call_id, [])
        if agent_id in held or self._why_not(agent_id) is not None:
            if not held:
                del self._holds[call_id]
            return False
        held.append(agent_id)
        self._calls[agent_id] = self._calls.get(agent_id, 0) + 1
        return True

    def unhold(self, agent_id: str, call_id: str) -> None:
        """Undo :meth:`hold` of ``agent_id`` for ``call_id`` before it was rung (its idle time stays)."""
        held = self._holds.get(call_id)
        if held is None or agent_id not in held:
            return
        held.remove(agent_id)
        if not held:
            del self._holds[call_id]
        left = self._calls.get(agent_id, 0) - 1
        if left > 0:
            self._calls[agent_id] = left
        else:
            self._calls.pop(agent_id, None)

    def release(self, call_id: str, now: float | None, *, keep: str | None = None) -> list[str]:
        """The call's agent legs ended (unanswered, or the call is over): the agents it held but ``keep``, each
        back to idle at ``now`` when that was its last call (``now`` None: not really engaged, its idle time
        stays)."""
        held = self._holds.pop(call_id, None)
        if not held:
            return []
        released = [agent_id for agent_id in held if agent_id != keep]
        if keep is not None and keep in held:
            self._holds[call_id] = [keep]
        for agent_id in released:
            left = self._calls.get(agent_id, 0) - 1
            if left > 0:
                self._calls[agent_id] = left
            else:
                self._calls.pop(agent_id, None)
                if now is not None:
                    self._idle_since[agent_id] = now
        return released
