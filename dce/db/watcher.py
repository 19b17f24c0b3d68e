"""Keep an in-memory copy of database state fresh: reload when told, or when its change counter moved.

Each kind of state (marketplace, number lists, consents) has a cheap ``version`` query that changes with every
write, and a ``load`` that reads the whole state. Polling the version every ``interval_s`` also catches writes
made by other nodes sharing the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.background import Periodic

T = TypeVar("T")


class Watcher(Generic[T]):
    """Calls ``on_load(state)`` with freshly loaded state at start and after every change.

    ``await start()`` loads once (errors propagate: the exchange should not start without it) and begins polling;
    ``notify()`` (sync, cheap: pass it as an API's on-change hook) wakes the poller to reload now; ``await stop()``
    ends it. Reload errors are logged and retried on the next tick; the last good state stays in use.
    ``on_load`` runs on the event loop and should only swap a reference.
    """

    def __init__(self, engine: AsyncEngine, *, name: str, version: Callable[[AsyncEngine], Awaitable[int]],
                 load: Callable[[AsyncEngine], Awaitable[T]], on_load: Callable[[T], None],
                 interval_s: float = 0.5) -> None:
        self._engine = engine
        self.name = name
        self._version = version
        self._load = load
        self._on_load = on_load
        self._job = Periodic(f"{name}-watcher", self.refresh, interval_s=interval_s,
                             failure="reload failed; keeping the previous state")
        self.version: int | None = None  # version of the last state delivered
        self.reloads = 0

    async def start(self) -> T:
        """Load and deliver the first state, then watch in the background."""
        state = await self.refresh(force=True)
        assert state is not None
        self._job.start()
        return state

    def notify(self) -> None:
        """Reload as soon as possible (the version check still skips a reload when nothing changed)."""
        self._job.notify()

    async def refresh(self, *, force: bool = False) -> T | None:
        """Reload if the version moved (or ``force``); return the new state, or None when nothing changed."""
        version = await self._version(self._engine)
        if not force and version == self.version:
            return None
        state = await self._load(self._engine)
        self.version = version
        self.reloads += 1
        self._on_load(state)
        return state

    async def stop(self) -> None:
        """Stop watching (a no-op when not started)."""
        await self._job.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
