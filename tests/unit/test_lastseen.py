"""LastSeen answers exactly what a dict of the largest value per key would, in ~16 bytes an entry."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from dce.lastseen import LastSeen


@pytest.mark.parametrize("seed", range(5))
def test_it_answers_like_a_dict_of_maxima_with_a_rising_cutoff(seed: int) -> None:
    rng = random.Random(seed)
    seen, reference, cutoff = LastSeen(batch=rng.choice((1, 7, 64))), {}, -1
    for step in range(6000):
        key, value = rng.randrange(-50, 2000), rng.randrange(40_000)
        seen.put(key, value)
        if value >= cutoff:
            reference[key] = max(reference.get(key, value), value)
        if step % 500 == 499:
            cutoff += rng.randrange(3000)
            seen.forget_below(cutoff, slack=rng.choice((0, 100, 5000)))
            reference = {k: v for k, v in reference.items() if v >= cutoff}
    assert {k: seen.get(k) for k in range(-50, 2000)} == {k: reference.get(k) for k in range(-50, 2000)}


def test_everything_below_the_cutoff_is_freed() -> None:
    seen = LastSeen(batch=16)
    for key in range(1000):
        seen.put(key, key)
    seen.forget_below(500, slack=0)
    assert len(seen) == 500 and seen.get(499) is None and seen.get(500) == 500
    seen.forget_below(10_000)
    assert len(seen) == 0


def test_an_entry_costs_tens_of_bytes() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        seen = LastSeen()
        for n in range(200_000):
            seen.put(12_125_550_000 + 7 * n, 1_780_000_000_000_000 + n)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / 200_000
    finally:
        tracemalloc.stop()
    assert per_entry < 24, per_entry
    assert seen.get(12_125_550_007) == 1_780_000_000_000_001
