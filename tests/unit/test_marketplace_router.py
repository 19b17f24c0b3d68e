"""MarketplaceRouter: the engine's plan, re-ranked only when something actually bids or was reserved."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from dce.bidding.bids import Bid
from dce.bidding.inbound import Reservations
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.router import CallRequest, StaticRouter
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import Buyer, Campaign, Publisher, Target, TrackingNumber
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes

DID = "+18005550100"
NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def router(reservations: Reservations) -> MarketplaceRouter:
    targets = [Target("cheap", "b1", "Cheap", "sip:127.0.0.1:5080", revenue=1_000_000, priority=1),
               Target("rich", "b1", "Rich", "sip:127.0.0.1:5081", revenue=9_000_000, priority=2)]
    snapshot = MarketplaceSnapshot.build(
        [Publisher("p1", "P")], [Buyer("b1", "B")],
        [Campaign("c1", "C", publisher_ids=("p1",), target_ids=("cheap", "rich"))], targets,
        [TrackingNumber(DID, "c1", "p1")])
    counters, duplicates = InMemoryCounters(), DuplicateLedger()
    engine = RoutingEngine(snapshot, counters, duplicates, random.Random(1))
    return MarketplaceRouter(engine, counters, duplicates, StaticRouter(StaticRoutes({}), 30),
                             reservations=reservations)


async def test_static_plans_keep_the_campaign_order_when_another_caller_holds_a_reservation():
    reservations = Reservations()
    reservations.reserve("c1", "+15550000000", Bid("x", "rich", 5_000_000, None, 2e9), 2e9, now=NOW.timestamp())
    r = router(reservations)
    routed = r.plan(CallRequest(DID, "+12125550123"), NOW)
    assert routed is not None and r.needs_auction(routed)
    ranked = await r.auction(routed, "call-1")
    assert [p.target_id for p in ranked.plan.targets] == ["cheap", "rich"]  # priority order, not revenue


async def test_a_reserved_winner_for_this_caller_goes_first_at_its_bid():
    reservations = Reservations()
    reservations.reserve("c1", "+12125550123", Bid("bid-7", "rich", 5_000_000, None, 2e9), 2e9,
                         now=NOW.timestamp())
    r = router(reservations)
    ranked = await r.auction(r.plan(CallRequest(DID, "+12125550123"), NOW), "call-1")
    first = ranked.plan.targets[0]
    assert (first.target_id, first.revenue, first.bid_id) == ("rich", 5_000_000, "bid-7")
    assert [p.target_id for p in ranked.plan.targets] == ["rich", "cheap"]
