"""The hash chain of the audit log, as pure functions (no I/O, no clock).

An entry is the mapping of the fields ``seq, at, actor, action, subject, details``. Each stored entry also
carries ``prev_hash`` (the ``hash`` of the entry before it; :data:`GENESIS_HASH` for the first) and ``hash``::

    hash = sha256( ascii(prev_hash) || canonical_json(entry) ).hexdigest()

where ``ascii(prev_hash)`` is the previous hash as 64 lowercase hexadecimal ASCII characters (not the 32 raw
bytes), ``||`` is byte concatenation and ``canonical_json`` is defined by :func:`canonical_json`. An auditor can
recompute one link with standard tools: ``printf '%s%s' "$prev_hash" "$canonical_json" | sha256sum``.

Canonical JSON: UTF-8 bytes of ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` after normalising ``value``: keys must be strings; tuples become lists; aware datetimes become
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (:func:`format_time`); ``Decimal`` becomes its string. Floats are refused
(a float round-trips differently through JSON columns of different databases; store integers or strings), as are
naive datetimes and any other type. ``seq`` is part of the hashed entry, so reordering or renumbering rows breaks
the chain as surely as editing them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

GENESIS_HASH = "0" * 64
# The fields of an entry that the hash covers, in the order they are documented (the JSON sorts them anyway).
HASHED_FIELDS = ("seq", "at", "actor", "action", "subject", "details")


class CanonicalJsonError(TypeError):
    """A value that has no canonical JSON form (a float, a naive datetime, a non-string key, ...)."""


def format_time(value: datetime) -> str:
    """``value`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fractional digits)."""
    if value.tzinfo is None:
        raise CanonicalJsonError(f"naive datetime {value!r}: audit times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalise(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        raise CanonicalJsonError(f"{path}: float {value!r} (store an integer or a string)")
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJsonError(f"{path}: key {key!r} is not a string")
            out[key] = _normalise(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise CanonicalJsonError(f"{path}: {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (see the module docstring)."""
    return json.dumps(
        _normalise(value, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def hashed_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``entry`` the hash covers (:data:`HASHED_FIELDS`); extra keys such as ``hash`` are dropped."""
    return {name: entry[name] for name in HASHED_FIELDS}


def chain_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """``sha256(prev_hash as 64 hex ASCII chars || canonical_json(hashed_entry(entry)))`` as lowercase hex."""
    if len(prev_hash) != 64 or prev_hash != prev_hash.lower():
        raise ValueError(f"prev_hash must be 64 lowercase hex characters, got {prev_hash!r}")
    bytes.fromhex(prev_hash)  # raises ValueError on non-hex
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(hashed_entry(entry))).hexdigest()


def entry_is_valid(entry: Mapping[str, Any], prev_hash: str, seq: int | None) -> bool:
    """Whether ``entry`` links to ``prev_hash``, has sequence number ``seq`` (None: any) and hashes right."""
    try:
        if entry["prev_hash"] != prev_hash:
            return False
        if seq is not None and entry["seq"] != seq:
            return False
        return bool(chain_hash(prev_hash, entry) == entry["hash"])
    except (KeyError, TypeError, ValueError):  # CanonicalJsonError is a TypeError
        return False


def verify_chain(
    entries: Iterable[Mapping[str, Any]], *, prev_hash: str = GENESIS_HASH, first_seq: int | None = 1
) -> int | None:
    """The index (in ``entries``) of the first entry that breaks the chain, or None when all of it holds.

    Each entry needs the :data:`HASHED_FIELDS` plus ``prev_hash`` and ``hash``. An entry breaks the chain when its
    ``prev_hash`` is not the previous entry's ``hash`` (``prev_hash`` for the first), its ``seq`` is not one more
    than the previous one (``first_seq`` for the first; None accepts any start), or its ``hash`` is not
    :func:`chain_hash` of it. Pass ``prev_hash``/``first_seq`` to verify a later window of a long chain.
    """
    expected_seq = first_seq
    for index, entry in enumerate(entries):
        if not entry_is_valid(entry, prev_hash, expected_seq):
            return index
        prev_hash = entry["hash"]
        expected_seq = int(entry["seq"]) + 1
    return None
