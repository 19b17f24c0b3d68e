"""Auctions: pure, in-memory, clock passed in.

``Auction`` decides one call among bids collected up front (RTB answers plus static targets at their revenue).
``LiveAuctions`` is the book of open auctions for campaigns in auction mode, where buyers place bids during a
window (WebSocket or ``POST /api/v1/bids``); ``place`` is the hot path and does O(1) work per bid.

Rules everywhere: the highest amount wins; among equal amounts the earliest received wins (then the first added);
bids below the reserve or past their expiry are rejected with the reason; every bid gets a ``BidRecord``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from dce.bidding.bids import Bid, BidRecord, Outcome, RejectReason
from dce.routing.model import Micros, Target


@dataclass(frozen=True, slots=True)
class AuctionResult:
    """The winner (None when no bid survived), the surviving bids best first, and a record of every bid."""

    winner: Bid | None
    ranked: tuple[Bid, ...]
    records: tuple[BidRecord, ...]


_INF = math.inf


def static_bid(target: Target, received_at: float) -> Bid:
    """A static target competing with its static revenue; it never expires during the auction."""
    return Bid(
        "static:" + target.id,
        target.id,
        target.revenue,
        target.destination,
        _INF,
        target.conversion_duration_s,
        received_at,
        0.0,
    )


def _rejected(bid: Bid, reason: RejectReason) -> BidRecord:
    return BidRecord(bid.target_id, bid.amount, Outcome.REJECTED, reason, bid.latency_ms, bid.bid_id)


class Auction:
    """One call's sealed-bid auction: ``add`` bids, then ``close`` once."""

    __slots__ = ("_bids", "_rejected", "reserve", "started_at")

    def __init__(self, reserve: Micros = 0, started_at: float = 0.0) -> None:
        self.reserve = reserve
        self.started_at = started_at
        self._bids: list[Bid] = []
        self._rejected: list[BidRecord] = []

    def add(self, bid: Bid, now: float) -> RejectReason | None:
        """Take a bid; return why it was rejected, or None when it competes."""
        if bid.amount < self.reserve:
            reason = RejectReason.BELOW_RESERVE
        elif bid.expires_at <= now:
            reason = RejectReason.EXPIRED
        else:
            self._bids.append(bid)
            return None
        self._rejected.append(_rejected(bid, reason))
        return reason

    def add_static(self, targets: Iterable[Target], now: float) -> None:
        """Add static targets as bids at their revenue, received at the auction start."""
        started_at, add = self.started_at, self.add
        for target in targets:
            add(static_bid(target, started_at), now)

    def close(self, now: float) -> AuctionResult:
        """Decide: bids that expired meanwhile are rejected; the rest ranked by amount desc, then received_at."""
        records = list(self._rejected)
        alive: list[Bid] = []
        for bid in self._bids:
            if bid.expires_at <= now:
                records.append(_rejected(bid, RejectReason.EXPIRED))
            else:
                alive.append(bid)
        # sort is stable: equal (amount, received_at) keep the order they were added in
        ranked = tuple(sorted(alive, key=lambda b: (-b.amount, b.received_at)))
        winner = ranked[0] if ranked else None
        for bid in ranked:
            outcome = Outcome.WON if bid is winner else Outcome.LOST
            records.append(BidRecord(bid.target_id, bid.amount, outcome, None, bid.latency_ms, bid.bid_id))
        return AuctionResult(winner, ranked, tuple(records))


class PlaceResult(enum.StrEnum):
    """The answer to ``LiveAuctions.place``."""

    ACCEPTED = "accepted"
    UNKNOWN_CALL = "unknown_call"
    WINDOW_CLOSED = "window_closed"
    BELOW_RESERVE = "below_reserve"
    MALFORMED = "malformed"  # the amount is not a non-negative int of micros


_ACCEPTED = PlaceResult.ACCEPTED
_UNKNOWN_CALL = PlaceResult.UNKNOWN_CALL
_WINDOW_CLOSED = PlaceResult.WINDOW_CLOSED
_BELOW_RESERVE = PlaceResult.BELOW_RESERVE
_MALFORMED = PlaceResult.MALFORMED
_PLACE_REASON = {
    _WINDOW_CLOSED: RejectReason.LATE,
    _BELOW_RESERVE: RejectReason.BELOW_RESERVE,
    _MALFORMED: RejectReason.MALFORMED,
}


class _Live:
    """One open auction. Accepted bids live in parallel lists (no per-bid object for the GC to track);
    rejected ones, rare, as tuples."""

    __slots__ = ("amounts", "ats", "bidders", "ends_at", "expiring", "high", "opened_at", "rejected", "reserve")

    def __init__(self, reserve: Micros, ends_at: float, opened_at: float) -> None:
        self.reserve = reserve
        self.ends_at = ends_at
        self.opened_at = opened_at
        self.high = -1  # the highest accepted amount so far (for display; close ranks them all)
        self.bidders: list[str] = []
        self.amounts: list[int] = []
        self.ats: list[float] = []
        self.expiring: dict[int, float] = {}  # index -> expires_at, only for bids placed with an expiry
        self.rejected: list[tuple[str, object, float, RejectReason]] = []


class LiveAuctions:
    """Open auctions keyed by call id: ``open``, many ``place``, one ``close``."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, _Live] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._open

    def open(self, call_id: str, reserve: Micros, window_ends_at: float, *, now: float = 0.0) -> None:
        """Start taking bids for ``call_id`` until ``window_ends_at`` (exclusive). Re-opening raises."""
        if call_id in self._open:
            raise ValueError(f"auction already open: {call_id}")
        self._open[call_id] = _Live(reserve, window_ends_at, now)

    def place(
        self, call_id: str, bidder_id: str, amount: Micros, now: float, expires_at: float | None = None
    ) -> PlaceResult:
        """Place a bid of ``amount`` micros at ``now``; optional ``expires_at`` drops it if the close is later."""
        live = self._open.get(call_id)
        if live is None:
            return _UNKNOWN_CALL
        if now >= live.ends_at:
            result = _WINDOW_CLOSED
        elif type(amount) is not int or amount < 0:
            result = _MALFORMED
        elif amount < live.reserve:
            result = _BELOW_RESERVE
        else:
            if expires_at is not None:
                live.expiring[len(live.amounts)] = expires_at
            if amount > live.high:
                live.high = amount
            live.bidders.append(bidder_id)
            live.amounts.append(amount)
            live.ats.append(now)
            return _ACCEPTED
        live.rejected.append((bidder_id, amount, now, _PLACE_REASON[result]))
        return result

    def close(self, call_id: str, now: float) -> AuctionResult:
        """Close and forget the auction; raise ``KeyError`` for an unknown call."""
        live = self._open.pop(call_id)
        records = [
            BidRecord(bidder, amount if type(amount) is int else 0, Outcome.REJECTED, reason, 0.0, None)
            for bidder, amount, _, reason in live.rejected
        ]
        expiring = live.expiring
        bidders = live.bidders
        alive: list[tuple[int, float, int]] = []  # (-amount, placed_at, index): sorts best first
        for index, (amount, at) in enumerate(zip(live.amounts, live.ats, strict=True)):
            if index in expiring and expiring[index] <= now:
                records.append(BidRecord(bidders[index], amount, Outcome.REJECTED, RejectReason.EXPIRED))
            else:
                alive.append((-amount, at, index))
        alive.sort()
        bids = tuple(
            Bid(f"{call_id}:{index}", bidders[index], -neg, None, expiring.get(index, math.inf), 0, at)
            for neg, at, index in alive
        )
        winner = bids[0] if bids else None
        for bid in bids:
            outcome = Outcome.WON if bid is winner else Outcome.LOST
            records.append(BidRecord(bid.target_id, bid.amount, outcome, None, 0.0, bid.bid_id))
        return AuctionResult(winner, bids, tuple(records))

    def high_bid(self, call_id: str) -> Micros | None:
        """The highest accepted amount so far (expiry not considered), None when none or unknown call."""
        live = self._open.get(call_id)
        return None if live is None or live.high < 0 else live.high

    def due(self, now: float) -> list[str]:
        """Call ids whose window has ended (for a sweeper that closes them)."""
        return [call_id for call_id, live in self._open.items() if now >= live.ends_at]
