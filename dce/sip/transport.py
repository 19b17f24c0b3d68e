"""asyncio adapters for SIP: UDP, TCP and TLS sockets (IPv4 and IPv6), nothing else (WebSocket connections are
the side API's, :mod:`dce.sip.websocket`: :meth:`SipTransport.send` hands ``ws``/``wss`` messages to them).

Pure I/O: what arrives (a datagram, a framed stream message, a peer that cannot be reached) goes to a
:class:`SipReceiver` (the exchange's SIP driver), and :meth:`SipTransport.send` puts bytes on the wire. The
adapter never calls the SIP core and keeps no SIP timer: the driver does both.

TCP peers are bounded by :class:`TcpLimits`: connections in all and per source IP, the time a message may take
to arrive once started (and a new connection's first one), idle time, and the bytes of one message. A peer over
a bound is closed (reset), counted by ``on_error`` with a fixed reason, and nothing it held stays behind.

TLS is the TCP path with ``ssl`` contexts (:mod:`dce.sip.tls`): the same framing and limits. An accepted TLS
connection is admitted (counted, or reset over a limit) as a plain TCP one, before its handshake, which it must
finish, with its first message, within ``header_timeout_s``. Connections are reused: one per (transport, peer
address), and an accepted connection also serves requests to the address its peer names in its Via with ``;alias``
(RFC 5923), which the core reports through :meth:`SipTransport.alias`. CRLF keep-alive (RFC 5626 §4.4.1): a
double-CRLF ping on any stream (TCP or TLS) is answered with a single CRLF pong, and our outbound TCP and TLS
connections send a ping every ``keepalive_s`` of silence and are closed when its pong does not come within
``keepalive_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dce.sip.endpoint import is_ip_literal
from dce.sip.message import SipParseError, StreamFramer
from dce.sip.tls import TlsSettings, client_context, describe_failure, server_context
from dce.sip.websocket import TRANSPORTS as WS_TRANSPORTS
from dce.sip.websocket import WsFlows

log = logging.getLogger(__name__)

Address = tuple[str, int]
FlowKey = tuple[str, Address]  # (transport, peer address)
PING = b"\r\n\r\n"  # RFC 5626 §4.4.1 keep-alive on streams
PONG = b"\r\n"
UDP_BUFFER_BYTES = 4 * 1024 * 1024  # capped by net.core.rmem_max / wmem_max


class SipReceiver(Protocol):
    """Where the adapter hands what arrives (the SIP driver)."""

    def receive(self, data: bytes, transport: str, addr: Address, *, stream: bool = False) -> None: ...
    def transport_error(self, transport: str, addr: Address, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """What TCP peers may hold (``sip.tcp_*`` and ``sip.max_message_bytes`` in the configuration)."""

    idle_timeout_s: float = 600.0  # no byte either way for this long: closed (clients keep flows up with CRLF)
    header_timeout_s: float = 10.0  # a message must be complete this long after its first byte (slowloris),
    # and an accepted connection must have sent its first message this long after it was accepted
    max_connections: int = 2048  # accepted connections in all
    max_connections_per_source: int = 128  # accepted connections from one IP address
    max_message_bytes: int = 65535  # headers and body of one message (what a UDP datagram can carry)
    keepalive_s: float = 30.0  # our outbound TCP/TLS connections: a CRLF ping after this much silence; 0 = none
    keepalive_timeout_s: float = 10.0  # no pong this long after a ping: the connection is closed

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.header_timeout_s <= 0 or self.keepalive_timeout_s <= 0:
            raise ValueError("TCP timeouts must be > 0")
        if self.keepalive_s < 0:
            raise ValueError("keepalive_s must be >= 0 (0: no pings)")
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise ValueError("TCP connection limits must be >= 1")
        if not 1024 <= self.max_message_bytes <= 65535:
            raise ValueError(f"max_message_bytes must be 1024-65535, got {self.max_message_bytes}")

    @property
    def sweep_interval_s(self) -> float:
        """How often timeouts (and keep-alive pings) are checked: a quarter of the shortest, within 50 ms..1 s."""
        shortest = min(self.idle_timeout_s, self.header_timeout_s)
        if self.keepalive_s:
            shortest = min(shortest, self.keepalive_s, self.keepalive_timeout_s)
        return min(1.0, max(0.05, shortest / 4))


class SipTransport:
    """Owns the SIP sockets: hands what arrives to ``receiver`` and sends what it is given."""

    def __init__(self, receiver: SipReceiver, *, on_error: Callable[[str], None] | None = None,
                 tcp: TcpLimits | None = None, tls: TlsSettings | None = None,
                 admit_peer: Callable[[str], bool] | None = None, websockets: WsFlows | None = None) -> None:
        """``tls``: the settings TLS needs (no TLS listener nor TLS destination without them); the client
        context is built here, so a disabled server verification is logged at start. ``admit_peer(ip)`` False
        refuses a connection at accept (a banned source), counted "flood_banned". ``websockets``: the SIP
        WebSocket connections the side API serves (``ws``/``wss`` messages go down them)."""
        self.receiver = receiver
        self.websockets = websockets
        self.admit_peer = admit_peer
        self.loop = asyncio.get_running_loop()
        self.on_error = on_error or (lambda reason: None)
        self.tcp = tcp or TcpLimits()
        self.tls = tls
        self._client_tls: ssl.SSLContext | None = client_context(tls) if tls is not None else None
        # address -> the domain its certificate must name (RFC 5922 §7.3: the SIP URI's host, not the SRV target)
        self._tls_names: dict[Address, str] = {}
        self._server_tls: ssl.SSLContext | None = None  # built by listen_tls
        self._udp: asyncio.DatagramTransport | None = None  # the first IPv4 UDP socket
        self._udp6: asyncio.DatagramTransport | None = None  # the first IPv6 one
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[FlowKey, _TcpConnection] = {}  # by (transport, peer): where stream data goes
        self._aliases: dict[FlowKey, _TcpConnection] = {}  # RFC 5923: (transport, peer's Via sent-by) -> flow
        self._streams: set[_TcpConnection] = set()  # every open connection, for timeouts and close
        self._accepted = 0
        self._accepted_per_source: dict[str, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._pending_connects: dict[FlowKey, list[bytes]] = {}
        self.connects = 0  # outbound stream connections opened (how reuse is observed)
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
        if family == socket.AF_INET6:
            if self._udp6 is None:
                self._udp6 = transport  # type: ignore[assignment]
        elif self._udp is None:
            self._udp = transport  # type: ignore[assignment]
        bound = transport.get_extra_info("sockname")[:2]
        self.local.setdefault("udp", bound)
        return bound

    async def listen_tcp(self, host: str, port: int) -> Address:
        """Listen for TCP connections; returns the bound address."""
        return await self._listen_stream("tcp", host, port)

    async def listen_tls(self, host: str, port: int) -> Address:
        """Listen for TLS connections (our certificate; a client's required for mutual TLS); returns the bound
        address. Raises :class:`dce.sip.tls.TlsSetupError` when the settings lack or cannot load a certificate."""
        self._server_tls = server_context(self.tls or TlsSettings())
        return await self._listen_stream("tls", host, port)

    async def _listen_stream(self, kind: str, host: str, port: int) -> Address:
        # A tls: listener accepts plain TCP and wraps it once admitted (_TcpConnection.connection_made), so the
        # limits see a connection before it costs a handshake.
        server = await self.loop.create_server(lambda: _TcpConnection(self, kind, accepted=True), host, port,
                                               reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()[:2]
        self.local.setdefault(kind, bound)
        return bound

    async def close(self) -> None:
        """Close every socket."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for udp in (self._udp, self._udp6):
            if udp is not None:
                udp.close()
        for connection in list(self._streams):
            connection.shut()
        for server in self._servers:
            server.close()
            await server.wait_closed()

    @property
    def tcp_connections(self) -> int:
        """Open stream (TCP and TLS) connections, accepted and our own."""
        return len(self._streams)

    def alias(self, transport: str, alias: Address, flow: Address) -> None:
        """Use the open connection from ``flow`` for requests to ``alias`` too (RFC 5923: the peer's Via said
        ``;alias``), for as long as it stays open."""
        connection = self._connections.get((transport, flow))
        key = (transport, alias)
        if connection is None or key in self._connections or self._aliases.get(key) is connection:
            return
        self._aliases[key] = connection
        connection.aliases.append(key)

    # -- sending -------------------------------------------------------------------------------------
    def expect_tls_name(self, addr: Address, name: str) -> None:
        """A TLS connection to ``addr`` (resolved from ``name``) must present a certificate for ``name``."""
        self._tls_names[addr] = name

    def send(self, data: bytes, transport: str, addr: Address) -> None:
        """Send one message to ``addr``; raises when it cannot go (e.g. ``addr`` is not an IP address)."""
        if not is_ip_literal(addr[0]):  # sockets would resolve it, blocking the loop (or not at all)
            raise ValueError("not an IP address")
        if transport == "udp":
            udp = self._udp6 if ":" in addr[0] else self._udp
            if udp is None:
                raise ValueError(f"no UDP listener for {'IPv6' if ':' in addr[0] else 'IPv4'}")
            udp.sendto(data, addr)
        elif transport == "tls" and self._client_tls is None:
            raise ValueError("TLS is not configured (no sip.tls settings)")
        elif transport in WS_TRANSPORTS:
            if self.websockets is None:
                raise ValueError("SIP over WebSocket is not served")
            self.websockets.send(data, transport, addr)
        else:
            self._send_stream(data, transport, addr)

    # -- streams (TCP and TLS) -------------------------------------------------------------------------
    def _send_stream(self, data: bytes, transport: str, addr: Address) -> None:
        key = (transport, addr)
        connection = self._connections.get(key) or self._aliases.get(key)
        if connection is not None:
            connection.write(data)
            return
        pending = self._pending_connects.get(key)
        if pending is not None:
            pending.append(data)
            return
        self._pending_connects[key] = [data]
        self.loop.create_task(self._connect(transport, addr))

    async def _connect(self, transport: str, addr: Address) -> None:
        key = (transport, addr)
        secure = transport == "tls"
        # The destination's certificate must name the domain we resolved (else the address we dial).
        extra = {"ssl": self._client_tls, "server_hostname": self._tls_names.get(addr, addr[0]),
                 "ssl_handshake_timeout": self.tcp.header_timeout_s} if secure else {}
        try:
            _, connection = await asyncio.wait_for(
                self.loop.create_connection(lambda: _TcpConnection(self, transport, accepted=False), addr[0],
                                            addr[1], **extra),  # type: ignore[arg-type]
                timeout=5 + (self.tcp.header_timeout_s if secure else 0))
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            reason = describe_failure(exc) if secure else f"TCP connect failed: {exc}"
            log.warning("%s connect to %s failed: %s", transport.upper(), addr, reason)
            self._pending_connects.pop(key, None)
            self.on_error(f"{transport}_connect_failed")
            self.receiver.transport_error(transport, addr, reason)
            return
        self.connects += 1
        for data in self._pending_connects.pop(key, []):
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
        self._connections[(connection.kind, connection.peer)] = connection
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.tcp.sweep_interval_s, self._sweep)
        return True

    def _forget(self, connection: _TcpConnection) -> None:
        """Undo :meth:`_admit` once the connection is gone."""
        self._streams.discard(connection)
        key = (connection.kind, connection.peer)
        if self._connections.get(key) is connection:
            del self._connections[key]
        for alias in connection.aliases:
            if self._aliases.get(alias) is connection:
                del self._aliases[alias]
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
        keepalive, keepalive_timeout = self.tcp.keepalive_s, self.tcp.keepalive_timeout_s
        for connection in list(self._streams):
            if connection.message_started is not None and connection.message_started < started_since:
                self.on_error("tcp_slow_message")
                connection.abort()
            elif connection.last_activity < idle_since:
                self.on_error("tcp_idle")
                connection.close()
            elif keepalive and not connection.accepted:
                self._keep_alive(connection, now, keepalive, keepalive_timeout)
        if self._streams:
            self._sweeper = self.loop.call_later(self.tcp.sweep_interval_s, self._sweep)

    def _keep_alive(self, connection: _TcpConnection, now: float, every: float, timeout: float) -> None:
        """RFC 5626 §4.4.1 on one of our connections: ping after ``every`` of silence; close when no pong."""
        if connection.ping_sent is not None:
            if connection.ping_sent < now - timeout:
                log.info("no keep-alive pong from %s within %.1fs: closing", connection.peer, timeout)
                self.on_error("keepalive_timeout")
                connection.abort()
        elif connection.last_received < now - every:
            connection.ping(now)

class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.receiver.receive(data, "udp", (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # ICMP unreachable etc.: transactions time out on their own


class _TcpConnection(asyncio.Protocol):
    """One TCP or TLS connection: frames its byte stream into messages, answers keep-alive pings, and keeps
    the times its limits need."""

    def __init__(self, owner: SipTransport, kind: str = "tcp", *, accepted: bool) -> None:
        self.owner = owner
        self.kind = kind  # "tcp" or "tls": what the core is told messages arrived over
        self.accepted = accepted  # a peer connected to us (counted against the limits) or we connected out
        self.framer = StreamFramer(owner.tcp.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.admitted = False
        self.aliases: list[FlowKey] = []  # other addresses this connection serves (RFC 5923)
        self.handshaking = False  # an accepted TLS connection until its handshake is done: nothing is written
        self.ping_sent: float | None = None  # when our unanswered keep-alive ping went
        self.last_activity = owner.loop.time()
        self.last_received = self.last_activity
        # When the message being received began (an accepted connection owes its first one from the start).
        self.message_started: float | None = self.last_activity if accepted else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.handshaking:  # the TLS layer we put under an accepted connection finished its handshake
            self.handshaking = False
            self.transport = transport  # type: ignore[assignment]
            return
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if not peer:  # reset before this ran: nothing to serve; release the descriptor now
            transport.abort()  # type: ignore[attr-defined]
            return
        self.peer = (peer[0], peer[1])
        self.admitted = self.owner._admit(self)
        if not self.admitted:
            transport.abort()  # type: ignore[attr-defined]
        elif self.accepted and self.kind == "tls":
            self._wrap(transport)  # type: ignore[arg-type]

    def _wrap(self, raw: asyncio.Transport) -> None:
        """Put TLS (server side) under this admitted connection, now: the peer's ClientHello may already be in
        the next read. asyncio's own TLS layer (``asyncio.sslproto``, what ``start_tls`` uses; it works over
        uvloop's transports too) calls :meth:`connection_made` again once the handshake is done."""
        owner = self.owner
        done = owner.loop.create_future()
        layer = sslproto.SSLProtocol(owner.loop, self, owner._server_tls, done, server_side=True,
                                     ssl_handshake_timeout=owner.tcp.header_timeout_s)
        self.handshaking = True
        raw.set_protocol(layer)
        layer.connection_made(raw)
        done.add_done_callback(self._handshake_done)

    def _handshake_done(self, done: asyncio.Future[None]) -> None:
        if not self.handshaking:
            return
        # Failed, timed out or closed before it finished: the TLS layer does not tell us, so release it here.
        exc = None if done.cancelled() else done.exception()
        log.debug("TLS handshake from %s failed: %s", self.peer, exc or "closed")
        self.owner.on_error("tls_handshake_failed")
        self.handshaking = False
        self.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self.owner.loop.time()
        self.last_received = now
        awaiting_pong, self.ping_sent = self.ping_sent is not None, None  # any byte back shows the flow is alive
        framer = self.framer
        try:
            messages = framer.feed(data)
        except SipParseError as exc:
            log.debug("closing TCP connection from %s: %s", self.peer, exc)
            self.owner.on_error("tcp_garbage")
            self.abort()
            return
        if framer.crlfs:
            self._keep_alives(awaiting_pong, bool(messages))
        self.last_activity = now  # a keep-alive too: it is what keeps an idle flow (RFC 5626)
        if not self.framer.partial:
            self.message_started = None
        elif messages or self.message_started is None:
            self.message_started = now
        receive, kind = self.owner.receiver.receive, self.kind
        for message in messages:
            receive(message, kind, self.peer, stream=True)

    def _keep_alives(self, awaiting_pong: bool, had_messages: bool) -> None:
        """Answer a double-CRLF ping between messages with a single-CRLF pong (a lone CRLF while our ping is out
        is its pong; one left over waits for its other half, unless a message came between)."""
        framer = self.framer
        pairs, framer.crlfs = framer.crlfs, 0
        if awaiting_pong and pairs == 1:
            return
        if pairs >= 2:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(PONG)
        elif not had_messages:
            framer.crlfs = pairs

    def ping(self, now: float) -> None:
        """Send a keep-alive ping (the pong is any byte back)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.ping_sent = now
            transport.write(PING)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.handshaking:
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
