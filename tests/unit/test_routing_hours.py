"""Hours of operation in the buyer's zone, across the US DST switches."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.hours import compile_hours, is_open
from dce.routing.model import CallerContext, HoursWindow
from tests.unit.routing_fixtures import DID, market, target

NY = ZoneInfo("America/New_York")
EVERY_DAY_9_17 = tuple(HoursWindow(d, dtime(9), dtime(17)) for d in range(7))


def local(y: int, m: int, d: int, hh: int, mm: int) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=NY).astimezone(UTC)


@pytest.mark.parametrize(
    "day",
    [(2026, 3, 7), (2026, 3, 8), (2026, 3, 9), (2026, 10, 31), (2026, 11, 1), (2026, 11, 2)],
    ids=["before-spring", "spring-switch", "after-spring", "before-fall", "fall-switch", "after-fall"],
)
def test_9_to_17_window_across_dst(day: tuple[int, int, int]) -> None:
    assert is_open(EVERY_DAY_9_17, "America/New_York", local(*day, 9, 30))
    assert not is_open(EVERY_DAY_9_17, "America/New_York", local(*day, 8, 30))
    assert not is_open(EVERY_DAY_9_17, "America/New_York", local(*day, 17, 0))


def test_utc_instants_shift_with_dst() -> None:
    # 14:30 UTC is 09:30 EST before the spring switch but 10:30 EDT after; 13:30 UTC is 08:30 EST / 09:30 EDT.
    assert not is_open(EVERY_DAY_9_17, "America/New_York", datetime(2026, 3, 7, 13, 30, tzinfo=UTC))
    assert is_open(EVERY_DAY_9_17, "America/New_York", datetime(2026, 3, 9, 13, 30, tzinfo=UTC))


def test_engine_hours_across_dst() -> None:
    snap = market(target("t", hours=EVERY_DAY_9_17))
    engine = RoutingEngine(snap, InMemoryCounters(), DuplicateLedger(), random.Random(0))
    ctx = CallerContext(ani=None, did=DID)
    for day in ((2026, 3, 8), (2026, 11, 1)):
        assert engine.plan(ctx, local(*day, 9, 30)).targets
        plan = engine.plan(ctx, local(*day, 8, 30))
        assert plan.targets == () and plan.reason == "no eligible target: 1 closed"


def test_window_wrapping_midnight() -> None:
    hours = (HoursWindow(4, dtime(22), dtime(2)),)  # Friday 22:00 -> Saturday 02:00
    assert is_open(hours, NY, local(2026, 11, 27, 23, 0))  # Friday
    assert is_open(hours, NY, local(2026, 11, 28, 1, 59))  # Saturday
    assert not is_open(hours, NY, local(2026, 11, 28, 2, 0))
    assert not is_open(hours, NY, local(2026, 11, 27, 21, 59))


def test_empty_hours_always_open_and_equal_bounds_whole_day() -> None:
    assert compile_hours(()) is None
    assert is_open((), NY, datetime(2026, 1, 1, tzinfo=UTC))
    assert is_open((HoursWindow(3, dtime(0), dtime(0)),), NY, local(2026, 1, 1, 23, 59))  # Thursday


def test_naive_now_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(EVERY_DAY_9_17, NY, datetime(2026, 1, 1, 10))


@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)))
def test_open_matches_wall_clock(naive: datetime) -> None:
    now = naive.replace(tzinfo=UTC)
    wall = now.astimezone(NY)
    expected = dtime(9) <= wall.time() < dtime(17)
    assert is_open(EVERY_DAY_9_17, NY, now) == expected


@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)))
def test_engine_agrees_with_is_open_at_minute_resolution(naive: datetime) -> None:
    now = naive.replace(tzinfo=UTC, second=0, microsecond=0)
    hours = (HoursWindow(0, dtime(9), dtime(17)), HoursWindow(5, dtime(20), dtime(3)))
    snap = market(target("t", hours=hours))
    engine = RoutingEngine(snap, InMemoryCounters(), DuplicateLedger(), random.Random(0))
    planned = bool(engine.plan(CallerContext(ani=None, did=DID), now).targets)
    assert planned == is_open(hours, NY, now)
    assert bool(engine.plan(CallerContext(ani=None, did=DID), now + timedelta(seconds=30)).targets) == planned
