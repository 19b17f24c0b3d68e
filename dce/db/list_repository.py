"""Storing and reading the number lists (tables in :mod:`dce.db.list_models`).

A list's numbers live in sorted int64 chunks (``number_list_chunks``) plus a small table of numbers added one
at a time (``number_list_adds``). An import merges everything into fresh chunks in one transaction (10M numbers
are ~150 blob rows: fast on SQLite and PostgreSQL); adds through the API go to the adds table and are folded
into the chunks once there are more than ``COMPACT_AT`` of them; a removal rewrites the one chunk holding the
number. Every write locks the list's row first (an UPDATE), bumps ``number_lists_version`` in the same
transaction, and keeps ``number_lists.count`` right.

Numbers are E.164 digits as ints here (``+12125550100`` -> ``12125550100``); see :mod:`dce.compliance.numberset`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.compliance.lists import ListBook, ListKind, NumberList, check_scope
from dce.compliance.numberset import MAX_E164, MIN_E164, OVERLAY_LIMIT, NumberSet, e164_to_int, sorted_unique
from dce.db.list_models import NumberListAddRow, NumberListChunkRow, NumberListRow, NumberListsVersionRow
from dce.db.queries import bump_version, find, load_consistent, reading, record, table_of, values, version_of, writing

lists_table = table_of(NumberListRow)
chunks_table = table_of(NumberListChunkRow)
adds_table = table_of(NumberListAddRow)
version_table = table_of(NumberListsVersionRow)

CHUNK = 65_536  # numbers per chunk row (512 KB)
COMPACT_AT = 50_000  # adds of one list before they are folded into its chunks
MAX_ADD = 100_000  # numbers per add_numbers call
_INSERT_BATCH = 16  # chunk rows per INSERT round trip
_IN_BATCH = 500  # numbers per IN (...) query

Progress = Callable[[int], None]  # called with the numbers written since the last call


class ListError(Exception):
    """Base of the repository's errors."""


class ListNotFound(ListError):
    def __init__(self, list_id: str) -> None:
        super().__init__(f"no list {list_id!r}")
        self.list_id = list_id


class ListConflict(ListError):
    """The list id is taken."""


@dataclass(frozen=True, slots=True)
class ListInfo:
    id: str
    kind: ListKind
    scope: str | None
    name: str
    count: int
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return values(self, kind=str(self.kind), created_at=self.created_at.isoformat(),
                      updated_at=self.updated_at.isoformat())


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """``received`` distinct numbers: ``imported`` new, ``duplicates`` already on the list; ``removed``: numbers
    dropped by a replacing import; ``total``: the list's size afterwards."""

    received: int
    imported: int
    duplicates: int
    removed: int
    total: int


@dataclass(frozen=True, slots=True)
class AddSummary:
    added: int
    duplicates: int  # already on the list, or repeated in the request
    total: int


def _now() -> datetime:
    return datetime.now(UTC)


def _info(row: Any) -> ListInfo:
    return record(ListInfo, row, kind=ListKind(row.kind), count=int(row.count))


def _as_array(numbers: np.ndarray | Iterable[int | np.ndarray]) -> np.ndarray:
    """Numbers (an int64 array, or ints and arrays mixed) as a sorted array without repeats, range-checked."""
    if isinstance(numbers, np.ndarray):
        array = sorted_unique(numbers)
    else:
        parts: list[np.ndarray] = []
        loose: list[int] = []
        for item in numbers:
            if isinstance(item, np.ndarray):
                parts.append(item.astype(np.int64, copy=False))
            else:
                loose.append(int(item))
        if loose:
            parts.append(np.array(loose, dtype=np.int64))
        array = sorted_unique(np.concatenate(parts)) if parts else sorted_unique(np.empty(0, dtype=np.int64))
    if array.size and (array[0] < MIN_E164 or array[-1] > MAX_E164):
        raise ValueError("numbers must be E.164 digits (10 .. 10**15-1)")
    return array


def _chunk_rows(list_id: str, array: np.ndarray, first_seq: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i, start in enumerate(range(0, array.size, CHUNK)):
        piece = array[start:start + CHUNK]
        rows.append({
            "list_id": list_id,
            "seq": first_seq + i,
            "first_number": int(piece[0]),
            "last_number": int(piece[-1]),
            "count": int(piece.size),
            "data": piece.astype("<i8", copy=False).tobytes(),
        })
    return rows


def _decode(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i8").astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------- version


async def lists_version(engine: AsyncEngine) -> int:
    """The change counter: it grows with every list write (cheap to poll)."""
    return await version_of(engine, version_table)


async def _lock(connection: AsyncConnection, list_id: str) -> ListInfo:
    """Start the write: touch the list's row (a row lock on PostgreSQL, the write lock on SQLite) and bump the
    version; the list as it is now."""
    touched = await connection.execute(
        update(lists_table).where(lists_table.c.id == list_id).values(updated_at=_now())
    )
    if touched.rowcount == 0:
        raise ListNotFound(list_id)
    await bump_version(connection, version_table)
    row = (await connection.execute(select(lists_table).where(lists_table.c.id == list_id))).one()
    return _info(row)


async def _set_count(connection: AsyncConnection, list_id: str, count: int) -> None:
    await connection.execute(update(lists_table).where(lists_table.c.id == list_id).values(count=count))


# ---------------------------------------------------------------------------------------------- lists


async def create_list(engine: AsyncEngine, kind: ListKind | str, scope: str | None = None, name: str = "",
                      list_id: str | None = None) -> ListInfo:
    """A new empty list (``list_id`` generated when None). ValueError for a bad kind/scope; ListConflict."""
    kind = ListKind(kind)
    scope = check_scope(kind, scope)
    list_id = list_id or uuid.uuid4().hex
    now = _now()
    async with engine.begin() as connection:
        if await find(connection, lists_table.c.id, list_id) is not None:
            raise ListConflict(f"list {list_id!r} exists")
        await connection.execute(
            insert(lists_table).values(
                id=list_id, kind=str(kind), scope=scope, name=name, count=0, created_at=now, updated_at=now
            )
        )
        await bump_version(connection, version_table)
    return ListInfo(list_id, kind, scope, name, 0, now, now)


async def list_lists(engine: AsyncEngine, kind: ListKind | str | None = None, scope: str | None = None,
                     name: str | None = None) -> list[ListInfo]:
    """Every list (filtered by kind, scope, name when given), ordered by kind, scope, id."""
    query = select(lists_table).order_by(lists_table.c.kind, lists_table.c.scope, lists_table.c.id)
    if kind is not None:
        query = query.where(lists_table.c.kind == str(ListKind(kind)))
    if scope is not None:
        query = query.where(lists_table.c.scope == scope)
    if name is not None:
        query = query.where(lists_table.c.name == name)
    async with engine.connect() as connection:
        return [_info(row) for row in await connection.execute(query)]


async def get_list(engine: AsyncEngine, list_id: str) -> ListInfo:
    row = await find(engine, lists_table.c.id, list_id)
    if row is None:
        raise ListNotFound(list_id)
    return _info(row)


async def delete_list(engine: AsyncEngine, list_id: str) -> None:
    async with engine.begin() as connection:
        await _lock(connection, list_id)
        await connection.execute(delete(chunks_table).where(chunks_table.c.list_id == list_id))
        await connection.execute(delete(adds_table).where(adds_table.c.list_id == list_id))
        await connection.execute(delete(lists_table).where(lists_table.c.id == list_id))


# ---------------------------------------------------------------------------------------------- numbers


async def _read_chunks(connection: AsyncConnection, list_id: str) -> np.ndarray:
    """The numbers in the list's chunks (not its adds), sorted; filled chunk by chunk into one array."""
    total = (
        await connection.execute(
            select(func.coalesce(func.sum(chunks_table.c.count), 0)).where(chunks_table.c.list_id == list_id)
        )
    ).scalar_one()
    out = np.empty(int(total), dtype=np.int64)
    at = 0
    result = await connection.stream(
        select(chunks_table.c.data).where(chunks_table.c.list_id == list_id).order_by(chunks_table.c.seq)
        .execution_options(yield_per=4)  # a few 512 KB chunks in flight, not the driver's default prefetch
    )
    async for (data,) in result:
        piece = np.frombuffer(data, dtype="<i8")
        out[at:at + piece.size] = piece
        at += piece.size
    return out if at == out.size else out[:at]


async def _read_adds(connection: AsyncConnection, list_id: str) -> list[int]:
    rows = await connection.execute(select(adds_table.c.number).where(adds_table.c.list_id == list_id))
    return [int(n) for (n,) in rows]


async def _read_numbers(connection: AsyncConnection, list_id: str) -> np.ndarray:
    """Every number of the list (chunks and adds), sorted, without repeats."""
    chunks = await _read_chunks(connection, list_id)
    adds = await _read_adds(connection, list_id)
    if adds:
        return sorted_unique(np.concatenate((chunks, np.array(adds, dtype=np.int64))))
    return chunks


async def list_numbers(engine: AsyncEngine, list_id: str) -> np.ndarray:
    """Every number of one list as a sorted int64 array."""
    async with engine.connect() as connection:
        if await find(connection, lists_table.c.id, list_id) is None:
            raise ListNotFound(list_id)
        return await _read_numbers(connection, list_id)


async def _write_all(connection: AsyncConnection, list_id: str, array: np.ndarray,
                     progress: Progress | None = None) -> None:
    """Replace the list's chunks and adds by ``array`` (sorted, unique)."""
    await connection.execute(delete(chunks_table).where(chunks_table.c.list_id == list_id))
    await connection.execute(delete(adds_table).where(adds_table.c.list_id == list_id))
    for start in range(0, array.size, CHUNK * _INSERT_BATCH):
        piece = array[start:start + CHUNK * _INSERT_BATCH]
        await connection.execute(insert(chunks_table), _chunk_rows(list_id, piece, start // CHUNK))
        if progress:
            progress(int(piece.size))
    await _set_count(connection, list_id, int(array.size))


async def import_numbers(engine: AsyncEngine, list_id: str, numbers: np.ndarray | Iterable[int | np.ndarray], *,
                         replace: bool = False, progress: Progress | None = None) -> ImportSummary:
    """Merge ``numbers`` (E.164 digits: an int64 array, or ints/arrays) into the list, or with ``replace`` make
    them the list; pending adds are folded in. One transaction."""
    incoming = await asyncio.to_thread(_as_array, numbers)  # sorting 10M numbers: off the event loop
    async with engine.begin() as connection:
        await _lock(connection, list_id)
        existing = await _read_numbers(connection, list_id)
        known, merged = await asyncio.to_thread(_merge, existing, incoming, replace)
        removed = int(existing.size) - known if replace else 0
        del existing
        await _write_all(connection, list_id, merged, progress)
    return ImportSummary(int(incoming.size), int(incoming.size) - known, known, removed, int(merged.size))


def _merge(existing: np.ndarray, incoming: np.ndarray, replace: bool) -> tuple[int, np.ndarray]:
    """How many of ``incoming`` ``existing`` holds, and the list's numbers after the import."""
    if existing.size == 0:
        return 0, incoming
    known = int(np.isin(incoming, existing, assume_unique=True).sum())
    return known, incoming if replace else sorted_unique(np.concatenate((existing, incoming)))


async def _chunk_ranges(connection: AsyncConnection, list_id: str) -> list[tuple[int, int, int]]:
    rows = await connection.execute(
        select(chunks_table.c.seq, chunks_table.c.first_number, chunks_table.c.last_number)
        .where(chunks_table.c.list_id == list_id)
        .order_by(chunks_table.c.seq)
    )
    return [(int(r.seq), int(r.first_number), int(r.last_number)) for r in rows]


async def _in_chunks(connection: AsyncConnection, list_id: str, values: np.ndarray) -> np.ndarray:
    """A mask: which of ``values`` (sorted) the list's chunks hold."""
    found = np.zeros(values.size, dtype=bool)
    ranges = await _chunk_ranges(connection, list_id)
    if not ranges or values.size == 0:
        return found
    firsts = np.array([r[1] for r in ranges], dtype=np.int64)
    lasts = np.array([r[2] for r in ranges], dtype=np.int64)
    where = np.searchsorted(firsts, values, side="right") - 1
    inside = (where >= 0) & (values <= lasts[np.clip(where, 0, None)])
    for index in np.unique(where[inside]).tolist():
        seq = ranges[index][0]
        data = (
            await connection.execute(
                select(chunks_table.c.data).where(chunks_table.c.list_id == list_id, chunks_table.c.seq == seq)
            )
        ).scalar_one()
        rows = np.flatnonzero(inside & (where == index))
        found[rows] = np.isin(values[rows], _decode(data), assume_unique=True)
    return found


async def _in_adds(connection: AsyncConnection, list_id: str, values: Sequence[int]) -> set[int]:
    present: set[int] = set()
    for start in range(0, len(values), _IN_BATCH):
        batch = list(values[start:start + _IN_BATCH])
        rows = await connection.execute(
            select(adds_table.c.number).where(adds_table.c.list_id == list_id, adds_table.c.number.in_(batch))
        )
        present.update(int(n) for (n,) in rows)
    return present


async def add_numbers(engine: AsyncEngine, list_id: str, numbers: Iterable[int]) -> AddSummary:
    """Add a few numbers (at most ``MAX_ADD``); counts what was new and what the list already held."""
    given = [int(n) for n in numbers]
    if len(given) > MAX_ADD:
        raise ValueError(f"at most {MAX_ADD} numbers per call; import a file for more")
    values = _as_array(given)
    async with engine.begin() as connection:
        info = await _lock(connection, list_id)
        on_list = await _in_chunks(connection, list_id, values)
        in_adds = await _in_adds(connection, list_id, values[~on_list].tolist())
        new = [n for n, held in zip(values.tolist(), on_list.tolist(), strict=True) if not held and n not in in_adds]
        if new:
            await connection.execute(insert(adds_table), [{"list_id": list_id, "number": n} for n in new])
        total = info.count + len(new)
        await _set_count(connection, list_id, total)
        count_adds = select(func.count()).select_from(adds_table).where(adds_table.c.list_id == list_id)
        pending = (await connection.execute(count_adds)).scalar_one()
        if pending > COMPACT_AT:
            await _write_all(connection, list_id, await _read_numbers(connection, list_id))
    return AddSummary(len(new), len(given) - len(new), total)


async def _remove(connection: AsyncConnection, list_id: str, value: int) -> bool:
    """Take ``value`` off one list (adds and chunks); whether it was there. Does not lock or count."""
    in_adds = delete(adds_table).where(adds_table.c.list_id == list_id, adds_table.c.number == value)
    removed = (await connection.execute(in_adds)).rowcount > 0
    rows = await connection.execute(
        select(chunks_table.c.seq, chunks_table.c.data).where(
            chunks_table.c.list_id == list_id,
            chunks_table.c.first_number <= value,
            chunks_table.c.last_number >= value,
        )
    )
    for seq, data in rows.all():
        array = _decode(data)
        i = int(np.searchsorted(array, value))
        if i >= array.size or array[i] != value:
            continue
        removed = True
        rest = np.delete(array, i)
        where = (chunks_table.c.list_id == list_id) & (chunks_table.c.seq == seq)
        if rest.size == 0:
            await connection.execute(delete(chunks_table).where(where))
        else:
            await connection.execute(
                update(chunks_table).where(where).values(
                    first_number=int(rest[0]), last_number=int(rest[-1]), count=int(rest.size),
                    data=rest.astype("<i8", copy=False).tobytes(),
                )
            )
    return removed


async def remove_number(engine: AsyncEngine, list_id: str, number: int) -> bool:
    """Take one number off a list; whether it was there."""
    async with engine.begin() as connection:
        info = await _lock(connection, list_id)
        removed = await _remove(connection, list_id, int(number))
        if removed:
            await _set_count(connection, list_id, info.count - 1)
    return removed


async def erase_number(target: AsyncEngine | AsyncConnection, e164: str | int) -> int:
    """GDPR erasure: take the number off every list, chunks and adds alike. How many lists held it.

    With a connection, runs inside the caller's transaction (so an erasure across tables commits as one);
    with an engine, in a transaction of its own.
    """
    value = e164 if isinstance(e164, int) else e164_to_int(e164)
    if value is None:
        raise ValueError(f"not an E.164 number: {e164!r}")
    async with writing(target) as connection:
        return await _erase(connection, value)


async def _holding(connection: AsyncConnection, value: int) -> list[str]:
    """Ids of the lists holding ``value`` (chunks or adds)."""
    found = {
        list_id
        for (list_id,) in await connection.execute(select(adds_table.c.list_id).where(adds_table.c.number == value))
    }
    rows = await connection.execute(
        select(chunks_table.c.list_id, chunks_table.c.data).where(
            chunks_table.c.first_number <= value, chunks_table.c.last_number >= value
        )
    )
    for list_id, data in rows:
        array = np.frombuffer(data, dtype="<i8")
        i = int(np.searchsorted(array, value))
        if i < array.size and array[i] == value:
            found.add(list_id)
    return sorted(found)


async def lists_holding(target: AsyncEngine | AsyncConnection, number: str | int) -> list[ListInfo]:
    """The lists holding a number (E.164 string or digits), read from the database; ordered by kind, scope, id."""
    value = number if isinstance(number, int) else e164_to_int(number)
    if value is None:
        raise ValueError(f"not an E.164 number: {number!r}")
    async with reading(target) as connection:
        ids = await _holding(connection, value)
        if not ids:
            return []
        rows = await connection.execute(
            select(lists_table).where(lists_table.c.id.in_(ids))
            .order_by(lists_table.c.kind, lists_table.c.scope, lists_table.c.id)
        )
        return [_info(row) for row in rows]


async def export_number(target: AsyncEngine | AsyncConnection, number: str) -> list[dict[str, Any]]:
    """GDPR export: the lists holding ``number`` (E.164), as JSON-able dicts."""
    return [info.to_json() for info in await lists_holding(target, number)]


async def _erase(connection: AsyncConnection, value: int) -> int:
    candidates = {
        list_id
        for (list_id,) in await connection.execute(
            select(adds_table.c.list_id).where(adds_table.c.number == value)
        )
    }
    candidates.update(
        list_id
        for (list_id,) in await connection.execute(
            select(chunks_table.c.list_id).where(
                chunks_table.c.first_number <= value, chunks_table.c.last_number >= value
            )
        )
    )
    erased = 0
    for list_id in sorted(candidates):
        info = await _lock(connection, list_id)
        if await _remove(connection, list_id, value):
            await _set_count(connection, list_id, info.count - 1)
            erased += 1
    return erased


# ---------------------------------------------------------------------------------------------- the book


async def load_book(engine: AsyncEngine, *, attempts: int = 5) -> ListBook:
    """Every list, in memory, with the version it reflects (:func:`dce.db.queries.load_consistent`)."""
    lists, version = await load_consistent(engine, version_table, _read_lists, attempts=attempts)
    return ListBook(lists, version=version)


async def _read_lists(connection: AsyncConnection) -> list[NumberList]:
    infos = [_info(row) for row in await connection.execute(select(lists_table).order_by(lists_table.c.id))]
    return [
        NumberList(info.id, info.kind, info.scope, await _number_set(connection, info.id), info.name)
        for info in infos
    ]


async def _number_set(connection: AsyncConnection, list_id: str) -> NumberSet:
    """One list as a NumberSet: the chunks as its array, the adds in its overlay (or folded in when many)."""
    numbers = NumberSet(await _read_chunks(connection, list_id), assume_sorted_unique=True)
    adds = await _read_adds(connection, list_id)
    if len(adds) <= OVERLAY_LIMIT:
        for n in adds:
            numbers.add(n)
    else:
        numbers.update(adds)
    return numbers
