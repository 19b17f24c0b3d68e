"""Appending to and verifying the hash-chained ``audit_log`` (the chain itself: :mod:`dce.compliance.audit`).

Appends are serialised so the chain never forks: PostgreSQL takes a transaction-scoped advisory lock
(:data:`CHAIN_LOCK_KEY`), SQLite takes the database write lock before reading the chain's head (a no-op write
first, which is what ``BEGIN IMMEDIATE`` would do), other databases lock the head row ``FOR UPDATE``. The primary
key on ``seq`` would refuse a fork even if the lock were bypassed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.compliance.audit import GENESIS_HASH, canonical_json, chain_hash, entry_is_valid, format_time
from dce.db.audit_models import AuditLogRow
from dce.db.queries import page, record, sqlite_write_lock, table_of, values

audit_log = table_of(AuditLogRow)

# pg_advisory_xact_lock key of the chain head: the bytes "dceaudit" as a signed 64-bit integer.
CHAIN_LOCK_KEY = int.from_bytes(b"dceaudit", "big", signed=True)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def as_mapping(self) -> dict[str, Any]:
        """The fields as a dict (what :func:`dce.compliance.audit.verify_chain` takes)."""
        return values(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``at`` as in the hash: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``)."""
        return {**self.as_mapping(), "at": format_time(self.at)}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``ok``; ``checked``: entries that verified before the first bad one (all of them when ok);
    ``first_bad_seq``: the ``seq`` of the first entry that breaks the chain."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    detail: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return values(self)


async def lock_chain(connection: AsyncConnection) -> None:
    """Take the chain's append lock for the rest of ``connection``'s transaction (re-entrant within it).

    Call it first in a transaction that will also append (e.g. an erasure): on SQLite it takes the write lock
    before anything is read, so the transaction can never fail to upgrade a read snapshot later.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        await connection.execute(select(func.pg_advisory_xact_lock(CHAIN_LOCK_KEY)))
    elif dialect == "sqlite":
        # A write statement takes SQLite's write lock (waiting out busy_timeout) even when it changes no row.
        await sqlite_write_lock(connection, audit_log)
    else:
        head = select(audit_log.c.seq).order_by(audit_log.c.seq.desc()).limit(1).with_for_update()
        await connection.execute(head)


async def _append_locked(
    connection: AsyncConnection,
    actor: str,
    action: str,
    subject: str | None,
    details: dict[str, Any],
    at: datetime,
) -> AuditEntry:
    await lock_chain(connection)
    head = (
        await connection.execute(
            select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        )
    ).first()
    seq, prev_hash = (int(head.seq) + 1, head.hash) if head is not None else (1, GENESIS_HASH)
    entry = {"seq": seq, "at": at, "actor": actor, "action": action, "subject": subject, "details": details}
    digest = chain_hash(prev_hash, entry)
    await connection.execute(audit_log.insert().values(**entry, prev_hash=prev_hash, hash=digest))
    return AuditEntry(**entry, prev_hash=prev_hash, hash=digest)


async def append(
    target: AsyncEngine | AsyncConnection,
    actor: str,
    action: str,
    subject: str | None = None,
    details: Mapping[str, Any] | None = None,
    *,
    at: datetime | None = None,
) -> AuditEntry:
    """Append one entry and return it.

    ``target``: an engine (the entry commits in its own transaction) or a connection; a connection inside a
    transaction appends in that transaction (the caller commits, so the entry is atomic with the change it
    records), one outside starts and commits its own. ``details`` must have a canonical JSON form (no floats);
    it is stored as normalised (datetimes as UTC strings). ``subject`` must not be a raw phone number.
    """
    stored_details: dict[str, Any] = json.loads(canonical_json(dict(details or {})))  # fail before locking
    when = (at or datetime.now(UTC)).astimezone(UTC)
    if isinstance(target, AsyncEngine):
        async with target.begin() as connection:
            return await _append_locked(connection, actor, action, subject, stored_details, when)
    if target.in_transaction():
        return await _append_locked(target, actor, action, subject, stored_details, when)
    async with target.begin():
        return await _append_locked(target, actor, action, subject, stored_details, when)


async def verify(engine: AsyncEngine, *, batch_size: int = 1000) -> VerifyResult:
    """Walk the whole chain in ``seq`` order (in batches) and report the first entry that breaks it.

    Detects edited, reordered, inserted and removed entries, except removal of the newest ones (the chain's
    head has nothing after it; anchor the latest hash elsewhere to cover that).
    """
    checked = 0
    prev_hash = GENESIS_HASH
    expected_seq = 1
    last_seq: int | None = None
    async with engine.connect() as connection:
        while True:
            query = select(audit_log).order_by(audit_log.c.seq).limit(batch_size)
            if last_seq is not None:
                query = query.where(audit_log.c.seq > last_seq)
            rows = [dict(row) for row in (await connection.execute(query)).mappings()]
            if not rows:
                return VerifyResult(ok=True, checked=checked)
            for row in rows:
                if not entry_is_valid(row, prev_hash, expected_seq):
                    detail = _why(row, prev_hash, expected_seq)
                    return VerifyResult(ok=False, checked=checked, first_bad_seq=int(row["seq"]), detail=detail)
                checked += 1
                last_seq = int(row["seq"])
                prev_hash = row["hash"]
                expected_seq += 1


def _why(row: Mapping[str, Any], prev_hash: str, expected_seq: int) -> str:
    if row["seq"] != expected_seq:
        return f"expected seq {expected_seq}, found {row['seq']} (entries missing or renumbered)"
    if row["prev_hash"] != prev_hash:
        return "prev_hash does not match the previous entry's hash"
    return "hash does not match the entry's contents"


async def list_entries(engine: AsyncEngine, limit: int = 50, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """A page of entries, newest first, and the total count."""
    rows, total = await page(engine, audit_log, order_by=[audit_log.c.seq.desc()], limit=limit, offset=offset)
    return [record(AuditEntry, row, seq=int(row.seq)) for row in rows], total
