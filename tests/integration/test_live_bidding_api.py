"""Live auctions over real sockets: ``POST /api/v1/bids`` answers and the ``/ws/v1/bidding`` protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.clock import VirtualClock
from dce.db.engine import create_engine
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics
from dce.routing.model import CallerContext, Campaign

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
CAMPAIGN = Campaign("c1", "Auto", reserve=2_000_000, live_auction=True, auction_window_ms=1000)
CTX = CallerContext(ani="+12125550123", did="+18005550100", campaign_id="c1")


@pytest.fixture
async def engine(tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/live.db")
    yield engine
    await engine.dispose()


@pytest.fixture
def live() -> LiveBidding:
    return LiveBidding()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime.fromtimestamp(1000.0, UTC))


@pytest.fixture
async def client(engine: AsyncEngine, live: LiveBidding, clock: VirtualClock) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(engine=engine, metrics=ExchangeMetrics(), live_bidding=live, clock=clock)
    async with TestClient(TestServer(app)) as client:
        yield client


async def problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status and response.content_type == PROBLEM
    return await response.json(content_type=PROBLEM)


async def test_post_bid_answers_for_each_outcome(client: TestClient[Any, Any], live: LiveBidding,
                                                 clock: VirtualClock) -> None:
    live.offer("call-1", CAMPAIGN, CTX, ["b1"], now=clock.now().timestamp())

    accepted = await client.post("/api/v1/bids", json={"call_id": "call-1", "amount": "7.25", "buyer_id": "b1"})
    assert accepted.status == 202
    assert await accepted.json() == {"type": "bid.result", "status": "accepted", "call_id": "call-1",
                                     "amount": "7.25", "high_bid": "7.25"}
    body = await problem(await client.post("/api/v1/bids", json={"call_id": "x", "amount": "7", "buyer_id": "b1"}),
                         404)
    assert "no open auction" in body["detail"]
    low = await problem(await client.post("/api/v1/bids", json={"call_id": "call-1", "amount": "1", "buyer_id": "b1"}),
                        422)
    assert low["invalid_params"][0]["name"] == "amount"
    bad = await problem(await client.post("/api/v1/bids", json={"call_id": "call-1", "amount": "ten",
                                                                  "buyer_id": "b1"}), 422)
    assert bad["invalid_params"][0]["name"] == "amount"
    stranger = await problem(await client.post("/api/v1/bids", json={"call_id": "call-1", "amount": "9",
                                                                       "buyer_id": "b9"}), 422)
    assert stranger["invalid_params"][0]["name"] == "buyer_id"
    missing = await problem(await client.post("/api/v1/bids", json={"call_id": "call-1", "amount": "9"}), 422)
    assert missing["invalid_params"][0]["name"] == "buyer_id"
    not_json = await problem(await client.post("/api/v1/bids", data=b"{nope"), 400)
    assert not_json["detail"].startswith("body is not JSON")
    clock.advance(1.0)
    await problem(await client.post("/api/v1/bids", json={"call_id": "call-1", "amount": "9", "buyer_id": "b1"}), 409)

    result = live.close("call-1", clock.now().timestamp())
    assert result.winner is not None and (result.winner.target_id, result.winner.amount) == ("b1", 7_250_000)


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return await asyncio.wait_for(ws.receive_json(), 5)


async def test_a_buyer_hears_its_offers_bids_over_the_socket_and_hears_who_won(
        client: TestClient[Any, Any], live: LiveBidding, clock: VirtualClock) -> None:
    async with client.ws_connect("/ws/v1/bidding?buyer_id=b1") as b1, client.ws_connect("/ws/v1/bidding") as watcher:
        assert await receive(b1) == {"type": "subscribed", "buyer_id": "b1"}
        assert (await receive(watcher))["type"] == "subscribed"
        live.offer("not-for-b1", CAMPAIGN, CTX, ["b2"], now=clock.now().timestamp())
        live.offer("call-1", CAMPAIGN, CTX, ["b1", "b2"], now=clock.now().timestamp())

        offer = await receive(b1)  # only the offer b1 may bid on
        assert (offer["type"], offer["call_id"], offer["caller"]["CID"]) == ("call.offered", "call-1", "+1212555****")
        assert [(await receive(watcher))["call_id"] for _ in range(2)] == ["not-for-b1", "call-1"]

        await b1.send_json({"type": "bid", "call_id": "call-1", "amount": "12.00", "request_id": 7})
        assert await receive(b1) == {"type": "bid.result", "status": "accepted", "call_id": "call-1",
                                     "amount": "12.00", "high_bid": "12.00", "request_id": 7}
        await b1.send_json({"type": "bid", "call_id": "call-1", "amount": "1.00"})
        assert (await receive(b1))["status"] == "below_reserve"
        await b1.send_str("not json")
        assert (await receive(b1))["type"] == "error"
        await watcher.send_json({"type": "bid", "call_id": "call-1", "amount": "13.00"})  # names no buyer
        assert "buyer_id" in (await receive(watcher))["detail"]

        live.close("not-for-b1", clock.now().timestamp() + 1)
        live.close("call-1", clock.now().timestamp() + 1)
        closed = await receive(b1)
        assert closed == {"type": "auction.closed", "call_id": "call-1", "winner": "b1", "amount": "12.00", "bids": 1}
    await asyncio.sleep(0.05)
    assert live.subscribers == 0  # closed sockets unsubscribe


async def test_without_live_bidding_the_endpoints_say_so(engine: AsyncEngine) -> None:
    app = build_app(engine=engine, metrics=ExchangeMetrics())
    async with TestClient(TestServer(app)) as client:
        body = await problem(await client.post("/api/v1/bids", json={}), 404)
        assert "not enabled" in body["detail"]
        await problem(await client.get("/ws/v1/bidding"), 404)
