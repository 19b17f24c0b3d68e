"""NumberSet: a set of E.164 digits (sorted int64 + overlay) behaves like a Python set."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dce.compliance import numberset
from dce.compliance.numberset import NumberSet, e164_to_int, int_to_e164, sorted_unique

numbers = st.integers(min_value=10, max_value=10**15 - 1)
us = st.integers(min_value=12_000_000_000, max_value=19_999_999_999)
any_number = st.one_of(numbers, us)


@given(st.sets(any_number, max_size=300), st.lists(any_number, max_size=100))
def test_membership_matches_a_python_set(members: set[int], probes: list[int]) -> None:
    s = NumberSet(members)
    assert len(s) == len(members)
    for value in [*probes, *members]:
        assert (value in s) == (value in members)
    assert list(s) == sorted(members)


@given(st.sets(any_number, max_size=200), st.lists(st.tuples(st.booleans(), any_number), max_size=200))
@settings(max_examples=200)
def test_add_and_discard_match_a_python_set(start: set[int], ops: list[tuple[bool, int]]) -> None:
    s = NumberSet(start)
    model = set(start)
    for add, value in ops:
        if add:
            assert s.add(value) == (value not in model)
            model.add(value)
        else:
            assert s.discard(value) == (value in model)
            model.discard(value)
        assert value in s if add else value not in s
    assert len(s) == len(model)
    assert s.to_array().tolist() == sorted(model)
    s.compact()
    assert s.pending == 0
    assert list(s) == sorted(model)
    assert all(v in s for v in model)


def test_overlay_compacts_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numberset, "OVERLAY_LIMIT", 10)
    s = NumberSet([12125550100])
    for i in range(25):
        s.add(13105550000 + i)
    assert s.pending <= 10
    assert len(s) == 26
    assert 13105550024 in s and 12125550100 in s


def test_update_merges_in_bulk() -> None:
    s = NumberSet([12125550100, 12125550101])
    assert s.update(np.array([12125550101, 12125550102, 12125550102], dtype=np.int64)) == 1
    assert list(s) == [12125550100, 12125550101, 12125550102]


def test_e164_conversion() -> None:
    assert e164_to_int("+12125550100") == 12125550100
    assert int_to_e164(12125550100) == "+12125550100"
    for bad in ("12125550100", "+0123", "+1", "+1212555010a", "+1234567890123456", "", "+١٢٣"):
        assert e164_to_int(bad) is None
    with pytest.raises(ValueError):
        int_to_e164(5)


def test_rejects_out_of_range_numbers() -> None:
    with pytest.raises(ValueError):
        NumberSet([5])
    with pytest.raises(ValueError):
        NumberSet().add(10**16)


def test_non_ints_are_not_members() -> None:
    s = NumberSet([12125550100])
    assert "12125550100" not in s
    assert s.contains_e164("+12125550100")
    assert not s.contains_e164("junk")


def test_sorted_unique() -> None:
    assert sorted_unique([3, 1, 3, 2]).tolist() == [1, 2, 3]
    assert sorted_unique([]).size == 0


def test_ten_million_numbers_stay_compact() -> None:
    rng = np.random.default_rng(1)
    s = NumberSet(12_000_000_000 + rng.integers(0, 8_000_000_000, 2_000_000))
    assert s.nbytes < 2_000_000 * 8 * 1.1  # the array plus a bucket table of under 10%
