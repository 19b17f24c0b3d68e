"""PortAllocator: pairs, exhaustion, reuse order, and a stateful property test."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dce.media.ports import PortAllocator, PortsExhausted


def test_pairs_are_even_and_inside_range() -> None:
    alloc = PortAllocator(41001, 41010)
    ports = [alloc.allocate() for _ in range(alloc.capacity)]
    assert ports == [41002, 41004, 41006, 41008]
    assert all(p % 2 == 0 and p + 1 <= 41010 for p in ports)


def test_exhaustion_is_a_clear_error() -> None:
    alloc = PortAllocator(41000, 41003)
    alloc.allocate()
    alloc.allocate()
    with pytest.raises(PortsExhausted, match="41000-41003"):
        alloc.allocate()


def test_release_prefers_least_recently_released() -> None:
    alloc = PortAllocator(41000, 41005)
    a, b, c = alloc.allocate(), alloc.allocate(), alloc.allocate()
    alloc.release(b)
    alloc.release(a)
    alloc.release(c)
    assert [alloc.allocate() for _ in range(3)] == [b, a, c]


def test_double_release_is_an_error() -> None:
    alloc = PortAllocator(41000, 41003)
    port = alloc.allocate()
    alloc.release(port)
    with pytest.raises(ValueError, match="not allocated"):
        alloc.release(port)


@pytest.mark.parametrize(
    ("low", "high"), [(0, 10), (41000, 40000), (41001, 41001), (41001, 41002), (1, 70000)]
)
def test_bad_range(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        PortAllocator(low, high)


class AllocatorMachine(RuleBasedStateMachine):
    """Random allocate/release sequences never hand out a pair that is in use."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = PortAllocator(41000, 41019)  # 10 pairs
        self.held: set[int] = set()

    @rule()
    def allocate(self) -> None:
        if len(self.held) == self.alloc.capacity:
            with pytest.raises(PortsExhausted):
                self.alloc.allocate()
            return
        port = self.alloc.allocate()
        assert port not in self.held
        assert port % 2 == 0 and 41000 <= port <= 41018
        self.held.add(port)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        port = data.draw(st.sampled_from(sorted(self.held)))
        self.alloc.release(port)
        self.held.remove(port)

    @invariant()
    def counts_match(self) -> None:
        assert self.alloc.in_use == len(self.held)
        assert self.alloc.available == self.alloc.capacity - len(self.held)


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
