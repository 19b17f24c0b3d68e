"""A carrier call reaches an agent registered over SIP WebSocket (RFC 7118): a SIPp caller dials a marketplace DID
whose target is ``agent:a1``; the INVITE arrives on the agent's WebSocket (its Contact is an ``.invalid`` host: the
connection is the only way to it), the agent answers, the caller hangs up, the BYE arrives on the socket, and the
CDR is billed to the target and names the agent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from dce.sip.message import Request, parse
from tests.externals import require_binary
from tests.integration.sipp import DID, run_sipp_uac
from tests.integration.test_sip_websocket import ADMIN_KEY, PASSWORD, Agent, _running, _settings, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SDP = "v=0\r\no=agent 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


def _answer(request: Request, status: int, reason: str, tag: str, body: str = "") -> str:
    """The agent's response to ``request`` (its Via, From, Call-ID and CSeq; To with the agent's tag)."""
    to = request.get("To") or ""
    lines = [f"SIP/2.0 {status} {reason}", *(f"Via: {via}" for via in request.get_all("Via")),
             f"From: {request.get('From')}", f"To: {to if ';tag=' in to else to + ';tag=' + tag}",
             f"Call-ID: {request.call_id}", f"CSeq: {request.get('CSeq')}",
             "Contact: <sip:k3j2h1@df7jal23ls0d.invalid;transport=ws>"]
    if body:
        lines.append("Content-Type: application/sdp")
    return "\r\n".join(lines) + "\r\n\r\n" + body


async def _next_request(ws: aiohttp.ClientWebSocketResponse) -> Request:
    while True:
        message = await ws.receive(timeout=20)
        assert message.type is WSMsgType.TEXT, message
        parsed = parse(message.data.encode())
        if isinstance(parsed, Request):
            return parsed


async def _post(http: aiohttp.ClientSession, base: str, path: str, body: dict[str, Any]) -> None:
    async with http.post(f"{base}/api/v1/{path}", json=body) as response:
        assert response.status == 201, await response.text()


async def test_a_carrier_call_reaches_an_agent_on_its_websocket(migrated_database_url: str, tmp_path: Path) -> None:
    require_binary("sipp")
    settings = _settings(migrated_database_url, tmp_path, sip={"unknown_sources": "allow"})  # SIPp is no trunk
    async with _running(settings) as exchange:
        base = "http://{}:{}".format(*exchange.http_address)
        async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as http:
            for path, body in (
                    ("publishers", {"id": "p1", "name": "Publisher"}),
                    ("buyers", {"id": "b1", "name": "Call centre"}),
                    ("agents", {"id": "a1", "buyer_id": "b1", "username": "alice", "password": PASSWORD}),
                    ("targets", {"id": "t1", "buyer_id": "b1", "name": "Alice", "destination": "agent:a1",
                                 "revenue": "4.00"}),
                    ("campaigns", {"id": "c1", "name": "C", "publisher_ids": ["p1"], "target_ids": ["t1"]}),
                    ("numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})):
                await _post(http, base, path, body)

            async def ready() -> bool:
                return exchange.registrar.has_accounts and exchange.routing_engine.agents.knows("agent:a1") and (
                    DID in exchange.routing_engine.snapshot.numbers)

            await _wait_for(ready)
            ws = await http.ws_connect(f"{base}/ws/sip", protocols=("sip",))
            agent = Agent(ws, "127.0.0.1")
            assert (await agent.register()).status == 200
            sip_host, sip_port = exchange.sip_addresses["udp"]
            caller = asyncio.create_task(asyncio.to_thread(
                run_sipp_uac, "uac_basic", f"{sip_host}:{sip_port}", tmp_path, hold_ms=500, timeout=30))

            invite = await _next_request(ws)
            assert invite.method == "INVITE" and invite.uri == "sip:k3j2h1@df7jal23ls0d.invalid;transport=ws"
            await ws.send_str(_answer(invite, 180, "Ringing", "agent-tag"))
            await ws.send_str(_answer(invite, 200, "OK", "agent-tag", SDP))
            ack = await _next_request(ws)
            assert ack.method == "ACK"
            bye = await _next_request(ws)
            assert bye.method == "BYE"
            await ws.send_str(_answer(bye, 200, "OK", "agent-tag"))
            result = await caller
            assert (result.returncode, result.successful, result.failed) == (0, 1, 0), result.describe()

            async def recorded() -> bool:
                async with http.get(f"{base}/api/v1/calls") as response:
                    return bool((await response.json())["items"])

            await _wait_for(recorded, timeout_s=10)
            async with http.get(f"{base}/api/v1/calls") as response:
                [cdr] = (await response.json())["items"]
            assert (cdr["disposition"], cdr["destination"], cdr["revenue"]) == ("answered", "agent:a1", "4.00")
            assert cdr["extra"]["agent_id"] == "a1" and cdr["buyer_id"] == "b1"
            await ws.close()
