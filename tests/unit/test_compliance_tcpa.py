"""TCPA calling hours: the [08:00, 21:00) window in the callee's local time, DST, Arizona, state overrides and
numbers spanning several zones."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from dce.compliance.tcpa import CallingHours, Window, local_time, local_times, number_place
from dce.compliance.verdict import Action, ReasonCode
from dce.exchange.config import CallingHoursConfig

NEW_YORK = "+12125550100"
LOS_ANGELES = "+13105550100"
PHOENIX = "+16025550100"
MIAMI = "+13053730000"
ALASKA = "+19075550100"  # America/Anchorage and America/Adak

HOURS = CallingHours()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def allowed(number: str, now: datetime, hours: CallingHours = HOURS) -> bool:
    return hours.check(number, now) is None


def test_number_place() -> None:
    assert [z.key for z in number_place(NEW_YORK).zones] == ["America/New_York"]
    assert number_place(NEW_YORK).states == ("NY",)
    assert number_place(MIAMI).states == ("FL",)
    assert number_place("+18502345678").states == ("FL",)  # area-code level description: "Florida"
    assert number_place(PHOENIX).states == ("AZ",)
    assert number_place("+12022345678").states == ("DC",)
    assert number_place("+14165550100").states == ("ON",)
    assert number_place("+447911123456").states == ()
    assert number_place("not a number") == number_place("+1")
    assert number_place("+1").zones == ()
    assert number_place(NEW_YORK) is number_place(NEW_YORK)  # cached per number


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (utc(2026, 7, 1, 11, 59, 59), False),  # 07:59:59 EDT
        (utc(2026, 7, 1, 12, 0, 0), True),  # 08:00:00 EDT: start is inside
        (utc(2026, 7, 2, 0, 59, 59), True),  # 20:59:59 EDT
        (utc(2026, 7, 2, 1, 0, 0), False),  # 21:00:00 EDT: end is outside
        (utc(2026, 1, 15, 12, 30), False),  # 07:30 EST
        (utc(2026, 1, 15, 13, 0), True),  # 08:00 EST
        (utc(2026, 1, 16, 1, 30), True),  # 20:30 EST
        (utc(2026, 1, 16, 2, 0), False),  # 21:00 EST
    ],
)
def test_window_edges_new_york(now: datetime, inside: bool) -> None:
    assert allowed(NEW_YORK, now) is inside


def test_reject_finding_says_local_time_and_zone() -> None:
    finding = HOURS.check(NEW_YORK, utc(2026, 7, 2, 1, 0))
    assert finding is not None
    assert finding.action is Action.REJECT
    assert finding.code is ReasonCode.OUTSIDE_CALLING_HOURS
    assert "2026-07-01 21:00 EDT" in finding.detail
    assert "America/New_York" in finding.detail
    assert "08:00-21:00" in finding.detail


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        # 2026-03-08: clocks spring forward at 02:00 local (07:00 UTC): 08:00 EDT = 12:00 UTC
        (utc(2026, 3, 7, 12, 30), False),  # Saturday 07:30 EST
        (utc(2026, 3, 8, 11, 59), False),  # Sunday 07:59 EDT
        (utc(2026, 3, 8, 12, 0), True),  # Sunday 08:00 EDT (would be 07:00 EST)
        (utc(2026, 3, 8, 12, 30), True),
        (utc(2026, 3, 9, 0, 59), True),  # 20:59 EDT
        (utc(2026, 3, 9, 1, 0), False),  # 21:00 EDT
        (utc(2026, 3, 7, 12, 59), False),  # the day before: still EST, 07:59
        (utc(2026, 3, 7, 13, 0), True),
        # 2026-11-01: clocks fall back at 02:00 local (06:00 UTC): 08:00 EST = 13:00 UTC
        (utc(2026, 10, 31, 12, 30), True),  # Saturday 08:30 EDT
        (utc(2026, 11, 1, 12, 30), False),  # Sunday 07:30 EST
        (utc(2026, 11, 1, 12, 59), False),
        (utc(2026, 11, 1, 13, 0), True),  # 08:00 EST
        (utc(2026, 11, 2, 1, 59), True),  # 20:59 EST
        (utc(2026, 11, 2, 2, 0), False),  # 21:00 EST
        (utc(2026, 11, 1, 1, 30), False),  # 21:30 EDT on Oct 31
        (utc(2026, 11, 1, 6, 30), False),  # 01:30 EST, the repeated hour
    ],
)
def test_dst_new_york(now: datetime, inside: bool) -> None:
    assert allowed(NEW_YORK, now) is inside


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (utc(2026, 3, 7, 15, 30), False),  # 07:30 PST
        (utc(2026, 3, 7, 16, 0), True),  # 08:00 PST
        (utc(2026, 3, 8, 14, 59), False),  # 07:59 PDT
        (utc(2026, 3, 8, 15, 0), True),  # 08:00 PDT
        (utc(2026, 3, 9, 3, 59), True),  # 20:59 PDT
        (utc(2026, 3, 9, 4, 0), False),  # 21:00 PDT
        (utc(2026, 10, 31, 15, 0), True),  # 08:00 PDT
        (utc(2026, 11, 1, 15, 30), False),  # 07:30 PST
        (utc(2026, 11, 1, 16, 0), True),  # 08:00 PST
        (utc(2026, 11, 2, 4, 59), True),  # 20:59 PST
        (utc(2026, 11, 2, 5, 0), False),  # 21:00 PST
    ],
)
def test_dst_los_angeles(now: datetime, inside: bool) -> None:
    assert allowed(LOS_ANGELES, now) is inside


@pytest.mark.parametrize("day", [(2026, 1, 15), (2026, 3, 7), (2026, 3, 8), (2026, 7, 1), (2026, 11, 1)])
def test_arizona_has_no_dst(day: tuple[int, int, int]) -> None:
    # MST (UTC-7) all year: 08:00 local is always 15:00 UTC, 21:00 local always 04:00 UTC next day
    assert not allowed(PHOENIX, utc(*day, 14, 59))
    assert allowed(PHOENIX, utc(*day, 15, 0))
    now = utc(*day, 15, 0)
    local = local_time(PHOENIX, now)
    assert local is not None
    assert local.tzinfo.key == "America/Phoenix"  # type: ignore[union-attr]
    assert (local.hour, local.minute, local.tzname()) == (8, 0, "MST")


def test_arizona_vs_los_angeles_in_summer() -> None:
    # in July Phoenix (MST) and Los Angeles (PDT) agree; in January Phoenix is an hour ahead
    assert allowed(PHOENIX, utc(2026, 7, 1, 15, 0)) and allowed(LOS_ANGELES, utc(2026, 7, 1, 15, 0))
    assert allowed(PHOENIX, utc(2026, 1, 15, 15, 0)) and not allowed(LOS_ANGELES, utc(2026, 1, 15, 15, 0))


def test_state_override_florida() -> None:
    hours = CallingHours(time(8), time(21), {"FL": {"start": time(8), "end": time(20)}})
    # 2026-07-01 19:59 / 20:00 / 20:30 EDT
    assert allowed(MIAMI, utc(2026, 7, 1, 23, 59), hours)
    assert not allowed(MIAMI, utc(2026, 7, 2, 0, 0), hours)
    finding = hours.check(MIAMI, utc(2026, 7, 2, 0, 30))
    assert finding is not None and "08:00-20:00" in finding.detail and "FL" in finding.detail
    # same zone, another state: the default window
    assert allowed(NEW_YORK, utc(2026, 7, 2, 0, 30), hours)
    # without the override Florida gets the default window
    assert allowed(MIAMI, utc(2026, 7, 2, 0, 30))
    # the Florida panhandle (850) is Central time: 19:59 CDT inside, 20:00 CDT outside
    assert allowed("+18502345678", utc(2026, 7, 2, 0, 59), hours)
    assert not allowed("+18502345678", utc(2026, 7, 2, 1, 0), hours)


def test_state_override_partial_and_from_config() -> None:
    config = CallingHoursConfig(state_overrides={"fl": {"end": "20:00"}, "TX": {"start": "09:00"}})
    hours = CallingHours.from_config(config)
    assert hours.window_for("FL") == Window(time(8), time(20))
    assert hours.window_for("TX") == Window(time(9), time(21))
    assert hours.window_for("NY") == Window(time(8), time(21))
    assert hours.window_for(None) == Window(time(8), time(21))
    with pytest.raises(ValueError, match="unknown keys"):
        CallingHours(state_overrides={"FL": {"begin": time(9)}})
    with pytest.raises(ValueError, match="not a time"):
        CallingHours(state_overrides={"FL": {"start": "nine"}})


def test_multi_zone_number_is_conservative() -> None:
    assert [z.key for z in number_place(ALASKA).zones] == ["America/Adak", "America/Anchorage"]
    # 2026-07-01: Anchorage AKDT (UTC-8), Adak HDT (UTC-9)
    # 16:30 UTC: 08:30 in Anchorage but 07:30 in Adak -> reject
    finding = HOURS.check(ALASKA, utc(2026, 7, 1, 16, 30))
    assert finding is not None and "America/Adak" in finding.detail
    # 17:00 UTC: 09:00 / 08:00 -> inside in both
    assert allowed(ALASKA, utc(2026, 7, 1, 17, 0))
    # 05:00 UTC next day: 21:00 in Anchorage, 20:00 in Adak -> reject
    finding = HOURS.check(ALASKA, utc(2026, 7, 2, 5, 0))
    assert finding is not None and "America/Anchorage" in finding.detail
    assert allowed(ALASKA, utc(2026, 7, 2, 4, 59))
    assert len(local_times(ALASKA, utc(2026, 7, 1, 17, 0))) == 2


def test_toll_free_spanning_many_zones_is_almost_never_inside() -> None:
    # the NANP toll-free prefix spans Guam (UTC+10) to Newfoundland (UTC-2:30): 08:00-21:00 everywhere at once
    # only from 22:00 (08:00 in Guam) to 23:30 UTC (21:00 in St. John's)
    inside = [hour for hour in range(24) if allowed("+18005550100", utc(2026, 7, 1, hour))]
    assert inside == [22, 23]
    assert not allowed("+18005550100", utc(2026, 7, 1, 23, 30))
    assert not allowed("+18005550100", utc(2026, 7, 1, 17, 0))  # 13:00 in New York, 07:00 next day in Guam


def test_unknown_zone_is_outside() -> None:
    for number in ("+1", "garbage", ""):
        finding = HOURS.check(number, utc(2026, 7, 1, 17, 0))
        assert finding is not None and finding.code is ReasonCode.OUTSIDE_CALLING_HOURS
        assert "unknown" in finding.detail
        assert local_time(number, utc(2026, 7, 1, 17, 0)) is None


def test_other_countries_use_their_zone() -> None:
    local = local_time("+33142685300", utc(2026, 7, 1, 6, 0))  # Paris, CEST
    assert local is not None and (local.hour, local.tzinfo.key) == (8, "Europe/Paris")  # type: ignore[union-attr]
    assert allowed("+33142685300", utc(2026, 7, 1, 6, 0))
    assert not allowed("+33142685300", utc(2026, 7, 1, 5, 59))


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        HOURS.check(NEW_YORK, datetime(2026, 7, 1, 12, 0))


def test_overnight_window_wraps() -> None:
    window = Window(time(22), time(6))
    assert time(23) in window and time(5, 59) in window
    assert time(6) not in window and time(12) not in window
