"""Counters for caps and concurrency: the interface the engine reads, and an in-process implementation.

Calendar windows (hour/day/month) are in the buyer's time zone. The interface is batch-friendly: ``usage_many``
answers every cap question for one plan in one call (one pipelined round trip for the Redis implementation).

In process, events are counted per minute (every window starts on a minute boundary: zone offsets are whole
minutes), so a month of a busy target costs at most 44,640 buckets of 16 bytes, whatever the call rate.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from dce.routing.model import CapCounts

Window = Literal["hour", "day", "month"]
_KEEP_MIN = 32 * 1440  # longest window (a month) plus slack, in minutes
_IDLE = (0, 0, 0, 0)
_INF = float("inf")


Usage = tuple[int, int, int, int]
"""A target's current numbers: (calls in progress, events in the current hour, day, month)."""


class UsageQuery(NamedTuple):
    """Which target, what its caps count, in which zone its calendar windows are."""

    target_id: str
    kind: CapCounts
    tz: ZoneInfo


class CapCheck(NamedTuple):
    """A target's caps to check in one batch: limits are ``inf`` when unset."""

    target_id: str
    kind: CapCounts
    tz: ZoneInfo
    concurrency: float
    hourly: float
    daily: float
    monthly: float


class RoutingCounters(Protocol):
    """Caps and concurrency state shared by every call (in-process or Redis)."""

    def active(self, target_id: str) -> int:
        """Calls in progress to the target."""
        ...

    def try_acquire(self, target_id: str, limit: int | None) -> bool:
        """Take a concurrency slot atomically if fewer than ``limit`` are held (None: unlimited)."""
        ...

    def release(self, target_id: str) -> None:
        """Give back a slot taken by ``try_acquire``."""
        ...

    def record(self, target_id: str, kind: CapCounts, now: datetime) -> None:
        """Count one connect or conversion at ``now``."""
        ...

    def count(self, target_id: str, kind: CapCounts, window: Window, now: datetime, tz: ZoneInfo) -> int:
        """Events of ``kind`` in the calendar ``window`` (in ``tz``) containing ``now``."""
        ...

    def usage_many(self, queries: Sequence[UsageQuery], now: datetime) -> list[Usage]:
        """``Usage`` for each query, in order (one round trip)."""
        ...

    def over_cap(self, checks: Sequence[CapCheck], now: datetime) -> set[str]:
        """Ids of the targets at or over one of their limits (one round trip; the engine's hot-path call)."""
        ...


def window_starts(tz: ZoneInfo, now: datetime) -> tuple[float, float, float]:
    """Epoch seconds at which the hour, day and month containing ``now`` began in ``tz``."""
    local = now.astimezone(tz)
    hour = local.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    month = day.replace(day=1)
    return hour.timestamp(), day.timestamp(), month.timestamp()


class _Minutes:
    """Events per epoch minute: sorted minutes and the running total up to each (int64 arrays)."""

    __slots__ = ("base", "minutes", "totals")

    def __init__(self) -> None:
        self.minutes = array("q")
        self.totals = array("q")  # events in every minute up to and including minutes[i], plus base
        self.base = 0  # events in the minutes already dropped

    def add(self, minute: int) -> None:
        minutes, totals = self.minutes, self.totals
        if minutes and minutes[-1] == minute:
            totals[-1] += 1
        elif not minutes or minutes[-1] < minute:
            minutes.append(minute)
            totals.append((totals[-1] if totals else self.base) + 1)
            if minutes[0] < minute - _KEEP_MIN:
                drop = bisect_left(minutes, minute - _KEEP_MIN)
                self.base = totals[drop - 1]
                del minutes[:drop]
                del totals[:drop]
        else:  # an earlier minute (a clock step): rare, O(buckets)
            i = bisect_left(minutes, minute)
            if minutes[i] != minute:
                minutes.insert(i, minute)
                totals.insert(i, totals[i - 1] if i else self.base)
            for j in range(i, len(totals)):
                totals[j] += 1

    def since(self, start: float, ts: float) -> int:
        """Events in the minutes from the one holding ``start`` to the one holding ``ts``."""
        minutes, totals = self.minutes, self.totals
        end = bisect_right(minutes, int(ts // 60))
        first = bisect_left(minutes, int(start // 60))
        if end <= first:
            return 0
        return totals[end - 1] - (totals[first - 1] if first else self.base)


class InMemoryCounters:
    """``RoutingCounters`` for one process: slot counts in a dict, events counted per minute (``_Minutes``)."""

    def __init__(self) -> None:
        self._active: dict[str, int] = {}
        self._events: dict[str, dict[CapCounts, _Minutes]] = {}
        self._starts_minute = -1
        self._starts: dict[ZoneInfo, tuple[float, float, float]] = {}

    def active(self, target_id: str) -> int:
        return self._active.get(target_id, 0)

    def try_acquire(self, target_id: str, limit: int | None) -> bool:
        held = self._active.get(target_id, 0)
        if limit is not None and held >= limit:
            return False
        self._active[target_id] = held + 1
        return True

    def release(self, target_id: str) -> None:
        held = self._active.get(target_id, 0)
        if held <= 1:
            self._active.pop(target_id, None)
        else:
            self._active[target_id] = held - 1

    def record(self, target_id: str, kind: CapCounts, now: datetime) -> None:
        by_kind = self._events.setdefault(target_id, {})
        events = by_kind.get(kind)
        if events is None:
            events = by_kind[CapCounts(kind)] = _Minutes()
        events.add(int(now.timestamp() // 60))

    def _window_starts(self, tz: ZoneInfo, now: datetime) -> tuple[float, float, float]:
        minute = int(now.timestamp() // 60)  # zone offsets change on minute boundaries
        if minute != self._starts_minute:
            self._starts_minute = minute
            self._starts.clear()
        starts = self._starts.get(tz)
        if starts is None:
            starts = self._starts[tz] = window_starts(tz, now)
        return starts

    def _since(self, target_id: str, kind: CapCounts, start: float, ts: float) -> int:
        events = self._events.get(target_id, {}).get(kind)
        if events is None:
            return 0
        return events.since(start, ts)

    def count(self, target_id: str, kind: CapCounts, window: Window, now: datetime, tz: ZoneInfo) -> int:
        hour, day, month = self._window_starts(tz, now)
        start = {"hour": hour, "day": day, "month": month}[window]
        return self._since(target_id, kind, start, now.timestamp())

    def usage_many(self, queries: Sequence[UsageQuery], now: datetime) -> list[Usage]:
        ts = now.timestamp()
        minute = int(ts // 60)
        if minute != self._starts_minute:
            self._starts_minute = minute
            self._starts.clear()
        starts_of = self._starts
        active_of = self._active.get
        events_of = self._events.get
        out: list[Usage] = []
        for target_id, kind, tz in queries:
            active = active_of(target_id, 0)
            by_kind = events_of(target_id)
            events = by_kind.get(kind) if by_kind is not None else None
            if events is None:
                out.append((active, 0, 0, 0) if active else _IDLE)
                continue
            starts = starts_of.get(tz)
            if starts is None:
                starts = starts_of[tz] = window_starts(tz, now)
            since = events.since
            out.append((active, since(starts[0], ts), since(starts[1], ts), since(starts[2], ts)))
        return out

    def over_cap(self, checks: Sequence[CapCheck], now: datetime) -> set[str]:
        over: set[str] = set()
        active_of = self._active.get
        events_of = self._events.get
        ts = 0.0
        for target_id, kind, tz, concurrency, hourly, daily, monthly in checks:
            if active_of(target_id, 0) >= concurrency:
                over.add(target_id)
                continue
            by_kind = events_of(target_id)
            if by_kind is None or hourly == daily == monthly == _INF:
                continue
            events = by_kind.get(kind)
            if events is None:
                continue
            if not ts:
                ts = now.timestamp()
                minute = int(ts // 60)
                if minute != self._starts_minute:
                    self._starts_minute = minute
                    self._starts.clear()
            starts = self._starts.get(tz)
            if starts is None:
                starts = self._starts[tz] = window_starts(tz, now)
            since = events.since
            if since(starts[0], ts) >= hourly or since(starts[1], ts) >= daily or since(starts[2], ts) >= monthly:
                over.add(target_id)
        return over
