"""Routing's view of who is registered (:class:`dce.routing.agents.Presence`), read from the registrar's bindings
on this node: memory only, no round trip on the INVITE path."""

from __future__ import annotations

from dce.clock import Clock
from dce.routing.agents import Contact
from dce.sip.registrar import Binding, Registrar

ROUTED_TRANSPORTS = ("udp", "tcp", "tls")  # a binding made over one of these is reached where its REGISTER came from


class RegistrarPresence:
    """An agent's registered devices now: its bindings not yet expired, in registration order."""

    def __init__(self, registrar: Registrar, clock: Clock) -> None:
        self.registrar = registrar
        self.clock = clock

    def contacts(self, agent_id: str) -> tuple[Contact, ...]:
        return tuple(contact(b) for b in self.registrar.bindings(agent_id, self.clock.monotonic()))


def contact(binding: Binding) -> Contact:
    """The binding's Contact URI, sent to the address its REGISTER came from (over UDP, TCP or TLS: a TCP/TLS
    device is reached on its own connection, a device behind NAT at its public address)."""
    transport = binding.transport.lower()
    host, _, port = binding.source.rpartition(":")
    if transport not in ROUTED_TRANSPORTS or not host or not port.isdigit():
        return Contact(binding.uri)
    return Contact(binding.uri, (transport, host.strip("[]"), int(port)))
