"""``/ws/v1/events``: topics, tenant filters and the subscribe command over a real socket; and end to end, the
events of a SIPp call through a real ``dce serve``."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.engine import create_engine
from dce.http_api.app import build_app
from dce.http_api.events import EVENT_HUB, EventHub
from dce.http_api.metrics import ExchangeMetrics
from tests.integration.sipp import run_sipp_uac
from tests.integration.test_marketplace_calls import configure
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/events.db")
    yield engine
    await engine.dispose()


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return await asyncio.wait_for(ws.receive_json(), 5)


async def test_topics_and_tenant_filters(engine: AsyncEngine) -> None:
    hub = EventHub()
    app = build_app(engine=engine, metrics=ExchangeMetrics(), state={EVENT_HUB: hub})
    async with TestClient(TestServer(app)) as client:
        bad = await client.get("/ws/v1/events?topics=calls,nope")
        assert bad.status == 422 and bad.content_type == PROBLEM
        async with client.ws_connect("/ws/v1/events?topics=bids&buyer_id=b1") as b1, \
                client.ws_connect("/ws/v1/events") as everything:
            assert await receive(b1) == {"type": "subscribed", "topics": ["bids"]}
            assert (await receive(everything))["topics"] == ["bids", "calls", "compliance", "routing_decisions"]
            hub.publish("calls", {"type": "call.incoming", "call_id": "c-1", "buyer_id": "b1"})
            hub.publish("bids", {"type": "bid", "call_id": "c-1", "buyer_id": "b2"})
            hub.publish("bids", {"type": "bid", "call_id": "c-1", "buyer_id": "b1", "amount": "9.00"})
            assert await receive(b1) == {"topic": "bids", "type": "bid", "call_id": "c-1", "buyer_id": "b1",
                                         "amount": "9.00"}
            assert [(await receive(everything))["topic"] for _ in range(3)] == ["calls", "bids", "bids"]
            await b1.send_json({"type": "subscribe", "topics": ["calls"]})
            assert await receive(b1) == {"type": "subscribed", "topics": ["calls"]}
            await b1.send_json({"type": "subscribe", "topics": ["weather"]})
            assert (await receive(b1))["type"] == "error"
            hub.publish("calls", {"type": "call.connected", "call_id": "c-2", "buyer_id": "b1"})
            assert (await receive(b1))["call_id"] == "c-2"
        await asyncio.sleep(0.05)
        assert len(hub) == 0
    async with TestClient(TestServer(build_app(engine=engine, metrics=ExchangeMetrics()))) as client:
        assert (await client.get("/ws/v1/events")).status == 404


def test_a_marketplace_call_shows_up_on_every_topic_it_touches(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({})
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri, "revenue": "7.00"}])
    heard: list[dict[str, Any]] = []
    ready = threading.Event()

    async def listen() -> None:
        url = exchange.http_base.replace("http://", "ws://") + "/ws/v1/events"
        async with aiohttp.ClientSession(headers={"X-API-Key": exchange.admin_key}) as session, \
                session.ws_connect(url) as ws:
            await ws.receive_json()
            ready.set()
            while True:
                message = await asyncio.wait_for(ws.receive_json(), 30)
                heard.append(message)
                if message.get("type") == "call.completed":
                    return

    thread = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
    thread.start()
    assert ready.wait(10)
    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=300, timeout=30)
    assert_ok(caller, exchange=exchange)
    thread.join(15)
    kinds = [(m["topic"], m["type"]) for m in heard]
    assert kinds[:2] == [("calls", "call.incoming"), ("routing_decisions", "routing.decision")]
    assert ("calls", "call.connected") in kinds and kinds[-1] == ("calls", "call.completed")
    decision = heard[1]
    assert decision["campaign_id"] == "c1" and decision["targets"] == [
        {"target_id": "t1", "revenue": "7.00", "bid_id": None}]
    assert heard[-1]["buyer_id"] == "b1" and heard[-1]["disposition"] == "answered"

    with urllib.request.urlopen(f"{exchange.http_base}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'dce_calls_total{buyer="b1",status="answered"} 1.0' in metrics
    assert "dce_routing_duration_seconds_count 1.0" in metrics and "dce_calls_duration_seconds_count 1.0" in metrics
    assert 'http_requests_total{method="POST",route="/api/v1/campaigns",status="201"} 1.0' in metrics
