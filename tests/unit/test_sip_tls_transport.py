"""The TLS adapter on real loopback sockets (both event loops): listeners, mutual TLS, verified outbound
connections, connection reuse and RFC 5923 aliases, RFC 5626 CRLF keep-alive, IPv6.

The peers here are Python's own ``ssl`` streams (the integration test in tests/integration/test_sip_tls.py uses
Kamailio's tls module instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from dce.sip.tls import TlsSettings
from dce.sip.transport import SipTransport, TcpLimits
from tests.tls_pki import Issued, TlsPki
from tests.unit.sipfactory import request

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, str, tuple[str, int]]] = []
        self.errors: list[tuple[str, tuple[str, int], str]] = []

    def receive(self, data: bytes, transport: str, addr: tuple[str, int], *, stream: bool = False) -> None:
        self.received.append((data, transport, addr))

    def transport_error(self, transport: str, addr: tuple[str, int], reason: str = "") -> None:
        self.errors.append((transport, addr, reason))


def run(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())  # type: ignore[arg-type]


async def settle(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def ours(pki: TlsPki) -> Issued:
    return pki.issue("exchange", ips=["127.0.0.1", "::1"])


def client_ctx(pki: TlsPki, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return context


def server_ctx(cert: Issued) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return context


MESSAGE = request("OPTIONS", transport="TLS")


class Peer:
    """A TLS server standing in for a carrier: counts connections, keeps what arrives, answers pings or not."""

    def __init__(self, cert: Issued, *, pong: bool = True) -> None:
        self.cert = cert
        self.pong = pong
        self.connections = 0
        self.data = bytearray()
        self.closed = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, 0, ssl=server_ctx(self.cert))
        return self.server.sockets[0].getsockname()[:2]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while chunk := await reader.read(65536):
                self.data += chunk
                if self.pong and chunk.endswith(b"\r\n\r\n") and chunk.strip(b"\r\n") == b"":
                    writer.write(b"\r\n")
        except (ConnectionError, ssl.SSLError):
            pass
        self.closed += 1
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def listening(pki: TlsPki, ours: Issued, tcp: TcpLimits | None = None,
                    **settings: object) -> tuple[SipTransport, Recorder, tuple[str, int]]:
    recorder = Recorder()
    transport = SipTransport(recorder, tcp=tcp, tls=TlsSettings(cert_file=ours.cert_file, key_file=ours.key_file,
                                                                ca_file=pki.ca_file, **settings))  # type: ignore[arg-type]
    address = await transport.listen_tls("127.0.0.1", 0)
    return transport, recorder, address


@pytest.mark.parametrize("loop_name", LOOPS)
def test_inbound_tls_message_arrives_as_tls_and_the_answer_goes_back_on_the_same_connection(
        loop_name: str, pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        transport, recorder, address = await listening(pki, ours)
        reader, writer = await asyncio.open_connection(*address, ssl=client_ctx(pki))
        writer.write(MESSAGE)
        assert await settle(lambda: bool(recorder.received))
        data, kind, peer = recorder.received[0]
        assert (data, kind) == (MESSAGE, "tls")
        transport.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "tls", peer)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200 OK")
        assert transport.connects == 0 and transport.tcp_connections == 1
        writer.close()
        await transport.close()
    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_mutual_tls_refuses_a_client_without_a_certificate_and_takes_one_with(
        loop_name: str, pki: TlsPki, ours: Issued) -> None:
    carrier = pki.issue("carrier", client=True)

    async def scenario() -> None:
        transport, recorder, address = await listening(pki, ours, client_ca_file=pki.ca_file, verify_clients=True)
        refused = False
        try:
            reader, writer = await asyncio.open_connection(*address, ssl=client_ctx(pki))
            writer.write(MESSAGE)
            await writer.drain()
            refused = await asyncio.wait_for(reader.read(100), 5) == b""  # TLS 1.3: refused after the handshake
        except (ssl.SSLError, ConnectionError):
            refused = True
        assert refused
        await asyncio.sleep(0.1)
        assert recorder.received == [] and transport.tcp_connections == 0

        reader, writer = await asyncio.open_connection(*address, ssl=client_ctx(pki, carrier))
        writer.write(MESSAGE)
        assert await settle(lambda: len(recorder.received) == 1)
        writer.close()
        await transport.close()
    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_outbound_tls_is_verified_and_one_connection_carries_every_later_message(
        loop_name: str, pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        peer = Peer(pki.issue("carrier-ok", ips=["127.0.0.1"]))
        address = await peer.start()
        transport, recorder, _ = await listening(pki, ours)
        transport.send(MESSAGE, "tls", address)
        transport.send(MESSAGE, "tls", address)  # queued behind the connect
        assert await settle(lambda: len(peer.data) == 2 * len(MESSAGE))
        transport.send(MESSAGE, "tls", address)
        assert await settle(lambda: len(peer.data) == 3 * len(MESSAGE))
        assert peer.connections == 1 and transport.connects == 1 and recorder.errors == []
        await transport.close()
        await peer.stop()
    run(loop_name, scenario)


@pytest.mark.parametrize(("case", "words"), [("wrong_name", "certificate rejected"),
                                             ("untrusted", "certificate rejected")])
def test_outbound_tls_to_a_wrong_host_name_or_an_untrusted_ca_fails_with_a_reason(
        case: str, words: str, pki: TlsPki, ours: Issued, tmp_path: Path) -> None:
    if case == "wrong_name":
        cert = pki.issue("elsewhere", ips=["127.0.0.2"], dns=["carrier.example.com"])
    else:
        cert = TlsPki(tmp_path / "rogue", "Rogue CA").issue("rogue", ips=["127.0.0.1"])

    async def scenario() -> None:
        peer = Peer(cert)
        address = await peer.start()
        transport, recorder, _ = await listening(pki, ours)
        transport.send(MESSAGE, "tls", address)
        assert await settle(lambda: bool(recorder.errors))
        [(kind, addr, reason)] = recorder.errors
        assert (kind, addr) == ("tls", address) and words in reason, reason
        assert peer.data == b""  # nothing went to the unverified peer
        await transport.close()
        await peer.stop()
    run("uvloop", scenario)


def test_tls_without_settings_refuses_to_send(ours: Issued) -> None:
    async def scenario() -> None:
        transport = SipTransport(Recorder())
        with pytest.raises(ValueError, match="TLS is not configured"):
            transport.send(MESSAGE, "tls", ("127.0.0.1", 5061))
        await transport.close()
    run("asyncio", scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_double_crlf_ping_is_answered_with_a_single_crlf_pong(loop_name: str, pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        transport, recorder, address = await listening(pki, ours)
        reader, writer = await asyncio.open_connection(*address, ssl=client_ctx(pki))
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.read(100), 5) == b"\r\n"
        writer.write(MESSAGE + b"\r\n\r\n")  # a message, then a ping
        assert await asyncio.wait_for(reader.read(100), 5) == b"\r\n"
        assert [kind for _, kind, _ in recorder.received] == ["tls"]
        writer.close()
        await transport.close()
    run(loop_name, scenario)


def test_our_outbound_connection_pings_and_is_closed_when_no_pong_comes(pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        answering, silent = Peer(pki.issue("pong", ips=["127.0.0.1"])), Peer(pki.issue("mute", ips=["127.0.0.1"]),
                                                                               pong=False)
        a_addr, s_addr = await answering.start(), await silent.start()
        transport, _, _ = await listening(pki, ours, tcp=TcpLimits(keepalive_s=0.2, keepalive_timeout_s=0.3))
        transport.send(MESSAGE, "tls", a_addr)
        transport.send(MESSAGE, "tls", s_addr)
        assert await settle(lambda: silent.closed == 1, timeout=5)  # no pong: closed
        assert silent.data.endswith(b"\r\n\r\n")
        await asyncio.sleep(0.6)
        assert answering.closed == 0 and answering.data.count(b"\r\n\r\n") >= 3  # message end + pings, kept
        assert transport.tcp_connections == 1
        await transport.close()
        await answering.stop()
        await silent.stop()
    run("uvloop", scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_alias_sends_requests_for_the_peer_over_its_own_inbound_connection(
        loop_name: str, pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        transport, recorder, address = await listening(pki, ours)
        reader, writer = await asyncio.open_connection(*address, ssl=client_ctx(pki))
        writer.write(MESSAGE)
        assert await settle(lambda: bool(recorder.received))
        flow = recorder.received[0][2]
        transport.alias("tls", ("127.0.0.1", 5999), flow)
        transport.send(MESSAGE, "tls", ("127.0.0.1", 5999))  # nobody listens there: only the alias can carry it
        assert await asyncio.wait_for(reader.readexactly(len(MESSAGE)), 5) == MESSAGE
        assert transport.connects == 0 and recorder.errors == []
        writer.close()
        assert await settle(lambda: transport.tcp_connections == 0)
        transport.send(MESSAGE, "tls", ("127.0.0.1", 5999))  # the flow is gone, and its alias with it
        assert await settle(lambda: bool(recorder.errors))
        await transport.close()
    run(loop_name, scenario)


def test_ipv6_tls_listener_and_destination(pki: TlsPki, ours: Issued) -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")

    async def scenario() -> None:
        recorder = Recorder()
        transport = SipTransport(recorder, tls=TlsSettings(cert_file=ours.cert_file, key_file=ours.key_file,
                                                           ca_file=pki.ca_file), tcp=TcpLimits())
        address = await transport.listen_tls("::1", 0)
        assert address[0] == "::1"
        _, writer = await asyncio.open_connection("::1", address[1], ssl=client_ctx(pki),
                                                       server_hostname="::1")
        writer.write(MESSAGE)
        assert await settle(lambda: bool(recorder.received))
        assert recorder.received[0][2][0] == "::1"
        peer = Peer(ours)
        peer_addr = await peer.start("::1")
        transport.send(MESSAGE, "tls", peer_addr)  # verified against the IPv6 address in the certificate
        assert await settle(lambda: len(peer.data) == len(MESSAGE)) and recorder.errors == []
        writer.close()
        await transport.close()
        await peer.stop()
    run("uvloop", scenario)


def test_ipv6_and_ipv4_udp_sockets_each_send_to_their_family() -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")

    async def scenario() -> None:
        recorder = Recorder()
        transport = SipTransport(recorder)
        v4 = await transport.listen_udp("127.0.0.1", 0)
        v6 = await transport.listen_udp("::1", 0)
        transport.send(MESSAGE, "udp", v6)
        transport.send(MESSAGE, "udp", v4)
        assert await settle(lambda: len(recorder.received) == 2)
        assert sorted(addr[0] for _, _, addr in recorder.received) == ["127.0.0.1", "::1"]
        await transport.close()
    run("asyncio", scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_connection_that_never_finishes_its_handshake_is_cut_after_the_header_timeout(
        loop_name: str, pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        transport = SipTransport(Recorder(), tcp=TcpLimits(header_timeout_s=0.5),
                                 tls=TlsSettings(cert_file=ours.cert_file, key_file=ours.key_file))
        address = await transport.listen_tls("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        started = loop.time()
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(loop.sock_recv(sock, 10), 5) == b""
        assert loop.time() - started < 3
        sock.close()
        await transport.close()
    run(loop_name, scenario)


def test_the_driver_opens_tls_and_ipv6_listeners_from_the_config_and_warns_when_verification_is_off(
        pki: TlsPki, ours: Issued, caplog: pytest.LogCaptureFixture) -> None:
    from dce.clock import LoopClock
    from dce.exchange.config import load_settings
    from dce.exchange.sip_driver import SipDriver

    v6 = has_ipv6_loopback()
    endpoints = [*([("udp", "::1", 0)] if v6 else []), ("udp", "127.0.0.1", 0), ("tls", "127.0.0.1", 0)]
    settings = load_settings(overrides={"sip": {"listen": ["udp:127.0.0.1:5060"], "tls": {
        "cert_file": str(ours.cert_file), "key_file": str(ours.key_file), "verify_server": False}}})

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="dce.sip.tls"):
            driver = SipDriver.from_config(settings.sip, clock=LoopClock(asyncio.get_running_loop()))
        assert any("NOT checked" in r.getMessage() for r in caplog.records)
        await driver.open(endpoints)  # an IPv6 UDP listener first: IPv4 peers still get the IPv4 address
        endpoint = driver.core.endpoint
        assert endpoint.local["udp"][0] == "127.0.0.1" and endpoint.local["tls"][0] == "127.0.0.1"
        if v6:
            assert endpoint.local6["udp"][0] == "::1"
        assert set(driver.addresses) == {"udp", "tls"}
        await driver.close()
    run("asyncio", scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_tls_connections_count_against_the_limits_before_their_handshake(
        loop_name: str, pki: TlsPki, ours: Issued) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        transport = SipTransport(recorder, tcp=TcpLimits(max_connections_per_source=2, header_timeout_s=0.5),
                                 tls=TlsSettings(cert_file=ours.cert_file, key_file=ours.key_file))
        address = await transport.listen_tls("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        socks = []
        for _ in range(3):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            socks.append(sock)
        assert await settle(lambda: transport.tcp_connections == 2, timeout=2)  # no handshake yet
        with contextlib.suppress(ConnectionResetError):  # over the limit: reset at once
            assert await asyncio.wait_for(loop.sock_recv(socks[2], 10), 2) == b""
        assert await settle(lambda: transport.tcp_connections == 0, timeout=3)  # no handshake in 0.5 s: cut
        for sock in socks:
            sock.close()
        # and a client that does shake hands is served as before
        _, writer = await asyncio.open_connection(*address, ssl=client_ctx(pki))
        writer.write(MESSAGE)
        assert await settle(lambda: len(recorder.received) == 1)
        writer.close()
        assert await settle(lambda: transport.tcp_connections == 0)
        await transport.close()
    run(loop_name, scenario)


def test_a_resolved_destination_is_verified_against_its_domain_not_its_address(pki: TlsPki, ours: Issued) -> None:
    """RFC 5922 §7.3: dialling sips:x@buyer.test (resolved to 127.0.0.1), the certificate must name buyer.test."""
    async def scenario() -> None:
        peer = Peer(pki.issue("buyer", dns=["buyer.test"]))  # no IP in the certificate
        address = await peer.start()
        transport, recorder, _ = await listening(pki, ours)
        transport.send(MESSAGE, "tls", address)  # no name expected: checked against 127.0.0.1, refused
        assert await settle(lambda: bool(recorder.errors))
        assert "certificate rejected" in recorder.errors[0][2] and peer.data == b""
        transport.expect_tls_name(address, "buyer.test")
        transport.send(MESSAGE, "tls", address)
        assert await settle(lambda: len(peer.data) == len(MESSAGE))
        await transport.close()
        await peer.stop()
    run("uvloop", scenario)
