"""Answering publishers' RTB pings (``POST /api/v1/rtb/{campaign_key}/ping``) and reserving the winner.

A ping runs the call's auction ahead of the call: static targets at their revenue plus RTB bids. The winner is
reserved under (campaign id, CID) until the answer's expiry; the call, when it arrives from that CID, claims it.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from os import urandom
from typing import Any

from dce.bidding.auction import Auction, static_bid
from dce.bidding.bids import Bid, BidRecord, Outcome, RejectReason, format_amount
from dce.bidding.rtb import RtbPinger
from dce.routing.model import CallerContext, Campaign, Target

DEFAULT_RESERVATION_S = 60.0  # the longest an answer promises, whatever the winning bid says
_CID = re.compile(r"\+?[0-9]{7,15}")
_CID_MATCH = _CID.fullmatch
_NESTED = (dict, list)
_MAX_TAGS = 32
_MAX_TAG_CHARS = 256

# rejectReason -> code of a declined ping
REJECT_CODES = {
    "malformed_ping": 1001,
    "campaign_disabled": 1002,
    "no_eligible_target": 1003,
    "no_bid": 1004,
}


class _Reservation:
    __slots__ = ("bid", "expires_at", "key")

    def __init__(self, key: tuple[str, str], bid: Bid, expires_at: float) -> None:
        self.key = key
        self.bid = bid
        self.expires_at = expires_at


class Reservations:
    """Winners of inbound pings awaiting their call, keyed by (campaign id or DID, CID).

    Eviction walks a FIFO of reservations from the oldest, so each entry is pushed and popped once: O(1)
    amortised. An entry with a long expiry at the head may delay the eviction of shorter ones behind it; ``claim``
    checks expiry itself, so that delay never hands out an expired bid.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], _Reservation] = {}
        self._fifo: deque[_Reservation] = deque()

    def __len__(self) -> int:
        return len(self._by_key)

    def reserve(self, did_or_campaign: str, cid: str, bid: Bid, expires_at: float, *, now: float | None = None) -> None:
        """Hold ``bid`` for the next call from ``cid`` until ``expires_at``; replaces an earlier reservation for
        the same pair. ``now`` (default: the bid's ``received_at``) drives eviction of expired entries."""
        self.evict(bid.received_at if now is None else now)
        entry = _Reservation((did_or_campaign, cid), bid, expires_at)
        self._by_key[entry.key] = entry
        self._fifo.append(entry)

    def claim(self, did_or_campaign: str, cid: str, now: float) -> Bid | None:
        """Take the reserved winner for a call from ``cid`` (once); None if none, another CID, or expired."""
        self.evict(now)
        entry = self._by_key.get((did_or_campaign, cid))
        if entry is None or entry.expires_at <= now:
            return None
        del self._by_key[entry.key]
        return entry.bid

    def evict(self, now: float) -> None:
        """Forget reservations that expired, from the oldest while the oldest has expired."""
        fifo, by_key = self._fifo, self._by_key
        while fifo and fifo[0].expires_at <= now:
            entry = fifo.popleft()
            if by_key.get(entry.key) is entry:
                del by_key[entry.key]
        # claimed or replaced entries still in the FIFO are dropped when they reach the head


def context_from_ping(campaign: Campaign, payload: dict[str, Any]) -> CallerContext | None:
    """A minimal caller context from a ping, None when the CID is missing or not a number.

    Every key other than ``CID`` and ``zipcode`` with a scalar value becomes a tag. For US/CA numbers the area
    code is taken from the CID; the routing room may supply a richer builder (state, time zone).
    """
    cid = payload.get("CID")
    if type(cid) is not str:  # the usual case first: one type check
        if isinstance(cid, int) and not isinstance(cid, bool):
            cid = str(cid)
        elif not isinstance(cid, str):
            return None
    cid = cid.strip()
    if _CID_MATCH(cid) is None:
        return None
    digits = cid.lstrip("+")
    if len(digits) == 10:
        digits = "1" + digits  # a bare NANP number
    zipcode = payload.get("zipcode")
    zip_text = str(zipcode).strip()[:10] if isinstance(zipcode, str | int) and not isinstance(zipcode, bool) else None
    tags: list[tuple[str, str]] = []
    for name, value in payload.items():
        if value is None or name == "CID" or name == "zipcode" or isinstance(value, _NESTED):
            continue
        if len(tags) >= _MAX_TAGS:
            break
        tags.append((str(name)[:64], str(value)[:_MAX_TAG_CHARS]))
    return CallerContext(
        ani="+" + digits,
        did="",
        area_code=digits[1:4] if len(digits) == 11 and digits[0] == "1" else None,
        zip=zip_text or None,
        campaign_id=campaign.id,
        tags=tuple(tags),
    )


def declined(reason: str) -> dict[str, Any]:
    """The answer to a ping we do not bid on."""
    return {"bidAmount": 0, "rejectReason": reason, "code": REJECT_CODES[reason]}


class InboundPings:
    """The logic behind the publisher ping endpoint; the HTTP handler maps the campaign key and returns JSON."""

    def __init__(
        self,
        engine_eligible: Callable[[CallerContext, datetime], list[Target]],
        pinger: RtbPinger,
        reservations: Reservations,
        *,
        on_records: Callable[[Sequence[BidRecord], str], None] | None = None,  # (records, campaign id)
        build_context: Callable[[Campaign, dict[str, Any]], CallerContext | None] = context_from_ping,
        max_expiry_s: float = DEFAULT_RESERVATION_S,
        now_fn: Callable[[], float] = time.time,
    ) -> None:
        self.engine_eligible = engine_eligible
        self.pinger = pinger
        self.reservations = reservations
        self.on_records = on_records
        self.build_context = build_context
        self.max_expiry_s = max_expiry_s
        self.now_fn = now_fn

    async def handle(self, campaign: Campaign, payload: Any, now: datetime) -> dict[str, Any]:
        """Run the auction for a would-be call and answer with the winning bid (reserved) or a decline."""
        if not campaign.enabled:
            return declined("campaign_disabled")
        ctx = self.build_context(campaign, payload) if isinstance(payload, dict) else None
        if ctx is None or ctx.ani is None:
            return declined("malformed_ping")
        eligible = self.engine_eligible(ctx, now)
        if not eligible:
            return declined("no_eligible_target")
        started = now.timestamp()
        for target in eligible:
            if target.bid_url:
                winner, records, closed_at = await self._auction(campaign, ctx, eligible, started)
                break
        else:  # static targets only (no buyer to ping): the same auction, without the per-bid objects
            closed_at = self.now_fn()
            if closed_at < started:
                closed_at = started
            winner, records = static_auction(eligible, campaign.reserve, started)
        if self.on_records is not None:
            self.on_records(records, campaign.id)
        if winner is None or winner.destination is None:
            return declined("no_bid")
        expires_at = min(winner.expires_at, closed_at + self.max_expiry_s)
        expire_in = math.floor(expires_at - closed_at)
        if expire_in < 1:
            return declined("no_bid")
        bid_id = urandom(16).hex()  # 128 random bits, as uuid4().hex without building a UUID
        reserved = Bid(
            bid_id,
            winner.target_id,
            winner.amount,
            winner.destination,
            expires_at,
            winner.min_duration_s,
            winner.received_at,
            winner.latency_ms,
        )
        self.reservations.reserve(campaign.id, ctx.ani, reserved, expires_at, now=closed_at)
        answer: dict[str, Any] = {"bidId": bid_id, "bidAmount": _format_amount(winner.amount)}
        if winner.destination.lower().startswith(("sip:", "sips:")):
            answer["sipAddress"] = winner.destination
        else:
            answer["phoneNumber"] = winner.destination
        answer["expireInSeconds"] = expire_in
        return answer

    async def _auction(
        self, campaign: Campaign, ctx: CallerContext, eligible: list[Target], started: float
    ) -> tuple[Bid | None, list[BidRecord], float]:
        """Ping the RTB targets and run the auction with them and the static ones: (winner, records, closed at)."""
        auction = Auction(reserve=campaign.reserve, started_at=started)
        auction.add_static([t for t in eligible if not t.bid_url], started)
        rejected, bids = await self.pinger.ping_all(
            eligible,
            ctx,
            timeout_s=campaign.ping_timeout_ms / 1000.0,
            allow_caller_id=campaign.allow_caller_id,
            now_fn=self.now_fn,
        )
        records: list[BidRecord] = list(rejected)
        for bid in bids:
            auction.add(bid, started)
        closed_at = max(self.now_fn(), started)
        result = auction.close(closed_at)
        records.extend(result.records)
        return result.winner, records, closed_at


_REJECTED = Outcome.REJECTED
_BELOW_RESERVE = RejectReason.BELOW_RESERVE
_WON = Outcome.WON
_LOST = Outcome.LOST
_new_record = tuple.__new__  # BidRecord(...) with every field given, minus the NamedTuple __new__ call


def _minus_revenue(target: Target) -> int:
    return -target.revenue


def static_auction(targets: Sequence[Target], reserve: int, started: float) -> tuple[Bid | None, list[BidRecord]]:
    """What ``Auction`` decides for static targets only (each bids its revenue at ``started``, never expiring).

    Same records in the same order: below-reserve rejections in target order, then the winner and the losers,
    ranked by amount (equal amounts keep target order). The winner is the ``static_bid`` of its target.
    """
    records: list[BidRecord] = []
    alive: list[Target] = []
    for t in targets:
        if t.revenue < reserve:
            records.append(_new_record(BidRecord, (t.id, t.revenue, _REJECTED, _BELOW_RESERVE, 0.0, "static:" + t.id)))
        else:
            alive.append(t)
    if not alive:
        return None, records
    if len(alive) > 1:
        alive.sort(key=_minus_revenue)  # stable: equal amounts (all received at ``started``) keep their order
    outcome = _WON
    for t in alive:
        records.append(_new_record(BidRecord, (t.id, t.revenue, outcome, None, 0.0, "static:" + t.id)))
        outcome = _LOST
    return static_bid(alive[0], started), records


@lru_cache(maxsize=4096)
def _format_amount(amount: int) -> str:
    """``format_amount`` cached: answers repeat the same few amounts, and Decimal formatting costs microseconds."""
    return format_amount(amount)
