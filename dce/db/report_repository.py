"""Reports over the ``calls`` table: the summary (one aggregate query per request) and the call detail list.

The summary counts and sums per group (campaign, publisher, buyer, target, inbound trunk, UTC hour or UTC day) over a
required ``[since, until)`` range on ``invite_at``; the range and the optional term filters hit the ``(x_id,
invite_at)`` and ``invite_at`` indexes. The totals row is added up from the group rows (every figure is a count or a
sum, so no second scan is needed). Money stays integer micros here; the HTTP layer formats it.

``tenant`` (``{"buyer_id": ...}`` or ``{"publisher_id": ...}``, from ``http_api.permissions.tenant_filter``) scopes
every query to one buyer's or seller's calls, on top of (AND) the caller's own filters: a seller asking for another
publisher's figures gets empty groups, never that publisher's calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Select, case, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.db.models import CallRecordRow
from dce.db.queries import page, table_of

calls = table_of(CallRecordRow)

GroupBy = Literal["campaign", "publisher", "buyer", "target", "trunk", "hour", "day"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)
TERM_GROUPS: dict[str, str] = {"campaign": "campaign_id", "publisher": "publisher_id", "buyer": "buyer_id",
                               "target": "target_id", "trunk": "trunk"}
TENANT_COLUMNS: frozenset[str] = frozenset({"buyer_id", "publisher_id"})
FILTERS: tuple[str, ...] = ("campaign_id", "publisher_id", "buyer_id", "target_id", "trunk")


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One group of the summary (or the totals, ``is_total``). Money in micros.

    ``key`` is the campaign/publisher/buyer/target id or the trunk name (None for calls without one) or, for
    hour/day, the start of the UTC bucket as an aware datetime; None on the totals row.
    """

    key: str | datetime | None
    incoming: int
    connected: int
    converted: int
    blocked: int
    duplicates: int
    revenue: int
    payout: int
    connected_billable_s: int  # sum of billable_s over the connected calls
    is_total: bool = False

    @property
    def profit(self) -> int:
        return self.revenue - self.payout

    @property
    def average_duration_s(self) -> float | None:
        """Mean billable seconds of the connected calls, None when none connected."""
        return self.connected_billable_s / self.connected if self.connected else None

    @property
    def conversion_rate(self) -> float | None:
        """converted / connected, None when none connected."""
        return self.converted / self.connected if self.connected else None


# the counts and sums of a SummaryRow, each an aggregate column of the summary query
_FIGURES = ("incoming", "connected", "converted", "blocked", "duplicates", "revenue", "payout", "connected_billable_s")


def _bucket(dialect: str, group_by: str) -> ColumnElement[Any]:
    """The UTC hour/day bucket of invite_at: a naive UTC timestamp (PostgreSQL) or ISO text (SQLite)."""
    if dialect == "postgresql":
        # the unit as SQL text, not a bind parameter: the expression must match statistics/indexes defined on it
        unit = literal_column("'hour'" if group_by == "hour" else "'day'")
        return func.date_trunc(unit, calls.c.invite_at.op("AT TIME ZONE")(literal_column("'UTC'")))
    if dialect == "sqlite":  # stored as naive UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]"
        fmt = "%Y-%m-%d %H:00:00" if group_by == "hour" else "%Y-%m-%d 00:00:00"
        return func.strftime(fmt, calls.c.invite_at)
    raise NotImplementedError(f"hour/day buckets on {dialect!r}")


def _bucket_value(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _scoped(tenant: Mapping[str, str] | None) -> list[ColumnElement[bool]]:
    """The conditions that keep one buyer's or seller's calls."""
    where = []
    for name, value in (tenant or {}).items():
        if name not in TENANT_COLUMNS:
            raise ValueError(f"unknown tenant column {name!r}; expected one of {', '.join(sorted(TENANT_COLUMNS))}")
        where.append(calls.c[name] == value)
    return where


def summary_query(
    dialect: str, *, since: datetime, until: datetime, group_by: str, filters: Mapping[str, str | None] | None = None,
    tenant: Mapping[str, str] | None = None,
) -> Select[Any]:
    """The one aggregate statement behind :func:`summary` (exposed for EXPLAIN in the bench)."""
    if group_by not in GROUP_BYS:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BYS)}, got {group_by!r}")
    key = calls.c[TERM_GROUPS[group_by]] if group_by in TERM_GROUPS else _bucket(dialect, group_by)
    key = key.label("key")
    connected = calls.c.answer_at.is_not(None)
    query = select(
        key,
        func.count().label("incoming"),
        func.count(calls.c.answer_at).label("connected"),
        func.count(case((calls.c.converted.is_(True), 1))).label("converted"),
        func.count(case((calls.c.disposition == "blocked", 1))).label("blocked"),
        func.count(case((calls.c.duplicate.is_(True), 1))).label("duplicates"),
        func.coalesce(func.sum(calls.c.settled_revenue), 0).label("revenue"),
        func.coalesce(func.sum(calls.c.settled_payout), 0).label("payout"),
        func.coalesce(func.sum(case((connected, calls.c.billable_s))), 0).label("connected_billable_s"),
    ).where(calls.c.invite_at >= since, calls.c.invite_at < until)
    for name, value in (filters or {}).items():
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}; expected one of {', '.join(FILTERS)}")
        if value is not None:
            query = query.where(calls.c[name] == value)
    return query.where(*_scoped(tenant)).group_by(key)


async def _execute(connection: AsyncConnection, query: Select[Any]) -> list[Any]:
    if connection.dialect.name == "postgresql":
        # JIT-compiling one aggregate costs more (~100+ ms) than it saves on a million rows; the best plan depends
        # on the range (a day: index range scan; a month: parallel seq scan), so no generic plan of the prepared
        # statement after five runs.
        await connection.execute(text("SET LOCAL jit = off"))
        await connection.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    return list(await connection.execute(query))


async def summary(
    engine: AsyncEngine | AsyncConnection,
    *,
    since: datetime,
    until: datetime,
    group_by: str,
    filters: Mapping[str, str | None] | None = None,
    tenant: Mapping[str, str] | None = None,
) -> list[SummaryRow]:
    """Per-group counts and sums of the calls whose INVITE is in ``[since, until)``, then the totals row.

    ``group_by``: campaign|publisher|buyer|target (the id), trunk (the inbound trunk's name; calls without one
    form the group None) or hour|day (UTC bucket starts, aware datetimes). ``filters``: any of
    campaign_id/publisher_id/buyer_id/target_id/trunk;
    ``tenant``: only that buyer's or publisher's calls count.
    Groups come ordered by key (None last); the last row is the totals (``is_total``), present even when empty.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    query = summary_query(engine.dialect.name, since=since, until=until, group_by=group_by, filters=filters,
                          tenant=tenant)
    if isinstance(engine, AsyncConnection):
        rows = await _execute(engine, query)
    else:
        async with engine.begin() as connection:
            rows = await _execute(connection, query)
    bucketed = group_by not in TERM_GROUPS
    groups = [
        SummaryRow(
            key=_bucket_value(row.key) if bucketed and row.key is not None else row.key,
            **{name: int(row._mapping[name]) for name in _FIGURES},
        )
        for row in rows
    ]
    groups.sort(key=lambda g: (g.key is None, g.key if g.key is not None else ""))
    totals = SummaryRow(key=None, is_total=True, **{name: sum(getattr(g, name) for g in groups) for name in _FIGURES})
    return [*groups, totals]


CALL_FILTERS: tuple[str, ...] = ("campaign_id", "publisher_id", "buyer_id", "target_id", "caller", "disposition",
                                 "did", "trunk")


def _calls_filtered(
    *,
    since: datetime | None,
    until: datetime | None,
    converted: bool | None,
    filters: Mapping[str, str | None],
    tenant: Mapping[str, str] | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(calls.c.invite_at >= since)
    if until is not None:
        where.append(calls.c.invite_at < until)
    if converted is True:
        where.append(calls.c.converted.is_(True))
    elif converted is False:  # not converted, including calls settlement has not marked (NULL)
        where.append(func.coalesce(calls.c.converted, False).is_(False))
    for name, value in filters.items():
        if name not in CALL_FILTERS:
            raise ValueError(f"unknown filter {name!r}; expected one of {', '.join(CALL_FILTERS)}")
        if value is not None:
            where.append(calls.c[name] == value)
    return where + _scoped(tenant)


async def list_calls(
    engine: AsyncEngine,
    *,
    limit: int = 50,
    offset: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
    converted: bool | None = None,
    filters: Mapping[str, str | None] | None = None,
    tenant: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of calls, newest INVITE first, and the total matching: the call detail list of the reports.

    ``filters``: any of campaign_id/publisher_id/buyer_id/target_id/caller/disposition/did/trunk (exact match);
    ``converted`` True/False (False includes calls not settled yet); ``tenant``: only that buyer's or publisher's
    calls. Rows are dicts of every calls column.
    """
    where = _calls_filtered(since=since, until=until, converted=converted, filters=dict(filters or {}),
                            tenant=tenant)
    rows, total = await page(engine, calls, where=where, order_by=[calls.c.invite_at.desc(), calls.c.call_id.desc()],
                             limit=limit, offset=offset)
    return [dict(row._mapping) for row in rows], total
