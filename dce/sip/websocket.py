"""SIP over WebSocket (RFC 7118) as a SIP transport: the open connections, their limits, and where messages go.

The WebSocket protocol itself (handshake, frames, ping/pong, close codes) is aiohttp's: the side API's ``/ws/sip``
handler (:mod:`dce.http_api.sip_ws`) opens a :class:`WsFlow` here for each admitted connection, hands each
WebSocket message to :meth:`WsFlows.received` (one message is one SIP message, RFC 7118 §5.2: no Content-Length
framing, no CRLF keep-alive), and says :meth:`WsFlows.closed` when it ends. Each connection is a flow like a TCP
one: named ``(transport, peer address)`` with transport ``ws`` or ``wss`` (TLS on the HTTP listener), what the
SIP core answers and sends to that address goes down it (:meth:`WsFlows.send`, through
:meth:`dce.sip.transport.SipTransport.send`), and nothing else can reach it: we never connect out over WebSocket.

When a connection ends, the receiver (the SIP driver) hears :meth:`WsReceiver.connection_closed`: the registrar's
bindings made over it go (RFC 7118 §5.3: the binding is the connection), and what was in progress on it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Address = tuple[str, int]
WsTransport = Literal["ws", "wss"]
TRANSPORTS: tuple[str, ...] = ("ws", "wss")
SUBPROTOCOL = "sip"  # RFC 7118 §4.1: the WebSocket subprotocol a client must ask for


def uri_transport(transport: str) -> str:
    """The ``;transport=`` value of a URI for messages over ``transport`` (RFC 7118 §5.2: ``ws`` for both
    WebSocket transports; the Via says ``WS`` or ``WSS``)."""
    return "ws" if transport in TRANSPORTS else transport


class WsReceiver(Protocol):
    """Where messages from the connections go (the SIP driver)."""

    def receive(self, data: bytes, transport: str, addr: Address, *, stream: bool = False) -> None: ...
    def connection_closed(self, transport: str, addr: Address, reason: str) -> None: ...


class WsConnection(Protocol):
    """One open WebSocket, as the flows use it (the aiohttp handler's side; a recorder in tests)."""

    def send(self, data: bytes) -> None:
        """Queue one SIP message; never waits (a peer that does not read is closed by the connection)."""
        ...


@dataclass(frozen=True, slots=True)
class WsLimits:
    """What WebSocket peers may hold (``sip.websocket`` and ``sip.max_message_bytes`` in the configuration)."""

    max_connections: int = 2048  # open connections in all
    max_connections_per_source: int = 256  # from one IP address (a call centre's agents may share one NAT)
    max_message_bytes: int = 65535  # one WebSocket message (one SIP message); larger: closed with 1009
    first_message_timeout_s: float = 10.0  # a new connection must send its first SIP message within this
    idle_timeout_s: float = 7500.0  # no SIP message from the peer for this long: closed (above re-registration)
    ping_interval_s: float = 30.0  # WebSocket ping this often; no pong within half of it: closed
    send_queue: int = 256  # messages waiting to be written to one connection; more: closed (not reading)

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise ValueError("WebSocket connection limits must be >= 1")
        if min(self.first_message_timeout_s, self.idle_timeout_s, self.ping_interval_s) <= 0:
            raise ValueError("WebSocket timeouts must be > 0")
        if not 1024 <= self.max_message_bytes <= 65535:
            raise ValueError(f"max_message_bytes must be 1024-65535, got {self.max_message_bytes}")
        if self.send_queue < 1:
            raise ValueError("send_queue must be >= 1")


@dataclass(eq=False, slots=True)
class WsFlow:
    """One admitted connection: its transport and peer address (the flow's name for the SIP core)."""

    transport: WsTransport
    addr: Address
    connection: WsConnection
    messages: int = field(default=0)  # SIP messages received

    @property
    def key(self) -> tuple[str, Address]:
        return self.transport, self.addr


class WsFlows:
    """The open SIP WebSocket connections: admission by the limits, routing of what the core sends.

    ``admit_peer(ip)`` False refuses a connection (a banned source); ``on_error(reason)`` counts refusals and
    drops by a fixed reason (the ``sip_dropped`` metric).
    """

    def __init__(self, receiver: WsReceiver, limits: WsLimits | None = None, *,
                 admit_peer: Callable[[str], bool] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.receiver = receiver
        self.limits = limits or WsLimits()
        self.admit_peer = admit_peer
        self.on_error = on_error or (lambda reason: None)
        self._flows: dict[tuple[str, Address], WsFlow] = {}
        self._per_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def refusal(self, peer: Address) -> str | None:
        """Why a connection from ``peer`` would be refused now (None: it would be admitted)."""
        source = peer[0]
        if self.admit_peer is not None and not self.admit_peer(source):
            return "banned"
        if len(self._flows) >= self.limits.max_connections:
            return "too many WebSocket connections"
        if self._per_source.get(source, 0) >= self.limits.max_connections_per_source:
            return "too many WebSocket connections from this address"
        return None

    def open(self, transport: WsTransport, peer: Address, connection: WsConnection) -> WsFlow:
        """Admit a connection (after :meth:`refusal` said None); raises ValueError when it is over a limit or its
        flow is already open."""
        key = (transport, peer)
        if (why := self.refusal(peer)) is not None:
            self.on_error("flood_banned" if why == "banned" else "ws_limit")
            raise ValueError(why)
        if key in self._flows:
            raise ValueError("this flow is already open")
        flow = WsFlow(transport, peer, connection)
        self._flows[key] = flow
        self._per_source[peer[0]] = self._per_source.get(peer[0], 0) + 1
        return flow

    def received(self, flow: WsFlow, data: bytes) -> None:
        """One WebSocket message from ``flow``: one SIP message (a datagram's rules: Content-Length optional)."""
        flow.messages += 1
        self.receiver.receive(data, flow.transport, flow.addr)

    def closed(self, flow: WsFlow, reason: str) -> None:
        """``flow``'s connection ended: forget it and tell the receiver (once)."""
        if self._flows.get(flow.key) is not flow:
            return
        del self._flows[flow.key]
        source = flow.addr[0]
        left = self._per_source.pop(source) - 1
        if left:
            self._per_source[source] = left
        self.receiver.connection_closed(flow.transport, flow.addr, reason)

    def send(self, data: bytes, transport: str, addr: Address) -> None:
        """Send one SIP message down the connection named ``(transport, addr)``; ValueError when none is open
        (a WebSocket peer can only be reached on the connection it opened)."""
        flow = self._flows.get((transport, addr))
        if flow is None:
            raise ValueError(f"no open {transport.upper()} connection from {addr[0]}:{addr[1]}")
        flow.connection.send(data)
