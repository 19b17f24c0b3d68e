"""CdrWriter: batching, flushing, and surviving database failures without losing or duplicating records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord
from dce.db.cdr_repository import insert_cdrs, list_cdrs
from dce.db.cdr_writer import CdrWriter
from dce.db.engine import create_engine
from dce.db.migrate import upgrade_async
from tests.cdr_factory import make_cdr


class RecordingInsert:
    """Wraps insert_cdrs: records each attempt and signals after a number of failures."""

    def __init__(self, fail_after_commit: int = 0) -> None:
        self.attempts: list[tuple[list[str], bool]] = []  # (call ids, succeeded)
        self.fail_after_commit = fail_after_commit  # commit, then raise as if the ack was lost
        self.failed = asyncio.Event()
        self.failures = 0
        self.failures_wanted = 1

    async def __call__(self, engine: AsyncEngine, cdrs: Sequence[CallDetailRecord]) -> None:
        ids = [cdr.call_id for cdr in cdrs]
        try:
            await insert_cdrs(engine, cdrs)
            if self.fail_after_commit:
                self.fail_after_commit -= 1
                raise ConnectionResetError("connection lost before the commit was acknowledged")
        except Exception:
            self.attempts.append((ids, False))
            self.failures += 1
            if self.failures >= self.failures_wanted:
                self.failed.set()
            raise
        self.attempts.append((ids, True))

    def written_in_order(self) -> list[str]:
        return [call_id for ids, ok in self.attempts if ok for call_id in ids]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty, *unmigrated* database."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def stored_ids(engine: AsyncEngine) -> list[str]:
    rows, total = await list_cdrs(engine, limit=10_000)
    assert total == len(rows)
    return sorted(row["call_id"] for row in rows)


async def test_batches_by_size_without_waiting_for_the_interval(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    insert = RecordingInsert()
    stored: list[int] = []
    writer = CdrWriter(engine, batch_size=10, flush_interval_s=3600, insert=insert, on_written=stored.append)
    await writer.start()
    for n in range(25):
        writer.submit(make_cdr(n))
    async with asyncio.timeout(10):
        await writer.flush()
    assert [len(ids) for ids, _ in insert.attempts] == [10, 10, 5]
    assert stored == [10, 10, 5]  # told after each stored batch
    assert writer.pending == 0 and writer.written == 25
    assert await stored_ids(engine) == [make_cdr(n).call_id for n in range(25)]
    assert await writer.close() == []


async def test_flush_interval_writes_a_partial_batch(engine: AsyncEngine, migrated_database_url: str) -> None:
    depth_zero = asyncio.Event()
    depths: list[int] = []

    def on_depth(depth: int) -> None:
        depths.append(depth)
        if depth == 0:
            depth_zero.set()

    writer = CdrWriter(engine, batch_size=100, flush_interval_s=0.02, on_depth=on_depth)
    await writer.start()
    for n in range(3):
        writer.submit(make_cdr(n))
    async with asyncio.timeout(10):
        await depth_zero.wait()  # no flush() call: the interval alone sends it
    assert depths == [1, 2, 3, 0]
    assert len(await stored_ids(engine)) == 3
    await writer.close()


async def test_database_failure_keeps_records_and_recovers(engine: AsyncEngine, database_url: str) -> None:
    """A real failure: the table does not exist until the migration runs mid-test."""
    insert = RecordingInsert()
    insert.failures_wanted = 3
    writer = CdrWriter(
        engine,
        batch_size=7,
        flush_interval_s=0.01,
        initial_backoff_s=0.005,
        max_backoff_s=0.02,
        insert=insert,
    )
    await writer.start()
    submitted = [make_cdr(n) for n in range(30)]
    for cdr in submitted[:20]:
        writer.submit(cdr)
    async with asyncio.timeout(10):
        await insert.failed.wait()
    for cdr in submitted[20:]:  # more arrive during the outage
        writer.submit(cdr)
    assert writer.pending == 30
    assert writer.failures >= 3

    await upgrade_async(database_url)  # the database comes back
    async with asyncio.timeout(10):
        await writer.flush()
    assert await writer.close() == []
    assert await stored_ids(engine) == sorted(cdr.call_id for cdr in submitted)
    assert insert.written_in_order() == [cdr.call_id for cdr in submitted]  # order preserved


async def test_retry_after_lost_ack_does_not_duplicate(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    insert = RecordingInsert(fail_after_commit=2)
    writer = CdrWriter(engine, batch_size=5, flush_interval_s=0.01, initial_backoff_s=0.001, insert=insert)
    await writer.start()
    for n in range(12):
        writer.submit(make_cdr(n))
    async with asyncio.timeout(10):
        await writer.flush()
    await writer.close()
    assert insert.failures == 2
    assert await stored_ids(engine) == [make_cdr(n).call_id for n in range(12)]


async def test_close_flushes_what_is_queued(engine: AsyncEngine, migrated_database_url: str) -> None:
    writer = CdrWriter(engine, batch_size=1000, flush_interval_s=3600)
    await writer.start()
    for n in range(40):
        writer.submit(make_cdr(n))
    assert await writer.close(timeout_s=10) == []
    assert len(await stored_ids(engine)) == 40


async def test_close_is_bounded_and_returns_unwritten_records(engine: AsyncEngine) -> None:
    writer = CdrWriter(engine, flush_interval_s=0.01, initial_backoff_s=0.01, max_backoff_s=0.05)
    await writer.start()
    cdrs = [make_cdr(n) for n in range(3)]
    for cdr in cdrs:
        writer.submit(cdr)
    async with asyncio.timeout(5):
        leftover = await writer.close(timeout_s=0.2)  # the table never appears
    assert leftover == cdrs
    assert writer.pending == 3


async def test_submit_never_raises(engine: AsyncEngine) -> None:
    def broken(_depth: int) -> None:
        raise RuntimeError("metrics are down")

    writer = CdrWriter(engine, on_depth=broken)
    writer.submit(make_cdr(1))  # not started, callback failing: still queued, no exception
    assert writer.pending == 1
    assert await writer.close(timeout_s=0.1) == [make_cdr(1)]


def test_batch_size_must_be_positive(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError):
        CdrWriter(engine, batch_size=0)
