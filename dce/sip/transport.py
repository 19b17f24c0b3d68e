"""asyncio adapters for SIP: UDP and TCP sockets, nothing else.

Pure I/O: what arrives (a datagram, a framed stream message, a peer that cannot be reached) goes to a
:class:`SipReceiver` (the exchange's SIP driver), and :meth:`SipTransport.send` puts bytes on the wire. The
adapter never calls the SIP core and keeps no SIP timer: the driver does both.

TCP peers are bounded by :class:`TcpLimits`: connections in all and per source IP, the time a message may take
to arrive once started (and a new connection's first one), idle time, and the bytes of one message. A peer over
a bound is closed (reset), counted by ``on_error`` with a fixed reason, and nothing it held stays behind.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dce.sip.endpoint import is_ip_literal
from dce.sip.message import SipParseError, StreamFramer

log = logging.getLogger(__name__)

Address = tuple[str, int]
UDP_BUFFER_BYTES = 4 * 1024 * 1024  # capped by net.core.rmem_max / wmem_max


class SipReceiver(Protocol):
    """Where the adapter hands what arrives (the SIP driver)."""

    def receive(self, data: bytes, transport: str, addr: Address, *, stream: bool = False) -> None: ...
    def transport_error(self, transport: str, addr: Address) -> None: ...


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """What TCP peers may hold (``sip.tcp_*`` and ``sip.max_message_bytes`` in the configuration)."""

    idle_timeout_s: float = 600.0  # no byte either way for this long: closed (clients keep flows up with CRLF)
    header_timeout_s: float = 10.0  # a message must be complete this long after its first byte (slowloris),
    # and an accepted connection must have sent its first message this long after it was accepted
    max_connections: int = 2048  # accepted connections in all
    max_connections_per_source: int = 128  # accepted connections from one IP address
    max_message_bytes: int = 65535  # headers and body of one message (what a UDP datagram can carry)

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.header_timeout_s <= 0:
            raise ValueError("TCP timeouts must be > 0")
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise ValueError("TCP connection limits must be >= 1")
        if not 1024 <= self.max_message_bytes <= 65535:
            raise ValueError(f"max_message_bytes must be 1024-65535, got {self.max_message_bytes}")

    @property
    def sweep_interval_s(self) -> float:
        """How often timeouts are checked: a quarter of the shorter one, within 50 ms..1 s."""
        return min(1.0, max(0.05, min(self.idle_timeout_s, self.header_timeout_s) / 4))


class SipTransport:
    """Owns the SIP sockets: hands what arrives to ``receiver`` and sends what it is given."""

    def __init__(self, receiver: SipReceiver, *, on_error: Callable[[str], None] | None = None,
                 tcp: TcpLimits | None = None, admit_peer: Callable[[str], bool] | None = None) -> None:
        """``admit_peer(ip)`` False refuses a connection at accept (a banned source), counted "flood_banned"."""
        self.receiver = receiver
        self.admit_peer = admit_peer
        self.loop = asyncio.get_running_loop()
        self.on_error = on_error or (lambda reason: None)
        self.tcp = tcp or TcpLimits()
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[Address, _TcpConnection] = {}  # by peer address: where stream data goes
        self._streams: set[_TcpConnection] = set()  # every open connection, for timeouts and close
        self._accepted = 0
        self._accepted_per_source: dict[str, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._pending_connects: dict[Address, list[bytes]] = {}
        self.local: dict[str, Address] = {}

    # -- setup -----------------------------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int) -> Address:
        """Bind a UDP socket with large kernel buffers (bursts must queue, not drop); returns its address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        transport, _ = await self.loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        if self._udp is None:
            self._udp = transport  # type: ignore[assignment]
        bound = transport.get_extra_info("sockname")[:2]
        self.local.setdefault("udp", bound)
        return bound

    async def listen_tcp(self, host: str, port: int) -> Address:
        """Listen for TCP connections; returns the bound address."""
        server = await self.loop.create_server(lambda: _TcpConnection(self, accepted=True), host, port,
                                               reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()[:2]
        self.local.setdefault("tcp", bound)
        return bound

    async def close(self) -> None:
        """Close every socket."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._udp is not None:
            self._udp.close()
        for connection in list(self._streams):
            connection.shut()
        for server in self._servers:
            server.close()
            await server.wait_closed()

    @property
    def tcp_connections(self) -> int:
        """Open TCP connections, accepted and our own."""
        return len(self._streams)

    # -- sending -------------------------------------------------------------------------------------
    def send(self, data: bytes, transport: str, addr: Address) -> None:
        """Send one message to ``addr``; raises when it cannot go (e.g. ``addr`` is not an IP address)."""
        if not is_ip_literal(addr[0]):  # sockets would resolve it, blocking the loop (or not at all)
            raise ValueError("not an IP address")
        if transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, addr)
        else:
            self._send_stream(data, addr)

    # -- TCP -------------------------------------------------------------------------------------------
    def _send_stream(self, data: bytes, addr: Address) -> None:
        connection = self._connections.get(addr)
        if connection is not None:
            connection.write(data)
            return
        pending = self._pending_connects.get(addr)
        if pending is not None:
            pending.append(data)
            return
        self._pending_connects[addr] = [data]
        self.loop.create_task(self._connect(addr))

    async def _connect(self, addr: Address) -> None:
        try:
            _, connection = await asyncio.wait_for(
                self.loop.create_connection(lambda: _TcpConnection(self, accepted=False), addr[0], addr[1]),
                timeout=5)
        except (OSError, TimeoutError) as exc:
            log.warning("TCP connect to %s failed: %s", addr, exc)
            self._pending_connects.pop(addr, None)
            self.on_error("tcp_connect_failed")
            self.receiver.transport_error("tcp", addr)
            return
        for data in self._pending_connects.pop(addr, []):
            connection.write(data)

    def _admit(self, connection: _TcpConnection) -> bool:
        """Take a new connection into account, or refuse it when an accepted one is over a limit."""
        if connection.accepted:
            source = connection.peer[0]
            if self.admit_peer is not None and not self.admit_peer(source):
                self.on_error("flood_banned")
                return False
            count = self._accepted_per_source.get(source, 0)
            if self._accepted >= self.tcp.max_connections or count >= self.tcp.max_connections_per_source:
                self.on_error("tcp_limit")
                return False
            self._accepted += 1
            self._accepted_per_source[source] = count + 1
        self._streams.add(connection)
        self._connections[connection.peer] = connection
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.tcp.sweep_interval_s, self._sweep)
        return True

    def _forget(self, connection: _TcpConnection) -> None:
        """Undo :meth:`_admit` once the connection is gone."""
        self._streams.discard(connection)
        if self._connections.get(connection.peer) is connection:
            del self._connections[connection.peer]
        if connection.accepted:
            self._accepted -= 1
            source = connection.peer[0]
            left = self._accepted_per_source.pop(source) - 1
            if left:
                self._accepted_per_source[source] = left

    def _sweep(self) -> None:
        """Close connections past a timeout; runs while any connection is open."""
        self._sweeper = None
        now = self.loop.time()
        idle_since = now - self.tcp.idle_timeout_s
        started_since = now - self.tcp.header_timeout_s
        for connection in list(self._streams):
            if connection.message_started is not None and connection.message_started < started_since:
                self.on_error("tcp_slow_message")
                connection.abort()
            elif connection.last_activity < idle_since:
                self.on_error("tcp_idle")
                connection.close()
        if self._streams:
            self._sweeper = self.loop.call_later(self.tcp.sweep_interval_s, self._sweep)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.receiver.receive(data, "udp", (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # ICMP unreachable etc.: transactions time out on their own


class _TcpConnection(asyncio.Protocol):
    """One TCP connection: frames its byte stream into messages and keeps the times its limits need."""

    def __init__(self, owner: SipTransport, *, accepted: bool) -> None:
        self.owner = owner
        self.accepted = accepted  # a peer connected to us (counted against the limits) or we connected out
        self.framer = StreamFramer(owner.tcp.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.admitted = False
        self.last_activity = owner.loop.time()
        # When the message being received began (an accepted connection owes its first one from the start).
        self.message_started: float | None = self.last_activity if accepted else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if not peer:  # reset before this ran: nothing to serve; release the descriptor now
            transport.abort()  # type: ignore[attr-defined]
            return
        self.peer = (peer[0], peer[1])
        self.admitted = self.owner._admit(self)
        if not self.admitted:
            transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = self.owner.loop.time()
        self.last_activity = now
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.debug("closing TCP connection from %s: %s", self.peer, exc)
            self.owner.on_error("tcp_garbage")
            self.abort()
            return
        if not self.framer.partial:
            self.message_started = None
        elif messages or self.message_started is None:
            self.message_started = now
        for message in messages:
            self.owner.receiver.receive(message, "tcp", self.peer, stream=True)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.last_activity = self.owner.loop.time()
        transport.write(data)
        if transport.get_write_buffer_size() > 16 * self.owner.tcp.max_message_bytes:
            self.owner.on_error("tcp_not_reading")  # the peer does not read what we send: stop buffering it
            self.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def shut(self) -> None:
        """Close for good: gracefully when everything written has been sent, else reset (a peer that does not
        read must not hold the descriptor)."""
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.abort()
        else:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.admitted = False
            self.owner._forget(self)
        self.transport = None
