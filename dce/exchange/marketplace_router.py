"""Routing for the marketplace's DIDs: the in-memory engine, an RTB auction when targets bid, and accounting.

Static routes from configuration answer for DIDs the marketplace does not know. Everything here reads memory;
the only network work is the RTB ping round, bounded by the campaign's ping timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from dce.bidding.auction import Auction
from dce.bidding.bids import Bid, BidRecord, Outcome, RejectReason
from dce.bidding.inbound import Reservations
from dce.bidding.live import LiveBidding
from dce.bidding.log import BidLogEntry, bid_log_entry
from dce.bidding.rtb import RtbPinger
from dce.billing.cdr import ConversionFrom, SaleTerms
from dce.clock import Clock
from dce.db.redis_slots import RedisSlots, Windows
from dce.exchange.router import STATIC_TARGET, CallLimits, CallRequest, Refusal, Routed, StaticRouter
from dce.routing.context import build_context
from dce.routing.counters import RoutingCounters, window_starts
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import (
    ANY_PUBLISHER,
    CallerContext,
    Campaign,
    CapCounts,
    DuplicateAfter,
    PlannedTarget,
    RoutingPlan,
    TargetAuth,
    UnmatchedCaller,
)

log = logging.getLogger(__name__)

LIVE_BIDDER = "@"  # prefixes a live bidder's buyer id inside an auction (ids cannot contain "@")


class MarketplaceRouter:
    """The Router the CallFlow uses once a marketplace is loaded.

    ``clock``: the exchange's clock; auctions, reservations and the bid log read its wall time (epoch seconds).
    """

    def __init__(self, engine: RoutingEngine, counters: RoutingCounters, duplicates: DuplicateLedger,
                 fallback: StaticRouter, *, clock: Clock, pinger: RtbPinger | None = None,
                 reservations: Reservations | None = None, live: LiveBidding | None = None,
                 tag_headers: Collection[str] = ()) -> None:
        self.engine = engine
        self.clock = clock
        self.counters = counters
        self.duplicates = duplicates
        self.fallback = fallback
        self.pinger = pinger
        self.reservations = reservations
        self.live = live
        self.slots: RedisSlots | None = None  # caps shared by every node (Redis), when configured
        self._releases: set[asyncio.Future[None]] = set()  # slot releases and shared counts in flight
        self._starts_minute = -1
        self._starts_cache: dict[ZoneInfo, tuple[float, float, float]] = {}
        self.tag_headers = tag_headers
        self.bid_outcomes: Counter[str] = Counter()  # "won", "lost", "rejected:late", ... (metrics)
        self.recent_bids: deque[BidRecord] = deque(maxlen=10_000)  # every bid of the last calls, newest last
        self.bid_log: Callable[[BidLogEntry], None] | None = None  # e.g. the bids table's batching writer
        self.on_bid: Callable[[str], None] | None = None  # each bid's outcome label (metrics)

    # -- Router ----------------------------------------------------------------------------------------
    def plan(self, request: CallRequest, now: datetime) -> Routed | None:
        snapshot = self.engine.snapshot
        if request.did not in snapshot.numbers:
            return self.fallback.plan(request, now)
        ctx = build_context(caller_user=request.caller_user, did=request.did, headers=request.headers,
                            snapshot=snapshot, tag_headers=self.tag_headers)
        return Routed(self.engine.plan(ctx, now), ctx)

    def needs_auction(self, routed: Routed) -> bool:
        """Whether the plan must go through ``auction``: some planned target bids in real time, the campaign
        runs live auctions or only takes pinged callers, or a reserved winner may be waiting."""
        ctx = routed.context
        snapshot = self.engine.snapshot
        if ctx is not None and ctx.campaign_id is not None:
            compiled = snapshot.campaigns.get(ctx.campaign_id)
            if compiled is not None and (compiled.campaign.live_auction
                                         or compiled.campaign.unmatched_caller is UnmatchedCaller.REJECT):
                return True
        targets = snapshot.targets
        return any((compiled := targets.get(p.target_id)) is not None and compiled.target.bid_url
                   for p in routed.plan.targets) or bool(self.reservations)

    async def auction(self, routed: Routed, call_id: str) -> Routed:
        """Re-rank the plan by an auction: static targets at their revenue against RTB bids and live bids.

        A winner reserved by an earlier inbound ping from the same caller goes first; a campaign that only takes
        pinged callers refuses the others. Every bid is recorded.
        """
        ctx = routed.context
        snapshot = self.engine.snapshot
        if ctx is None or ctx.campaign_id is None:
            return routed
        campaign = snapshot.campaigns[ctx.campaign_id].campaign
        by_id = {p.target_id: p for p in routed.plan.targets}
        targets = [snapshot.targets[p.target_id].target for p in routed.plan.targets]
        started = self._epoch()
        reserved = None
        if self.reservations is not None and ctx.ani is not None:
            reserved = self.reservations.claim(campaign.id, ctx.ani, started)
        if reserved is None and campaign.unmatched_caller is UnmatchedCaller.REJECT:
            return Routed(RoutingPlan((), "caller ID matches no RTB ping"), ctx, routed.held,
                          Refusal(403, "caller ID matches no RTB ping"))
        bidders = [t for t in targets if t.bid_url] if self.pinger is not None else []
        live = self.live if campaign.live_auction else None
        if not bidders and live is None:
            if reserved is None or reserved.target_id not in by_id:
                return routed  # nothing bids on this call: the campaign's own order stands
            base = by_id[reserved.target_id]
            first = PlannedTarget(reserved.target_id, reserved.destination or base.destination,
                                  reserved.amount, base.ring_timeout_s, bid_id=reserved.bid_id,
                                  auth=_auth_for(base, reserved.destination))
            rest = tuple(p for p in routed.plan.targets if p.target_id != reserved.target_id)
            return Routed(RoutingPlan((first, *rest)), ctx, routed.held)
        auction = Auction(reserve=campaign.reserve, started_at=started)
        auction.add_static((t for t in targets if not t.bid_url), started)
        records: list[BidRecord] = []
        buyers = {t.buyer_id: t.buyer_id for t in targets}  # eligible buyers, in plan order
        rounds = []
        if bidders:
            assert self.pinger is not None
            rounds.append(self.pinger.ping_all(bidders, ctx, timeout_s=campaign.ping_timeout_ms / 1000,
                                               allow_caller_id=campaign.allow_caller_id, call_id=call_id))
        if live is not None:
            rounds.append(self._live_round(live, call_id, campaign, ctx, list(buyers)))
        for rejected, bids in await asyncio.gather(*rounds):
            records.extend(rejected)
            for bid in bids:
                auction.add(bid, started)
        result = auction.close(max(self._epoch(), started))
        records.extend(result.records)
        self.record_bids(records, campaign_id=campaign.id, call_id=call_id)
        ranked = list(result.ranked)
        if reserved is not None and reserved.target_id in by_id:
            ranked = [reserved, *(bid for bid in ranked if bid.target_id != reserved.target_id)]
        planned: list[PlannedTarget] = []
        placed: set[str] = set()
        for bid in ranked:
            if bid.target_id.startswith(LIVE_BIDDER):  # a buyer's live bid: that buyer's targets, in plan order
                buyer_id = bid.target_id[len(LIVE_BIDDER):]
                steps = [p for p, t in zip(routed.plan.targets, targets, strict=True) if t.buyer_id == buyer_id]
            else:
                steps = [by_id[bid.target_id]] if bid.target_id in by_id else []
            is_static = bid.bid_id.startswith("static:")
            for base in steps:
                if base.target_id in placed:
                    continue
                if not self.engine.can_pay(snapshot.targets[base.target_id].buyer, bid.amount):
                    continue  # its buyer's balance and credit cannot cover this price
                placed.add(base.target_id)
                planned.append(PlannedTarget(base.target_id, bid.destination or base.destination, bid.amount,
                                             base.ring_timeout_s, bid_id=None if is_static else bid.bid_id,
                                             auth=_auth_for(base, bid.destination)))
        reason = None if planned else "no bid at or above the reserve"
        return Routed(RoutingPlan(tuple(planned), reason), ctx, routed.held)

    async def _live_round(self, live: LiveBidding, call_id: str, campaign: Campaign, ctx: CallerContext,
                          buyer_ids: list[str]) -> tuple[list[BidRecord], list[Bid]]:
        """Offer the call to the buyers, wait out the window, close: (rejected records, surviving bids).

        Surviving bids name their bidder ``LIVE_BIDDER + buyer id`` so they cannot be taken for a target id.
        """
        ends_at = live.offer(call_id, campaign, ctx, buyer_ids, self._epoch())
        try:
            await asyncio.sleep(max(0.0, ends_at - self._epoch()))
        finally:  # closed even when the call task is cancelled, so the book never keeps a dead auction
            result = live.close(call_id, max(self._epoch(), ends_at))
        rejected = [r._replace(target_id=LIVE_BIDDER + r.target_id) for r in result.records
                    if r.outcome is Outcome.REJECTED]
        return rejected, [bid._replace(target_id=LIVE_BIDDER + bid.target_id) for bid in result.ranked]

    def _epoch(self) -> float:
        """The clock's wall time in epoch seconds (the bidding room's time)."""
        return self.clock.now().timestamp()

    def without_buyers(self, routed: Routed, buyer_ids: frozenset[str]) -> Routed:
        """The plan without the targets owned by ``buyer_ids`` (their suppression lists hold the caller)."""
        targets = self.engine.snapshot.targets
        kept = tuple(p for p in routed.plan.targets
                     if (compiled := targets.get(p.target_id)) is None or compiled.target.buyer_id not in buyer_ids)
        if len(kept) == len(routed.plan.targets):
            return routed
        reason = routed.plan.reason or (None if kept else "every eligible buyer suppresses this caller")
        return Routed(RoutingPlan(kept, reason), routed.context, routed.held, routed.refusal)

    def limits(self, routed: Routed) -> CallLimits:
        """The campaign's bounds: its auction's longest wait (RTB pings and the live window run together) and
        its maximum call duration (None: the exchange's default)."""
        ctx = routed.context
        compiled = self.engine.snapshot.campaigns.get(ctx.campaign_id) if ctx and ctx.campaign_id else None
        if compiled is None:
            return CallLimits()
        campaign = compiled.campaign
        auction_ms = max(campaign.ping_timeout_ms, campaign.auction_window_ms if campaign.live_auction else 0)
        return CallLimits(auction_ms / 1000, campaign.max_call_duration_s)

    def terms(self, routed: Routed, target: PlannedTarget | None) -> SaleTerms | None:
        """The sale as the snapshot has it now: buyer, price (static revenue or the winning bid), conversion
        duration and timing, the publisher's payout rule (its own, else the campaign's "*"), the duplicate rule.
        A campaign's call that reached no target keeps its campaign and publisher (reports count it)."""
        ctx = routed.context
        if ctx is None or ctx.campaign_id is None or (target is not None and target.target_id == STATIC_TARGET):
            return None
        snapshot = self.engine.snapshot
        compiled_campaign = snapshot.campaigns.get(ctx.campaign_id)
        compiled_target = snapshot.targets.get(target.target_id) if target is not None else None
        if compiled_campaign is None:
            return None
        if compiled_target is None or target is None:
            return SaleTerms(campaign_id=ctx.campaign_id, publisher_id=ctx.publisher_id)
        campaign, owner = compiled_campaign.campaign, compiled_target.target
        payouts = dict(campaign.payouts)
        rule = payouts.get(ctx.publisher_id or "") or payouts.get(ANY_PUBLISHER)
        duplicate = campaign.duplicate_rule
        return SaleTerms(
            campaign_id=campaign.id, publisher_id=ctx.publisher_id, buyer_id=owner.buyer_id,
            target_id=owner.id, revenue=target.revenue, conversion_s=owner.conversion_duration_s,
            conversion_from=ConversionFrom(campaign.conversion_from),
            payout_fixed=rule.fixed if rule is not None else None,
            payout_share_bp=rule.revenue_share_bp if rule is not None else None,
            duplicate_days=duplicate.days if duplicate is not None else None,
            duplicate_after=str(duplicate.after) if duplicate is not None else "connected",
            bid_id=target.bid_id,
        )

    async def acquire(self, routed: Routed, target: PlannedTarget, now: datetime) -> bool:
        """This node's slot first (no round trip when it is already full), then, when Redis is configured, the
        caps shared by every node in one round trip: the slot and the hour/day/month counts at ``now`` (planning
        checked them on this node's counts only). If Redis cannot answer in time, this node's counts decide."""
        target_id = target.target_id
        if target_id == STATIC_TARGET:
            return True
        compiled = self.engine.snapshot.targets.get(target_id)
        limit = compiled.target.caps.concurrency if compiled is not None else None
        if not self.counters.try_acquire(target_id, limit):
            return False
        if self.slots is not None and compiled is not None and compiled.capped:
            windows = None
            if compiled.counted:
                caps = compiled.caps
                starts = self._starts(compiled.zone, now)
                windows = Windows(caps.counts, starts, caps.hourly, caps.daily, caps.monthly)
            shared = await self.slots.acquire(target_id, limit, windows)
            if shared is False:
                self.counters.release(target_id)
                return False
            if shared and limit is not None:
                routed.shared.add(target_id)
        routed.held.add(target_id)
        return True

    def _starts(self, zone: ZoneInfo, now: datetime) -> tuple[float, float, float]:
        """When the hour, day and month containing ``now`` began in ``zone`` (cached per zone and minute)."""
        minute = int(now.timestamp() // 60)  # zone offsets change on minute boundaries
        if minute != self._starts_minute:
            self._starts_minute = minute
            self._starts_cache.clear()
        starts = self._starts_cache.get(zone)
        if starts is None:
            starts = self._starts_cache[zone] = window_starts(zone, now)
        return starts

    def _record_shared(self, target_id: str, kind: CapCounts, now: datetime) -> None:
        """Count a connect or conversion in the windows every node reads (never waits on the call path)."""
        if self.slots is None:
            return
        compiled = self.engine.snapshot.targets.get(target_id)
        if compiled is None:
            return
        self._background(self.slots.record(target_id, kind, self._starts(compiled.zone, now), now.timestamp()))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def release(self, routed: Routed, target: PlannedTarget) -> None:
        target_id = target.target_id
        if target_id in routed.held:
            routed.held.discard(target_id)
            self.counters.release(target_id)
        if target_id in routed.shared and self.slots is not None:
            routed.shared.discard(target_id)
            self._background(self.slots.release(target_id))  # never waits on the call path

    def connected(self, routed: Routed, target: PlannedTarget, now: datetime) -> None:
        ctx = routed.context
        if target.target_id == STATIC_TARGET or ctx is None or ctx.campaign_id is None:
            return
        self.counters.record(target.target_id, CapCounts.CONNECTS, now)
        self._record_shared(target.target_id, CapCounts.CONNECTS, now)
        self.duplicates.record(ctx.ani, ctx.campaign_id, target.target_id, DuplicateAfter.CONNECTED, now)

    def completed(self, routed: Routed, target: PlannedTarget, billable_s: int, now: datetime) -> None:
        ctx = routed.context
        if target.target_id == STATIC_TARGET or ctx is None or ctx.campaign_id is None:
            return
        compiled = self.engine.snapshot.targets.get(target.target_id)
        if compiled is None or billable_s < compiled.target.conversion_duration_s:
            return
        self.counters.record(target.target_id, CapCounts.CONVERSIONS, now)
        self._record_shared(target.target_id, CapCounts.CONVERSIONS, now)
        self.duplicates.record(ctx.ani, ctx.campaign_id, target.target_id, DuplicateAfter.CONVERTED, now)

    def record_bids(self, records: Sequence[BidRecord], *, campaign_id: str | None = None,
                    call_id: str | None = None) -> None:
        """Count and log every bid (calls' auctions and publishers' pings alike)."""
        at = self.clock.now()
        targets = self.engine.snapshot.targets
        for record in records:
            if record.target_id.startswith(LIVE_BIDDER):
                buyer_id: str | None = record.target_id[len(LIVE_BIDDER):]
                record = record._replace(target_id=buyer_id)
            else:
                compiled = targets.get(record.target_id)
                buyer_id = compiled.target.buyer_id if compiled is not None else None
            if self.bid_log is not None:
                self.bid_log(bid_log_entry(at, record, campaign_id, call_id, buyer_id))
            label = _outcome_label(record.outcome, record.reject_reason)
            self.bid_outcomes[label] += 1
            if self.on_bid is not None:
                self.on_bid(label)
            self.recent_bids.append(record)


@lru_cache(maxsize=64)
def _outcome_label(outcome: Outcome, reason: RejectReason | None) -> str:
    """``won``, ``lost``, ``rejected:late``, ... (the bid outcome counter's key)."""
    return f"{outcome}:{reason}" if reason is not None else str(outcome)


def _auth_for(base: PlannedTarget, destination: str | None) -> TargetAuth | None:
    """The target's credentials, only when the dial goes to its own destination (never to a URI a bid named)."""
    return base.auth if destination is None or destination == base.destination else None
