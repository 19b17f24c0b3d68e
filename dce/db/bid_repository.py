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
    record = entry.record
    return {
        "id": entry.id,
        "at": entry.at,
        "call_id": entry.call_id,
        "campaign_id": entry.campaign_id,
        "target_id": record.target_id,
        "buyer_id": entry.buyer_id,
        "bid_id": record.bid_id,
        "amount": record.amount,
        "outcome": str(record.outcome),
        "reject_reason": str(record.reject_reason) if record.reject_reason is not None else None,
        "latency_ms": float(record.latency_ms),
    }


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
