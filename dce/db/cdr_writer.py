"""Batching writers: take records (CDRs, bids) off the hot path and never lose one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord
from dce.db.cdr_repository import insert_cdrs

log = logging.getLogger(__name__)

T = TypeVar("T")
InsertFn = Callable[[AsyncEngine, Sequence[T]], Awaitable[None]]


class BatchWriter(Generic[T]):
    """Queue records with :meth:`submit` (sync, never blocks or raises); a task writes them in batches.

    A batch goes out when ``batch_size`` records are queued or ``flush_interval_s`` after the first one
    arrived. When the write fails the batch stays at the head of the queue (order preserved) and is retried
    with exponential backoff capped at ``max_backoff_s``; writes are idempotent on call_id, so a retry after
    a lost commit acknowledgement does not duplicate rows (``insert`` must be idempotent). ``on_depth`` is told
    the queue depth on change; ``on_written`` the size of each batch once it is stored (e.g. to drop read caches).
    ``kind`` names the records in logs and the task.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 200,
        flush_interval_s: float = 0.2,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        on_depth: Callable[[int], None] | None = None,
        on_written: Callable[[int], None] | None = None,
        insert: InsertFn[T],
        kind: str = "record",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._engine = engine
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._on_depth = on_depth
        self.on_written = on_written
        self._insert = insert
        self._kind = kind
        self._queue: deque[T] = deque()
        self._wake = asyncio.Event()  # something is queued
        self._hurry = asyncio.Event()  # a full batch, flush() or close(): stop waiting for more
        self._idle = asyncio.Event()  # the queue is empty
        self._idle.set()
        self._closing = False
        self._flushers = 0  # callers waiting in flush()
        self._task: asyncio.Task[None] | None = None
        self.written = 0  # records written since start
        self.failures = 0  # failed batch writes since start

    @property
    def pending(self) -> int:
        """Records queued and not yet written."""
        return len(self._queue)

    def submit(self, cdr: T) -> None:
        """Queue a record for writing. Never blocks, never raises."""
        try:
            self._queue.append(cdr)
            self._idle.clear()
            self._wake.set()
            if len(self._queue) >= self._batch_size:
                self._hurry.set()
            if self._closing:
                log.error("%s %r submitted after close(); it stays queued, unwritten", self._kind, cdr)
            self._report_depth()
        except Exception:  # pragma: no cover - defensive: the hot path must not see our failures
            log.exception("%s writer: submit failed for %r", self._kind, cdr)

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"dce-{self._kind}-writer")

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
        """Write what is queued, waiting at most ``timeout_s``, then stop.

        Returns the records that could not be written in time (empty on success) so the caller can keep them.
        """
        self._closing = True
        self._hurry.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        leftover = list(self._queue)
        if leftover:
            log.error("%s writer closed with %d unwritten records", self._kind, len(leftover))
        return leftover

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            try:
                self._on_depth(len(self._queue))
            except Exception:
                log.exception("%s writer: on_depth callback failed", self._kind)

    async def _run(self) -> None:
        backoff = self._initial_backoff_s
        while True:
            if not self._queue:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self._batch_size and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._flush_interval_s)
            if not (self._closing or self._flushers):
                self._hurry.clear()
            batch = list(islice(self._queue, self._batch_size))
            try:
                await self._insert(self._engine, batch)
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "%s write of %d records failed (%s: %s); %d queued, retrying in %.2fs", self._kind,
                    len(batch), type(exc).__name__, exc, len(self._queue), backoff,
                )  # fmt: skip
                await asyncio.sleep(backoff)  # backoff: there is no event to wait for
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = self._initial_backoff_s
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch)
            self._report_depth()
            if self.on_written is not None:
                try:
                    self.on_written(len(batch))
                except Exception:
                    log.exception("%s writer: on_written callback failed", self._kind)


class CdrWriter(BatchWriter[CallDetailRecord]):
    """The batching writer for call detail records (idempotent on call_id)."""

    def __init__(self, engine: AsyncEngine, *, insert: InsertFn[CallDetailRecord] = insert_cdrs,
                 **options: Any) -> None:
        super().__init__(engine, insert=insert, kind="cdr", **options)
