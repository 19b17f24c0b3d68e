"""Outbound RTB against real aiohttp buyer servers on loopback, and an inbound ping running the same auction."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import create_async_engine

from dce.bidding.auction import Auction
from dce.bidding.bids import BidRecord, Outcome, RejectReason
from dce.bidding.inbound import InboundPings, Reservations
from dce.bidding.rtb import RtbPinger
from dce.exchange.tracing import Tracing, open_span
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.rtb import RtbPingService
from dce.routing.model import CallerContext, Campaign, Target

pytestmark = pytest.mark.integration

CTX = CallerContext(
    ani="+12125551234",
    did="+18005550100",
    state="NY",
    area_code="212",
    zip="10001",
    campaign_id="camp",
    publisher_id="pub",
    tags=(("vertical", "auto"),),
)


class Buyers:
    """One aiohttp app on a free loopback port; each path is a buyer with its own behaviour."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.traceparents: dict[str, list[str | None]] = {}
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.received.setdefault(name, []).append(await request.json())
        self.traceparents.setdefault(name, []).append(request.headers.get("traceparent"))
        if name == "slow":
            await asyncio.sleep(1.0)
            return web.json_response({"bidAmount": "100.00", "bidId": "slow-1"})
        if name == "malformed":
            return web.Response(text="{not json", content_type="application/json")
        if name == "bad-amount":
            return web.json_response({"bidAmount": "NaN"})
        if name == "error":
            return web.json_response({"bidAmount": 50}, status=500)
        if name == "nobid":
            return web.json_response({"bidAmount": 0, "rejectReason": "not interested"})
        if name == "high":
            return web.json_response(
                {"bidId": "h-1", "bidAmount": "9.75", "sipAddress": "sip:high@127.0.0.1:5099", "expireInSeconds": 30}
            )
        if name == "low":
            return web.json_response({"bidId": "l-1", "bidAmount": 4.5, "phoneNumber": "+18005550111"})
        raise web.HTTPNotFound()

    def target(self, name: str, **kw: Any) -> Target:
        return Target(name, "buyer-" + name, name, f"sip:{name}@127.0.0.1", bid_url=f"{self.base}/bid/{name}", **kw)


@pytest.fixture
async def buyers() -> AsyncIterator[Buyers]:
    buyers = Buyers()
    app = web.Application()
    app.router.add_post("/bid/{name}", buyers.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    buyers.base = f"http://127.0.0.1:{port}"
    yield buyers
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_slow_malformed_and_errors_are_dropped_and_the_highest_wins(
    buyers: Buyers, session: aiohttp.ClientSession
) -> None:
    seen: list[BidRecord] = []
    pinger = RtbPinger(session, on_record=seen.append)
    names = ["slow", "malformed", "bad-amount", "error", "nobid", "high", "low"]
    targets = [buyers.target(n) for n in names] + [Target("static", "b", "s", "sip:s@x", revenue=1_000_000)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    records, bids = await pinger.ping_all(targets, CTX, timeout_s=0.3, allow_caller_id=False)
    assert loop.time() - started < 0.9  # bounded by the timeout, not by the slow buyer
    reasons = {r.target_id: r.reject_reason for r in records}
    assert reasons == {
        "slow": RejectReason.LATE,
        "malformed": RejectReason.MALFORMED,
        "bad-amount": RejectReason.MALFORMED,
        "error": RejectReason.ERROR,
        "nobid": RejectReason.NO_BID,
    }
    assert seen == records
    assert pinger.counts == {"late": 1, "malformed": 2, "error": 1, "no_bid": 1}
    assert sorted((b.target_id, b.amount) for b in bids) == [("high", 9_750_000), ("low", 4_500_000)]
    assert "static" not in buyers.received  # no bid_url: not pinged

    auction = Auction(reserve=0, started_at=0.0)
    for b in bids:
        auction.add(b, b.received_at)
    result = auction.close(max(b.received_at for b in bids))
    assert result.winner is not None and result.winner.target_id == "high"
    assert result.winner.destination == "sip:high@127.0.0.1:5099"
    low = next(b for b in bids if b.target_id == "low")
    assert low.destination == "+18005550111" and low.latency_ms > 0

    body = buyers.received["high"][0]
    assert body["CID"] == "+1212555****"
    assert body["zipcode"] == "10001" and body["state"] == "NY" and body["tags"] == {"vertical": "auto"}
    assert body["campaign"] == "camp"


async def test_traced_pings_are_client_spans_of_the_auction_and_send_its_traceparent(buyers: Buyers) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    targets = [buyers.target("high"), buyers.target("error"), buyers.target("slow")]
    targets[0] = dataclasses.replace(targets[0], bid_url=targets[0].bid_url + "?key=secret")
    async with aiohttp.ClientSession(trace_configs=tracing.client_trace_configs()) as session:
        with open_span(provider.get_tracer("test"), "routing.auction") as auction:
            _records, bids = await RtbPinger(session).ping_all(targets, CTX, timeout_s=0.2, allow_caller_id=False)
    assert [bid.target_id for bid in bids] == ["high"]
    spans = {span.attributes["url.full"].rsplit("/", 1)[1]: span for span in exporter.get_finished_spans()
             if span.kind is SpanKind.CLIENT}
    assert set(spans) == {"high", "error", "slow"}  # the late ping, cancelled, still ends its span
    trace_id, auction_id = auction.get_span_context().trace_id, auction.get_span_context().span_id
    for name, span in spans.items():
        assert span.name == "POST" and span.parent is not None and span.parent.span_id == auction_id
        [sent] = buyers.traceparents[name]
        assert sent is not None and sent.startswith(f"00-{trace_id:032x}-{span.context.span_id:016x}-")
    assert spans["high"].attributes["http.response.status_code"] == 200
    assert spans["error"].attributes["http.response.status_code"] == 500
    assert spans["slow"].status.status_code is StatusCode.ERROR
    assert "secret" not in str(dict(spans["high"].attributes))  # buyers' keys in a query are not recorded


async def test_untraced_sessions_send_no_traceparent(buyers: Buyers) -> None:
    assert Tracing().client_trace_configs() == []
    async with aiohttp.ClientSession(trace_configs=Tracing().client_trace_configs()) as session:
        await RtbPinger(session).ping_all([buyers.target("high")], CTX, timeout_s=0.3, allow_caller_id=False)
    assert buyers.traceparents["high"] == [None]


async def test_caller_number_sent_when_allowed_and_minimum_timeout(
    buyers: Buyers, session: aiohttp.ClientSession
) -> None:
    pinger = RtbPinger(session)
    records, bids = await pinger.ping_all([buyers.target("high")], CTX, timeout_s=0.001, allow_caller_id=True)
    # 1 ms is raised to the 50 ms minimum, which a loopback buyer meets
    assert records == [] and [b.target_id for b in bids] == ["high"]
    assert buyers.received["high"][0]["CID"] == "+12125551234"


async def test_unreachable_buyer_is_an_error(session: aiohttp.ClientSession) -> None:
    pinger = RtbPinger(session)
    dead = Target("dead", "b", "d", "sip:d@x", bid_url="http://127.0.0.1:9/bid")
    records, bids = await pinger.ping_all([dead], CTX, timeout_s=1.0, allow_caller_id=False)
    assert bids == [] and [r.reject_reason for r in records] == [RejectReason.ERROR]


async def test_inbound_ping_runs_the_auction_and_reserves_the_winner(
    buyers: Buyers, session: aiohttp.ClientSession
) -> None:
    static = Target("static", "b", "s", "+18005550122", revenue=5_000_000)
    eligible = [static, buyers.target("high"), buyers.target("slow"), buyers.target("malformed")]
    recorded: list[BidRecord] = []
    reservations = Reservations()
    pings = InboundPings(lambda ctx, now: eligible, RtbPinger(session), reservations,
                         on_records=lambda records, _campaign_id: recorded.extend(records))
    campaign = Campaign("camp", "Auto", ping_timeout_ms=300, reserve=1_000_000, key="k1")
    answer = await pings.handle(campaign, {"CID": "2125551234", "zipcode": "10001", "source": "web"}, datetime.now(UTC))
    assert answer["bidAmount"] == "9.75" and answer["sipAddress"] == "sip:high@127.0.0.1:5099"
    assert 1 <= answer["expireInSeconds"] <= 30 and answer["bidId"]
    assert buyers.received["high"][0]["CID"] == "+1212555****"
    assert buyers.received["high"][0]["tags"] == {"source": "web"}
    outcomes = {r.target_id: (r.outcome, r.reject_reason) for r in recorded}
    assert outcomes == {
        "high": (Outcome.WON, None),
        "static": (Outcome.LOST, None),
        "slow": (Outcome.REJECTED, RejectReason.LATE),
        "malformed": (Outcome.REJECTED, RejectReason.MALFORMED),
    }
    assert reservations.claim("camp", "+12125559999", time.time()) is None
    claimed = reservations.claim("camp", "+12125551234", time.time())
    assert claimed is not None and claimed.target_id == "high" and claimed.bid_id == answer["bidId"]
    assert json.dumps(answer)  # JSON-serialisable as is


async def test_ping_route_in_the_side_api() -> None:
    """The real route through ``build_app``: the service comes from the parent app's state; none -> 404."""
    static = Target("static", "b", "s", "+18005550122", revenue=5_000_000)
    campaign = Campaign("camp", "Auto", reserve=1_000_000, key="k1")
    pings = InboundPings(lambda ctx, now: [static], RtbPinger(None), Reservations())  # type: ignore[arg-type]
    service = RtbPingService(pings, lambda key: campaign if key == "k1" else None)
    db = create_async_engine("sqlite+aiosqlite://")
    try:
        for rtb_pings, expected in ((service, 200), (None, 404)):
            app = build_app(engine=db, metrics=ExchangeMetrics(), rtb_pings=rtb_pings)
            async with TestClient(TestServer(app)) as client:
                resp = await client.post("/api/v1/rtb/k1/ping", json={"CID": "2125551234"})
                assert resp.status == expected
                if expected == 200:
                    answer = await resp.json()
                    assert answer["bidAmount"] == "5.00" and answer["phoneNumber"] == "+18005550122"
                    assert (await client.post("/api/v1/rtb/nope/ping", json={})).status == 404
                    malformed = await client.post("/api/v1/rtb/k1/ping", data=b"{not json")
                    assert (await malformed.json())["rejectReason"] == "malformed_ping"
    finally:
        await db.dispose()
