"""Routing's view of who is registered (:class:`dce.routing.agents.Presence`), read from the registrar's bindings
on this node: memory only, no round trip on the INVITE path. A WebSocket device connected to another node is not
rung from this one (relaying between nodes is not built)."""

from __future__ import annotations

from dce.clock import Clock
from dce.routing.agents import Contact
from dce.sip.registrar import Registrar


class RegistrarPresence:
    """An agent's registered devices now: its bindings not yet expired, in registration order, each reached over
    the flow its REGISTER came by (``Binding.next_hop``: behind NAT, on its TCP/TLS connection, through its
    WebSocket)."""

    def __init__(self, registrar: Registrar, clock: Clock) -> None:
        self.registrar = registrar
        self.clock = clock

    def contacts(self, agent_id: str) -> tuple[Contact, ...]:
        """The devices this node can ring (a WebSocket device connected to another node is not one of them)."""
        registrar = self.registrar
        return tuple(Contact(b.uri, b.next_hop) for b in registrar.bindings(agent_id, self.clock.monotonic())
                     if registrar.reachable(b))
