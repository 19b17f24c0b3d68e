"""MarketplaceRouter: the engine's plan, re-ranked only when something actually bids or was reserved."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from dce.bidding.bids import Bid
from dce.bidding.inbound import Reservations
from dce.bidding.live import BidStatus, LiveBidding
from dce.bidding.log import BidLogEntry
from dce.clock import Clock, SystemClock, VirtualClock
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.router import CallLimits, CallRequest, StaticRouter
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import Buyer, Campaign, Publisher, Target, TrackingNumber, UnmatchedCaller
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes

DID = "+18005550100"
NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def router(reservations: Reservations, live: LiveBidding | None = None, clock: Clock | None = None,
           **campaign: Any) -> MarketplaceRouter:
    targets = [Target("cheap", "b1", "Cheap", "sip:127.0.0.1:5080", revenue=1_000_000, priority=1),
               Target("rich", "b1", "Rich", "sip:127.0.0.1:5081", revenue=9_000_000, priority=2),
               Target("other", "b2", "Other", "sip:127.0.0.1:5082", revenue=0, priority=3)]
    snapshot = MarketplaceSnapshot.build(
        [Publisher("p1", "P")], [Buyer("b1", "B"), Buyer("b2", "B2")],
        [Campaign("c1", "C", publisher_ids=("p1",), target_ids=("cheap", "rich", "other"), **campaign)], targets,
        [TrackingNumber(DID, "c1", "p1")])
    counters, duplicates = InMemoryCounters(), DuplicateLedger()
    engine = RoutingEngine(snapshot, counters, duplicates, random.Random(1))
    return MarketplaceRouter(engine, counters, duplicates, StaticRouter(StaticRoutes({}), 30),
                             clock=clock or SystemClock(), reservations=reservations, live=live)


async def test_static_plans_keep_the_campaign_order_when_another_caller_holds_a_reservation():
    reservations = Reservations()
    reservations.reserve("c1", "+15550000000", Bid("x", "rich", 5_000_000, None, 2e9), 2e9, now=NOW.timestamp())
    r = router(reservations)
    routed = r.plan(CallRequest(DID, "+12125550123"), NOW)
    assert routed is not None and r.needs_auction(routed)
    ranked = await r.auction(routed, "call-1")
    assert [p.target_id for p in ranked.plan.targets] == ["cheap", "rich", "other"]  # priority, not revenue


async def test_a_reserved_winner_for_this_caller_goes_first_at_its_bid():
    reservations = Reservations()
    reservations.reserve("c1", "+12125550123", Bid("bid-7", "rich", 5_000_000, None, 2e9), 2e9,
                         now=NOW.timestamp())
    r = router(reservations)
    ranked = await r.auction(r.plan(CallRequest(DID, "+12125550123"), NOW), "call-1")
    first = ranked.plan.targets[0]
    assert (first.target_id, first.revenue, first.bid_id) == ("rich", 5_000_000, "bid-7")
    assert [p.target_id for p in ranked.plan.targets] == ["rich", "cheap", "other"]


async def test_a_campaign_that_only_takes_pinged_callers_refuses_another_cid_with_403():
    reservations = Reservations()
    reservations.reserve("c1", "+15550000000", Bid("x", "rich", 5_000_000, None, 2e9), 2e9, now=NOW.timestamp())
    r = router(reservations, unmatched_caller=UnmatchedCaller.REJECT)
    routed = r.plan(CallRequest(DID, "+12125550123"), NOW)
    assert routed is not None and r.needs_auction(routed)
    refused = await r.auction(routed, "call-1")
    assert refused.plan.targets == () and refused.refusal is not None and refused.refusal.status == 403
    # the pinged caller still gets its reserved winner
    matched = await r.auction(r.plan(CallRequest(DID, "+15550000000"), NOW), "call-2")
    assert matched.refusal is None and matched.plan.targets[0].target_id == "rich"


async def test_a_live_auction_puts_the_winning_buyers_targets_first_at_its_bid():
    live = LiveBidding()
    logged: list[BidLogEntry] = []
    answers: list[BidStatus] = []

    def bidder(message: dict[str, Any]) -> None:
        if message["type"] == "call.offered":
            now = time.time()
            answers.append(live.bid(message["call_id"], "b2", 20_000_000, now).status)
            answers.append(live.bid(message["call_id"], "b1", 3_000_000, now).status)

    live.subscribe(bidder)
    r = router(Reservations(), live, live_auction=True, auction_window_ms=50, reserve=2_000_000)
    r.bid_log = logged.append
    routed = r.plan(CallRequest(DID, "+12125550123"), NOW)
    assert routed is not None and r.needs_auction(routed)
    started = time.monotonic()
    ranked = await r.auction(routed, "call-1")
    assert time.monotonic() - started >= 0.045  # the window was waited out
    assert answers == [BidStatus.ACCEPTED, BidStatus.ACCEPTED]
    # b2 bid 20.00 for its only target; rich competes at its static 9.00; b1's live 3.00 brings "cheap" after;
    # cheap's own static 1.00 is below the reserve
    assert [(p.target_id, p.revenue) for p in ranked.plan.targets] == [
        ("other", 20_000_000), ("rich", 9_000_000), ("cheap", 3_000_000)]
    assert ranked.plan.targets[0].bid_id == "call-1:0"
    outcomes = {(e.record.target_id, e.buyer_id, str(e.record.outcome)) for e in logged}
    assert ("b2", "b2", "won") in outcomes and ("b1", "b1", "lost") in outcomes
    assert ("cheap", "b1", "rejected") in outcomes
    assert len(live) == 0  # closed


async def test_a_live_auction_without_bids_at_the_reserve_leaves_no_route():
    r = router(Reservations(), LiveBidding(), live_auction=True, auction_window_ms=50, reserve=50_000_000)
    ranked = await r.auction(r.plan(CallRequest(DID, "+12125550123"), NOW), "call-1")
    assert ranked.plan.targets == () and ranked.plan.reason == "no bid at or above the reserve"


async def test_a_buyer_that_cannot_pay_is_skipped_by_the_plan_and_by_the_auction():
    live = LiveBidding()

    def bidder(message: dict[str, Any]) -> None:
        if message["type"] == "call.offered":
            live.bid(message["call_id"], "b2", 20_000_000, time.time())

    live.subscribe(bidder)
    r = router(Reservations(), live, live_auction=True, auction_window_ms=50)
    snapshot = r.engine.snapshot
    funded = MarketplaceSnapshot.build(
        snapshot.publishers.values(), [Buyer("b1", "B", credit_limit=0), Buyer("b2", "B2", credit_limit=5_000_000)],
        [c.campaign for c in snapshot.campaigns.values()], [t.target for t in snapshot.targets.values()],
        snapshot.numbers.values())
    r.engine.replace(funded)
    r.engine.set_balances({"b1": 1_500_000})  # b1 can pay "cheap" (1.00) but not "rich" (9.00)
    routed = r.plan(CallRequest(DID, "+12125550123"), NOW)
    assert [p.target_id for p in routed.plan.targets] == ["cheap", "other"]
    ranked = await r.auction(routed, "call-1")
    # b2's live 20.00 is more than its 0 + 5.00 of credit: skipped at that price; its static 0.00 is payable
    assert [(p.target_id, p.revenue) for p in ranked.plan.targets] == [("cheap", 1_000_000), ("other", 0)]
    r.engine.set_balances({"b1": 0})
    assert [p.target_id for p in r.plan(CallRequest(DID, "+12125550124"), NOW).plan.targets] == ["other"]
    r.engine.set_balances({"b1": 0, "b2": -5_000_001})  # b2 is past its credit limit even for 0.00
    assert r.plan(CallRequest(DID, "+12125550125"), NOW).plan.reason == "no eligible target: 3 unfunded"


def test_limits_come_from_the_campaign_and_static_routes_have_none():
    r = router(Reservations(), max_call_duration_s=600, ping_timeout_ms=1500, live_auction=True,
               auction_window_ms=3000)
    routed = r.plan(CallRequest(DID, "+12125550123"), NOW)
    assert routed is not None
    assert r.limits(routed) == CallLimits(auction_s=3.0, max_call_duration_s=600)
    plain = router(Reservations())
    assert plain.limits(plain.plan(CallRequest(DID, "+12125550123"), NOW)) == CallLimits(2.0, None)
    static = StaticRouter(StaticRoutes({"+18005550111": ["sip:127.0.0.1:5080"]}), 30)
    assert static.limits(static.plan(CallRequest("+18005550111", "+12125550123"), NOW)) == CallLimits()


async def test_reservations_expire_by_the_routers_clock():
    for at, first in ((NOW + timedelta(seconds=9), "rich"), (NOW + timedelta(seconds=10), "cheap")):
        reservations = Reservations()
        reservations.reserve("c1", "+12125550123", Bid("bid-7", "rich", 5_000_000, None, NOW.timestamp()),
                             (NOW + timedelta(seconds=10)).timestamp(), now=NOW.timestamp())
        r = router(reservations, clock=VirtualClock(at))
        ranked = await r.auction(r.plan(CallRequest(DID, "+12125550123"), at), "call-1")
        assert ranked.plan.targets[0].target_id == first, at


async def test_a_live_auction_runs_on_the_routers_clock_and_logs_its_bids_at_its_time():
    clock = VirtualClock(NOW)
    live = LiveBidding()
    answers: list[BidStatus] = []

    def bidder(message: dict[str, Any]) -> None:
        if message["type"] == "call.offered":
            answers.append(live.bid(message["call_id"], "b2", 20_000_000, clock.now().timestamp()).status)

    live.subscribe(bidder)
    logged: list[BidLogEntry] = []
    r = router(Reservations(), live, clock=clock, live_auction=True, auction_window_ms=20)
    r.bid_log = logged.append
    ranked = await r.auction(r.plan(CallRequest(DID, "+12125550123"), NOW), "call-1")
    assert answers == [BidStatus.ACCEPTED]  # on time by the router's clock, years away from the host's
    assert ranked.plan.targets[0].target_id == "other"
    assert logged and {entry.at for entry in logged} == {NOW}
