"""Registrar bindings shared through a real Redis: a binding made on one node shows on another (expiry carried as
wall-clock time across clocks that differ), an unregister removes it there, a node started later loads it, and a
registrar on the second node reads it without a Redis round trip."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from dce.clock import VirtualClock
from dce.db.redis_bindings import RedisBindings
from dce.exchange.cluster import connect
from dce.sip.digest import NonceSigner
from dce.sip.registrar import Account, Binding, Registrar
from tests.redis_server import redis_test_url

pytestmark = pytest.mark.integration

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[[VirtualClock], RedisBindings]]:
    url, prefix = redis_test_url(), f"test-{uuid.uuid4().hex[:8]}:"
    made: list[RedisBindings] = []

    def node(clock: VirtualClock) -> RedisBindings:
        store = RedisBindings(connect(url), clock=clock, prefix=prefix)
        made.append(store)
        return store

    yield node
    for store in made:
        await store.stop()
    client = connect(url)
    async for key in client.scan_iter(match=prefix + "*"):
        await client.delete(key)
    for store in made:
        await store.client.aclose()
    await client.aclose()


async def test_bindings_cross_nodes_with_their_wall_clock_expiry(
        nodes: Callable[[VirtualClock], RedisBindings]) -> None:
    a_clock, b_clock = VirtualClock(START, monotonic=1000.0), VirtualClock(START, monotonic=50_000.0)
    a, b = nodes(a_clock), nodes(b_clock)
    await a.start()
    await b.start()
    phone = Binding("sip:alice@192.0.2.1", 1000.0 + 300, "c1", 2, "192.0.2.1:5060", "udp", None, "phone")
    a.put("a1", (phone,))
    await _until(lambda: b.get("a1") != ())
    (seen,) = b.get("a1")
    assert seen.expires_at == pytest.approx(50_000.0 + 300)  # the same wall-clock moment on b's clock
    assert (seen.uri, seen.call_id, seen.cseq, seen.source, seen.user_agent) == (
        phone.uri, "c1", 2, "192.0.2.1:5060", "phone")

    registrar = Registrar(NonceSigner(b"0123456789abcdef0123456789abcdef"), store=b)
    registrar.replace_accounts([Account("a1", "alice", "dce", None, "x")])
    assert [x.uri for x in registrar.bindings("a1", 50_000.0)] == [phone.uri]  # no Redis on the read

    later = nodes(VirtualClock(START, monotonic=7.0))
    await later.start()
    assert later.get("a1")[0].expires_at == pytest.approx(7.0 + 300)  # loaded at start

    a.put("a1", ())
    await _until(lambda: b.get("a1") == () and later.get("a1") == ())
    assert list(b.agents()) == []
    assert await a.client.get(a.key_prefix + "a1") is None


async def test_the_key_lives_as_long_as_the_longest_binding(nodes: Callable[[VirtualClock], RedisBindings]) -> None:
    clock = VirtualClock(START, monotonic=100.0)
    a = nodes(clock)
    await a.start()
    a.put("a1", (Binding("sip:x@192.0.2.1", 100.0 + 60, "c", 1, "192.0.2.1:5060", "udp"),
                 Binding("sip:y@192.0.2.2", 100.0 + 600, "c", 1, "192.0.2.2:5060", "udp")))
    async with asyncio.timeout(5):
        while (ttl := await a.client.pttl(a.key_prefix + "a1")) < 0:  # -2 until the writer has run
            await asyncio.sleep(0.01)
    assert 590_000 <= ttl <= 600_000
