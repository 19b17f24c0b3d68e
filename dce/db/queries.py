"""The statements every repository shares, written once: version counters, consistent loads, dialect inserts,
paging, connections that may be the caller's, and rows to and from records.

* Version counters: a one-row table (``id = 1``, ``version``) per in-memory copy (marketplace, lists, postback
  configs, consents). Every write calls :func:`bump_version` in its transaction; a poller compares
  :func:`read_version` / :func:`version_of`.
* Consistent loads: :func:`load_consistent` reads a whole copy in one snapshot (REPEATABLE READ on PostgreSQL) with
  the version it reflects, and reads again while a write commits in between (SQLite's driver opens no read
  transaction).
* Dialect inserts: :func:`dialect_insert` (PostgreSQL's or SQLite's ``INSERT ... ON CONFLICT``) and
  :func:`insert_new` (idempotent by key, the retry-safe insert of batching writers).
* Paging: :func:`page` answers a page of rows and the total matching, the shape of every list endpoint.
* Connections: :func:`reading` / :func:`writing` take an engine (a connection / transaction of their own) or the
  caller's connection (inside the caller's transaction, e.g. one erasure across tables).
* Rows and records: :func:`record` builds a dataclass from the columns named like its fields; :func:`values`
  the other way round.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import fields
from functools import cache
from operator import attrgetter
from typing import Any, TypeVar, cast

from sqlalchemy import Column, ColumnElement, Table, false, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

Target = AsyncEngine | AsyncConnection
"""An engine (the helper opens its own connection or transaction) or the caller's connection."""


def table_of(model: type[Any]) -> Table:
    """The ``Table`` of a declarative model class."""
    return cast(Table, model.__table__)


# ------------------------------------------------------------------------------------------ connections


@asynccontextmanager
async def _callers_or_own(target: Target, own: Callable[[AsyncEngine], Any]) -> AsyncIterator[AsyncConnection]:
    if isinstance(target, AsyncConnection):
        yield target
        return
    async with own(target) as connection:
        yield connection


def reading(target: Target) -> AbstractAsyncContextManager[AsyncConnection]:
    """A connection of its own on an engine, or the caller's connection as it is."""
    return _callers_or_own(target, AsyncEngine.connect)


def writing(target: Target) -> AbstractAsyncContextManager[AsyncConnection]:
    """A transaction of its own on an engine, or the caller's connection (its transaction is the caller's)."""
    return _callers_or_own(target, AsyncEngine.begin)


async def find(target: Target, column: Column[Any], value: Any) -> Any | None:
    """The row of ``column``'s table whose ``column`` is ``value`` (a key), or None."""
    async with reading(target) as connection:
        return (await connection.execute(select(column.table).where(column == value))).first()


async def exists(connection: AsyncConnection, column: ColumnElement[Any], value: Any) -> bool:
    """Whether a row has ``value`` in ``column`` (usually a primary key)."""
    return (await connection.execute(select(column).where(column == value).limit(1))).first() is not None


async def sqlite_write_lock(connection: AsyncConnection, table: Table) -> None:
    """On SQLite, take the database's write lock now (a write statement that changes no row, which is what
    ``BEGIN IMMEDIATE`` would do), so a transaction that reads and then writes can never fail to upgrade its read
    lock; elsewhere nothing (row locks serve there)."""
    if connection.dialect.name == "sqlite":
        key = next(iter(table.primary_key.columns))
        await connection.execute(update(table).where(false()).values({key.name: key}))


# ------------------------------------------------------------------------------------------ version counters


async def bump_version(connection: AsyncConnection, table: Table) -> None:
    """Move the counter of ``table`` (its row ``id = 1``) on; on PostgreSQL this also locks the row, so writers
    that bump first are serialised."""
    await connection.execute(update(table).where(table.c.id == 1).values(version=table.c.version + 1))


async def read_version(connection: AsyncConnection, table: Table) -> int:
    """The counter of ``table`` (0 before the first write)."""
    value = (await connection.execute(select(table.c.version).where(table.c.id == 1))).scalar()
    return int(value or 0)


async def version_of(engine: AsyncEngine, table: Table) -> int:
    """:func:`read_version` on a connection of its own (cheap to poll: one row by primary key)."""
    async with engine.connect() as connection:
        return await read_version(connection, table)


async def load_consistent(
    engine: AsyncEngine, version_table: Table, read: Callable[[AsyncConnection], Awaitable[T]], *, attempts: int = 5
) -> tuple[T, int]:
    """``read(connection)`` in one snapshot, and the version of ``version_table`` it reflects.

    On PostgreSQL one REPEATABLE READ transaction; on every backend the version is read before and after, and the
    read is done again (up to ``attempts`` times in all; the last one is taken as it is) while a write committed in
    between.
    """
    for attempt in range(1, attempts + 1):
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                version = await read_version(connection, version_table)
                data = await read(connection)
            # outside the snapshot: did anything commit while we read?
            version_after = await read_version(connection, version_table)
        if version_after == version or attempt >= attempts:
            return data, version
    raise ValueError("attempts must be at least 1")


# ------------------------------------------------------------------------------------------ dialect inserts


def dialect_insert(connection: AsyncConnection, table: Table) -> Any:
    """``INSERT`` with ``on_conflict_do_nothing`` / ``on_conflict_do_update``: PostgreSQL's or SQLite's."""
    name = connection.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"INSERT ... ON CONFLICT needs PostgreSQL or SQLite, not {name}")


async def insert_new(connection: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]],
                     key: Column[Any]) -> None:
    """Insert the ``rows`` whose ``key`` is not stored yet (idempotent: a stored one is left as it is; of rows
    repeating a key, the first counts). ``ON CONFLICT DO NOTHING`` where the dialect has it."""
    if not rows:
        return
    if connection.dialect.name in ("postgresql", "sqlite"):
        statement = dialect_insert(connection, table).on_conflict_do_nothing(index_elements=[key])
        await connection.execute(statement, list(rows))
        return
    stored = set((await connection.execute(select(key).where(key.in_([row[key.name] for row in rows])))).scalars())
    fresh: dict[Any, Mapping[str, Any]] = {}
    for row in rows:
        if row[key.name] not in stored:
            fresh.setdefault(row[key.name], row)
    if fresh:
        await connection.execute(table.insert(), list(fresh.values()))


# ------------------------------------------------------------------------------------------ paging


async def page(
    target: Target,
    table: Table,
    *,
    order_by: Iterable[Any],
    limit: int,
    offset: int,
    where: Iterable[ColumnElement[bool]] = (),
    columns: Sequence[Any] = (),
) -> tuple[list[Any], int]:
    """Rows ``offset .. offset + limit`` of ``table`` (``columns``, or every column) matching ``where`` in
    ``order_by`` order, and how many rows match in all."""
    conditions = list(where)
    query = select(*columns) if columns else select(table)
    query = query.where(*conditions).order_by(*order_by).limit(limit).offset(offset)
    async with reading(target) as connection:
        total = (await connection.execute(select(func.count()).select_from(table).where(*conditions))).scalar_one()
        rows = (await connection.execute(query)).all()
    return list(rows), int(total)


# ------------------------------------------------------------------------------------------ rows and records


@cache
def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@cache
def _field_values(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names = _field_names(cls)
    if len(names) == 1:
        return lambda obj: (getattr(obj, names[0]),)
    return cast(Callable[[Any], tuple[Any, ...]], attrgetter(*names))


def record(cls: type[T], row: Any, **converted: Any) -> T:
    """A dataclass ``cls`` from the columns of ``row`` (a result row or a mapping) named like its fields; fields
    given in ``converted`` take that value instead (an enum, an int), fields without a column their default."""
    mapping: Mapping[str, Any] = getattr(row, "_mapping", row)
    found = {name: mapping[name] for name in _field_names(cls) if name not in converted and name in mapping}
    return cls(**found, **converted)


def values(obj: Any, omit: Iterable[str] = (), **converted: Any) -> dict[str, Any]:
    """The fields of a dataclass by name (a row's column values, a JSON object), but those in ``omit``; fields
    given in ``converted`` take that value instead, and further names in it are added."""
    cls = type(obj)
    found = dict(zip(_field_names(cls), _field_values(cls)(obj), strict=True))
    for name in omit:
        del found[name]
    found.update(converted)
    return found
