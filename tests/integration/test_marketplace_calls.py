"""Marketplace calls end to end: the API configures, a real ``dce serve`` routes, SIPp peers answer.

- an RTB campaign: two real aiohttp buyers bid; the call reaches the winner's callee and not the loser's;
- a priority plan whose first target is busy fails over to the second.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.sipp import DID, HOST, ExchangeProcess, admin_headers, fetch_cdrs, free_port, run_sipp_uac
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    only,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def api(exchange: ExchangeProcess, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(f"{exchange.http_base}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "X-API-Key": exchange.admin_key})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def configure(exchange: ExchangeProcess, targets: list[dict[str, Any]], **campaign: Any) -> None:
    """One publisher, one buyer, the given targets in one campaign on the test DID."""
    api(exchange, "POST", "/publishers", {"id": "p1", "name": "Publisher One"})
    api(exchange, "POST", "/buyers", {"id": "b1", "name": "Buyer One", "timezone": "America/New_York"})
    for target in targets:
        api(exchange, "POST", "/targets", {"buyer_id": "b1", **target})
    api(exchange, "POST", "/campaigns", {"id": "c1", "name": "Insurance", "publisher_ids": ["p1"],
                                         "target_ids": [t["id"] for t in targets], "ping_timeout_ms": 1000,
                                         **campaign})
    api(exchange, "POST", "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})
    time.sleep(1.0)  # the bound: API changes reach live routing within 1 s


class Buyers:
    """Real aiohttp bid endpoints on loopback, in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []
        self.pings: dict[str, list[dict[str, Any]]] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, amount: str, sip_address: str, *, later: str | None = None) -> str:
        """A buyer bidding ``amount`` on its first ping and ``later`` (default: the same) afterwards."""
        port = free_port("tcp")
        self.pings[name] = []

        async def bid(request: web.Request) -> web.Response:
            self.pings[name].append(await request.json())
            price = amount if len(self.pings[name]) == 1 or later is None else later
            return web.json_response({"bidAmount": price, "sipAddress": sip_address, "expireInSeconds": 30})

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/bid", bid)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, HOST, port).start()
            self.runners.append(runner)

        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(5)
        return f"http://{HOST}:{port}/bid"

    def close(self) -> None:
        async def stop() -> None:
            for runner in self.runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def buyers() -> Iterator[Buyers]:
    running = Buyers()
    yield running
    running.close()


def test_rtb_call_reaches_the_highest_bidder_and_not_the_other(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, buyers: Buyers) -> None:  # noqa: F811
    winner = uas_factory("uas_answer", calls=1)
    loser = uas_factory("uas_answer")
    exchange = exchange_factory({})
    configure(exchange, [
        {"id": "low", "name": "Low bidder", "destination": loser.uri, "revenue": "0",
         "bid_url": buyers.add("low", "5.00", loser.uri)},
        {"id": "high", "name": "High bidder", "destination": loser.uri, "revenue": "0",
         "bid_url": buyers.add("high", "9.00", winner.uri)},
    ])

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=1000, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(winner.stop(), exchange=exchange)
    assert loser.stop().created == 0, "the losing bidder's callee must not be called"
    assert len(buyers.pings["low"]) == len(buyers.pings["high"]) == 1
    assert buyers.pings["high"][0]["CID"].endswith("****")  # the caller's number is masked by default
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["destination"]) == ("answered", winner.uri)
    assert cdr["extra"]["target_id"] == "high" and cdr["extra"]["revenue_micros"] == "9000000"
    assert cdr["extra"]["campaign_id"] == "c1" and cdr["extra"]["publisher_id"] == "p1"
    bids = poll_bids(exchange, cdr["call_id"], expected=2)
    assert {(b["target_id"], b["outcome"], b["amount"]) for b in bids} == {
        ("high", "won", "9.00"), ("low", "lost", "5.00")}
    assert all(b["campaign_id"] == "c1" and b["latency_ms"] >= 0 for b in bids)


def poll_bids(exchange: ExchangeProcess, call_id: str, expected: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The call's bids from the bid log (written by a batching writer: poll, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        items = api(exchange, "GET", f"/bids?call_id={call_id}")["items"]
        if len(items) >= expected or time.monotonic() > deadline:
            return items
        time.sleep(0.1)


def test_busy_first_target_fails_over_to_the_second(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    busy = uas_factory("uas_busy", calls=1)
    answering = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({})
    configure(exchange, [
        {"id": "first", "name": "First", "destination": busy.uri, "revenue": "12.50", "priority": 1},
        {"id": "second", "name": "Second", "destination": answering.uri, "revenue": "7.00", "priority": 2},
    ])

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=1000, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(busy.stop(), exchange=exchange)
    assert_ok(answering.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["destination"]) == ("answered", answering.uri)
    assert cdr["extra"]["target_id"] == "second" and cdr["extra"]["revenue_micros"] == "7000000"


def test_known_did_with_every_target_closed_gets_480_and_a_no_route_cdr(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer")
    exchange = exchange_factory({})
    never = [{"weekday": day, "start": "03:00:00", "end": "03:00:01"} for day in range(7)]
    configure(exchange, [{"id": "closed", "name": "Closed", "destination": callee.uri, "hours": never}])

    caller = run_sipp_uac("uac_expect_480", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert callee.stop().created == 0
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"]) == ("no_route", 480)
    assert "closed" in cdr["reason"]


def test_a_publisher_ping_reserves_the_winner_for_the_call_that_follows(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, buyers: Buyers) -> None:  # noqa: F811
    static = uas_factory("uas_answer")
    bidder = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({})
    configure(exchange, [
        {"id": "static", "name": "Static", "destination": static.uri, "revenue": "12.50"},
        # 15.00 to the publisher's ping, 1.00 when pinged again for the call: only the reservation sends it there
        {"id": "rtb", "name": "Bidder", "destination": static.uri,
         "bid_url": buyers.add("rtb", "15.00", bidder.uri, later="1.00")},
    ], key="k1")

    answer = api(exchange, "POST", "/rtb/k1/ping", {"CID": "+15551230000", "zipcode": "10001"})
    assert answer["sipAddress"] == bidder.uri and answer["expireInSeconds"] > 0
    assert answer["bidAmount"] in ("15.00", "15", 15, 15.0) and answer["bidId"]
    unknown = urllib.request.Request(f"{exchange.http_base}/api/v1/rtb/nope/ping", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(unknown, timeout=5)
    assert error.value.code == 404

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(bidder.stop(), exchange=exchange)
    assert static.stop().created == 0
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["destination"], cdr["extra"]["target_id"]) == (bidder.uri, "rtb")


def test_a_pinged_only_campaign_refuses_an_unpinged_caller_with_403_and_takes_the_pinged_one(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({})
    configure(exchange, [{"id": "t1", "name": "Static", "destination": callee.uri, "revenue": "4.00"}],
              key="k1", unmatched_caller="reject")

    refused = run_sipp_uac("uac_expect_403", exchange.sip_target, tmp_path, timeout=30)
    assert_ok(refused, exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["reason"]) == ("rejected", 403, "caller ID matches no RTB ping")

    answer = api(exchange, "POST", "/rtb/k1/ping", {"CID": "+15551230000"})  # SIPp's caller ID
    assert answer["sipAddress"] == callee.uri
    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=300, timeout=30)
    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    answered = [c for c in fetch_cdrs(exchange.http_base, 2) if c["disposition"] == "answered"]
    assert len(answered) == 1 and answered[0]["extra"]["target_id"] == "t1"


class LiveBuyers:
    """Two buyers in a live auction, in a thread of their own: b2 bids over the WebSocket, b1 by POST."""

    def __init__(self, http_base: str, bids: dict[str, str]) -> None:
        self.http_base = http_base
        self.bids = bids
        self.heard: dict[str, list[dict[str, Any]]] = {name: [] for name in bids}
        self.answers: list[int] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "bidders did not connect"

    async def _run(self) -> None:
        ws_base = self.http_base.replace("http://", "ws://")
        async with aiohttp.ClientSession(headers=admin_headers(self.http_base)) as session:
            sockets = {name: await session.ws_connect(f"{ws_base}/ws/v1/bidding?buyer_id={name}")
                       for name in self.bids}
            for ws in sockets.values():
                assert (await ws.receive_json())["type"] == "subscribed"
            self.ready.set()
            await asyncio.gather(*(self._bidder(session, name, ws) for name, ws in sockets.items()))
            for ws in sockets.values():
                await ws.close()

    async def _bidder(self, session: aiohttp.ClientSession, name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            message = await asyncio.wait_for(ws.receive_json(), 30)
            self.heard[name].append(message)
            if message["type"] == "call.offered":
                bid = {"call_id": message["call_id"], "amount": self.bids[name]}
                if name == "b2":
                    await ws.send_json({"type": "bid", **bid})
                else:
                    async with session.post(f"{self.http_base}/api/v1/bids", json={**bid, "buyer_id": name}) as r:
                        self.answers.append(r.status)
            elif message["type"] == "auction.closed":
                return


def test_a_live_auction_call_reaches_the_highest_live_bidder(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    winner = uas_factory("uas_answer", calls=1)
    loser = uas_factory("uas_answer")
    exchange = exchange_factory({})
    api(exchange, "POST", "/publishers", {"id": "p1", "name": "Publisher One"})
    for buyer, callee in (("b1", loser), ("b2", winner)):
        api(exchange, "POST", "/buyers", {"id": buyer, "name": buyer})
        api(exchange, "POST", "/targets", {"id": f"t-{buyer}", "buyer_id": buyer, "name": buyer,
                                           "destination": callee.uri, "revenue": "0"})
    api(exchange, "POST", "/campaigns", {"id": "c1", "name": "Live", "publisher_ids": ["p1"],
                                         "target_ids": ["t-b1", "t-b2"], "live_auction": True,
                                         "auction_window_ms": 1500, "reserve": "1.00"})
    api(exchange, "POST", "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})
    time.sleep(1.0)
    bidders = LiveBuyers(exchange.http_base, {"b1": "5.00", "b2": "9.00"})

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(winner.stop(), exchange=exchange)
    assert loser.stop().created == 0, "the outbid buyer's callee must not be called"
    bidders.thread.join(10)
    assert bidders.answers == [202]
    offer = bidders.heard["b2"][0]
    assert (offer["type"], offer["reserve"], offer["window_ms"]) == ("call.offered", "1.00", 1500)
    assert offer["caller"]["CID"].endswith("****")
    assert bidders.heard["b1"][-1]["winner"] == "b2" and bidders.heard["b1"][-1]["amount"] == "9.00"
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["destination"]) == ("answered", winner.uri)
    assert cdr["extra"]["target_id"] == "t-b2" and cdr["extra"]["revenue_micros"] == "9000000"
    bids = poll_bids(exchange, cdr["call_id"], expected=4)
    live = {(b["buyer_id"], b["outcome"], b["amount"]) for b in bids if b["target_id"] in ("b1", "b2")}
    assert live == {("b2", "won", "9.00"), ("b1", "lost", "5.00")}


def test_a_campaign_max_call_duration_ends_its_calls(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """The campaign's limit (2 s) wins over the exchange's (1 h): both legs get BYE, the CDR says why."""
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({}, extra_config={"routing": {"max_call_duration_s": 3600}})
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri, "revenue": "5.00"}],
              max_call_duration_s=2)

    caller = run_sipp_uac("uac_wait_bye", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("answered", "system", "max call duration")
    assert 1 <= cdr["billable_s"] <= 3, cdr
