"""CdrWriter: batching, flushing, and surviving database failures without losing or duplicating records."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord
from dce.db.cdr_repository import insert_cdrs, list_cdrs
from dce.db.cdr_spool import Spool
from dce.db.cdr_writer import CdrWriter
from dce.db.dead_letters import list_dead_letters
from dce.db.engine import create_engine
from dce.db.migrate import upgrade_async
from dce.db.record_codec import CDR_CODEC
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
    written = insert.written_in_order()
    assert sorted(written) == sorted(set(written)) == sorted(cdr.call_id for cdr in submitted)  # each once
    assert writer.dead_lettered == 0  # a missing table is the database's fault, not the records'


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


def poison(n: int) -> CallDetailRecord:
    """A record no database takes: text set after construction bypasses the storable boundary (a future bug)."""
    cdr = make_cdr(n)
    cdr.caller = "bad \udcff byte"  # neither SQLite's driver nor PostgreSQL takes a lone surrogate
    return cdr


class FlakyInsert:
    """insert_cdrs behind a switch: while ``down``, every write raises ``error`` (an outage)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.down = True
        self.error = error or ConnectionRefusedError("connection refused")
        self.sizes: list[int] = []

    async def __call__(self, engine: AsyncEngine, cdrs: Sequence[CallDetailRecord]) -> None:
        self.sizes.append(len(cdrs))
        if self.down:
            raise self.error
        await insert_cdrs(engine, cdrs)


async def test_a_poison_record_is_set_aside_and_blocks_no_other(
    engine: AsyncEngine, migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = [poison(n) if n in (3, 7) else make_cdr(n) for n in range(10)]
    writer = CdrWriter(engine, batch_size=5, flush_interval_s=0.01, initial_backoff_s=0.01)
    await writer.start()
    with caplog.at_level(logging.ERROR, logger="dce.db.cdr_writer"):
        for cdr in records:
            writer.submit(cdr)
        async with asyncio.timeout(10):
            await writer.flush()
    assert await writer.close() == []

    assert await stored_ids(engine) == [make_cdr(n).call_id for n in range(10) if n not in (3, 7)]
    letters = await list_dead_letters(engine, "cdr")
    assert [row["record_key"] for row in letters] == ["call-00003", "call-00007"]
    assert all(row["error"] for row in letters)
    assert json.loads(letters[0]["payload"])["caller"] == "bad \udcff byte"  # the record as it was, every field
    assert CDR_CODEC.loads(letters[0]["payload"]) == replace(make_cdr(3), caller="bad \\xff byte")  # replayable
    assert writer.dead_lettered == 2 and writer.written == 8
    assert sum("set aside as a dead letter" in r.getMessage() for r in caplog.records) == 2


async def test_a_poison_record_alone_in_its_batch_is_set_aside(engine: AsyncEngine, migrated_database_url: str) -> None:
    writer = CdrWriter(engine, batch_size=5, flush_interval_s=0.01, initial_backoff_s=0.01)
    await writer.start()
    writer.submit(poison(1))
    async with asyncio.timeout(10):
        await writer.flush()
    writer.submit(make_cdr(2))  # and the next one is written
    async with asyncio.timeout(10):
        await writer.flush()
    await writer.close()
    assert await stored_ids(engine) == ["call-00002"]
    assert writer.dead_lettered == 1


class HealingInsert:
    """insert_cdrs that refuses (for no reason of the record's: a missing table) until ``heal_after`` attempts."""

    def __init__(self, heal_after: int) -> None:
        self.heal_after = heal_after
        self.attempts: list[list[str]] = []

    async def __call__(self, engine: AsyncEngine, cdrs: Sequence[CallDetailRecord]) -> None:
        self.attempts.append([cdr.call_id for cdr in cdrs])
        if len(self.attempts) <= self.heal_after:
            raise RuntimeError("relation \"calls\" does not exist")
        await insert_cdrs(engine, cdrs)


async def test_a_record_that_failed_before_the_database_healed_is_retried_not_set_aside(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    """The batch fails, then its first record alone, then the database heals (a migration ran): the others go in,
    and that first record, tried alone once more, too. It was never poison (CI: it went to the dead letters)."""
    insert = HealingInsert(heal_after=2)  # the batch, then call-00000 alone
    writer = CdrWriter(engine, batch_size=5, flush_interval_s=0.01, initial_backoff_s=0.01, insert=insert)
    await writer.start()
    for n in range(5):
        writer.submit(make_cdr(n))
    async with asyncio.timeout(10):
        await writer.flush()
    assert await writer.close() == []
    assert await stored_ids(engine) == [make_cdr(n).call_id for n in range(5)]
    assert writer.dead_lettered == 0 and await list_dead_letters(engine, "cdr") == []
    assert insert.attempts[-1] == ["call-00000"]  # retried alone after the others


async def test_an_outage_keeps_the_whole_batch_queued_without_isolating(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    insert = FlakyInsert()
    writer = CdrWriter(engine, batch_size=5, flush_interval_s=0.01, initial_backoff_s=0.005, max_backoff_s=0.01,
                       insert=insert)
    await writer.start()
    for n in range(5):
        writer.submit(make_cdr(n))
    async with asyncio.timeout(10):
        while len(insert.sizes) < 4:
            await asyncio.sleep(0.005)
    assert set(insert.sizes) == {5}  # retried as a batch, never one by one
    assert writer.pending == 5 and writer.dead_lettered == 0
    insert.down = False
    async with asyncio.timeout(10):
        await writer.flush()
    await writer.close()
    assert len(await stored_ids(engine)) == 5


async def test_a_write_that_hangs_is_timed_out_and_retried(engine: AsyncEngine, migrated_database_url: str) -> None:
    """A database gone silent: without a timeout the writer waits forever on the first write."""
    calls = 0

    async def hangs_once(engine_: AsyncEngine, cdrs: Sequence[CallDetailRecord]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # no answer, no error: a blackholed connection
        await insert_cdrs(engine_, cdrs)

    writer = CdrWriter(engine, batch_size=5, flush_interval_s=0.01, initial_backoff_s=0.01, write_timeout_s=0.1,
                       insert=hangs_once)
    await writer.start()
    writer.submit(make_cdr(1))
    async with asyncio.timeout(10):
        await writer.flush()
    await writer.close()
    assert await stored_ids(engine) == ["call-00001"] and calls == 2


async def test_the_queue_is_bounded_and_spills_to_the_spool_then_everything_is_written(
    engine: AsyncEngine, migrated_database_url: str, tmp_path: Path
) -> None:
    insert = FlakyInsert()
    spool = Spool(tmp_path / "spool.jsonl", CDR_CODEC)
    writer = CdrWriter(engine, batch_size=5, queue_limit=10, flush_interval_s=0.01, initial_backoff_s=0.005,
                       max_backoff_s=0.01, insert=insert, spool=spool)
    await writer.start()
    for n in range(50):
        writer.submit(make_cdr(n))
    async with asyncio.timeout(10):
        while writer.spilled < 40:
            await asyncio.sleep(0.005)
    assert writer.pending == 10  # the memory queue never held more than its limit
    assert len(spool.path.read_text().splitlines()) == 40

    insert.down = False  # the database is back: memory first, then the spool chunk by chunk
    async with asyncio.timeout(10):
        while writer.written < 50:
            await asyncio.sleep(0.01)
    await writer.close()
    assert await stored_ids(engine) == [make_cdr(n).call_id for n in range(50)]
    assert not spool.has_records()


async def test_close_spools_what_is_left_and_the_next_start_writes_it(
    engine: AsyncEngine, migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool.jsonl", CDR_CODEC)
    writer = CdrWriter(engine, flush_interval_s=0.01, initial_backoff_s=0.01, insert=FlakyInsert(), spool=spool)
    await writer.start()
    for n in range(3):
        writer.submit(make_cdr(n))
    with caplog.at_level(logging.WARNING, logger="dce.db.cdr_writer"):
        assert await writer.close(timeout_s=0.2) == []  # nothing lost: on disk, fsynced
    assert "spooled to" in caplog.text
    assert len(spool.path.read_text().splitlines()) == 3

    again = CdrWriter(engine, flush_interval_s=0.01, spool=Spool(spool.path, CDR_CODEC))
    await again.start()  # reads the spool back at start
    async with asyncio.timeout(10):
        while again.written < 3:
            await asyncio.sleep(0.01)
    await again.close()
    assert len(await stored_ids(engine)) == 3
    assert not spool.has_records()


async def test_stalled_seconds_follow_a_virtual_clock(engine: AsyncEngine, migrated_database_url: str) -> None:
    now = [1000.0]
    insert = FlakyInsert()
    writer = CdrWriter(engine, flush_interval_s=0.01, initial_backoff_s=0.005, max_backoff_s=0.01, insert=insert,
                       clock=lambda: now[0])
    assert writer.stalled_s == 0
    await writer.start()
    writer.submit(make_cdr(1))
    now[0] += 45
    assert writer.stalled_s == 45  # records waiting, none written for 45 s
    insert.down = False
    async with asyncio.timeout(10):
        await writer.flush()
    assert writer.stalled_s == 0
    writer.submit(make_cdr(2))
    now[0] += 1
    assert writer.stalled_s == 1  # counted from the last write, not from the first record ever
    await writer.close()


def test_dead_letter_payload_is_ascii_json() -> None:
    payload = CDR_CODEC.dumps(poison(1))
    assert payload.isascii() and json.loads(payload)["caller"] == "bad \udcff byte"
