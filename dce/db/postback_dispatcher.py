"""Sending postbacks: a cheap synchronous ``emit`` for the call path, a database outbox, and a worker that delivers.

::

    dispatcher = PostbackDispatcher(engine, session)        # session: an aiohttp.ClientSession the caller owns
    await dispatcher.start()      # loads the configs, starts the outbox writer and the delivery worker
    dispatcher.emit(event)        # sync, microseconds: match in memory, render, queue; never raises or awaits
    dispatcher.notify_configs_changed()   # the API's Changes.postbacks hook: reload the configs now
    await dispatcher.stop()       # in-flight sends finish, queued deliveries are written; pending ones stay pending

``emit`` matches the event against the configs held in memory (reloaded when their version counter moves — polled,
or at once on :meth:`notify_configs_changed`), renders each request unsigned and hands it to a
:class:`~dce.db.cdr_writer.BatchWriter` that stores it as a pending delivery (retrying while the database is down,
never dropping one). The worker (:meth:`run`) claims due deliveries (every ``poll_interval_s``, at once when new ones
are stored, or when a retry it scheduled comes due), sends up to ``concurrency`` at a time, each signed with the
time it is sent and bounded by ``timeout_s``: a 2xx response delivers it; anything else (status, timeout, connection
error) is retried with exponential backoff and jitter until ``max_attempts``, then it fails. Every attempt is
recorded. Deliveries live in the database, so a new dispatcher (after a restart, or on another node) sends what an
old one left pending; a claim is a lease, so a delivery whose sender died mid-flight is retried (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from dce.background import cancel_and_wait
from dce.billing.postback import (
    DELIVERY_HEADER,
    PostbackBook,
    PostbackConfig,
    PostbackEvent,
    Random,
    Request,
    next_attempt_at,
    render,
    sign,
)
from dce.db import postback_repository as repo
from dce.db.cdr_writer import BatchWriter
from dce.db.record_codec import Codec
from dce.db.watcher import Watcher

log = logging.getLogger(__name__)

ConfigsLoader = Callable[[AsyncEngine], Awaitable[Iterable[PostbackConfig]]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    """Timings and limits. Tests shrink the backoff (``backoff_base_s=0.05``) and the poll interval."""

    poll_interval_s: float = 0.5  # look for due deliveries at least this often
    timeout_s: float = 5.0  # one HTTP attempt, connect to last byte
    concurrency: int = 32  # requests in flight
    backoff_base_s: float = 1.0  # first retry after ~1 s, then 2, 4 ...
    backoff_cap_s: float = 3600.0
    lease_s: float | None = None  # how long a claim holds; default timeout_s + 30
    configs_interval_s: float = 0.5  # config version poll
    flush_interval_s: float = 0.05  # outbox writer: wait at most this long to fill a batch
    batch_size: int = 200  # outbox writer batch
    stop_timeout_s: float = 10.0  # stop(): wait this long for in-flight sends and the outbox


class PostbackDispatcher:
    """Emit postback events from the call path; deliver them from the outbox. See the module docstring."""

    def __init__(self, engine: AsyncEngine, session: aiohttp.ClientSession, *,
                 configs_loader: ConfigsLoader = repo.load_configs,
                 configs_version: Callable[[AsyncEngine], Awaitable[int]] = repo.configs_version,
                 now_fn: Callable[[], datetime] = utc_now, rng: Random | None = None,
                 settings: DispatcherSettings | None = None) -> None:
        self._engine = engine
        self._session = session
        self._now = now_fn
        self._rng: Random = rng if rng is not None else random.Random()
        self.settings = settings = settings or DispatcherSettings()
        self._lease_s = settings.lease_s if settings.lease_s is not None else settings.timeout_s + 30.0
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._book = PostbackBook()
        self._writer: BatchWriter[repo.NewDelivery] = BatchWriter(
            engine, insert=self._store, codec=Codec(repo.NewDelivery, "postback", lambda d: d.id),
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
        )  # fmt: skip
        self._watcher: Watcher[Iterable[PostbackConfig]] = Watcher(
            engine, name="postback-configs", version=configs_version, load=configs_loader,
            on_load=self.set_configs, interval_s=settings.configs_interval_s,
        )  # fmt: skip
        self._wake = asyncio.Event()
        self._retries: list[float] = []  # heap of loop times when retries this worker scheduled come due
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.emitted = 0  # deliveries queued by emit()
        self.attempts = 0  # HTTP attempts made
        self.delivered = 0
        self.retried = 0
        self.failed = 0  # gave up after max_attempts

    # ------------------------------------------------------------------------------------------- call path

    @property
    def configs(self) -> PostbackBook:
        return self._book

    def set_configs(self, configs: Iterable[PostbackConfig]) -> None:
        """Replace the in-memory configs (the watcher calls this after every reload)."""
        self._book = configs if isinstance(configs, PostbackBook) else PostbackBook(configs)

    def notify_configs_changed(self) -> None:
        """Reload the configs as soon as possible (sync and cheap: the API's ``Changes.postbacks`` hook)."""
        self._watcher.notify()

    def emit(self, event: PostbackEvent) -> int:
        """Queue the deliveries ``event`` causes; returns how many. Sync, no I/O; never raises."""
        try:
            configs = self._book.matching(event)
            if not configs:
                return 0
            now = self._now()
            for config in configs:
                request = render(config, event, signed=False)
                self._writer.submit(repo.NewDelivery(
                    id=uuid.uuid4().hex, config_id=config.id, event=str(event.name), call_id=event.call_id,
                    method=request.method, url=request.url, headers=request.headers, body=request.body,
                    max_attempts=config.max_attempts, created_at=now,
                ))  # fmt: skip
            self.emitted += len(configs)
            return len(configs)
        except Exception:
            log.exception("postback emit failed for %r", event)
            return 0

    async def _store(self, engine: AsyncEngine, batch: list[repo.NewDelivery]) -> None:
        await repo.enqueue(engine, batch)
        self._wake.set()

    # ---------------------------------------------------------------------------------------------- lifecycle

    @property
    def pending_writes(self) -> int:
        """Deliveries emitted and not yet stored."""
        return self._writer.pending

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        """Load the configs (errors propagate), start the outbox writer and the delivery worker."""
        self._stopping = False
        await self._watcher.start()
        await self._writer.start()
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="dce-postback-worker")

    async def flush(self) -> None:
        """Wait until every emitted delivery is stored."""
        await self._writer.flush()

    async def stop(self) -> list[repo.NewDelivery]:
        """Stop claiming; let in-flight sends finish (``stop_timeout_s``); store what is queued. Returns the
        deliveries that could not be stored in time (empty normally). Pending deliveries stay pending."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._inflight:
            _, late = await asyncio.wait(set(self._inflight), timeout=self.settings.stop_timeout_s)
            for t in late:  # their claims expire after the lease and another dispatcher retries them
                t.cancel()
            if late:
                await asyncio.wait(late)
        leftover = await self._writer.close(self.settings.stop_timeout_s)
        await self._watcher.stop()
        return leftover

    # -------------------------------------------------------------------------------------------------- worker

    async def run(self) -> None:
        """Claim due deliveries and send them, until cancelled."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        while not self._stopping:
            self._wake.clear()
            saturated = False
            free = settings.concurrency - len(self._inflight)
            if free > 0:
                try:
                    batch = await repo.due(self._engine, self._now(), free, lease_s=self._lease_s)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("postback worker: claiming due deliveries failed")
                    batch = []
                for delivery in batch:
                    task = asyncio.create_task(self._send(delivery), name=f"dce-postback-{delivery.id}")
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                saturated = len(batch) == free
            else:
                saturated = True
            now = loop.time()
            while self._retries and self._retries[0] <= now:
                heapq.heappop(self._retries)
            timeout = settings.poll_interval_s
            if self._retries:
                timeout = min(timeout, self._retries[0] - now)
            if saturated and len(self._inflight) < settings.concurrency:
                continue  # more are due and there is room
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(timeout, 0.001))

    async def _send(self, delivery: repo.DueDelivery) -> None:
        attempt = delivery.attempts + 1
        request = Request(delivery.method, delivery.url, {**delivery.headers, DELIVERY_HEADER: delivery.id},
                          delivery.body)
        started_at = self._now()
        if delivery.secret:
            request = sign(request, delivery.secret, int(started_at.timestamp()))
        status: int | None = None
        error: str | None = None
        t0 = time.perf_counter()
        try:
            async with self._session.request(
                request.method, URL(request.url, encoded=True), headers=request.headers,
                data=None if request.body is None else request.body.encode(), timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                await response.read()
                if not 200 <= status < 300:
                    error = f"HTTP {status} {response.reason or ''}".rstrip()
        except TimeoutError:
            error = f"timed out after {self.settings.timeout_s:g}s"
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed_ms = round((time.perf_counter() - t0) * 1000)
        self.attempts += 1
        delivered = error is None
        retry_at = None
        if delivered:
            self.delivered += 1
        elif attempt < delivery.max_attempts:
            retry_at = next_attempt_at(attempt, self._now(), self._rng, base_s=self.settings.backoff_base_s,
                                       cap_s=self.settings.backoff_cap_s)
            self.retried += 1
        else:
            self.failed += 1
            log.warning("postback %s (%s %s) failed after %d attempts: %s", delivery.id, delivery.event,
                        delivery.call_id, attempt, error)
        try:
            await repo.record_attempt(
                self._engine, delivery.id, attempt=attempt, at=started_at, status_code=status, error=error,
                elapsed_ms=elapsed_ms, delivered=delivered, retry_at=retry_at,
            )  # fmt: skip
        except Exception:  # the claim expires and the delivery is tried again (at least once)
            log.exception("postback %s: recording attempt %d failed", delivery.id, attempt)
            return
        if retry_at is not None:
            loop = asyncio.get_running_loop()
            heapq.heappush(self._retries, loop.time() + max(0.0, (retry_at - self._now()).total_seconds()))
            self._wake.set()
        elif len(self._inflight) >= self.settings.concurrency:
            self._wake.set()  # a slot frees up for work that may be waiting
