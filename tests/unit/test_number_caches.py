"""Per-number caches are bounded by configuration: new callers stop costing memory once a cache is full."""

from __future__ import annotations

from dce.compliance.fraud import classify_ani
from dce.compliance.lists import _parsed_key, number_key
from dce.compliance.tcpa import number_place
from dce.routing.context import caller_geo
from dce.routing.numbers import to_e164


def _through_every_cache(n: int) -> None:
    """What the call path does with one caller's number, in every room that caches per number."""
    user = f"212{2000000 + n:07d}"
    e164 = to_e164(user)
    assert e164 is not None
    caller_geo(e164)
    classify_ani(e164, "US")
    number_place(e164)
    number_key(f"(212) {200 + n // 10_000 % 800}-{n % 10_000:04d}")


def test_distinct_callers_fill_each_number_cache_only_to_its_size() -> None:
    """Old: lru_caches of 65-100k entries (~1.2 KB a caller across them); each is now at most ``caches.numbers``."""
    for n in range(20_000):
        _through_every_cache(n)
    sizes = {f.__name__: f.cache_info().currsize for f in (to_e164, caller_geo, classify_ani, number_place)}
    sizes["_parsed_key"] = _parsed_key.cache_info().currsize
    assert all(0 < size <= 8192 for size in sizes.values()), sizes


def test_the_configured_size_bounds_every_number_cache() -> None:
    from dce import caches

    try:
        caches.resize({"numbers": 100})
        for n in range(1000):
            _through_every_cache(n)
        held = caches.entries()["numbers"]
        assert 100 <= held <= 100 * 5
        assert to_e164("2125550100") == "+12125550100"  # still answers
    finally:
        caches.resize({"numbers": caches.DEFAULT_SIZES["numbers"]})


def test_the_config_section_names_every_cache_group_with_its_default() -> None:
    from dce import caches
    from dce.exchange.config import load_settings

    assert load_settings().caches.model_dump() == caches.DEFAULT_SIZES
    assert load_settings(overrides={"caches": {"numbers": 10}}).caches.numbers == 10
