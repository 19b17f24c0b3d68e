"""Concurrency slots, calendar-window caps and the duplicate-caller ledger."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from dce.routing.counters import CapCheck, InMemoryCounters, UsageQuery
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import (
    CallerContext,
    Campaign,
    CapCounts,
    Caps,
    DuplicateAfter,
    DuplicateRule,
    DuplicateScope,
)
from tests.unit.routing_fixtures import DID, market, target

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 6, 15, 16, 30, tzinfo=UTC)  # 12:30 EDT, a Monday


@given(
    st.integers(min_value=1, max_value=5),
    st.lists(st.tuples(st.integers(min_value=0, max_value=19), st.booleans()), max_size=200),
)
def test_concurrent_calls_never_exceed_the_cap(cap: int, steps: list[tuple[int, bool]]) -> None:
    """K=20 calls interleave start (plan + acquire) and hang-up; at most ``cap`` slots are ever held."""
    counters = InMemoryCounters()
    engine = RoutingEngine(
        market(target("t", caps=Caps(concurrency=cap))), counters, DuplicateLedger(), random.Random(0)
    )
    ctx = CallerContext(ani=None, did=DID)
    connected: set[int] = set()
    for call, start in steps:
        if start and call not in connected:
            plan = engine.plan(ctx, NOW)
            if plan.targets and counters.try_acquire("t", cap):
                connected.add(call)
            else:
                assert len(connected) >= cap
                assert not plan.targets or counters.active("t") >= cap
        elif not start and call in connected:
            connected.discard(call)
            counters.release("t")
        assert counters.active("t") == len(connected) <= cap
        if len(connected) >= cap:
            assert engine.plan(ctx, NOW).reason == "no eligible target: 1 capped"


def test_try_acquire_unlimited_and_release_floor() -> None:
    c = InMemoryCounters()
    assert all(c.try_acquire("t", None) for _ in range(100))
    for _ in range(101):
        c.release("t")
    assert c.active("t") == 0


def test_calendar_windows_in_buyer_zone() -> None:
    c = InMemoryCounters()
    for when in (
        NOW,  # this hour
        NOW - timedelta(minutes=45),  # 11:45 EDT: earlier hour, same day
        datetime(2026, 6, 15, 3, 0, tzinfo=UTC),  # 23:00 EDT on the 14th: previous day (UTC says same day)
        datetime(2026, 6, 1, 4, 0, tzinfo=UTC),  # 00:00 EDT on the 1st: this month
        datetime(2026, 6, 1, 3, 59, tzinfo=UTC),  # 23:59 EDT on May 31st: last month
    ):
        c.record("t", CapCounts.CONNECTS, when)
    c.record("t", CapCounts.CONVERSIONS, NOW)
    assert c.count("t", CapCounts.CONNECTS, "hour", NOW, NY) == 1
    assert c.count("t", CapCounts.CONNECTS, "day", NOW, NY) == 2
    assert c.count("t", CapCounts.CONNECTS, "month", NOW, NY) == 4
    assert c.count("t", CapCounts.CONVERSIONS, "month", NOW, NY) == 1
    assert c.count("t", CapCounts.CONNECTS, "day", NOW, ZoneInfo("UTC")) == 3
    assert c.usage_many([UsageQuery("t", CapCounts.CONNECTS, NY), UsageQuery("u", CapCounts.CONNECTS, NY)], NOW) == [
        (0, 1, 2, 4),
        (0, 0, 0, 0),
    ]


def test_hourly_cap_excludes_target_until_next_hour() -> None:
    counters = InMemoryCounters()
    snap = market(target("t", caps=Caps(hourly=2)), target("u", priority=2))
    engine = RoutingEngine(snap, counters, DuplicateLedger(), random.Random(0))
    ctx = CallerContext(ani=None, did=DID)
    for _ in range(2):
        counters.record("t", CapCounts.CONNECTS, NOW)
    assert [p.target_id for p in engine.plan(ctx, NOW).targets] == ["u"]
    assert [p.target_id for p in engine.plan(ctx, NOW + timedelta(hours=1)).targets] == ["t", "u"]


def test_conversion_caps_ignore_connects() -> None:
    counters = InMemoryCounters()
    snap = market(target("t", caps=Caps(daily=1, counts=CapCounts.CONVERSIONS)))
    engine = RoutingEngine(snap, counters, DuplicateLedger(), random.Random(0))
    ctx = CallerContext(ani=None, did=DID)
    counters.record("t", CapCounts.CONNECTS, NOW)
    assert engine.plan(ctx, NOW).targets
    counters.record("t", CapCounts.CONVERSIONS, NOW)
    assert engine.plan(ctx, NOW).reason == "no eligible target: 1 capped"


def test_duplicate_ledger_rules() -> None:
    ledger = DuplicateLedger()
    ani = "+12125551234"
    ledger.record(ani, "c", "t", DuplicateAfter.CONNECTED, NOW - timedelta(days=3))
    connected = DuplicateRule(DuplicateAfter.CONNECTED, days=7)
    assert ledger.is_duplicate(connected, ani, "c", None, NOW)
    assert not ledger.is_duplicate(DuplicateRule(DuplicateAfter.CONNECTED, days=2), ani, "c", None, NOW)
    assert not ledger.is_duplicate(DuplicateRule(DuplicateAfter.CONVERTED, days=7), ani, "c", None, NOW)
    assert not ledger.is_duplicate(connected, ani, "other", None, NOW)
    assert not ledger.is_duplicate(connected, None, "c", None, NOW)
    per_target = DuplicateRule(DuplicateAfter.CONNECTED, days=7, scope=DuplicateScope.TARGET)
    assert ledger.is_duplicate(per_target, ani, "c", "t", NOW)
    assert not ledger.is_duplicate(per_target, ani, "c", "u", NOW)
    ledger.record(ani, "c", "u", DuplicateAfter.CONVERTED, NOW)  # a conversion is also a connect
    assert ledger.is_duplicate(DuplicateRule(DuplicateAfter.CONVERTED, days=1), ani, "c", None, NOW)
    assert ledger.is_duplicate(per_target, ani, "c", "u", NOW)
    ledger.prune(NOW - timedelta(days=1))
    assert not ledger.is_duplicate(per_target, ani, "c", "t", NOW)


def test_engine_duplicate_scopes() -> None:
    ani = "+12125551234"
    ledger = DuplicateLedger()
    ledger.record(ani, "c", "t", DuplicateAfter.CONNECTED, NOW - timedelta(days=1))
    ctx = CallerContext(ani=ani, did=DID)
    for scope, reason, targets in (
        (DuplicateScope.CAMPAIGN, "duplicate caller (connected within 30 days)", []),
        (DuplicateScope.TARGET, None, ["u"]),
    ):
        camp = Campaign("c", "C", target_ids=("t", "u"), duplicate_rule=DuplicateRule(scope=scope))
        snap = market(target("t"), target("u", priority=2), campaign=camp)
        plan = RoutingEngine(snap, InMemoryCounters(), ledger, random.Random(0)).plan(ctx, NOW)
        assert plan.reason == reason
        assert [p.target_id for p in plan.targets] == targets
    camp = Campaign("c", "C", target_ids=("t",), duplicate_rule=DuplicateRule(scope=DuplicateScope.TARGET))
    plan = RoutingEngine(market(target("t"), campaign=camp), InMemoryCounters(), ledger, random.Random(0)).plan(
        ctx, NOW
    )
    assert plan.reason == "no eligible target: 1 duplicate"


@given(
    st.integers(0, 4),
    st.lists(st.integers(0, 60 * 24 * 40), max_size=30),
    st.sampled_from([None, 1, 3]),
    st.sampled_from([None, 2, 10]),
    st.sampled_from([None, 5, 40]),
)
def test_over_cap_agrees_with_usage(
    active: int, minutes_ago: list[int], hourly: int | None, daily: int | None, monthly: int | None
) -> None:
    c = InMemoryCounters()
    for _ in range(active):
        c.try_acquire("t", None)
    for m in minutes_ago:
        c.record("t", CapCounts.CONNECTS, NOW - timedelta(minutes=m))
    inf = float("inf")
    limits = [inf if v is None else v for v in (3, hourly, daily, monthly)]
    (usage,) = c.usage_many([UsageQuery("t", CapCounts.CONNECTS, NY)], NOW)
    expected = any(u >= lim for u, lim in zip(usage, limits, strict=True))
    assert (c.over_cap([CapCheck("t", CapCounts.CONNECTS, NY, *limits)], NOW) == {"t"}) is expected


def test_counting_a_hundred_thousand_connects_costs_minutes_not_calls() -> None:
    """Month caps need counts per minute, not one float per call kept for 32 days (8 GB a month at 100 CPS)."""
    import tracemalloc
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from dce.routing.model import CapCounts

    counters = InMemoryCounters()
    start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    counters.record("t", CapCounts.CONNECTS, start)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100_000):  # 300 CPS for 5.5 minutes
            counters.record("t", CapCounts.CONNECTS, start + timedelta(seconds=n / 300))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, f"{grown} bytes"
    end = start + timedelta(seconds=100_000 / 300)
    assert counters.count("t", CapCounts.CONNECTS, "hour", end, ZoneInfo("America/New_York")) == 100_001


def test_minute_counts_match_counting_every_event_even_out_of_order() -> None:
    import random
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from dce.routing.counters import window_starts
    from dce.routing.model import CapCounts

    rng, counters, times = random.Random(3), InMemoryCounters(), []
    zone, at = ZoneInfo("America/Chicago"), datetime(2026, 3, 31, 20, 0, tzinfo=UTC)
    for _ in range(3000):
        at += timedelta(seconds=rng.choice((0, 1, 30, 600, 3600)))
        when = at - timedelta(seconds=rng.choice((0, 0, 0, 120)))  # now and then an event a bit late
        counters.record("t", CapCounts.CONNECTS, when)
        times.append(when.timestamp())
    now = at.timestamp()
    for window, start in zip(("hour", "day", "month"), window_starts(zone, at), strict=True):
        expected = sum(1 for t in times if start <= t <= now)
        assert counters.count("t", CapCounts.CONNECTS, window, at, zone) == expected, window
