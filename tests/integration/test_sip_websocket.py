"""SIP over WebSocket (RFC 7118) on a running exchange: aiohttp's WebSocket client speaks SIP to ``/ws/sip``.

An agent (made through the API) registers with digest over the WebSocket; its binding shows in
``GET /api/v1/agents/{id}/registrations`` and goes when the socket closes. OPTIONS is answered on the socket; a
request the exchange sends to the binding arrives on it. Over HTTPS (a test CA's certificate) the same is ``wss``.
The bounds: no ``sip`` subprotocol or no upgrade is a 400, a source over its connection limit a 503, a silent
connection is closed 1008 (at first and once idle), an oversized message 1009, text that is not UTF-8 1007.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp import WSMsgType
from prometheus_client import generate_latest

from dce.exchange.config import Settings, load_settings
from dce.exchange.service import Exchange
from dce.sip.digest import Challenge, authorization
from dce.sip.message import Request, Response, parse
from tests.integration.sipp import free_port
from tests.redis_server import redis_test_url
from tests.tls_pki import TlsPki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ADMIN_KEY = "sip-websocket-admin-key-0123456789abcdef"
PASSWORD = "agent-secret-123"
CONTACT = "sip:k3j2h1@df7jal23ls0d.invalid;transport=ws"


def _settings(database_url: str, tmp_path: Path, **extra: Any) -> Settings:
    http = {"listen": f"127.0.0.1:{free_port('tcp')}", **extra.pop("http", {})}
    sip = {"listen": [f"udp:127.0.0.1:{free_port()}"], **extra.pop("sip", {})}
    return load_settings(None, {
        "database": {"url": database_url, "spool_path": str(tmp_path / "cdr.spool")},
        "sip": sip, "http": http, "media": {"mode": "passthrough"},
        "auth": {"bootstrap_admin_key": ADMIN_KEY}, **extra,
    })


@contextlib.asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[Exchange]:
    exchange = Exchange(settings)
    await exchange.start()
    try:
        yield exchange
    finally:
        await exchange.stop(grace_s=0.1)


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


class Agent:
    """A browser-like SIP UA on an open WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, domain: str, transport: str = "WS") -> None:
        self.ws, self.domain, self.transport = ws, domain, transport
        self.cseq = 0
        self.call_id = uuid.uuid4().hex

    def request(self, method: str, *extra: tuple[str, str]) -> str:
        self.cseq += 1
        lines = [f"{method} sip:{self.domain} SIP/2.0",
                 f"Via: SIP/2.0/{self.transport} df7jal23ls0d.invalid;branch=z9hG4bK{uuid.uuid4().hex};rport",
                 "Max-Forwards: 70", f"From: <sip:alice@{self.domain}>;tag=ws-tag",
                 f"To: <sip:alice@{self.domain}>", f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} {method}",
                 *(f"{name}: {value}" for name, value in extra)]
        return "\r\n".join(lines) + "\r\n\r\n"  # no Content-Length: the WebSocket message frames it

    async def exchange(self, method: str, *extra: tuple[str, str]) -> Response:
        await self.ws.send_str(self.request(method, *extra))
        message = await self.ws.receive(timeout=5)
        while message.type is WSMsgType.PING:  # a client without autoping sees them
            message = await self.ws.receive(timeout=5)
        assert message.type is WSMsgType.TEXT, message
        response = parse(message.data.encode())
        assert isinstance(response, Response)
        return response

    async def register(self, expires: int = 600) -> Response:
        contact = ("Contact", f"<{CONTACT}>;expires={expires}")
        challenged = await self.exchange("REGISTER", contact)
        assert challenged.status == 401, challenged
        challenge = Challenge.parse(challenged.get_all("WWW-Authenticate")[0])
        credentials = authorization(challenge, username="alice", password=PASSWORD, method="REGISTER",
                                    uri=f"sip:{self.domain}", cnonce="c0ffee")
        return await self.exchange("REGISTER", contact, ("Authorization", str(credentials)))


async def _make_agent(http: aiohttp.ClientSession, base: str) -> None:
    for path, body in (("buyers", {"id": "b1", "name": "Call centre"}),
                       ("agents", {"id": "a1", "buyer_id": "b1", "username": "alice", "password": PASSWORD})):
        async with http.post(f"{base}/api/v1/{path}", json=body) as response:
            assert response.status == 201, await response.text()


async def _registrations(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/v1/agents/a1/registrations") as response:
        assert response.status == 200, await response.text()
        return (await response.json())["items"]  # type: ignore[no-any-return]


async def _register_and_hang_up(exchange: Exchange, base: str, ssl_context: ssl.SSLContext | None) -> None:
    """Register over the socket, see the binding, get a request from the exchange on it, close, see it gone."""
    transport = "wss" if ssl_context is not None else "ws"
    async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY},
                                     connector=aiohttp.TCPConnector(ssl=ssl_context or True)) as http:
        await _make_agent(http, base)
        await _wait_for(lambda: _has_accounts(exchange))
        ws = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))
        assert ws.protocol == "sip"
        agent = Agent(ws, "127.0.0.1", transport.upper())
        registered = await agent.register()
        assert registered.status == 200, registered
        assert registered.get_all("Contact") == [f"<{CONTACT}>;expires=600"]
        (binding,) = await _registrations(http, base)
        assert binding["uri"] == CONTACT and binding["transport"] == transport, binding
        assert 590 <= binding["expires_in"] <= 600

        options = await agent.exchange("OPTIONS")
        assert options.status == 200 and "INVITE" in (options.get("Allow") or "")

        # what the exchange sends to the binding goes down this socket (the next hop is the connection)
        (stored,) = exchange.registrar.bindings("a1", exchange.clock.monotonic())
        kind, host, port = stored.next_hop
        probe = Request(method="OPTIONS", uri=stored.uri)
        for name, value in (("From", "<sip:dce@127.0.0.1>;tag=x1"), ("To", f"<{stored.uri}>"),
                            ("Call-ID", "probe-1"), ("CSeq", "1 OPTIONS")):
            probe.add(name, value)
        driver = exchange.sip_driver
        driver.core.endpoint.send_request(probe, kind, (host, port), exchange.clock.monotonic())
        driver.pump()
        message = await ws.receive(timeout=5)
        arrived = parse(message.data.encode())
        assert isinstance(arrived, Request) and arrived.method == "OPTIONS" and arrived.uri == CONTACT
        assert (arrived.get("Via") or "").startswith(f"SIP/2.0/{transport.upper()} 127.0.0.1:")

        await ws.close()
        await _wait_for(lambda: _no_bindings(http, base))


async def _has_accounts(exchange: Exchange) -> bool:
    return exchange.registrar.has_accounts


async def _no_bindings(http: aiohttp.ClientSession, base: str) -> bool:
    return await _registrations(http, base) == []


async def test_register_over_ws_shows_the_binding_and_closing_removes_it(
        migrated_database_url: str, tmp_path: Path) -> None:
    async with _running(_settings(migrated_database_url, tmp_path)) as exchange:
        assert exchange.http_address is not None
        await _register_and_hang_up(exchange, "http://{}:{}".format(*exchange.http_address), None)
        assert 'dce_registrations_total{outcome="registered"} 1.0' in _metrics(exchange)


async def test_with_redis_the_closed_connections_binding_leaves_redis_too(
        migrated_database_url: str, tmp_path: Path) -> None:
    url, prefix = redis_test_url(), f"dce-test-{uuid.uuid4().hex[:12]}:"
    settings = _settings(migrated_database_url, tmp_path, redis={"url": url, "key_prefix": prefix})
    client = redis.asyncio.from_url(url)
    try:
        async with _running(settings) as exchange:
            assert exchange.http_address is not None
            base = "http://{}:{}".format(*exchange.http_address)
            async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as http:
                await _make_agent(http, base)
                await _wait_for(lambda: _has_accounts(exchange))
                async with http.ws_connect(f"{base}/ws/sip", protocols=("sip",)) as ws:
                    assert (await Agent(ws, "127.0.0.1").register()).status == 200
                    await _wait_for(lambda: _exists(client, f"{prefix}reg:a1"))
                await _wait_for(lambda: _gone(client, f"{prefix}reg:a1"))
                assert await _registrations(http, base) == []
    finally:
        await client.aclose()


async def _exists(client: redis.asyncio.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _gone(client: redis.asyncio.Redis, key: str) -> bool:
    return not await client.exists(key)


async def test_wss_with_a_certificate_on_the_http_listener(migrated_database_url: str, tmp_path: Path) -> None:
    pki = TlsPki(tmp_path / "pki")
    ours = pki.issue("dce", ips=["127.0.0.1"])
    settings = _settings(migrated_database_url, tmp_path,
                         http={"tls": {"cert_file": str(ours.cert_file), "key_file": str(ours.key_file)}})
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    async with _running(settings) as exchange:
        assert exchange.http_address is not None
        base = "https://{}:{}".format(*exchange.http_address)
        await _register_and_hang_up(exchange, base, client)


async def test_a_bad_certificate_file_fails_the_start_with_its_setting_named(
        migrated_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    settings = _settings(migrated_database_url, tmp_path, http={"tls": {"cert_file": str(tmp_path / "bad.pem"),
                                                                        "key_file": str(tmp_path / "bad.pem")}})
    with pytest.raises(Exception, match=re.escape("cannot load http.tls.cert_file")):
        async with _running(settings):
            pass


async def test_the_bounds_answer_clearly(migrated_database_url: str, tmp_path: Path) -> None:
    settings = _settings(migrated_database_url, tmp_path,
                         sip={"websocket": {"max_connections_per_source": 2, "first_message_timeout_s": 0.5,
                                            "idle_timeout_s": 1.0},
                              "max_message_bytes": 2048})
    async with _running(settings) as exchange:
        assert exchange.http_address is not None
        base = "http://{}:{}".format(*exchange.http_address)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}/ws/sip")  # no subprotocol
            assert refused.value.status == 400
            async with http.get(f"{base}/ws/sip") as response:  # no upgrade
                assert response.status == 400 and "WebSocket upgrade" in (await response.json())["detail"]

            silent = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))
            big = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))
            with pytest.raises(aiohttp.WSServerHandshakeError) as over:
                await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))
            assert over.value.status == 503

            await big.send_str("OPTIONS sip:x SIP/2.0\r\n" + "X: " + "y" * 4096 + "\r\n\r\n")
            closed = await big.receive(timeout=5)
            assert closed.type is WSMsgType.CLOSE and closed.data == 1009

            closed = await silent.receive(timeout=5)  # nothing sent within first_message_timeout_s
            assert closed.type is WSMsgType.CLOSE and closed.data == 1008
            assert "no SIP message within" in (closed.extra or "")

            await _wait_for(lambda: _flows_gone(exchange))
            agent = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))  # room again
            await agent.send_bytes(b"garbage that is not SIP")  # dropped like a bad datagram, the socket stays
            options = await Agent(agent, "127.0.0.1").exchange("OPTIONS")
            assert options.status == 200
            closed = await agent.receive(timeout=5)  # then silence for idle_timeout_s
            assert closed.type is WSMsgType.CLOSE and closed.data == 1008 and "idle" in (closed.extra or "")

            bad_text = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))
            await bad_text.send_frame(b"OPTIONS \xff\xfe SIP/2.0\r\n\r\n", WSMsgType.TEXT)  # not UTF-8
            closed = await bad_text.receive(timeout=5)
            assert closed.type is WSMsgType.CLOSE and closed.data == 1007
        text = _metrics(exchange)
        for reason in ("ws_limit", "ws_first_message_timeout", "ws_idle"):
            assert f'dce_sip_dropped_total{{reason="{reason}"}} 1.0' in text, reason


def _metrics(exchange: Exchange) -> str:
    return generate_latest(exchange.metrics.registry).decode()


async def _flows_gone(exchange: Exchange) -> bool:
    return len(exchange.sip_driver.websockets) == 0


async def test_a_peer_that_answers_no_ping_is_closed_and_its_binding_goes(
        migrated_database_url: str, tmp_path: Path) -> None:
    settings = _settings(migrated_database_url, tmp_path, sip={"websocket": {"ping_interval_s": 0.5}})
    async with _running(settings) as exchange:
        assert exchange.http_address is not None
        base = "http://{}:{}".format(*exchange.http_address)
        async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as http:
            await _make_agent(http, base)
            await _wait_for(lambda: _has_accounts(exchange))
            ws = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",), autoping=False)
            assert (await Agent(ws, "127.0.0.1").register()).status == 200
            assert len(await _registrations(http, base)) == 1
            message = await ws.receive(timeout=5)
            assert message.type is WSMsgType.PING  # and no pong from us
            await _wait_for(lambda: _no_bindings(http, base))
            await ws.close()
