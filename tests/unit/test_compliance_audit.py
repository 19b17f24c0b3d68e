"""The audit log's hash chain: canonical JSON, chain_hash and verify_chain."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from dce.compliance.audit import (
    GENESIS_HASH,
    CanonicalJsonError,
    canonical_json,
    chain_hash,
    format_time,
    verify_chain,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def build_chain(count: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        entry: dict[str, Any] = {
            "seq": seq,
            "at": T0 + timedelta(seconds=seq),
            "actor": "cli:alice",
            "action": "gdpr.erase",
            "subject": f"sha256:{seq:064x}",
            "details": {"counts": {"calls": seq, "lists": 0}, "note": "é ✓"},
        }
        entry["prev_hash"] = prev
        entry["hash"] = prev = chain_hash(prev, entry)
        entries.append(entry)
    return entries


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, "é", None, True], "c": {"z": 0, "y": "x"}}) == (
        '{"a":[1,"é",null,true],"b":1,"c":{"y":"x","z":0}}'.encode()
    )


def test_canonical_json_normalises_times_decimals_tuples() -> None:
    paris = timezone(timedelta(hours=1))
    value = {"at": datetime(2025, 3, 1, 13, 0, tzinfo=paris), "amount": Decimal("1.50"), "t": (1, 2)}
    assert canonical_json(value) == b'{"amount":"1.50","at":"2025-03-01T12:00:00.000000Z","t":[1,2]}'


@pytest.mark.parametrize(
    "value", [{"x": 1.5}, {"x": float("nan")}, {1: "a"}, {"at": datetime(2025, 1, 1)}, {"x": {1, 2}}, {"x": b"y"}]
)
def test_canonical_json_refuses_ambiguous_values(value: Any) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(value)


def test_format_time_refuses_naive() -> None:
    with pytest.raises(CanonicalJsonError):
        format_time(datetime(2025, 1, 1))


def test_chain_hash_is_sha256_of_hex_prev_and_canonical_json() -> None:
    entry = {"seq": 1, "at": T0, "actor": "a", "action": "x", "subject": None, "details": {}, "hash": "ignored"}
    body = b'{"action":"x","actor":"a","at":"2025-03-01T12:00:00.123456Z","details":{},"seq":1,"subject":null}'
    assert chain_hash(GENESIS_HASH, entry) == hashlib.sha256(GENESIS_HASH.encode() + body).hexdigest()
    assert GENESIS_HASH == "0" * 64


def test_chain_hash_refuses_bad_prev() -> None:
    entry = {"seq": 1, "at": T0, "actor": "a", "action": "x", "subject": None, "details": {}}
    for bad in ("abc", "G" * 64, "A" * 64):
        with pytest.raises(ValueError):
            chain_hash(bad, entry)


def test_valid_chain_verifies() -> None:
    entries = build_chain(20)
    assert verify_chain(entries) is None
    assert verify_chain([]) is None
    # a later window verifies from its predecessor's hash and seq
    assert verify_chain(entries[10:], prev_hash=entries[9]["hash"], first_seq=11) is None
    assert verify_chain(entries[10:]) == 0


TAMPERS: list[tuple[str, Any]] = [
    ("seq", 99),
    ("at", T0 - timedelta(days=1)),
    ("at", T0 + timedelta(seconds=5, microseconds=1)),
    ("actor", "cli:mallory"),
    ("action", "gdpr.export"),
    ("subject", None),
    ("subject", "sha256:" + "f" * 64),
    ("details", {"counts": {"calls": 0, "lists": 0}, "note": "é ✓"}),
    ("details", {}),
    ("prev_hash", "1" * 64),
    ("hash", "2" * 64),
]


@pytest.mark.parametrize(("field", "value"), TAMPERS)
@pytest.mark.parametrize("index", [0, 7, 19])
def test_tampering_any_field_is_found_at_its_index(field: str, value: Any, index: int) -> None:
    entries = build_chain(20)
    entries[index] = {**entries[index], field: value}
    assert verify_chain(entries) == index


def test_nested_detail_change_is_found() -> None:
    entries = build_chain(5)
    entries[3]["details"]["counts"]["calls"] += 1
    assert verify_chain(entries) == 3


def test_rehashed_edit_breaks_the_next_link() -> None:
    entries = build_chain(5)
    forged = {**entries[2], "actor": "cli:mallory"}
    forged["hash"] = chain_hash(forged["prev_hash"], forged)
    entries[2] = forged
    assert verify_chain(entries) == 3


def test_removed_reordered_and_inserted_entries_are_found() -> None:
    entries = build_chain(6)
    assert verify_chain(entries[:2] + entries[3:]) == 2
    assert verify_chain([entries[0], entries[2], entries[1], *entries[3:]]) == 1
    assert verify_chain([*entries[:3], dict(entries[2]), *entries[3:]]) == 3


def test_unhashable_details_are_a_bad_entry_not_a_crash() -> None:
    entries = build_chain(3)
    entries[1] = {**entries[1], "details": {"x": 1.5}}
    assert verify_chain(entries) == 1
    entries = build_chain(3)
    del entries[2]["actor"]
    assert verify_chain(entries) == 2
