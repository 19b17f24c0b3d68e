"""Answering publishers' RTB pings (``POST /api/v1/rtb/{campaign_key}/ping``) and reserving the winner.

A ping runs the call's auction ahead of the call: static targets at their revenue plus RTB bids. The winner is
reserved under (campaign id, CID) until the answer's expiry; the call, when it arrives from that CID, claims it.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from dce.bidding.auction import Auction
from dce.bidding.bids import Bid, BidRecord, format_amount
from dce.bidding.rtb import RtbPinger
from dce.routing.model import CallerContext, Campaign, Target

DEFAULT_RESERVATION_S = 60.0  # the longest an answer promises, whatever the winning bid says
_CID = re.compile(r"\+?[0-9]{7,15}")
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
    if isinstance(cid, int) and not isinstance(cid, bool):
        cid = str(cid)
    if not isinstance(cid, str) or not _CID.fullmatch(cid.strip()):
        return None
    digits = cid.strip().lstrip("+")
    if len(digits) == 10:
        digits = "1" + digits  # a bare NANP number
    ani = "+" + digits
    zipcode = payload.get("zipcode")
    zip_text = str(zipcode).strip()[:10] if isinstance(zipcode, str | int) and not isinstance(zipcode, bool) else None
    tags: list[tuple[str, str]] = []
    for name, value in payload.items():
        if name in ("CID", "zipcode") or isinstance(value, dict | list) or value is None:
            continue
        if len(tags) >= _MAX_TAGS:
            break
        tags.append((str(name)[:64], str(value)[:_MAX_TAG_CHARS]))
    area_code = digits[1:4] if digits.startswith("1") and len(digits) == 11 else None
    return CallerContext(
        ani=ani,
        did="",
        area_code=area_code,
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
        on_records: Callable[[Sequence[BidRecord]], None] | None = None,
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
        auction = Auction(reserve=campaign.reserve, started_at=started)
        auction.add_static((t for t in eligible if not t.bid_url), started)
        records: list[BidRecord] = []
        if any(t.bid_url for t in eligible):
            rejected, bids = await self.pinger.ping_all(
                eligible,
                ctx,
                timeout_s=campaign.ping_timeout_ms / 1000.0,
                allow_caller_id=campaign.allow_caller_id,
                now_fn=self.now_fn,
            )
            records.extend(rejected)
            for bid in bids:
                auction.add(bid, started)
        closed_at = max(self.now_fn(), started)
        result = auction.close(closed_at)
        records.extend(result.records)
        if self.on_records is not None:
            self.on_records(records)
        winner = result.winner
        if winner is None or winner.destination is None:
            return declined("no_bid")
        expires_at = min(winner.expires_at, closed_at + self.max_expiry_s)
        expire_in = math.floor(expires_at - closed_at)
        if expire_in < 1:
            return declined("no_bid")
        bid_id = uuid.uuid4().hex
        reserved = winner._replace(bid_id=bid_id, expires_at=expires_at)
        self.reservations.reserve(campaign.id, ctx.ani, reserved, expires_at, now=closed_at)
        answer: dict[str, Any] = {"bidId": bid_id, "bidAmount": format_amount(winner.amount)}
        if winner.destination.lower().startswith(("sip:", "sips:")):
            answer["sipAddress"] = winner.destination
        else:
            answer["phoneNumber"] = winner.destination
        answer["expireInSeconds"] = expire_in
        return answer
