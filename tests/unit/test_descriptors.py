"""The descriptor budget at start: raised toward the hard limit, never lowered, shortfall visible."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from dce.exchange.descriptors import HEADROOM, descriptors_needed, ensure_descriptors


@pytest.fixture
def rlimit() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_needed_counts_connections_ports_and_headroom() -> None:
    assert descriptors_needed(tcp_max_connections=100, media_ports=400) == 500 + HEADROOM


def test_soft_limit_is_raised_toward_the_need(rlimit: tuple[int, int]) -> None:
    _, hard = rlimit
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert ensure_descriptors(1000) == 1000 == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert ensure_descriptors(500) == 1000  # enough already: never lowered
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1000


def test_a_need_above_the_hard_limit_gets_the_hard_limit(rlimit: tuple[int, int]) -> None:
    _, hard = rlimit
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert ensure_descriptors(hard + 1000) == hard
