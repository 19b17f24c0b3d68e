"""The TCP adapter under hostile peers, on real loopback sockets, with both event loops.

Resets before the handler runs, connections that never finish a message (slowloris), idle connections, too
many connections from one source or in all, oversized messages: each is closed cleanly and nothing leaks
(open descriptors return to where they started). RFC 5626 CRLF keep-alive on plain TCP, against raw sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from dce.sip.transport import SipTransport, TcpLimits
from tests.unit.sipfactory import request

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
RESETS = 300


class RecordingReceiver:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def receive(self, data: bytes, transport: str, addr: tuple[str, int], *, stream: bool = False) -> None:
        self.received.append((data, addr))

    def transport_error(self, transport: str, addr: tuple[str, int], reason: str = "") -> None:
        pass


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())  # type: ignore[arg-type]


async def serve(limits: TcpLimits | None = None) -> tuple[SipTransport, RecordingReceiver, tuple[str, int]]:
    core = RecordingReceiver()
    transport = SipTransport(core, tcp=limits or TcpLimits())
    address = await transport.listen_tcp("127.0.0.1", 0)
    return transport, core, address


async def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 100), within)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    return sock


async def settle(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_resets_before_the_handler_runs_leak_nothing(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        transport, _, address = await serve()
        try:
            await asyncio.sleep(0.05)
            before = open_fds()
            for i in range(RESETS):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.setblocking(False)
                sock.connect_ex(address)  # non-blocking: EINPROGRESS
                sock.close()  # RST, often before the server's accept has run its handler
                if i % 50 == 49:
                    await asyncio.sleep(0)
            assert await settle(lambda: open_fds() <= before), f"{open_fds() - before} descriptors leaked"
            assert transport.tcp_connections == 0
        finally:
            await transport.close()

    with caplog.at_level(logging.WARNING):
        run(loop_name, scenario)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_message_trickling_in_is_cut_off(loop_name: str) -> None:
    async def scenario() -> None:
        transport, core, address = await serve(TcpLimits(header_timeout_s=0.4, idle_timeout_s=60))
        try:
            sock = await connect(address)
            loop = asyncio.get_running_loop()
            started = loop.time()
            closed = False
            for byte in request("OPTIONS")[:40]:  # one byte every 50 ms: never idle, never complete
                try:
                    await loop.sock_sendall(sock, bytes([byte]))
                except ConnectionError:
                    closed = True
                    break
                if await closed_by_peer(sock, 0.05):
                    closed = True
                    break
            assert closed, "a slowloris connection stayed open"
            assert loop.time() - started < 1.5
            assert core.received == []
            sock.close()
            assert await settle(lambda: transport.tcp_connections == 0)
        finally:
            await transport.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_body_that_never_arrives_is_cut_off_holding_one_message_at_most(loop_name: str) -> None:
    """Complete headers announcing a body (within max_message_bytes) that then never comes: closed once the
    message is older than header_timeout_s, and nothing beyond that one message was buffered."""
    async def scenario() -> None:
        transport, core, address = await serve(TcpLimits(header_timeout_s=0.4, idle_timeout_s=60,
                                                         max_message_bytes=4096))
        try:
            sock = await connect(address)
            loop = asyncio.get_running_loop()
            started = loop.time()
            head = request("OPTIONS", transport="TCP", content_length=3000)
            await loop.sock_sendall(sock, head + b"x" * 100)  # 100 of the 3000 body bytes, then silence
            closed = False
            for _ in range(30):  # a byte every 50 ms keeps the connection from looking idle
                try:
                    await loop.sock_sendall(sock, b"x")
                except ConnectionError:
                    closed = True
                    break
                if await closed_by_peer(sock, 0.05):
                    closed = True
                    break
            assert closed, "a connection stalling in its body stayed open"
            assert loop.time() - started < 1.5
            assert core.received == []
            sock.close()
            assert await settle(lambda: transport.tcp_connections == 0)
        finally:
            await transport.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_connection_that_never_speaks_is_closed(loop_name: str) -> None:
    async def scenario() -> None:
        transport, _, address = await serve(TcpLimits(header_timeout_s=0.3, idle_timeout_s=60))
        try:
            sock = await connect(address)
            assert await closed_by_peer(sock, 1.5)
            sock.close()
        finally:
            await transport.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_idle_connection_is_closed_after_its_last_message(loop_name: str) -> None:
    async def scenario() -> None:
        transport, core, address = await serve(TcpLimits(header_timeout_s=5, idle_timeout_s=0.4))
        try:
            sock = await connect(address)
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, request("OPTIONS", transport="TCP"))
            assert await settle(lambda: len(core.received) == 1)
            assert not await closed_by_peer(sock, 0.2)  # not yet
            assert await closed_by_peer(sock, 1.5)
            sock.close()
        finally:
            await transport.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_connections_per_source_and_in_all_are_capped(loop_name: str) -> None:
    async def scenario() -> None:
        transport, core, address = await serve(TcpLimits(max_connections_per_source=3, max_connections=100))
        socks: list[socket.socket] = []
        try:
            socks = [await connect(address) for _ in range(5)]
            closed = [await closed_by_peer(sock, 0.3) for sock in socks]
            assert closed.count(True) == 2 and transport.tcp_connections == 3
            open_socks = [s for s, c in zip(socks, closed, strict=True) if not c]
            await asyncio.get_running_loop().sock_sendall(open_socks[0], request("OPTIONS", transport="TCP"))
            assert await settle(lambda: len(core.received) == 1)  # the ones kept still work
        finally:
            for sock in socks:
                sock.close()
            await transport.close()

        transport, _, address = await serve(TcpLimits(max_connections_per_source=10, max_connections=2))
        try:
            socks = [await connect(address) for _ in range(4)]
            closed = [await closed_by_peer(sock, 0.3) for sock in socks]
            assert closed.count(True) == 2 and transport.tcp_connections == 2
        finally:
            for sock in socks:
                sock.close()
            await transport.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
@pytest.mark.parametrize("shape", ["content_length", "header_block"])
def test_oversized_messages_close_the_connection(loop_name: str, shape: str) -> None:
    async def scenario() -> None:
        transport, core, address = await serve(TcpLimits(max_message_bytes=4096))
        try:
            sock = await connect(address)
            if shape == "content_length":
                data = request("OPTIONS", transport="TCP", content_length=5000)
            else:
                data = request("OPTIONS", transport="TCP", extra=[("X-Pad", "a" * 5000)])
            await asyncio.get_running_loop().sock_sendall(sock, data[:4500])
            assert await closed_by_peer(sock, 1.0)
            assert core.received == []
            sock.close()
        finally:
            await transport.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_close_releases_every_connection(loop_name: str) -> None:
    async def scenario() -> None:
        transport, core, address = await serve()
        before = open_fds()  # listening (uvloop's libuv also keeps one spare descriptor from then on)
        socks = [await connect(address) for _ in range(5)]
        await asyncio.get_running_loop().sock_sendall(socks[0], request("OPTIONS", transport="TCP"))
        assert await settle(lambda: len(core.received) == 1 and transport.tcp_connections == 5)
        await transport.close()
        assert all([await closed_by_peer(sock, 1.0) for sock in socks])
        for sock in socks:
            sock.close()
        assert await settle(lambda: open_fds() <= before)
        assert transport.tcp_connections == 0

    run(loop_name, scenario)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        TcpLimits(max_message_bytes=70000)
    with pytest.raises(ValueError):
        TcpLimits(idle_timeout_s=0)
    with pytest.raises(ValueError):
        TcpLimits(keepalive_s=-1)
    with pytest.raises(ValueError):
        TcpLimits(keepalive_timeout_s=0)


# -- RFC 5626 §4.4.1 CRLF keep-alive on TCP (as on TLS) ------------------------------------------------------
@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_double_crlf_ping_over_tcp_gets_a_single_crlf_pong(loop_name: str) -> None:
    async def scenario() -> None:
        transport, core, address = await serve()
        loop = asyncio.get_running_loop()
        sock = await connect(address)
        try:
            await loop.sock_sendall(sock, b"\r\n\r\n")
            assert await asyncio.wait_for(loop.sock_recv(sock, 100), 3) == b"\r\n"
            await loop.sock_sendall(sock, request("OPTIONS", transport="TCP") + b"\r\n\r\n")  # a message, a ping
            assert await asyncio.wait_for(loop.sock_recv(sock, 100), 3) == b"\r\n"
            assert len(core.received) == 1
        finally:
            sock.close()
            await transport.close()

    run(loop_name, scenario)


class RawPeer:
    """A plain TCP server socket standing in for a buyer's proxy: keeps what arrives, answers pings or not."""

    def __init__(self, *, pong: bool) -> None:
        self.pong = pong
        self.data = bytearray()
        self.closed = False
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.setblocking(False)
        self.address: tuple[str, int] = self.listener.getsockname()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.listener)
        with conn:
            while chunk := await loop.sock_recv(conn, 65536):
                self.data += chunk
                if self.pong and chunk.endswith(b"\r\n\r\n"):
                    await loop.sock_sendall(conn, b"\r\n")
        self.closed = True

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.listener.close()


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_our_outbound_tcp_connection_pings_and_is_closed_when_no_pong_comes(loop_name: str) -> None:
    async def scenario() -> None:
        transport, _, _ = await serve(TcpLimits(keepalive_s=0.2, keepalive_timeout_s=0.3))
        answering, silent = RawPeer(pong=True), RawPeer(pong=False)
        answering.start()
        silent.start()
        message = request("OPTIONS", transport="TCP")
        try:
            transport.send(message, "tcp", answering.address)
            transport.send(message, "tcp", silent.address)
            assert await settle(lambda: silent.closed, timeout=5)  # pinged, no pong: closed
            assert silent.data == message + b"\r\n\r\n"
            await asyncio.sleep(0.6)
            assert not answering.closed and answering.data.count(b"\r\n\r\n") >= 3  # message end + pings, kept
            assert transport.tcp_connections == 1
        finally:
            await transport.close()
            answering.stop()
            silent.stop()

    run(loop_name, scenario)
