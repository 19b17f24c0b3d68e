"""Routing for the marketplace's DIDs: the in-memory engine, an RTB auction when targets bid, and accounting.

Static routes from configuration answer for DIDs the marketplace does not know. Everything here reads memory;
the only network work is the RTB ping round, bounded by the campaign's ping timeout.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

from dce.bidding.auction import Auction
from dce.bidding.bids import BidRecord
from dce.bidding.inbound import Reservations
from dce.bidding.log import BidLogEntry
from dce.bidding.rtb import RtbPinger
from dce.exchange.router import STATIC_TARGET, CallRequest, Routed, StaticRouter
from dce.routing.context import build_context
from dce.routing.counters import RoutingCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import CapCounts, DuplicateAfter, PlannedTarget, RoutingPlan

log = logging.getLogger(__name__)


class MarketplaceRouter:
    """The Router the CallFlow uses once a marketplace is loaded."""

    def __init__(self, engine: RoutingEngine, counters: RoutingCounters, duplicates: DuplicateLedger,
                 fallback: StaticRouter, *, pinger: RtbPinger | None = None,
                 reservations: Reservations | None = None, tag_headers: Collection[str] = ()) -> None:
        self.engine = engine
        self.counters = counters
        self.duplicates = duplicates
        self.fallback = fallback
        self.pinger = pinger
        self.reservations = reservations
        self.tag_headers = tag_headers
        self.bid_outcomes: Counter[str] = Counter()  # "won", "lost", "rejected:late", ... (metrics)
        self.recent_bids: deque[BidRecord] = deque(maxlen=10_000)  # every bid of the last calls, newest last
        self.bid_log: Callable[[BidLogEntry], None] | None = None  # e.g. the bids table's batching writer

    # -- Router ----------------------------------------------------------------------------------------
    def plan(self, request: CallRequest, now: datetime) -> Routed | None:
        snapshot = self.engine.snapshot
        if request.did not in snapshot.numbers:
            return self.fallback.plan(request, now)
        ctx = build_context(caller_user=request.caller_user, did=request.did, headers=request.headers,
                            snapshot=snapshot, tag_headers=self.tag_headers)
        return Routed(self.engine.plan(ctx, now), ctx)

    def needs_auction(self, routed: Routed) -> bool:
        """Whether some planned target bids in real time (or a reserved winner may be waiting)."""
        targets = self.engine.snapshot.targets
        return any((compiled := targets.get(p.target_id)) is not None and compiled.target.bid_url
                   for p in routed.plan.targets) or bool(self.reservations)

    async def auction(self, routed: Routed, call_id: str) -> Routed:
        """Re-rank the plan by an auction: static targets at their revenue against live RTB bids.

        A winner reserved by an earlier inbound ping from the same caller goes first. Every bid is recorded.
        """
        ctx = routed.context
        snapshot = self.engine.snapshot
        if ctx is None or ctx.campaign_id is None:
            return routed
        campaign = snapshot.campaigns[ctx.campaign_id].campaign
        by_id = {p.target_id: p for p in routed.plan.targets}
        targets = [snapshot.targets[p.target_id].target for p in routed.plan.targets]
        started = time.time()
        reserved = None
        if self.reservations is not None and ctx.ani is not None:
            reserved = self.reservations.claim(campaign.id, ctx.ani, started)
        bidders = [t for t in targets if t.bid_url]
        if not bidders or self.pinger is None:
            if reserved is None or reserved.target_id not in by_id:
                return routed  # nothing bids on this call: the campaign's own order stands
            first = PlannedTarget(reserved.target_id, reserved.destination or by_id[reserved.target_id].destination,
                                  reserved.amount, by_id[reserved.target_id].ring_timeout_s, bid_id=reserved.bid_id)
            rest = tuple(p for p in routed.plan.targets if p.target_id != reserved.target_id)
            return Routed(RoutingPlan((first, *rest)), ctx, routed.held)
        auction = Auction(reserve=campaign.reserve, started_at=started)
        auction.add_static((t for t in targets if not t.bid_url), started)
        records: list[BidRecord] = []
        rejected, bids = await self.pinger.ping_all(bidders, ctx, timeout_s=campaign.ping_timeout_ms / 1000,
                                                    allow_caller_id=campaign.allow_caller_id, call_id=call_id)
        records.extend(rejected)
        for bid in bids:
            auction.add(bid, started)
        result = auction.close(max(time.time(), started))
        records.extend(result.records)
        self.record_bids(records, campaign_id=campaign.id, call_id=call_id)
        ranked = list(result.ranked)
        if reserved is not None and reserved.target_id in by_id:
            ranked = [reserved, *(bid for bid in ranked if bid.target_id != reserved.target_id)]
        planned = []
        for bid in ranked:
            base = by_id.get(bid.target_id)
            if base is None:
                continue
            is_static = bid.bid_id.startswith("static:")
            planned.append(PlannedTarget(base.target_id, bid.destination or base.destination, bid.amount,
                                         base.ring_timeout_s, bid_id=None if is_static else bid.bid_id))
        reason = None if planned else "no bid at or above the reserve"
        return Routed(RoutingPlan(tuple(planned), reason), ctx, routed.held)

    def acquire(self, routed: Routed, target: PlannedTarget) -> bool:
        if target.target_id == STATIC_TARGET:
            return True
        compiled = self.engine.snapshot.targets.get(target.target_id)
        limit = compiled.target.caps.concurrency if compiled is not None else None
        if not self.counters.try_acquire(target.target_id, limit):
            return False
        routed.held.add(target.target_id)
        return True

    def release(self, routed: Routed, target: PlannedTarget) -> None:
        if target.target_id in routed.held:
            routed.held.discard(target.target_id)
            self.counters.release(target.target_id)

    def connected(self, routed: Routed, target: PlannedTarget, now: datetime) -> None:
        ctx = routed.context
        if target.target_id == STATIC_TARGET or ctx is None or ctx.campaign_id is None:
            return
        self.counters.record(target.target_id, CapCounts.CONNECTS, now)
        self.duplicates.record(ctx.ani, ctx.campaign_id, target.target_id, DuplicateAfter.CONNECTED, now)

    def completed(self, routed: Routed, target: PlannedTarget, billable_s: int, now: datetime) -> None:
        ctx = routed.context
        if target.target_id == STATIC_TARGET or ctx is None or ctx.campaign_id is None:
            return
        compiled = self.engine.snapshot.targets.get(target.target_id)
        if compiled is None or billable_s < compiled.target.conversion_duration_s:
            return
        self.counters.record(target.target_id, CapCounts.CONVERSIONS, now)
        self.duplicates.record(ctx.ani, ctx.campaign_id, target.target_id, DuplicateAfter.CONVERTED, now)

    def record_bids(self, records: Sequence[BidRecord], *, campaign_id: str | None = None,
                    call_id: str | None = None) -> None:
        """Count and log every bid (calls' auctions and publishers' pings alike)."""
        at = datetime.now(UTC)
        for record in records:
            if self.bid_log is not None:
                self.bid_log(BidLogEntry(at, record, campaign_id, call_id))
            reason = f":{record.reject_reason}" if record.reject_reason is not None else ""
            self.bid_outcomes[f"{record.outcome}{reason}"] += 1
            self.recent_bids.append(record)
