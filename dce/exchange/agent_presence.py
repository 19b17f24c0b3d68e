"""Routing's view of who is registered (:class:`dce.routing.agents.Presence`), read from the registrar's bindings
on this node: memory only, no round trip on the INVITE path."""

from __future__ import annotations

from dce.clock import Clock
from dce.sip.registrar import Registrar


class RegistrarPresence:
    """An agent's registered contacts now: its bindings not yet expired, in registration order."""

    def __init__(self, registrar: Registrar, clock: Clock) -> None:
        self.registrar = registrar
        self.clock = clock

    def contacts(self, agent_id: str) -> tuple[str, ...]:
        return tuple(b.uri for b in self.registrar.bindings(agent_id, self.clock.monotonic()))
