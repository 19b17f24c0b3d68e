"""Storing consent versions, reading them back, and erasing a number's consents.

The ``consents`` table is append-only: granting or revoking inserts the next version of the (number, business,
consent_type) key; only :func:`erase_number` deletes. Every write bumps ``consents_version`` in its own
transaction *before* it reads the latest version, so on PostgreSQL that row lock serialises consent writers (no
two can pick the same version) and a poller comparing :func:`consents_version` sees every change.

A poller: ``v = await consents_version(engine)``; if it moved, ``book = await load_consent_book(engine)`` (read the
version first, so a write racing the load is caught by the next poll).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.compliance.consent import ConsentBook, ConsentRecord, ConsentStatus
from dce.db.consent_models import ConsentRow, ConsentsVersionRow
from dce.db.queries import Target, bump_version, reading, record, table_of, values, version_of, writing

consents = table_of(ConsentRow)
consents_version_table = table_of(ConsentsVersionRow)


def _record(row: Row[Any]) -> ConsentRecord:
    return record(ConsentRecord, row, status=ConsentStatus(row.status))


def _values(consent: ConsentRecord) -> dict[str, Any]:
    return values(consent, status=str(consent.status))


async def _latest(connection: AsyncConnection, number: str, business: str, consent_type: str) -> ConsentRecord | None:
    row = (
        await connection.execute(
            select(consents)
            .where(consents.c.number == number, consents.c.business == business,
                   consents.c.consent_type == str(consent_type))
            .order_by(consents.c.version.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else _record(row)


async def record_consent(engine: AsyncEngine, *, number: str, business: str, consent_type: str, channel: str,
                         source: str, proof_hash: str, granted_at: datetime, expires_at: datetime | None = None,
                         recorded_at: datetime | None = None, reason: str | None = None) -> ConsentRecord:
    """Store a grant as the next version of its (number, business, consent_type); returns the stored record."""
    recorded_at = recorded_at or datetime.now(UTC)
    async with engine.begin() as connection:
        await bump_version(connection, consents_version_table)  # first: takes the write lock before the version is read
        held = await _latest(connection, number, business, consent_type)
        record = ConsentRecord(
            number=number, business=business, consent_type=str(consent_type), channel=str(channel), source=source,
            proof_hash=proof_hash, status=ConsentStatus.GRANTED, granted_at=granted_at, expires_at=expires_at,
            version=1 if held is None else held.version + 1, recorded_at=recorded_at, reason=reason,
        )
        await connection.execute(insert(consents).values(**_values(record)))
    return record


async def revoke_consent(engine: AsyncEngine, *, number: str, business: str, consent_type: str,
                         reason: str | None = None, at: datetime | None = None,
                         channel: str | None = None) -> ConsentRecord | None:
    """Append a revoked version to the consent; None (nothing written) when the key has no consent at all."""
    at = at or datetime.now(UTC)
    async with engine.begin() as connection:
        held = await _latest(connection, number, business, consent_type)
        if held is None:
            return None
        await bump_version(connection, consents_version_table)
        held = await _latest(connection, number, business, consent_type)  # again, under the lock
        assert held is not None  # only erase_number deletes, and it bumps (locks) first too
        record = held.revoked(at, reason, channel=channel)
        await connection.execute(insert(consents).values(**_values(record)))
    return record


async def latest_consent(engine: AsyncEngine, number: str, business: str, consent_type: str) -> ConsentRecord | None:
    """The latest version of one consent, whatever its status."""
    async with engine.connect() as connection:
        return await _latest(connection, number, business, consent_type)


async def history(engine: AsyncEngine, number: str) -> list[ConsentRecord]:
    """Every version of every consent of ``number``, newest first (in the order they were written, reversed)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(consents).where(consents.c.number == number).order_by(consents.c.id.desc())
        )
        return [_record(row) for row in rows]


async def load_consent_book(engine: AsyncEngine) -> ConsentBook:
    """A :class:`ConsentBook` of the latest version of every consent."""
    latest = (
        select(consents.c.number, consents.c.business, consents.c.consent_type,
               func.max(consents.c.version).label("version"))
        .group_by(consents.c.number, consents.c.business, consents.c.consent_type)
        .subquery()
    )
    query = select(consents).join(
        latest,
        (consents.c.number == latest.c.number)
        & (consents.c.business == latest.c.business)
        & (consents.c.consent_type == latest.c.consent_type)
        & (consents.c.version == latest.c.version),
    )
    async with engine.connect() as connection:
        rows = await connection.execute(query)
        return ConsentBook(_record(row) for row in rows)


async def consents_version(engine: AsyncEngine) -> int:
    """A counter that moves on every consent write and erasure (cheap: one row by primary key)."""
    return await version_of(engine, consents_version_table)


async def erase_number(target: Target, number: str) -> int:
    """GDPR erasure: delete every version of every consent of ``number`` (E.164); returns the rows deleted.

    Given a connection, runs inside the caller's transaction (so an erasure across tables commits or fails as
    one); given an engine, in a transaction of its own."""
    async with writing(target) as connection:
        await bump_version(connection, consents_version_table)
        result = await connection.execute(delete(consents).where(consents.c.number == number))
        return int(result.rowcount or 0)


async def export_number(target: Target, number: str) -> list[dict[str, Any]]:
    """GDPR export: every version of every consent of ``number`` (E.164), oldest first, as JSON-able dicts."""
    async with reading(target) as connection:
        rows = await connection.execute(select(consents).where(consents.c.number == number).order_by(consents.c.id))
        return [
            {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row._mapping.items()}
            for row in rows
        ]
