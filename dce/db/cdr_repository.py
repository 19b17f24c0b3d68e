"""Storing and reading call detail records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord, ConversionFrom, Disposition, HangupSide, SaleTerms
from dce.db.models import CallRecordRow
from dce.db.queries import find, insert_new, record, table_of, values
from dce.db.report_repository import list_calls

calls = table_of(CallRecordRow)

# Column order of a listed row: every CDR field, then the derived durations.
COLUMNS: tuple[str, ...] = tuple(column.name for column in calls.columns)


def cdr_to_row(cdr: CallDetailRecord) -> dict[str, Any]:
    """The ``calls`` row for ``cdr``."""
    return values(
        cdr,
        omit=("terms",),
        disposition=str(cdr.disposition),
        hangup_side=str(cdr.hangup_side) if cdr.hangup_side is not None else None,
        extra=dict(cdr.extra),
        duration_s=cdr.duration_s,
        billable_s=cdr.billable_s,
        **_terms_row(cdr.terms),
    )


_TERM_COLUMNS = tuple(f.name for f in fields(SaleTerms))


def _terms_row(terms: SaleTerms | None) -> dict[str, Any]:
    if terms is None:
        return dict.fromkeys(_TERM_COLUMNS)
    return values(terms, conversion_from=str(terms.conversion_from))


def row_terms(row: Mapping[str, Any]) -> SaleTerms | None:
    """The sale terms stored on a calls row, None for a call that was not a marketplace sale."""
    if row.get("campaign_id") is None:
        return None
    return SaleTerms(
        campaign_id=row["campaign_id"],
        publisher_id=row.get("publisher_id"),
        buyer_id=row.get("buyer_id"),
        target_id=row.get("target_id"),
        revenue=int(row.get("revenue") or 0),
        conversion_s=row.get("conversion_s"),
        conversion_from=ConversionFrom(row.get("conversion_from") or ConversionFrom.ANSWER),
        payout_fixed=row.get("payout_fixed"),
        payout_share_bp=row.get("payout_share_bp"),
        duplicate_days=row.get("duplicate_days"),
        duplicate_after=row.get("duplicate_after") or "connected",
        bid_id=row.get("bid_id"),
    )


def row_to_cdr(row: Mapping[str, Any]) -> CallDetailRecord:
    """Rebuild a :class:`CallDetailRecord` from a row dict (as returned by :func:`list_cdrs`)."""
    return record(
        CallDetailRecord,
        row,
        disposition=Disposition(row["disposition"]),
        hangup_side=HangupSide(row["hangup_side"]) if row["hangup_side"] is not None else None,
        extra=dict(row["extra"] or {}),
        terms=row_terms(row),
    )


async def insert_cdrs(engine: AsyncEngine, cdrs: Sequence[CallDetailRecord]) -> None:
    """Store ``cdrs`` in one transaction. Idempotent: a call_id already stored is left as it is."""
    if not cdrs:
        return
    async with engine.begin() as connection:
        await insert_new(connection, calls, [cdr_to_row(cdr) for cdr in cdrs], calls.c.call_id)


async def list_cdrs(
    engine: AsyncEngine,
    limit: int = 50,
    offset: int = 0,
    *,
    disposition: str | None = None,
    did: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of stored calls, newest INVITE first, and the total matching the filters
    (:func:`dce.db.report_repository.list_calls` with these filters).

    Each row is a dict with every CDR field (times as aware UTC datetimes) plus ``duration_s``/``billable_s``.
    """
    filters = {"disposition": None if disposition is None else str(disposition), "did": did}
    return await list_calls(engine, limit=limit, offset=offset, since=since, until=until, filters=filters,
                            tenant=tenant)


async def get_cdr(engine: AsyncEngine, call_id: str) -> CallDetailRecord | None:
    """The stored record for ``call_id``, or None."""
    row = await find(engine, calls.c.call_id, call_id)
    return row_to_cdr(row._mapping) if row is not None else None
