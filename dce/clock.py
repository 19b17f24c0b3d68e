"""The one clock the exchange's parts are given: a monotonic reading for timers and a wall-clock reading for records.

State machines never read a clock: they take ``now``. The parts that drive them (the SIP driver, the CallFlow,
the router, HTTP handlers) take a :class:`Clock` instead of calling ``time.time()`` or ``datetime.now()``, so a
test moves time by hand with :class:`VirtualClock` and nothing sleeps.

A leaf module (stdlib only), so every room can use it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Two readings of the same instant: monotonic seconds (timers, durations) and aware UTC wall time."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back (the event loop's time in production)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        ...

    def wall(self, monotonic: float) -> datetime:
        """The wall-clock time at an earlier (or later) ``monotonic`` reading of this clock."""
        ...


class _WallFromMonotonic:
    """``wall()`` for any clock: now minus how long ago ``monotonic`` was."""

    def monotonic(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def now(self) -> datetime:  # pragma: no cover - overridden
        raise NotImplementedError

    def wall(self, monotonic: float) -> datetime:
        return self.now() - timedelta(seconds=self.monotonic() - monotonic)


class SystemClock(_WallFromMonotonic):
    """Real time: ``time.monotonic()`` (the default event loop's clock) and ``datetime.now(UTC)``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class LoopClock(_WallFromMonotonic):
    """Real time on an event loop's own clock (``loop.time()``), which uvloop keeps apart from ``time.monotonic``."""

    def __init__(self, loop: _HasTime) -> None:
        self.monotonic = loop.time  # type: ignore[method-assign]  # the loop's own (C) method: read many times a call

    def now(self) -> datetime:
        return datetime.now(UTC)


class _HasTime(Protocol):
    def time(self) -> float: ...


class VirtualClock(_WallFromMonotonic):
    """A clock tests move by hand: both readings advance together and only through :meth:`advance`."""

    def __init__(self, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        self._wall = start or datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
        self._monotonic = monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def now(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move time forward ``seconds`` (never back)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._monotonic += seconds
        self._wall += timedelta(seconds=seconds)
