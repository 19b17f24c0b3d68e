"""Outbound real-time bidding: ping every RTB target in parallel, bounded by one timeout for the whole round.

The session is shared (connection reuse and keep-alive come from its connector); the pinger never closes it.
Answers after the timeout are dropped as ``late``, unreadable ones as ``malformed``, non-2xx and transport
errors as ``error``, amount 0 as ``no_bid``. Surviving bids go to an ``Auction``, which records won/lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from dce.bidding.bids import Bid, BidRecord, MalformedBid, Outcome, RejectReason, parse_bid
from dce.routing.model import CallerContext, Target

MIN_TIMEOUT_S = 0.05
MAX_ANSWER_BYTES = 64 * 1024


def mask_number(number: str | None) -> str | None:
    """Hide the last four digits: ``+12125551234`` -> ``+1212555****``."""
    if not number:
        return number
    keep = max(len(number) - 4, 0)
    return number[:keep] + "*" * (len(number) - keep)


def ping_body(ctx: CallerContext, *, allow_caller_id: bool, call_id: str | None = None) -> dict[str, Any]:
    """The JSON a buyer receives: the caller context, with the caller's number masked unless allowed."""
    return {
        "callId": call_id,
        "CID": ctx.ani if allow_caller_id else mask_number(ctx.ani),
        "did": ctx.did,
        "state": ctx.state,
        "zipcode": ctx.zip,
        "areaCode": ctx.area_code,
        "campaign": ctx.campaign_id,
        "publisher": ctx.publisher_id,
        "tags": dict(ctx.tags),
    }


class RtbPinger:
    """Pings buyers' bid endpoints through one shared ``aiohttp.ClientSession``.

    ``counts`` holds rejections by reason since creation; ``on_record`` (optional) sees every rejection record
    as it happens (hook a Prometheus counter there).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        on_record: Callable[[BidRecord], None] | None = None,
    ) -> None:
        self.session = session
        self.on_record = on_record
        self.counts: Counter[str] = Counter()

    async def ping_all(
        self,
        targets: Sequence[Target],
        ctx: CallerContext,
        *,
        timeout_s: float,
        allow_caller_id: bool,
        now_fn: Callable[[], float] = time.time,
        call_id: str | None = None,
    ) -> tuple[list[BidRecord], list[Bid]]:
        """Ping each target with a ``bid_url``; return (records of rejected answers, bids with amount > 0).

        ``timeout_s`` (at least 0.05) bounds the whole round; ``now_fn`` gives the clock (epoch seconds) used for
        ``received_at`` and latency.
        """
        timeout_s = max(timeout_s, MIN_TIMEOUT_S)
        rtb = [t for t in targets if t.bid_url]
        records: list[BidRecord] = []
        bids: list[Bid] = []
        if not rtb:
            return records, bids
        body = json.dumps(ping_body(ctx, allow_caller_id=allow_caller_id, call_id=call_id)).encode()
        started = now_fn()
        tasks = {asyncio.ensure_future(self._ping(t, body, started, now_fn)): t for t in rtb}
        try:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        finally:  # also when the caller is cancelled (the call hung up): no ping outlives the round
            for task in tasks:
                if not task.done():
                    task.cancel()
        for task, target in tasks.items():
            if task in pending:
                records.append(self._reject(target.id, RejectReason.LATE, timeout_s * 1000.0))
                continue
            outcome = task.result()
            if isinstance(outcome, Bid):
                if outcome.amount == 0:
                    records.append(self._reject(target.id, RejectReason.NO_BID, outcome.latency_ms, outcome.bid_id))
                else:
                    bids.append(outcome)
            else:
                reason, latency_ms = outcome
                records.append(self._reject(target.id, reason, latency_ms))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return records, bids

    def _reject(self, target_id: str, reason: RejectReason, latency_ms: float, bid_id: str | None = None) -> BidRecord:
        record = BidRecord(target_id, 0, Outcome.REJECTED, reason, latency_ms, bid_id or None)
        self.counts[reason] += 1
        if self.on_record is not None:
            self.on_record(record)
        return record

    async def _ping(
        self, target: Target, body: bytes, started: float, now_fn: Callable[[], float]
    ) -> Bid | tuple[RejectReason, float]:
        assert target.bid_url is not None
        try:
            async with self.session.post(
                target.bid_url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, OSError, ValueError):
            return RejectReason.ERROR, (now_fn() - started) * 1000.0
        received_at = now_fn()
        latency_ms = (received_at - started) * 1000.0
        if not 200 <= status < 300:
            return RejectReason.ERROR, latency_ms
        if status == 204 or not raw.strip():
            return Bid("", target.id, 0, None, received_at, 0, received_at, latency_ms)  # no content: no bid
        if len(raw) > MAX_ANSWER_BYTES:
            return RejectReason.MALFORMED, latency_ms
        try:
            payload = json.loads(raw)
            return parse_bid(
                payload,
                target_id=target.id,
                received_at=received_at,
                default_destination=target.destination,
                latency_ms=latency_ms,
            )
        except (ValueError, MalformedBid):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return RejectReason.MALFORMED, latency_ms
