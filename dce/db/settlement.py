"""Settling stored CDRs into the ledger: duplicate check, webhook conversions, :func:`decide`, the sale entry and the
calls row's settlement columns, set-based and one transaction per batch.

* :func:`settle_pending` settles every call that ended at least ``grace_s`` before ``now`` and is not settled yet,
  oldest INVITE first, ``batch`` calls per transaction (a handful of statements per batch, whatever its size).
* :func:`settle_one` settles one call now (if it is not settled yet).
* :func:`record_conversion` stores a buyer's webhook conversion; when the call already settled unconverted it
  settles the conversion at once (entry ``conversion:<call_id>``).
* :func:`refund_call` reverses a call's sale once (entry ``refund:<call_id>``).

Idempotent: a settled row (``settled_at`` set) is never settled again, and entry keys (``sale:<call_id>``) are
unique. Concurrent settlers and webhooks serialise on the calls rows (``SELECT ... FOR UPDATE`` on PostgreSQL;
on SQLite each such transaction takes the write lock before it reads).

Duplicates: a call is a duplicate when an earlier call (by INVITE time, then call id) from the same caller to the
same campaign, within ``duplicate_days`` before it, connected (``duplicate_after="connected"``: answered) or
converted (``"converted"``). Only stored calls count: a longer earlier call whose CDR is not written yet is not
seen, nor (for ``converted``) an earlier call not settled yet — settling oldest first makes that rare.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Text, bindparam, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.billing import ledger
from dce.billing.cdr import CallDetailRecord, Disposition
from dce.billing.conversion import DUPLICATE, Settlement, WebhookConversion, decide
from dce.db.cdr_repository import row_terms
from dce.db.ledger_repository import StoredEntry, conversions, get_entry, post, post_many
from dce.db.models import CallRecordRow
from dce.db.queries import exists, record, sqlite_write_lock, table_of

calls = table_of(CallRecordRow)

SALE_KEY = "sale:{}"
CONVERSION_KEY = "conversion:{}"
IDS_PER_ROUND = 50  # settle_pending orders at most batch * IDS_PER_ROUND pending ids at a time


class CallNotFound(LookupError):
    pass


class AlreadyConverted(Exception):
    """A second webhook conversion for a call."""


class NotASale(Exception):
    """The call was not sold to a buyer (no sale terms), so it cannot convert."""


class NothingToRefund(Exception):
    pass


class AlreadyRefunded(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Settled:
    """One call as settlement left it."""

    call_id: str
    duplicate: bool
    settlement: Settlement
    entry_id: int | None  # the sale entry this settlement created, if any


@dataclass(frozen=True, slots=True)
class ConversionOutcome:
    """:func:`record_conversion`: the stored webhook and what it changed now."""

    conversion: WebhookConversion
    settled_now: Settled | None  # the call had settled unconverted: settled as a conversion now
    state: str  # "pending" (settles with the call), "converted_now", "already_converted", "duplicate"


_UPDATE_SETTLED = (
    update(calls)
    .where(calls.c.call_id == bindparam("b_call_id"), calls.c.settled_at.is_(None))
    .values(
        converted=bindparam("b_converted"),
        duplicate=bindparam("b_duplicate"),
        settled_revenue=bindparam("b_revenue"),
        settled_payout=bindparam("b_payout"),
        settled_at=bindparam("b_settled_at"),
    )
)

_PG_UPDATE_SETTLED = text(
    "UPDATE calls SET converted = v.converted, duplicate = v.duplicate, settled_revenue = v.revenue, "
    "settled_payout = v.payout, settled_at = :settled_at "
    "FROM unnest(:ids, :converted, :duplicate, :revenue, :payout) AS v(call_id, converted, duplicate, revenue, payout) "
    "WHERE calls.call_id = v.call_id AND calls.settled_at IS NULL"
).bindparams(
    bindparam("ids", type_=postgresql.ARRAY(Text)), bindparam("converted", type_=postgresql.ARRAY(Boolean)),
    bindparam("duplicate", type_=postgresql.ARRAY(Boolean)), bindparam("revenue", type_=postgresql.ARRAY(BigInteger)),
    bindparam("payout", type_=postgresql.ARRAY(BigInteger)), bindparam("settled_at", type_=DateTime(timezone=True)),
)


# what settling reads of a call: its times, caller, sale terms and settlement state (not the media counters etc.)
_SETTLE_COLUMNS = [
    calls.c[name]
    for name in (
        "call_id", "caller", "called", "did", "invite_at", "answer_at", "dial_at", "end_at", "disposition",
        "final_code", "campaign_id", "publisher_id", "buyer_id", "target_id", "revenue", "conversion_s",
        "conversion_from", "payout_fixed", "payout_share_bp", "duplicate_days", "duplicate_after", "bid_id",
        "converted", "duplicate", "settled_at",
    )
]


def _cdr(row: dict[str, Any]) -> CallDetailRecord:
    """The CDR as far as settlement needs it (leg ids, destination and counters left empty)."""
    return record(CallDetailRecord, row, a_leg_call_id="", b_leg_call_id=None, destination=None,
                  disposition=Disposition(row["disposition"]), terms=row_terms(row))


def _is_sqlite(connection: AsyncConnection) -> bool:
    return connection.dialect.name == "sqlite"


async def _locked_rows(connection: AsyncConnection, call_ids: Sequence[str], *, pending_only: bool) -> list[Any]:
    """The calls rows of ``call_ids`` (only unsettled ones when ``pending_only``), oldest INVITE first, locked
    against concurrent settlers and webhooks until the transaction ends."""
    where = [calls.c.call_id.in_(call_ids)]
    if pending_only:
        where.append(calls.c.settled_at.is_(None))
    await sqlite_write_lock(connection, calls)  # before it reads anything
    query = select(*_SETTLE_COLUMNS).where(*where).order_by(calls.c.invite_at, calls.c.call_id)
    if not _is_sqlite(connection):
        query = query.with_for_update()
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def _webhooks(connection: AsyncConnection, call_ids: Sequence[str]) -> dict[str, WebhookConversion]:
    query = select(conversions).where(conversions.c.call_id.in_(call_ids))
    return {row.call_id: record(WebhookConversion, row) for row in await connection.execute(query)}


class _History:
    """Earlier calls of the batch's (caller, campaign) pairs, for the duplicate rule; the batch's own calls are in
    it too, and their conversion is recorded as they settle (oldest first)."""

    def __init__(self) -> None:
        self.by_pair: dict[tuple[str, str], list[list[Any]]] = {}
        self.by_call: dict[str, list[Any]] = {}

    @classmethod
    async def load(cls, connection: AsyncConnection, cdrs: Sequence[CallDetailRecord]) -> _History:
        history = cls()
        ruled = [c for c in cdrs if c.terms is not None and c.terms.duplicate_days]
        if not ruled:
            return history
        starts = [c.invite_at - timedelta(days=c.terms.duplicate_days or 0) for c in ruled]  # type: ignore[union-attr]
        query = select(
            calls.c.call_id, calls.c.caller, calls.c.campaign_id, calls.c.invite_at,
            calls.c.answer_at.is_not(None).label("answered"), calls.c.converted,
        ).where(
            calls.c.caller.in_(sorted({c.caller for c in ruled})),
            calls.c.campaign_id.in_(sorted({c.terms.campaign_id for c in ruled})),  # type: ignore[union-attr]
            calls.c.invite_at > min(starts),
            calls.c.invite_at <= max(c.invite_at for c in ruled),
        )
        for row in await connection.execute(query):
            record = [row.invite_at, row.call_id, bool(row.answered), bool(row.converted)]
            history.by_pair.setdefault((row.caller, row.campaign_id), []).append(record)
            history.by_call[row.call_id] = record
        return history

    def is_duplicate(self, cdr: CallDetailRecord) -> bool:
        terms = cdr.terms
        if terms is None or not terms.duplicate_days:
            return False
        since = cdr.invite_at - timedelta(days=terms.duplicate_days)
        index = 3 if terms.duplicate_after == "converted" else 2
        me = (cdr.invite_at, cdr.call_id)
        return any(
            record[index] and since < record[0] and (record[0], record[1]) < me
            for record in self.by_pair.get((cdr.caller, terms.campaign_id), ())
        )

    def converted(self, call_id: str, converted: bool) -> None:
        record = self.by_call.get(call_id)
        if record is not None:
            record[3] = converted


def _sale(cdr: CallDetailRecord, settlement: Settlement, kind: str = ledger.SALE) -> ledger.JournalEntry | None:
    if not settlement.converted or (settlement.revenue == 0 and settlement.payout == 0) or cdr.terms is None:
        return None
    terms = cdr.terms
    return ledger.sale_entry(
        cdr.call_id, terms.buyer_id, terms.publisher_id, settlement.revenue, settlement.payout, cdr.end_at,
        kind=kind, memo=f"call {cdr.call_id} ({settlement.reason})",
    )


async def _settle_rows(connection: AsyncConnection, rows: list[dict[str, Any]], now: datetime) -> list[Settled]:
    """Settle ``rows`` (locked, unsettled, oldest first) inside the caller's transaction."""
    if not rows:
        return []
    cdrs = [_cdr(row) for row in rows]
    ids = [cdr.call_id for cdr in cdrs]
    webhooks = await _webhooks(connection, ids)
    history = await _History.load(connection, cdrs)
    decided: list[tuple[CallDetailRecord, bool, Settlement]] = []
    sales: list[ledger.JournalEntry] = []
    for cdr in cdrs:
        duplicate = history.is_duplicate(cdr)
        settlement = decide(cdr, duplicate=duplicate, webhook=webhooks.get(cdr.call_id))
        history.converted(cdr.call_id, settlement.converted)
        decided.append((cdr, duplicate, settlement))
        sale = _sale(cdr, settlement)
        if sale is not None:
            sales.append(sale)
    created = await post_many(connection, sales)
    if _is_sqlite(connection):
        await connection.execute(
            _UPDATE_SETTLED,
            [
                {
                    "b_call_id": cdr.call_id, "b_converted": settlement.converted, "b_duplicate": duplicate,
                    "b_revenue": settlement.revenue, "b_payout": settlement.payout, "b_settled_at": now,
                }
                for cdr, duplicate, settlement in decided
            ],
        )
    else:
        await connection.execute(_PG_UPDATE_SETTLED, {
            "ids": [cdr.call_id for cdr, _, _ in decided],
            "converted": [settlement.converted for _, _, settlement in decided],
            "duplicate": [duplicate for _, duplicate, _ in decided],
            "revenue": [settlement.revenue for _, _, settlement in decided],
            "payout": [settlement.payout for _, _, settlement in decided],
            "settled_at": now,
        })
    return [
        Settled(cdr.call_id, duplicate, settlement, created.get(SALE_KEY.format(cdr.call_id)))
        for cdr, duplicate, settlement in decided
    ]


async def settle_calls(engine: AsyncEngine, call_ids: Sequence[str], *, now: datetime) -> list[Settled]:
    """Settle the unsettled calls among ``call_ids`` in one transaction (whatever their end time)."""
    if not call_ids:
        return []
    async with engine.begin() as connection:
        rows = await _locked_rows(connection, call_ids, pending_only=True)
        return await _settle_rows(connection, rows, now)


async def settle_pending(engine: AsyncEngine, *, now: datetime, grace_s: float = 2.0, batch: int = 1000,
                         on_settled: Callable[[list[Settled]], Awaitable[None]] | None = None) -> int:
    """Settle every unsettled call that ended at or before ``now - grace_s``, oldest INVITE first, ``batch`` calls
    per transaction. Returns how many calls it settled (0 when there was nothing to do). ``on_settled`` hears each
    committed batch (e.g. to post back the conversions)."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    cutoff = now - timedelta(seconds=grace_s)
    pending = (
        select(calls.c.call_id)
        .where(calls.c.settled_at.is_(None), calls.c.end_at <= cutoff)
        .order_by(calls.c.invite_at, calls.c.call_id)
        .limit(batch * IDS_PER_ROUND)
    )
    total = 0
    while True:
        async with engine.connect() as connection:
            ids = list((await connection.execute(pending)).scalars())
        for start in range(0, len(ids), batch):
            settled = await settle_calls(engine, ids[start:start + batch], now=now)
            total += len(settled)
            if on_settled is not None and settled:
                await on_settled(settled)
        if len(ids) < batch * IDS_PER_ROUND:
            return total


async def settle_one(engine: AsyncEngine, call_id: str, *, now: datetime | None = None) -> Settled | None:
    """Settle one call now, whatever its end time; None when it is unknown or settled already."""
    settled = await settle_calls(engine, [call_id], now=now or datetime.now(UTC))
    return settled[0] if settled else None


async def record_conversion(
    engine: AsyncEngine, call_id: str, *, revenue: int | None = None, source: str = "webhook",
    now: datetime | None = None,
) -> ConversionOutcome:
    """Store the buyer's conversion of ``call_id`` (one per call). A call not settled yet converts when it settles;
    one already settled unconverted (and not a duplicate) is settled as a conversion now.

    Raises :class:`CallNotFound`, :class:`NotASale` (no sale terms), :class:`AlreadyConverted` (a second one)."""
    now = now or datetime.now(UTC)
    conversion = WebhookConversion(call_id=call_id, revenue=revenue, at=now, source=source)
    async with engine.begin() as connection:
        rows = await _locked_rows(connection, [call_id], pending_only=False)
        if not rows:
            raise CallNotFound(call_id)
        cdr = _cdr(rows[0])
        if cdr.terms is None:
            raise NotASale(call_id)
        # the call row is locked: no other webhook for it can slip between this check and the insert
        if await exists(connection, conversions.c.call_id, call_id):
            raise AlreadyConverted(call_id)
        await connection.execute(
            conversions.insert().values(call_id=call_id, source=source, revenue=revenue, at=now)
        )
        row = rows[0]
        if row["settled_at"] is None:
            return ConversionOutcome(conversion, None, "pending")
        if row["converted"]:
            return ConversionOutcome(conversion, None, "already_converted")
        if row["duplicate"]:
            return ConversionOutcome(conversion, None, DUPLICATE)
        settlement = decide(cdr, duplicate=False, webhook=conversion)
        sale = _sale(cdr, settlement, kind=ledger.CONVERSION)
        entry_id = None
        if sale is not None:
            entry_id = (await post_many(connection, [sale])).get(sale.key)
        await connection.execute(
            update(calls).where(calls.c.call_id == call_id).values(
                converted=settlement.converted, settled_revenue=settlement.revenue, settled_payout=settlement.payout,
            )
        )
    return ConversionOutcome(conversion, Settled(call_id, False, settlement, entry_id), "converted_now")


async def sale_of(engine: AsyncEngine | AsyncConnection, call_id: str) -> StoredEntry | None:
    """The call's sale entry (at settlement, or by a late webhook conversion), if any."""
    for key in (SALE_KEY.format(call_id), CONVERSION_KEY.format(call_id)):
        stored = await get_entry(engine, key)
        if stored is not None:
            return stored
    return None


async def refund_call(engine: AsyncEngine, call_id: str, *, actor: str, reason: str,
                      now: datetime | None = None) -> StoredEntry:
    """Reverse the call's sale once (``refund:<call_id>``: the buyer is credited back, the publisher's payout and
    the exchange's margin taken back). Raises :class:`CallNotFound`, :class:`NothingToRefund`,
    :class:`AlreadyRefunded`."""
    async with engine.begin() as connection:
        if not await _locked_rows(connection, [call_id], pending_only=False):
            raise CallNotFound(call_id)
        sale = await sale_of(connection, call_id)
        if sale is None:
            raise NothingToRefund(call_id)
        entry = ledger.refund_entry(call_id, sale.entry, actor=actor, reason=reason, at=now or datetime.now(UTC))
        stored = await post(connection, entry)
        if not stored.created:
            raise AlreadyRefunded(call_id)
        return stored
