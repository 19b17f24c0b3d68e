"""The two-letter codes of North American states, territories and provinces, read from a geocoder description.

phonenumbers' geocoder names a whole area code by its state or province (``"Florida"``, ``"Ontario"``) and a
smaller place by its city and code (``"Miami, FL"``); a prefix that spans several places joins them with ``/``
(``"Nova Scotia/Prince Edward Island"``). :func:`states_of` turns any of these into codes.

A leaf module (standard library only, no ``dce`` imports): routing (the caller's state) and compliance (the
callee's state for calling hours) share this one table, so the two can never disagree about a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

STATE_CODES: Mapping[str, str] = MappingProxyType({
    # US states, DC and territories
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA", "Colorado": "CO",
    "Connecticut": "CT", "Delaware": "DE", "District of Columbia": "DC", "Washington D.C.": "DC",
    "Washington DC": "DC", "Florida": "FL", "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL",
    "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME",
    "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS",
    "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH",
    "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY", "North Carolina": "NC", "North Dakota": "ND",
    "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI",
    "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT",
    "Vermont": "VT", "Virginia": "VA", "Washington": "WA", "Washington State": "WA", "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Puerto Rico": "PR", "Guam": "GU", "American Samoa": "AS",
    "Northern Mariana Islands": "MP", "U.S. Virgin Islands": "VI", "US Virgin Islands": "VI",
    # Canadian provinces and territories
    "Alberta": "AB", "British Columbia": "BC", "British Colombia": "BC", "Manitoba": "MB", "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL", "Nova Scotia": "NS", "Ontario": "ON", "Prince Edward Island": "PE",
    "Quebec": "QC", "Québec": "QC", "Saskatchewan": "SK", "Northwest Territories": "NT", "Nunavut": "NU",
    "Yukon": "YT",
})  # fmt: skip
"""Code by the name the geocoder uses for a whole area code."""

CODES: frozenset[str] = frozenset(STATE_CODES.values())


def states_of(description: str) -> tuple[str, ...]:
    """The codes a geocoder description names, in order without repeats; empty when it names none.

    ``"Miami, FL"`` -> ``("FL",)``; ``"Florida"`` -> ``("FL",)``; ``"Nova Scotia/Prince Edward Island"`` ->
    ``("NS", "PE")``; ``"Jamaica"`` or ``""`` -> ``()``.
    """
    if not description:
        return ()
    _place, _, tail = description.rpartition(", ")
    if tail in CODES:
        return (tail,)
    codes = (STATE_CODES.get(name.strip()) for name in description.split("/"))
    return tuple(dict.fromkeys(code for code in codes if code is not None))


def state_of(description: str) -> str | None:
    """The one code a geocoder description names; None when it names none or several."""
    states = states_of(description)
    return states[0] if len(states) == 1 else None
