"""Phone-number normalisation, cached per number (phonenumbers parsing is ~50 µs; the hot path can't pay it)."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

DEFAULT_REGION = "US"


@lru_cache(maxsize=100_000)
def to_e164(user: str, region: str = DEFAULT_REGION) -> str | None:
    """The E.164 form of a dialled/caller user part (``+18005550100``), or None when it is not a number."""
    digits = user.split(";", 1)[0].strip()
    if not digits or not any(ch.isdigit() for ch in digits):
        return None
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
