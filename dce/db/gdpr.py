"""GDPR: retention (pseudonymising old callers), erasure and export of everything held about a phone number.

Erasure and export are registries: each table owner provides an :data:`Eraser` / :data:`Exporter` for the
numbers it holds, and :func:`erase_number` / :func:`export_number` always include this module's own ``calls``
one. Every erasure, export and retention run appends an entry to the audit log; its subject is a hash of the
number (:func:`number_subject`), never the number.

Erasure of a call record redacts rather than deletes: the row stays for billing and reporting, and every place
the number appears (``caller``, ``called``, ``did``, the other text columns, values and keys inside ``extra``)
becomes :data:`ERASED`. The call id (the primary key other tables refer to) is left as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import JSON, ColumnElement, String, Text, and_, bindparam, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.compliance.audit import format_time
from dce.db.audit_repository import append, lock_chain
from dce.db.models import CallRecordRow
from dce.db.queries import sqlite_write_lock, table_of, values

calls = table_of(CallRecordRow)

Eraser = Callable[[AsyncConnection, str], Awaitable[int]]
"""Erase an E.164 number from one table inside the caller's transaction; return the number of rows changed."""
Exporter = Callable[[AsyncConnection, str], Awaitable[list[Any]]]
"""Everything one table holds about an E.164 number, as a JSON-able list."""

ERASED = "[erased]"
PSEUDONYM_PREFIX = "pseud:"
DEFAULT_REGION = "US"
# Substring matching (a number inside a SIP URI or a JSON document) only for national numbers at least this long.
_MIN_SUBSTRING_DIGITS = 7
_DIGIT = re.compile(r"\d")

ACTION_ERASE = "gdpr.erase"
ACTION_EXPORT = "gdpr.export"
ACTION_RETENTION = "gdpr.retention"


# --- numbers, pseudonyms and subjects -------------------------------------------------------------------------


def normalise_number(text_value: str, region: str = DEFAULT_REGION) -> str:
    """``text_value`` as E.164 (``+13125550199``); ValueError when it is not a possible phone number."""
    try:
        number = phonenumbers.parse(text_value.strip(), region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {text_value!r} ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"not a possible phone number: {text_value!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def pseudonym(number: str, key: bytes) -> str:
    """The stable pseudonym of ``number`` under ``key``: ``pseud:`` + the first 16 hex of HMAC-SHA256."""
    return PSEUDONYM_PREFIX + hmac.new(key, number.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def number_subject(e164: str, key: bytes | None = None) -> str:
    """The audit subject for a number: ``hmac-sha256:<hex>`` under ``key``, else ``sha256:<hex>``.

    Prefer a key: the space of phone numbers is small enough to reverse a plain hash by brute force.
    """
    if key:
        return "hmac-sha256:" + hmac.new(key, e164.encode("utf-8"), hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(e164.encode("utf-8")).hexdigest()


def number_variants(e164: str) -> tuple[str, ...]:
    """The spellings of ``e164`` stored data may use, longest first: ``+13125550199``, ``13125550199``,
    ``3125550199`` (the national significant number)."""
    variants = {e164, e164.lstrip("+")}
    try:
        national = phonenumbers.national_significant_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        national = ""
    if len(national) >= _MIN_SUBSTRING_DIGITS:
        variants.add(national)
    return tuple(sorted((v for v in variants if v), key=lambda v: (-len(v), v)))


def _redact_text(value: str, variants: tuple[str, ...]) -> str:
    if value in variants:
        return ERASED
    for variant in variants:  # longest first, so "+1312..." is replaced whole before "312..." could match
        if len(variant) >= _MIN_SUBSTRING_DIGITS:
            value = value.replace(variant, ERASED)
    return value


def redact(value: Any, variants: tuple[str, ...]) -> Any:
    """``value`` (a string or a JSON document) with every occurrence of the number replaced by :data:`ERASED`."""
    if isinstance(value, str):
        return _redact_text(value, variants)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return ERASED if str(value) in variants else value
    if isinstance(value, dict):
        return {_redact_text(str(key), variants): redact(item, variants) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, variants) for item in value]
    return value


# --- the calls table ------------------------------------------------------------------------------------------


def _text_columns() -> list[Any]:
    return [column for column in calls.columns if isinstance(column.type, (String, Text)) and not column.primary_key]


def _json_columns() -> list[Any]:
    return [column for column in calls.columns if isinstance(column.type, JSON)]


def _calls_holding(e164: str) -> ColumnElement[bool]:
    """Rows of ``calls`` that hold the number anywhere (a full scan when substring matching applies)."""
    variants = number_variants(e164)
    conditions: list[ColumnElement[bool]] = []
    needle = min(variants, key=len)
    for column in _text_columns():
        conditions.append(column.in_(variants))
        if len(needle) >= _MIN_SUBSTRING_DIGITS:
            conditions.append(column.contains(needle, autoescape=True))
    for column in _json_columns():
        conditions.append(sql_cast(column, Text).contains(needle, autoescape=True))
    return or_(*conditions)


async def erase_calls(connection: AsyncConnection, e164: str) -> int:
    """:data:`Eraser` for ``calls``: redact the number from every call record holding it; rows changed."""
    variants = number_variants(e164)
    columns = [*_text_columns(), *_json_columns()]
    query = select(calls.c.call_id, *columns).where(_calls_holding(e164))
    updates: list[dict[str, Any]] = []
    for row in (await connection.execute(query)).mappings():
        changed = {}
        for column in columns:
            value = row[column.name]
            redacted = redact(value, variants)
            if redacted != value:
                changed[column.name] = redacted
        if changed:
            updates.append({"b_call_id": row["call_id"], **changed})
    # one statement per changed column set keeps executemany batches homogeneous
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for update in updates:
        by_shape.setdefault(tuple(sorted(k for k in update if k != "b_call_id")), []).append(update)
    for shape, params in by_shape.items():
        statement = (
            calls.update()
            .where(calls.c.call_id == bindparam("b_call_id"))
            .values({name: bindparam(name) for name in shape})
        )
        await connection.execute(statement, params)
    return len(updates)


def _json_value(value: Any) -> Any:
    return format_time(value) if isinstance(value, datetime) else value


async def export_calls(connection: AsyncConnection, e164: str) -> list[Any]:
    """:data:`Exporter` for ``calls``: every call record holding the number, oldest first, as JSON-able dicts."""
    query = select(calls).where(_calls_holding(e164)).order_by(calls.c.invite_at, calls.c.call_id)
    variants = number_variants(e164)
    rows = []
    for row in (await connection.execute(query)).mappings():
        record = dict(row)
        if redact(record, variants) != record:  # drop substring hits that are not the number
            rows.append({key: _json_value(value) for key, value in record.items()})
    return rows


# --- erasure and export ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure changed: rows per registry name (``calls`` always), and its audit entry."""

    subject: str
    counts: dict[str, int]
    audit_seq: int
    at: datetime

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return values(self, counts=dict(self.counts), at=format_time(self.at), total=self.total)


def _registry(own: Callable[..., Any], others: Mapping[str, Any] | None) -> dict[str, Any]:
    registry: dict[str, Any] = {"calls": own}
    for name, function in (others or {}).items():
        if name in registry:
            raise ValueError(f"registry name {name!r} is taken by the built-in calls entry")
        registry[name] = function
    return registry


async def erase_number(
    engine: AsyncEngine,
    e164: str,
    erasers: Mapping[str, Eraser] | None = None,
    *,
    actor: str = "system",
    key: bytes | None = None,
) -> ErasureReport:
    """Erase ``e164`` from ``calls`` and every table of ``erasers``, and audit it, in one transaction.

    All or nothing: an eraser that raises rolls everything back (and nothing is audited). ``key`` keys the audit
    subject (:func:`number_subject`).
    """
    registry = _registry(erase_calls, erasers)
    subject = number_subject(e164, key)
    async with engine.begin() as connection:
        await lock_chain(connection)  # SQLite: the write lock before any read (see audit_repository)
        counts = {name: int(await eraser(connection, e164)) for name, eraser in registry.items()}
        entry = await append(
            connection, actor, ACTION_ERASE, subject, {"counts": counts, "total": sum(counts.values())}
        )
    return ErasureReport(subject=subject, counts=counts, audit_seq=entry.seq, at=entry.at)


async def export_number(
    engine: AsyncEngine,
    e164: str,
    exporters: Mapping[str, Exporter] | None = None,
    *,
    actor: str = "system",
    key: bytes | None = None,
) -> dict[str, Any]:
    """Everything held about ``e164`` as a JSON-able dict, ``{"number", "exported_at", "audit_seq", "data":
    {"calls": [...], <exporter name>: [...]}}``; the export is audited (counts per table, no contents)."""
    registry = _registry(export_calls, exporters)
    async with engine.connect() as connection:
        data = {name: list(await exporter(connection, e164)) for name, exporter in registry.items()}
    counts = {name: len(rows) for name, rows in data.items()}
    entry = await append(engine, actor, ACTION_EXPORT, number_subject(e164, key), {"counts": counts})
    return {"number": e164, "exported_at": format_time(entry.at), "audit_seq": entry.seq, "data": data}


# --- retention ------------------------------------------------------------------------------------------------


async def pseudonymise_old_calls(
    engine: AsyncEngine,
    older_than: datetime,
    key: bytes,
    *,
    batch_size: int = 1000,
    actor: str = "retention",
) -> int:
    """Replace ``caller`` with :func:`pseudonym` on calls whose INVITE is before ``older_than``; rows changed.

    Idempotent (pseudonyms, erased and digit-less callers such as ``anonymous`` are left alone) and batched:
    each batch of ``batch_size`` rows commits on its own, so a large backlog never holds one long transaction
    and an interrupted run resumes where it stopped. Each run appends one audit entry.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    if not key:
        raise ValueError("a non-empty pseudonymisation key is needed")
    total = 0
    last_id: str | None = None
    while True:
        async with engine.begin() as connection:
            await sqlite_write_lock(connection, calls)  # first: no read-to-write upgrade to fail
            conditions = [calls.c.invite_at < older_than, ~calls.c.caller.startswith(PSEUDONYM_PREFIX)]
            if last_id is not None:
                conditions.append(calls.c.call_id > last_id)
            query = (
                select(calls.c.call_id, calls.c.caller)
                .where(and_(*conditions))
                .order_by(calls.c.call_id)
                .limit(batch_size)
            )
            rows = (await connection.execute(query)).all()
            if not rows:
                break
            params = [
                {"b_call_id": row.call_id, "b_caller": pseudonym(row.caller, key)}
                for row in rows
                if row.caller and row.caller != ERASED and _DIGIT.search(row.caller)
            ]
            if params:
                statement = (
                    calls.update().where(calls.c.call_id == bindparam("b_call_id")).values(caller=bindparam("b_caller"))
                )
                await connection.execute(statement, params)
            total += len(params)
            last_id = rows[-1].call_id
    await append(
        engine,
        actor,
        ACTION_RETENTION,
        None,
        {"table": "calls", "column": "caller", "older_than": older_than, "pseudonymised": total},
    )
    return total


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    """The ``older_than`` of a ``days``-day retention period at ``now`` (default: the current time)."""
    if days <= 0:
        raise ValueError("retention days must be positive")
    return (now or datetime.now(UTC)) - timedelta(days=days)
