"""TCPA calling hours: outbound legs and callbacks only inside a window of the callee's local time.

Pure: the caller passes ``now`` as an aware datetime (UTC or any zone). The callee's time zones come from the
number (``phonenumbers.timezone``), its state or province from ``phonenumbers.geocoder`` (``"Florida"``,
``"Miami, FL"``); both are cached per number. Local times go through :mod:`zoneinfo`, so DST is handled by the
tz database. The window is ``[start, end)``: 08:00:00 is inside, 21:00:00 is outside.

Conservative where the number is ambiguous: a number whose prefix spans several zones (Alaska's 907, toll-free
numbers) is inside the window only when it is inside in *every* zone; a number without a known zone, or that is
not a phone number, is outside (nobody can show it was a legal hour there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import geocoder, timezone

from dce.caches import bounded
from dce.compliance.verdict import Action, Finding, ReasonCode
from dce.regions import states_of

DEFAULT_START = time(8, 0)
DEFAULT_END = time(21, 0)

_STATE_REGIONS = frozenset({"US", "CA", "PR", "GU", "AS", "MP", "VI"})


@dataclass(frozen=True, slots=True)
class NumberPlace:
    """Where a number rings, as far as its prefix tells: its time zones and (NANP) state or province code."""

    zones: tuple[ZoneInfo, ...]  # empty when unknown
    states: tuple[str, ...]  # usually one; several when the prefix spans them ("Nova Scotia/Prince Edward Island")


@bounded("numbers")
def number_place(number_e164: str) -> NumberPlace:
    """The time zones and state of an E.164 number (cached per number). Unknown parts are empty."""
    try:
        parsed = phonenumbers.parse(number_e164, None)
    except phonenumbers.NumberParseException:
        return NumberPlace((), ())
    zones: list[ZoneInfo] = []
    for name in timezone.time_zones_for_number(parsed):
        if name == timezone.UNKNOWN_TIMEZONE:
            continue
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            # a zone the local tz database lacks: we cannot vouch for the local time, so the number is unknown
            return NumberPlace((), _states(parsed))
    return NumberPlace(tuple(zones), _states(parsed))


def _states(parsed: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    if phonenumbers.region_code_for_number(parsed) not in _STATE_REGIONS:
        return ()
    return states_of(geocoder.description_for_number(parsed, "en"))


@dataclass(frozen=True, slots=True)
class Window:
    """A daily window ``[start, end)`` of local wall-clock time; ``start > end`` wraps past midnight."""

    start: time
    end: time

    def __contains__(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _as_time(value: time | str, what: str) -> time:
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    try:
        return time.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: not a time of day: {value!r}") from None


@dataclass(frozen=True)
class CallingHours:
    """The calling-hours rule: a default window and stricter (or looser) windows per state.

    ``state_overrides`` maps a two-letter state/province code to ``{"start": time, "end": time}`` (either key may
    be omitted: the default's is used), exactly the shape of ``CallingHoursConfig.state_overrides``.
    """

    start: time = DEFAULT_START
    end: time = DEFAULT_END
    state_overrides: Mapping[str, Mapping[str, time | str]] = field(default_factory=dict)
    _windows: dict[str, Window] = field(init=False, repr=False, compare=False)
    _default: Window = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        default = Window(_as_time(self.start, "start"), _as_time(self.end, "end"))
        windows: dict[str, Window] = {}
        for state, bounds in self.state_overrides.items():
            code = state.strip().upper()
            unknown = set(bounds) - {"start", "end"}
            if unknown:
                raise ValueError(f"state_overrides.{state}: unknown keys {sorted(unknown)}")
            windows[code] = Window(
                _as_time(bounds.get("start", default.start), f"state_overrides.{state}.start"),
                _as_time(bounds.get("end", default.end), f"state_overrides.{state}.end"),
            )
        object.__setattr__(self, "_default", default)
        object.__setattr__(self, "_windows", windows)

    @classmethod
    def from_config(cls, config: object) -> CallingHours:
        """From anything with ``start``, ``end`` and ``state_overrides`` (``CallingHoursConfig``)."""
        return cls(config.start, config.end, dict(config.state_overrides))  # type: ignore[attr-defined]

    def window_for(self, state: str | None) -> Window:
        """The window that applies in ``state`` (the default when it has no override or is unknown)."""
        if state is None:
            return self._default
        return self._windows.get(state, self._default)

    def windows_for(self, states: tuple[str, ...]) -> tuple[Window, ...]:
        """The windows that apply to a number in any of ``states`` (the default alone when none is known)."""
        if not states:
            return (self._default,)
        return tuple(dict.fromkeys(self.window_for(state) for state in states))

    def check(self, number_e164: str, now: datetime) -> Finding | None:
        """None when ``now`` is inside the window in every time zone of the number; otherwise a reject."""
        _require_aware(now)
        place = number_place(number_e164)
        if not place.zones:
            return Finding(
                Action.REJECT, ReasonCode.OUTSIDE_CALLING_HOURS,
                f"local time of {number_e164} unknown (no time zone for the number)",
            )
        windows = self.windows_for(place.states)
        for zone in place.zones:
            local = now.astimezone(zone)
            moment = local.time().replace(tzinfo=None)
            for window in windows:
                if moment not in window:
                    where = ", ".join((zone.key, *place.states))
                    return Finding(
                        Action.REJECT, ReasonCode.OUTSIDE_CALLING_HOURS,
                        f"local time {local:%Y-%m-%d %H:%M} {local.tzname()} ({where}) outside {window}",
                    )
        return None

    def allowed(self, number_e164: str, now: datetime) -> bool:
        return self.check(number_e164, now) is None


def local_times(number_e164: str, now: datetime) -> tuple[datetime, ...]:
    """``now`` in each time zone of the number (aware datetimes with a ZoneInfo; empty when unknown)."""
    _require_aware(now)
    return tuple(now.astimezone(zone) for zone in number_place(number_e164).zones)


def local_time(number_e164: str, now: datetime) -> datetime | None:
    """``now`` in the number's time zone (the first of them when it spans several), or None when unknown.

    ``result.tzinfo.key`` is the IANA zone name."""
    times = local_times(number_e164, now)
    return times[0] if times else None


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now!r}: pass an aware (UTC) time")
