"""Storing and reading the bid log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.log import BidLogEntry
from dce.db.bid_models import BidRow
from dce.db.queries import insert_new, page, table_of

bids = table_of(BidRow)


def _row(entry: BidLogEntry) -> dict[str, Any]:
    bid = entry.record
    row = {**entry._asdict(), **bid._asdict()}
    del row["record"]
    row.update(outcome=str(bid.outcome), latency_ms=float(bid.latency_ms),
               reject_reason=str(bid.reject_reason) if bid.reject_reason is not None else None)
    return row


async def insert_bids(engine: AsyncEngine, entries: Sequence[BidLogEntry]) -> None:
    """Store bid log entries in one transaction; an id already stored is left as it is (retries are safe)."""
    if not entries:
        return
    async with engine.begin() as connection:
        await insert_new(connection, bids, [_row(entry) for entry in entries], bids.c.id)


async def list_bids(engine: AsyncEngine, *, limit: int = 50, offset: int = 0, call_id: str | None = None,
                    target_id: str | None = None, buyer_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Bids newest first, optionally for one call, target or buyer, and the total matching."""
    wanted = {"call_id": call_id, "target_id": target_id, "buyer_id": buyer_id}
    where = [bids.c[name] == value for name, value in wanted.items() if value is not None]
    rows, total = await page(engine, bids, where=where, order_by=[bids.c.at.desc(), bids.c.id], limit=limit,
                             offset=offset)
    return [dict(row._mapping) for row in rows], total
