"""Storing the ledger: posting journal entries (idempotent by key) with their cached balances, reading them back.

Every post inserts the entry, its lines and the balance deltas of its accounts in ONE transaction, so the cached
``account_balances`` always equal the sum of ``journal_lines`` (:func:`verify_balances` recomputes and compares).
An entry whose key is already stored is not posted again: the stored one is returned and nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, DateTime, Text, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from dce.billing.ledger import BUYER_PREFIX, JournalEntry, Line
from dce.db.ledger_models import AccountBalanceRow, ConversionRow, JournalEntryRow, JournalLineRow
from dce.db.queries import Target, dialect_insert, find, reading, record, table_of, writing

journal_entries = table_of(JournalEntryRow)
journal_lines = table_of(JournalLineRow)
account_balances = table_of(AccountBalanceRow)
conversions = table_of(ConversionRow)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A journal entry as stored: its id, and whether this post created it (False: the key was there)."""

    id: int
    entry: JournalEntry
    created: bool = False


@dataclass(frozen=True, slots=True)
class Verification:
    """:func:`verify_balances`: the journal balances and each cached balance equals the sum of its lines."""

    entries: int
    lines: int
    total: int  # sum of every line: 0 when the journal balances
    unbalanced_entries: list[int] = field(default_factory=list)
    mismatches: dict[str, tuple[int | None, int]] = field(default_factory=dict)  # account -> (cached, computed)

    @property
    def ok(self) -> bool:
        return self.total == 0 and not self.unbalanced_entries and not self.mismatches


async def post_many(connection: AsyncConnection, entries: Sequence[JournalEntry]) -> dict[str, int]:
    """Post ``entries`` on ``connection`` (inside the caller's transaction) with few round trips: the entries not
    stored yet (by key; a key repeated in ``entries`` counts once), their lines and the summed balance deltas.
    Returns key -> id of the entries this call created."""
    fresh: dict[str, JournalEntry] = {}
    for entry in entries:
        fresh.setdefault(entry.key, entry)
    if not fresh:
        return {}
    if connection.dialect.name == "postgresql":
        created = await _post_postgresql(connection, list(fresh.values()))
    else:
        statement = (
            dialect_insert(connection, journal_entries)
            .on_conflict_do_nothing(index_elements=[journal_entries.c.key])
            .returning(journal_entries.c.id, journal_entries.c.key)
        )
        params = [
            {"key": e.key, "kind": e.kind, "at": e.at, "actor": e.actor, "memo": e.memo} for e in fresh.values()
        ]
        created = {row.key: row.id for row in (await connection.execute(statement, params))}
    if not created:
        return {}
    lines: list[dict[str, Any]] = []
    deltas: dict[str, int] = {}
    for key, entry_id in created.items():
        for line in fresh[key].lines:
            lines.append({"entry_id": entry_id, "account": line.account, "amount": line.amount})
            deltas[line.account] = deltas.get(line.account, 0) + line.amount
    if connection.dialect.name == "postgresql":
        await connection.execute(_PG_INSERT_LINES, {
            "entry_ids": [line["entry_id"] for line in lines],
            "accounts": [line["account"] for line in lines],
            "amounts": [line["amount"] for line in lines],
        })
    else:
        await connection.execute(insert(journal_lines), lines)
    await _add_to_balances(connection, deltas)
    return created


# PostgreSQL: one statement per batch, the columns as arrays (unnest), rather than a statement per row
_PG_INSERT_ENTRIES = text(
    "INSERT INTO journal_entries (key, kind, at, actor, memo) "
    "SELECT * FROM unnest(:keys, :kinds, :ats, :actors, :memos) "
    "ON CONFLICT (key) DO NOTHING RETURNING id, key"
).bindparams(
    bindparam("keys", type_=postgresql.ARRAY(Text)), bindparam("kinds", type_=postgresql.ARRAY(Text)),
    bindparam("ats", type_=postgresql.ARRAY(DateTime(timezone=True))),
    bindparam("actors", type_=postgresql.ARRAY(Text)), bindparam("memos", type_=postgresql.ARRAY(Text)),
)
_PG_INSERT_LINES = text(
    "INSERT INTO journal_lines (entry_id, account, amount) SELECT * FROM unnest(:entry_ids, :accounts, :amounts)"
).bindparams(
    bindparam("entry_ids", type_=postgresql.ARRAY(BigInteger)), bindparam("accounts", type_=postgresql.ARRAY(Text)),
    bindparam("amounts", type_=postgresql.ARRAY(BigInteger)),
)


async def _post_postgresql(connection: AsyncConnection, fresh: list[JournalEntry]) -> dict[str, int]:
    result = await connection.execute(_PG_INSERT_ENTRIES, {
        "keys": [e.key for e in fresh], "kinds": [e.kind for e in fresh], "ats": [e.at for e in fresh],
        "actors": [e.actor for e in fresh], "memos": [e.memo for e in fresh],
    })
    return {row.key: int(row.id) for row in result}


async def _add_to_balances(connection: AsyncConnection, deltas: dict[str, int]) -> None:
    """Add ``deltas`` to the cached balances (created at the delta); accounts in sorted order, so concurrent
    posters lock the rows in the same order."""
    if not deltas:
        return
    upsert = dialect_insert(connection, account_balances)
    upsert = upsert.on_conflict_do_update(
        index_elements=[account_balances.c.account],
        set_={"balance": account_balances.c.balance + upsert.excluded.balance},
    )
    await connection.execute(
        upsert, [{"account": account, "balance": deltas[account]} for account in sorted(deltas)]
    )


async def post(target: Target, entry: JournalEntry) -> StoredEntry:
    """Post one entry (its own transaction on an engine). Idempotent by key: when the key is stored already,
    nothing changes and the stored entry is returned (``created=False``)."""
    async with writing(target) as connection:
        created = await post_many(connection, [entry])
        if entry.key in created:
            return StoredEntry(id=created[entry.key], entry=entry, created=True)
        stored = await get_entry(connection, entry.key)
    assert stored is not None, entry.key
    return stored


def _entry_from(row: Any, lines: Iterable[Line]) -> JournalEntry:
    return record(JournalEntry, row, lines=tuple(lines))


async def _lines_of(connection: AsyncConnection, entry_ids: Sequence[int]) -> dict[int, list[Line]]:
    by_entry: dict[int, list[Line]] = {entry_id: [] for entry_id in entry_ids}
    if not entry_ids:
        return by_entry
    query = (
        select(journal_lines.c.entry_id, journal_lines.c.account, journal_lines.c.amount)
        .where(journal_lines.c.entry_id.in_(entry_ids))
        .order_by(journal_lines.c.entry_id, journal_lines.c.amount.desc(), journal_lines.c.account)
    )
    for row in await connection.execute(query):
        by_entry[row.entry_id].append(Line(row.account, int(row.amount)))
    return by_entry


async def get_entry(target: Target, key: str) -> StoredEntry | None:
    """The stored entry with ``key``, or None."""
    async with reading(target) as connection:
        row = await find(connection, journal_entries.c.key, key)
        if row is None:
            return None
        lines = (await _lines_of(connection, [row.id]))[row.id]
    return StoredEntry(id=row.id, entry=_entry_from(row, lines))


async def entries(
    target: Target, account: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[StoredEntry], int]:
    """A page of entries, newest first (touching ``account`` when given), and the total count."""
    async with reading(target) as connection:
        if account is None:
            ids_query = select(journal_entries.c.id)
            count = select(func.count()).select_from(journal_entries)
        else:
            ids_query = select(journal_lines.c.entry_id.label("id")).where(journal_lines.c.account == account)
            count = select(func.count()).select_from(journal_lines).where(journal_lines.c.account == account)
        total = int((await connection.execute(count)).scalar_one())
        ids_query = ids_query.order_by(ids_query.selected_columns[0].desc()).limit(limit).offset(offset)
        ids = [int(entry_id) for entry_id in (await connection.execute(ids_query)).scalars()]
        rows = {
            row.id: row
            for row in await connection.execute(select(journal_entries).where(journal_entries.c.id.in_(ids)))
        } if ids else {}
        lines = await _lines_of(connection, ids)
    return [StoredEntry(id=i, entry=_entry_from(rows[i], lines[i])) for i in ids], total


async def balances(target: Target, accounts: Iterable[str] | None = None) -> dict[str, int]:
    """Cached raw balances (sum of lines, debit positive) per account; every account when ``accounts`` is None,
    else those asked for (0 for an account with no lines yet)."""
    query = select(account_balances.c.account, account_balances.c.balance)
    wanted = None if accounts is None else list(dict.fromkeys(accounts))
    if wanted is not None:
        query = query.where(account_balances.c.account.in_(wanted))
    async with reading(target) as connection:
        found = {row.account: int(row.balance) for row in await connection.execute(query)}
    if wanted is None:
        return dict(sorted(found.items()))
    return {account: found.get(account, 0) for account in wanted}


async def buyer_balances(target: Target) -> dict[str, int]:
    """buyer id -> its funds (``-raw balance``: deposits minus charges); the routing snapshot adds credit limits."""
    query = select(account_balances.c.account, account_balances.c.balance).where(
        account_balances.c.account.like(BUYER_PREFIX + "%")
    )
    async with reading(target) as connection:
        return {row.account[len(BUYER_PREFIX):]: -int(row.balance) for row in await connection.execute(query)}


async def ledger_version(target: Target) -> int:
    """Changes on every post that creates an entry (the newest entry id; 0 for an empty journal)."""
    async with reading(target) as connection:
        return int((await connection.execute(select(func.coalesce(func.max(journal_entries.c.id), 0)))).scalar_one())


async def verify_balances(target: Target) -> Verification:
    """Recompute every balance from the lines and compare with the cache; find entries that do not balance."""
    async with reading(target) as connection:
        computed = {
            row.account: int(row.total)
            for row in await connection.execute(
                select(journal_lines.c.account, func.sum(journal_lines.c.amount).label("total"))
                .group_by(journal_lines.c.account)
            )
        }
        cached = {
            row.account: int(row.balance)
            for row in await connection.execute(select(account_balances.c.account, account_balances.c.balance))
        }
        unbalanced = [
            int(entry_id)
            for entry_id in (
                await connection.execute(
                    select(journal_lines.c.entry_id)
                    .group_by(journal_lines.c.entry_id)
                    .having(func.sum(journal_lines.c.amount) != 0)
                )
            ).scalars()
        ]
        n_entries = int((await connection.execute(select(func.count()).select_from(journal_entries))).scalar_one())
        n_lines = int((await connection.execute(select(func.count()).select_from(journal_lines))).scalar_one())
    mismatches: dict[str, tuple[int | None, int]] = {}
    for account in sorted(set(computed) | set(cached)):
        have, want = cached.get(account), computed.get(account, 0)
        if have != want and not (have is None and want == 0):
            mismatches[account] = (have, want)
    return Verification(
        entries=n_entries, lines=n_lines, total=sum(computed.values()), unbalanced_entries=unbalanced,
        mismatches=mismatches,
    )
