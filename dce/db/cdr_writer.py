"""Batching writers: take records (CDRs, bids) off the hot path and never lose one, nor let one block the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.background import cancel_and_wait
from dce.billing.cdr import CallDetailRecord
from dce.db.cdr_repository import insert_cdrs
from dce.db.cdr_spool import Spool
from dce.db.dead_letters import error_text, insert_dead_letter
from dce.db.failures import is_outage, is_record_fault
from dce.db.record_codec import CDR_CODEC, Codec

log = logging.getLogger(__name__)

T = TypeVar("T")
InsertFn = Callable[[AsyncEngine, Sequence[T]], Awaitable[None]]


class BatchWriter(Generic[T]):
    """Queue records with :meth:`submit` (sync, never blocks or raises); a task writes them in batches.

    A batch goes out when ``batch_size`` records are queued or ``flush_interval_s`` after the first one arrived;
    every write is bounded by ``write_timeout_s``. ``insert`` must be idempotent (a retry after a lost commit
    acknowledgement must not duplicate rows). When a write fails:

    - the database is away (timeout, lost connection: :func:`~dce.db.failures.is_outage`): the batch stays at the
      head of the queue and is retried with exponential backoff capped at ``max_backoff_s``;
    - otherwise the batch is written one record at a time; a record that still fails alone, with an error of its
      own (:func:`~dce.db.failures.is_record_fault`) or while others are written, is set aside in the dead-letter
      table with the error (logged at ERROR, counted in :attr:`dead_lettered`). A poison record blocks no other.

    The memory queue holds at most ``queue_limit`` records; beyond that they spill to ``spool`` (appended and
    fsynced by a task of their own, never waiting on the database), and spooled records (spilled ones, and those
    left at the last stop) are read back chunk by chunk while there is room. Without a spool the queue grows.

    :attr:`stalled_s` is how long records have waited without any leaving the queue (readiness reads it, with a
    ``clock`` tests can drive). ``on_depth`` is told the queue depth on change; ``on_written`` the size of each
    stored batch (e.g. to drop read caches).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        insert: InsertFn[T],
        codec: Codec[T],
        batch_size: int = 200,
        flush_interval_s: float = 0.2,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        write_timeout_s: float = 15.0,
        queue_limit: int = 10_000,
        spool: Spool[T] | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_written: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if queue_limit < batch_size:
            raise ValueError("queue_limit must be >= batch_size")
        self._engine = engine
        self._insert = insert
        self.codec = codec
        self.kind = codec.kind
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._write_timeout_s = write_timeout_s
        self.queue_limit = queue_limit
        self.spool = spool
        self._on_depth = on_depth
        self.on_written = on_written
        self._clock = clock
        self._queue: deque[T] = deque()
        self._overflow: list[T] = []  # past queue_limit, on their way to the spool
        self._wake = asyncio.Event()  # something is queued
        self._hurry = asyncio.Event()  # a full batch, flush() or close(): stop waiting for more
        self._idle = asyncio.Event()  # the queue is empty
        self._idle.set()
        self._spill_wake = asyncio.Event()
        self._closing = False
        self._flushers = 0  # callers waiting in flush()
        self._task: asyncio.Task[None] | None = None
        self._spiller: asyncio.Task[None] | None = None
        self._spool_unread = spool is not None  # the spool may hold records to read back
        self._replay_end: int | None = None  # records read back occupy the queue up to this count of removals
        self._replay_exhausted = False
        self._removed = 0  # records that left the head of the queue (written or dead-lettered)
        self._waiting_since: float | None = None  # since when records wait with none leaving the queue
        self.written = 0  # records written since start
        self.failures = 0  # failed writes since start
        self.dead_lettered = 0  # records set aside since start
        self.spilled = 0  # records spilled to the spool since start

    @property
    def pending(self) -> int:
        """Records in memory not yet written (queued, or on their way to the spool)."""
        return len(self._queue) + len(self._overflow)

    @property
    def stalled_s(self) -> float:
        """Seconds records have been waiting with none written or set aside; 0 when nothing waits."""
        if self._waiting_since is None or not self.pending:
            return 0.0
        return max(0.0, self._clock() - self._waiting_since)

    def health(self, stall_after_s: float) -> str:
        """Return "ok", or why records are not being written (waiting ``stall_after_s`` or more, none written)."""
        stalled = self.stalled_s
        if stalled < stall_after_s:
            return "ok"
        return f"stalled: {self.pending} records waiting, none written for {stalled:.0f} s"

    def submit(self, record: T) -> None:
        """Queue a record for writing. Never blocks, never raises."""
        try:
            if self._waiting_since is None:
                self._waiting_since = self._clock()
            if len(self._queue) >= self.queue_limit and self.spool is not None:
                self._overflow.append(record)
                self._spill_wake.set()
            else:
                self._queue.append(record)
            self._idle.clear()
            self._wake.set()
            if len(self._queue) >= self._batch_size:
                self._hurry.set()
            if self._closing:
                log.error("%s %s submitted after close(); it stays queued, unwritten", self.kind,
                          self._key(record))
            self._report_depth()
        except Exception:  # pragma: no cover - defensive: the hot path must not see our failures
            log.exception("%s writer: submit failed", self.kind)

    async def start(self) -> None:
        """Start the writer task (and the spiller, with a spool)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"dce-{self.kind}-writer")
            if self.spool is not None:
                self._spiller = asyncio.create_task(self._spill(), name=f"dce-{self.kind}-spiller")

    async def flush(self) -> None:
        """Wait until everything queued so far (and since) is written. Unbounded while the DB is down."""
        if not self._queue:
            return
        if self._task is None:
            raise RuntimeError("BatchWriter.flush() before start() (or after close())")
        self._flushers += 1
        self._hurry.set()
        try:
            await self._idle.wait()
        finally:
            self._flushers -= 1

    async def close(self, timeout_s: float = 10.0) -> list[T]:
        """Write what is queued, waiting at most ``timeout_s``, then stop; spool what is left.

        Returns the records that were neither written nor spooled (empty on success) so the caller can keep them.
        """
        self._closing = True
        self._hurry.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                await cancel_and_wait(task)
        spiller, self._spiller = self._spiller, None
        await cancel_and_wait(spiller)
        leftover = [*self._queue, *self._overflow]
        if leftover and self.spool is not None:
            try:
                self.spool.append(leftover)
            except OSError as exc:
                log.error("%s writer: %d unwritten records could not be spooled to %s: %s", self.kind,
                          len(leftover), self.spool.path, exc)
                return leftover
            log.warning("%s writer: %d unwritten records spooled to %s (fsynced); replayed at the next start",
                        self.kind, len(leftover), self.spool.path)
            return []
        if leftover:
            log.error("%s writer closed with %d unwritten records", self.kind, len(leftover))
        return leftover

    # ------------------------------------------------------------------------------------------------ internals

    def _key(self, record: T) -> str:
        try:
            return self.codec.key(record)
        except Exception:
            return "?"

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            try:
                self._on_depth(self.pending)
            except Exception:
                log.exception("%s writer: on_depth callback failed", self.kind)

    async def _write(self, records: Sequence[T]) -> None:
        async with asyncio.timeout(self._write_timeout_s):
            await self._insert(self._engine, records)

    def _removed_from_head(self, count: int) -> None:
        self._removed += count
        self._waiting_since = self._clock() if self.pending else None

    async def _run(self) -> None:
        backoff = self._initial_backoff_s
        while True:
            self._read_back()
            if not self._queue:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                if self._spool_unread and not self._overflow:  # more to read back once the last chunk is out
                    self._wake.set()
                await self._wake.wait()
                if not self._queue:
                    await asyncio.sleep(0)
                continue
            if len(self._queue) < self._batch_size and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._flush_interval_s)
            if not (self._closing or self._flushers):
                self._hurry.clear()
            batch = list(islice(self._queue, self._batch_size))
            try:
                await self._write(batch)
            except Exception as exc:
                self.failures += 1
                progressed = False if is_outage(exc) else await self._isolate(batch, exc)
                if not progressed:
                    log.warning(
                        "%s write of %d records failed (%s); %d queued, retrying in %.2fs", self.kind,
                        len(batch), error_text(exc)[:300], self.pending, backoff,
                    )  # fmt: skip
                    await asyncio.sleep(backoff)  # backoff: there is no event to wait for
                    backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = self._initial_backoff_s
            for _ in batch:
                self._queue.popleft()
            self._written(len(batch))

    def _written(self, count: int) -> None:
        self.written += count
        self._removed_from_head(count)
        self._report_depth()
        if self.on_written is not None:
            try:
                self.on_written(count)
            except Exception:
                log.exception("%s writer: on_written callback failed", self.kind)

    async def _isolate(self, batch: list[T], batch_error: Exception) -> bool:
        """Write ``batch`` (the queue's head) one by one; set aside what fails alone. False: the database is away.

        Records leave the queue only at the end, so a cancellation meanwhile loses nothing (written ones are
        written again, idempotently).
        """
        done: set[int] = set()
        failed: list[tuple[int, Exception]] = []
        outage = False
        for index, record in enumerate(batch):
            try:
                await self._write([record])
            except Exception as exc:
                self.failures += 1
                if is_outage(exc):
                    outage = True
                    break
                failed.append((index, exc))
            else:
                done.add(index)
        if not outage and done and failed:
            failed, outage = await self._retry_alone(batch, failed, done)
        written = len(done)
        # A record is poison when its error is plainly its own, or it failed alone again after others were taken.
        if not outage and failed and (written or all(is_record_fault(exc) for _, exc in failed)):
            for index, exc in failed:
                try:
                    await self._set_aside(batch[index], exc)
                except Exception as dead_exc:
                    log.error("%s writer: could not set %s aside (%s); it stays queued", self.kind,
                              self._key(batch[index]), error_text(dead_exc)[:300])
                    break
                done.add(index)
        if not done:
            return False
        for _ in batch:
            self._queue.popleft()
        for index in reversed(range(len(batch))):
            if index not in done:
                self._queue.appendleft(batch[index])
        self.written += written
        self._removed_from_head(len(done))
        self._report_depth()
        if written and self.on_written is not None:
            with contextlib.suppress(Exception):
                self.on_written(written)
        return True

    async def _retry_alone(self, batch: list[T], failed: list[tuple[int, Exception]],
                           done: set[int]) -> tuple[list[tuple[int, Exception]], bool]:
        """Write once more, alone, each record that failed for no reason of its own before others went in.

        The database may have changed in between (a table created, a lock released): only a record that fails
        again after others were written is taken for poison. Returns (still failed, the database is away).
        """
        still: list[tuple[int, Exception]] = []
        for index, exc in failed:
            if is_record_fault(exc):
                still.append((index, exc))
                continue
            try:
                await self._write([batch[index]])
            except Exception as again:
                self.failures += 1
                if is_outage(again):
                    return failed, True  # nothing is set aside while the database is away
                still.append((index, again))
            else:
                done.add(index)
        return still, False

    async def _set_aside(self, record: T, exc: Exception) -> None:
        error = error_text(exc)
        try:
            payload = self.codec.dumps(record)
        except Exception as encode_exc:  # the record cannot even be encoded: keep what can be read of it
            payload = json.dumps({"repr": repr(record), "encode_error": error_text(encode_exc)}, ensure_ascii=True)
        key = self._key(record)
        async with asyncio.timeout(self._write_timeout_s):
            await insert_dead_letter(self._engine, kind=self.kind, key=key, payload=payload, error=error)
        self.dead_lettered += 1
        log.error("%s %s set aside as a dead letter (table dead_letters): %s", self.kind, key, error[:500])

    async def _spill(self) -> None:
        """Move records past the queue limit to the spool, durably, off the event loop."""
        assert self.spool is not None
        warned = False
        while True:
            await self._spill_wake.wait()
            self._spill_wake.clear()
            while self._overflow:
                chunk = list(self._overflow)
                try:
                    await asyncio.to_thread(self.spool.append, chunk)
                except OSError as exc:
                    log.error("%s writer: spilling %d records to %s failed (%s); they stay in memory",
                              self.kind, len(chunk), self.spool.path, exc)
                    await asyncio.sleep(1.0)
                    continue
                del self._overflow[: len(chunk)]
                self.spilled += len(chunk)
                self._spool_unread = True
                self._wake.set()
                if not warned:
                    warned = True
                    log.warning("%s queue full (%d records): spilling to %s until the database catches up",
                                self.kind, self.queue_limit, self.spool.path)
                self._report_depth()

    def _read_back(self) -> None:
        """Move spooled records into the queue while it has room, one chunk at a time."""
        spool = self.spool
        if spool is None or not self._spool_unread or self._closing:
            return
        if self._replay_end is not None:
            if self._removed < self._replay_end:
                return  # the last chunk read back is not all out yet
            self._replay_end = None
            if self._replay_exhausted:
                spool.finish_replay()  # every record of the replayed file is stored (or set aside)
                self._replay_exhausted = False
        room = self.queue_limit - len(self._queue)
        if room < self._batch_size:
            return
        try:
            records, exhausted = spool.read(room)
        except OSError as exc:
            log.error("%s writer: reading the spool %s failed: %s", self.kind, spool.path, exc)
            self._spool_unread = False
            return
        if not records and exhausted:
            spool.finish_replay()
            self._spool_unread = spool.has_records()
            return
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._queue.extend(records)
        self._replay_end = self._removed + len(self._queue)
        self._replay_exhausted = exhausted
        self._idle.clear()
        log.info("%s writer: read %d spooled records back from %s", self.kind, len(records), spool.path)
        self._report_depth()


class CdrWriter(BatchWriter[CallDetailRecord]):
    """The batching writer for call detail records (idempotent on call_id)."""

    def __init__(self, engine: AsyncEngine, *, insert: InsertFn[CallDetailRecord] = insert_cdrs,
                 **options: Any) -> None:
        super().__init__(engine, insert=insert, codec=CDR_CODEC, **options)
