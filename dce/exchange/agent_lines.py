"""Agents' lines as the CallFlow takes them: who to ring (the directory's waves), and each agent's calls counted on
this node (:class:`~dce.routing.agents.AgentDirectory`) and, when Redis is configured, on every node.

Shared counts reuse the targets' concurrency slots (:class:`~dce.db.redis_slots.RedisSlots`, key ``@agent:<id>``:
target ids cannot start with ``@``): one script call per agent rung, the agents of a wave in parallel; the slot is
given back off the call path when that agent's leg or the call ends. Planning reads this node's counts only (as for
targets' caps); an agent busy on another node is skipped at dial time. Redis not answering in time never stops a
call: this node's count decides. A node that dies holding slots leaves them until the key expires (``ttl_s``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine
from typing import Any

from dce.db.redis_slots import RedisSlots
from dce.routing.agents import AgentDirectory, Ring

AGENT_SLOT = "@agent:"


class AgentLines:
    """Holds and releases agents for calls, on this node and (with ``slots``) on every node."""

    def __init__(self, directory: AgentDirectory, slots: RedisSlots | None = None) -> None:
        self.directory = directory
        self.slots = slots
        self._shared: dict[str, set[str]] = {}  # call id -> agents whose shared slot it holds
        self._pending: set[asyncio.Future[Any]] = set()  # slot work in flight

    def hunt(self, destination: str) -> list[tuple[Ring, ...]]:
        """The directory's waves of available agents for ``destination``."""
        return self.directory.hunt(destination)

    def calls(self, agent_id: str) -> int:
        """The agent's calls in progress on this node."""
        return self.directory.calls(agent_id)

    async def hold(self, agent_ids: Collection[str], call_id: str) -> set[str]:
        """Take a line of each agent for ``call_id`` (before ringing them): the agents held. Each must be available
        here, then (with Redis) have a free line across every node."""
        held = {agent_id for agent_id in agent_ids if self.directory.hold(agent_id, call_id)}
        if self.slots is None or not held:
            return held
        ordered = sorted(held)
        slots = self.slots
        work = asyncio.ensure_future(asyncio.gather(*(
            slots.acquire(AGENT_SLOT + agent_id, self.directory.max_concurrent(agent_id)) for agent_id in ordered)))
        try:
            answers = await asyncio.shield(work)
        except asyncio.CancelledError:  # the call ended meanwhile: give back what the script call takes
            work.add_done_callback(lambda done: self._undo(done, ordered))
            raise
        shared = self._shared.setdefault(call_id, set())
        for agent_id, answer in zip(ordered, answers, strict=True):
            if answer is True:
                shared.add(agent_id)
            elif answer is False:  # every line busy counting the other nodes' calls
                self.directory.unhold(agent_id, call_id)
                held.discard(agent_id)
            # None: Redis did not answer in time; this node's count decided
        if not shared:
            del self._shared[call_id]
        return held

    def release(self, call_id: str, now: float | None, *, keep: str | None = None) -> list[str]:
        """Give back the call's lines but ``keep``'s (see :meth:`AgentDirectory.release`); shared slots are given
        back off the call path."""
        released = self.directory.release(call_id, now, keep=keep)
        shared = self._shared.get(call_id)
        if shared is not None and self.slots is not None:
            for agent_id in released:
                if agent_id in shared:
                    shared.discard(agent_id)
                    self._background(self.slots.release(AGENT_SLOT + agent_id))
            if not shared:
                del self._shared[call_id]
        return released

    def _undo(self, done: asyncio.Future[list[bool | None]], agent_ids: list[str]) -> None:
        if done.cancelled() or done.exception() is not None or self.slots is None:
            return
        for agent_id, answer in zip(agent_ids, done.result(), strict=True):
            if answer is True:
                self._background(self.slots.release(AGENT_SLOT + agent_id))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
