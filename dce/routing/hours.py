"""Hours of operation: is a target open at an instant, in its buyer's IANA time zone (DST-correct via zoneinfo).

A window whose ``end`` is before its ``start`` wraps past midnight into the next weekday; ``end == start`` means
open the whole day. Windows are compiled once (per weekday, second-of-day intervals) and checked with integer
arithmetic on the local position (weekday, second of day) computed from the zone's UTC offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

from dce.routing.model import HoursWindow

DAY = 86_400
Intervals = tuple[tuple[int, int], ...]
CompiledHours = tuple[Intervals, ...]  # index = weekday (0 = Monday); [start, end) seconds of the local day


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def compile_hours(windows: Iterable[HoursWindow]) -> CompiledHours | None:
    """Per-weekday intervals for ``windows``; None when there are none (always open)."""
    days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    seen = False
    for w in windows:
        if not 0 <= w.weekday <= 6:
            raise ValueError(f"hours window weekday {w.weekday} is not 0..6")
        seen = True
        start, end = _seconds(w.start), _seconds(w.end)
        if end == start:
            days[w.weekday].append((0, DAY))
        elif end > start:
            days[w.weekday].append((start, end))
        else:  # wraps past midnight
            days[w.weekday].append((start, DAY))
            if end:
                days[(w.weekday + 1) % 7].append((0, end))
    if not seen:
        return None
    return tuple(tuple(sorted(d)) for d in days)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name (cached; raises ZoneInfoNotFoundError for an unknown one)."""
    return ZoneInfo(name)


def local_position(tz: ZoneInfo, now: datetime) -> tuple[int, int]:
    """(weekday, second of the local day) of the aware instant ``now`` in ``tz``."""
    local = now.astimezone(tz)
    return local.weekday(), local.hour * 3600 + local.minute * 60 + local.second


def open_at(hours: CompiledHours | None, weekday: int, second: int) -> bool:
    """Whether compiled ``hours`` are open at local (weekday, second of day)."""
    if hours is None:
        return True
    return any(start <= second < end for start, end in hours[weekday])


def is_open(windows: Iterable[HoursWindow] | CompiledHours | None, tz: str | ZoneInfo, now: datetime) -> bool:
    """Whether a target with these hours (raw windows or compiled) is open at aware ``now`` in zone ``tz``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    compiled = windows if _is_compiled(windows) else compile_hours(windows or ())  # type: ignore[arg-type]
    weekday, second = local_position(zone(tz) if isinstance(tz, str) else tz, now)
    return open_at(compiled, weekday, second)  # type: ignore[arg-type]


def _is_compiled(windows: object) -> bool:
    return isinstance(windows, tuple) and len(windows) == 7 and all(isinstance(d, tuple) for d in windows)
