"""Build the CallerContext once per call: normalised numbers, caller geography, campaign and tags.

phonenumbers work (parse, geocoder, time zone) is cached per number, so a repeat caller costs dict lookups.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import lru_cache

import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as pn_timezone

from dce.caches import bounded
from dce.regions import state_of
from dce.routing.model import CallerContext
from dce.routing.numbers import to_e164
from dce.routing.snapshot import MarketplaceSnapshot

TAG_PREFIX = "x-dce-"
ZIP_TAGS = ("zip", "zipcode")


@bounded("numbers")
def caller_geo(e164: str) -> tuple[str | None, str | None, str | None]:
    """(state, area code, IANA time zone) of an E.164 number; None for what is unknown. Cached per number."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None, None, None
    national = str(number.national_number)
    if number.country_code == 1:
        area_code: str | None = national[:3] if len(national) >= 10 else None
    else:
        length = phonenumbers.length_of_geographical_area_code(number)
        area_code = national[:length] if length else None
    state = state_of(geocoder.description_for_number(number, "en")) if number.country_code == 1 else None
    zones = pn_timezone.time_zones_for_number(number)
    tz = zones[0] if zones and zones[0] != pn_timezone.UNKNOWN_TIMEZONE else None
    return state, area_code, tz


@lru_cache(maxsize=64)
def _lowered(names: frozenset[str]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


def _tags(
    headers: Iterable[tuple[str, str]], tag_headers: Collection[str], extra: Iterable[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    if not tag_headers:
        named: frozenset[str] = frozenset()
    else:
        named = _lowered(tag_headers if isinstance(tag_headers, frozenset) else frozenset(tag_headers))
    tags: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(TAG_PREFIX) and len(lower) > len(TAG_PREFIX):
            tags.append((lower[len(TAG_PREFIX) :], value.strip()))
        elif lower in named:
            tags.append((lower, value.strip()))
    if extra:
        tags.extend((k.lower(), v) for k, v in extra)
    return tuple(tags)


def build_context(
    *,
    caller_user: str,
    did: str,
    headers: Iterable[tuple[str, str]],
    snapshot: MarketplaceSnapshot,
    tag_headers: Collection[str] = (),
    extra_tags: Iterable[tuple[str, str]] = (),
) -> CallerContext:
    """The routing view of one call.

    ``caller_user``/``did``: the From and Request-URI user parts. ``headers``: the INVITE's (name, value) pairs;
    ``X-DCE-<Name>`` headers become tag ``<name>`` (lower-cased), as do headers named in ``tag_headers``.
    ``extra_tags``: tags from a prior RTB ping. A ``zip``/``zipcode`` tag fills ``zip``. Unknown DID: the context
    has no campaign (the engine answers "unknown DID").
    """
    ani = to_e164(caller_user) if caller_user else None
    did_e164 = to_e164(did) or did
    state = area_code = tz = None
    if ani is not None:
        state, area_code, tz = caller_geo(ani)
    number = snapshot.numbers.get(did_e164)
    tags = _tags(headers, tag_headers, extra_tags)
    zip_code = next((v for k, v in tags if k in ZIP_TAGS and v), None)
    return CallerContext(
        ani=ani,
        did=did_e164,
        state=state,
        area_code=area_code,
        zip=zip_code,
        timezone=tz,
        campaign_id=number.campaign_id if number is not None else None,
        publisher_id=number.publisher_id if number is not None else None,
        tags=tags,
    )
