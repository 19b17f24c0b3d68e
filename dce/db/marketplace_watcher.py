"""Keep an in-memory copy of the marketplace fresh: reload when told, or when the change counter moved.

Every marketplace write bumps ``marketplace_version`` in its own transaction, so polling that one row every
``interval_s`` is cheap and also catches writes made by other nodes sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.marketplace_repository import MarketplaceData, load_marketplace, marketplace_version_of

log = logging.getLogger(__name__)


class MarketplaceWatcher:
    """Calls ``on_snapshot(data)`` with a fresh :class:`MarketplaceData` at start and after every change.

    ``await start()`` loads once (errors propagate: the exchange should not start without its marketplace) and
    begins polling; ``notify()`` (sync, cheap: pass it as the API's ``on_change`` hook) wakes the poller to reload
    now; ``await stop()`` ends it. Reload errors are logged and retried on the next tick; the last good snapshot
    stays in use. ``on_snapshot`` runs on the event loop and should only swap a reference.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        on_snapshot: Callable[[MarketplaceData], None],
        interval_s: float = 0.5,
    ) -> None:
        self._engine = engine
        self._on_snapshot = on_snapshot
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.version: int | None = None  # version of the last snapshot delivered
        self.reloads = 0

    async def start(self) -> MarketplaceData:
        """Load and deliver the first snapshot, then watch in the background."""
        data = await self.refresh(force=True)
        assert data is not None
        self._task = asyncio.create_task(self._run(), name="marketplace-watcher")
        return data

    def notify(self) -> None:
        """Reload as soon as possible (the version check still skips a reload when nothing changed)."""
        self._wake.set()

    async def refresh(self, *, force: bool = False) -> MarketplaceData | None:
        """Reload if the version moved (or ``force``); return the new data, or None when nothing changed."""
        if not force and self.version is not None and await marketplace_version_of(self._engine) == self.version:
            return None
        data = await load_marketplace(self._engine)
        self.version = data.version
        self.reloads += 1
        self._on_snapshot(data)
        return data

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("marketplace reload failed; keeping the previous snapshot")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> MarketplaceWatcher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
