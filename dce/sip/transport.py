"""asyncio adapters for the sans-IO SIP core: UDP and TCP sockets, and one re-armed timer.

Nothing here knows SIP beyond framing: bytes in -> ``core.receive(..., now=loop.time())`` -> send what the core
queued -> re-arm a single ``loop.call_at`` for ``core.next_timer()``. Exceptions from the core are caught and
logged per message so one bad datagram can never take the transport down.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from dce.sip.endpoint import is_ip_literal
from dce.sip.message import SipParseError, StreamFramer

log = logging.getLogger(__name__)

Address = tuple[str, int]
UDP_BUFFER_BYTES = 4 * 1024 * 1024  # capped by net.core.rmem_max / wmem_max


class SipCore(Protocol):
    """What the adapter drives (the B2BUA or a bare endpoint)."""

    def receive(self, data: bytes, transport: str, addr: Address, now: float, *, stream: bool = False) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def transport_error(self, transport: str, addr: Address, now: float) -> None: ...
    def next_timer(self) -> float | None: ...
    def datagrams_to_send(self) -> list[tuple[bytes, str, Address]]: ...


class SipTransport:
    """Owns the sockets for one SIP core and pumps bytes and time into it."""

    def __init__(self, core: SipCore, *, after_input: Callable[[], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.after_input = after_input  # e.g. dispatch the core's events to the application
        self.on_error = on_error or (lambda reason: None)
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[Address, _TcpConnection] = {}
        self._pending_connects: dict[Address, list[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
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
        server = await self.loop.create_server(lambda: _TcpConnection(self), host, port, reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()[:2]
        self.local.setdefault("tcp", bound)
        return bound

    async def close(self) -> None:
        """Close every socket and cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        for connection in list(self._connections.values()):
            connection.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()

    # -- pumping ---------------------------------------------------------------------------------------
    def feed(self, data: bytes, transport: str, addr: Address, *, stream: bool = False) -> None:
        """Hand received bytes to the core, then let the application act and flush the output."""
        try:
            self.core.receive(data, transport, addr, self.loop.time(), stream=stream)
        except Exception:  # a core bug must not kill the transport
            log.exception("SIP core failed on a message from %s", addr)
            self.on_error("core_exception")
        self._after()

    def flush(self) -> None:
        """Send everything the core queued and re-arm the timer (call after any command to the core).

        Each datagram is sent on its own: one that cannot be sent is reported to the core as a transport error
        for its destination (its answers and events follow in a moment) and never costs the others or the timer.
        """
        failed: set[tuple[str, Address]] = set()
        for data, transport, addr in self.core.datagrams_to_send():
            try:
                if not is_ip_literal(addr[0]):  # sockets would resolve it, blocking the loop (or not at all)
                    raise ValueError("not an IP address")
                if transport == "udp":
                    if self._udp is not None:
                        self._udp.sendto(data, addr)
                else:
                    self._send_stream(data, addr)
            except Exception as exc:  # e.g. an address the socket cannot take: that destination only
                log.warning("cannot send to %s over %s: %s", addr, transport, exc)
                self.on_error("send_failed")
                failed.add((transport, addr))
        self._arm()
        if failed:
            self.loop.call_soon(self._report_failed, failed)

    def _report_failed(self, failed: set[tuple[str, Address]]) -> None:
        now = self.loop.time()
        for transport, addr in failed:
            try:
                self.core.transport_error(transport, addr, now)
            except Exception:
                log.exception("SIP core failed handling a transport error")
        self._after()

    def _after(self) -> None:
        if self.after_input is not None:
            try:
                self.after_input()
            except Exception:
                log.exception("application failed handling SIP events")
        self.flush()

    def _arm(self) -> None:
        deadline = self.core.next_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.core.handle_timer(self.loop.time())
        except Exception:
            log.exception("SIP core failed handling a timer")
        self._after()

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
                self.loop.create_connection(lambda: _TcpConnection(self), addr[0], addr[1]), timeout=5)
        except (OSError, TimeoutError) as exc:
            log.warning("TCP connect to %s failed: %s", addr, exc)
            self._pending_connects.pop(addr, None)
            self.on_error("tcp_connect_failed")
            try:
                self.core.transport_error("tcp", addr, self.loop.time())
            except Exception:
                log.exception("SIP core failed handling a transport error")
            self._after()
            return
        for data in self._pending_connects.pop(addr, []):
            connection.write(data)

    def _register(self, addr: Address, connection: _TcpConnection) -> None:
        self._connections[addr] = connection

    def _unregister(self, addr: Address, connection: _TcpConnection) -> None:
        if self._connections.get(addr) is connection:
            del self._connections[addr]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.feed(data, "udp", (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # ICMP unreachable etc.: transactions time out on their own


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.owner._register(self.peer, self)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.info("closing TCP connection from %s: %s", self.peer, exc)
            self.owner.on_error("tcp_garbage")
            self.close()
            return
        for message in messages:
            self.owner.feed(message, "tcp", self.peer, stream=True)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self.peer, self)
