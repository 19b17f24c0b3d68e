"""Phone-number normalisation, cached per number (phonenumbers parsing is ~50 µs; the hot path can't pay it) in a
cache bounded by ``caches.numbers``."""

from __future__ import annotations

import phonenumbers

from dce.caches import bounded

DEFAULT_REGION = "US"


@bounded("numbers")
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
