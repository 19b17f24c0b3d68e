"""The Redis-backed shared state against a real Redis: caps (slots and hour/day/month counts), fraud velocity and
rate limits, each seen from two clients as two nodes would see it, with injected time; and each one's fallback when
Redis is not there."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from dce.clock import SystemClock
from dce.compliance.fraud import FraudScorer
from dce.compliance.screen import Screener
from dce.compliance.verdict import ReasonCode
from dce.db.redis_slots import RedisSlots, Windows
from dce.db.redis_velocity import RedisVelocity, sliding
from dce.exchange.agent_lines import AgentLines
from dce.exchange.cluster import connect
from dce.exchange.compliance_setup import FraudCheck
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.router import CallRequest, Routed, StaticRouter
from dce.exchange.screening import CallGate
from dce.http_api.rate_limit import DEFAULT_RULES, Rule
from dce.http_api.redis_rate_limit import RedisRateLimiter
from dce.routing.agents import AgentDirectory, AgentInfo, Contact
from dce.routing.counters import InMemoryCounters, window_starts
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import Buyer, Campaign, CapCounts, Caps, Publisher, Target, TrackingNumber
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes
from tests.integration.sipp import free_port
from tests.redis_server import redis_test_url

pytestmark = pytest.mark.integration

NY = ZoneInfo("America/New_York")
LATE = datetime(2026, 6, 1, 23, 30, tzinfo=NY)  # half an hour before the buyer's midnight
ANI = "+12125551234"


@pytest.fixture
def url() -> str:
    return redis_test_url()


# What the sharing tests allow a Redis call: they prove atomic counting across nodes, and a loaded CI machine must not
# push a call into the fallback (the outage tests below use short budgets on purpose).
SHARED_S = 10.0


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis, str]]:
    """Two clients (two nodes) and a key prefix of this test's own, whose keys are deleted afterwards."""
    a, b = connect(url, timeout_s=SHARED_S), connect(url, timeout_s=SHARED_S)
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield a, b, prefix
    keys = [key async for key in a.scan_iter(match=prefix + "*")]
    if keys:
        await a.delete(*keys)
    await a.aclose()
    await b.aclose()


def nowhere() -> aioredis.Redis:
    """A client of a port where nothing listens."""
    return aioredis.from_url(f"redis://127.0.0.1:{free_port('tcp')}/0", socket_connect_timeout=0.5)


# -- caps -------------------------------------------------------------------------------------------------------


async def test_fifty_concurrent_acquires_from_two_nodes_with_a_cap_of_five_take_exactly_five(nodes) -> None:
    a, b, prefix = nodes
    node_a, node_b = RedisSlots(a, prefix=prefix, timeout_s=SHARED_S), RedisSlots(b, prefix=prefix, timeout_s=SHARED_S)
    results = await asyncio.gather(*((node_a if i % 2 else node_b).acquire("t1", 5) for i in range(50)))
    assert results.count(True) == 5 and results.count(False) == 45
    assert await node_a.held("t1") == 5
    await asyncio.gather(*(node_b.release("t1") for _ in range(5)))
    assert await node_a.held("t1") == 0
    assert await a.exists(node_a.slot_key("t1")) == 0  # the last release deletes the key


async def test_a_daily_cap_holds_across_two_nodes_and_rolls_over_at_the_buyers_midnight(nodes) -> None:
    a, b, prefix = nodes
    node_a, node_b = RedisSlots(a, prefix=prefix, timeout_s=SHARED_S), RedisSlots(b, prefix=prefix, timeout_s=SHARED_S)
    starts = window_starts(NY, LATE)
    today = Windows(CapCounts.CONNECTS, starts, daily=2)
    for node in (node_a, node_b):
        assert await node.acquire("t1", None, today) is True
        await node.record("t1", CapCounts.CONNECTS, starts, LATE.timestamp())
    assert await node_a.counts("t1", CapCounts.CONNECTS, starts) == [2, 2, 2]
    assert await node_a.acquire("t1", None, today) is False
    assert await node_b.acquire("t1", 10, today) is False
    assert await node_a.held("t1") == 0  # a refused acquire takes no slot
    conversions = Windows(CapCounts.CONVERSIONS, starts, daily=2)  # the other kind counts apart
    assert await node_a.acquire("t1", None, conversions) is True
    # Each counter lives past its window's end (hour, day, month in the buyer's zone), not for ever.
    hour_key, day_key, month_key = node_a.window_keys("t1", CapCounts.CONNECTS, starts)
    day_end = datetime(2026, 6, 2, tzinfo=NY).timestamp()
    left = {key: await a.ttl(key) + LATE.timestamp() for key in (hour_key, day_key, month_key)}  # when, at LATE
    assert starts[0] + 3600 < left[hour_key] <= starts[0] + 2 * 3600 + 1
    assert day_end < left[day_key] <= day_end + 2 * 86_400
    assert datetime(2026, 7, 1, tzinfo=NY).timestamp() < left[month_key]

    tomorrow = LATE + timedelta(hours=1)  # 00:30 in New York: a new day (and hour), the same month
    next_starts = window_starts(NY, tomorrow)
    assert next_starts[1] == day_end and next_starts[2] == starts[2]
    assert await node_b.acquire("t1", None, Windows(CapCounts.CONNECTS, next_starts, daily=2)) is True
    assert await node_b.acquire("t1", None, Windows(CapCounts.CONNECTS, next_starts, daily=2, monthly=2)) is False


async def test_concurrency_and_an_hourly_cap_are_checked_in_one_script(nodes) -> None:
    a, _b, prefix = nodes
    slots = RedisSlots(a, prefix=prefix, timeout_s=SHARED_S)
    starts = window_starts(NY, LATE)
    hourly = Windows(CapCounts.CONNECTS, starts, hourly=1)
    assert await slots.acquire("t1", 1, hourly) is True
    assert await slots.acquire("t1", 1, hourly) is False  # the slot is held
    await slots.release("t1")
    await slots.record("t1", CapCounts.CONNECTS, starts, LATE.timestamp())
    assert await slots.acquire("t1", 1, hourly) is False  # the slot is free, the hour is used up
    assert await slots.held("t1") == 0


async def test_caps_fall_back_when_redis_is_away_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    client = nowhere()
    slots = RedisSlots(client, timeout_s=1.0, retry_s=60.0)
    windows = Windows(CapCounts.CONNECTS, window_starts(NY, LATE), daily=2)
    with caplog.at_level(logging.WARNING):
        assert await slots.acquire("t1", 5, windows) is None
        assert await slots.acquire("t1", 5, windows) is None  # backing off: not even tried
    assert slots.failures == 1
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "redis slots unavailable" in caplog.records[0].message
    await client.aclose()


async def test_a_redis_that_does_not_answer_costs_a_call_the_timeout_once_then_nothing() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts and reads, never answers

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    slots = RedisSlots(client, timeout_s=0.05, retry_s=60.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await slots.acquire("t1", 5) is None
    first = loop.time() - started
    assert 0.04 < first < 0.5
    started = loop.time()
    assert await slots.acquire("t1", 5) is None
    assert loop.time() - started < 0.04  # backing off: no 0.05 s timeout waited out
    await client.aclose()
    server.close()


def two_routers(client_a: aioredis.Redis, client_b: aioredis.Redis, prefix: str,
                target_id: str) -> list[MarketplaceRouter]:
    """Two nodes' routers over one marketplace whose only target takes 2 connects a day."""
    target = Target(target_id, "b1", "T", "sip:127.0.0.1:5080", caps=Caps(daily=2))
    snapshot = MarketplaceSnapshot.build(
        [Publisher("p1", "P")], [Buyer("b1", "B")],
        [Campaign("c1", "C", publisher_ids=("p1",), target_ids=(target_id,))], [target],
        [TrackingNumber("+18005550100", "c1", "p1")])
    routers = []
    for client in (client_a, client_b):
        counters, duplicates = InMemoryCounters(), DuplicateLedger()
        engine = RoutingEngine(snapshot, counters, duplicates, random.Random(1))
        router = MarketplaceRouter(engine, counters, duplicates, StaticRouter(StaticRoutes({}), 30),
                                   clock=SystemClock())
        router.slots = RedisSlots(client, prefix=prefix, timeout_s=SHARED_S)
        routers.append(router)
    return routers


async def test_a_daily_cap_of_two_holds_across_two_routers_though_each_plans_on_its_own_counts(nodes) -> None:
    a, b, prefix = nodes
    node_a, node_b = two_routers(a, b, prefix, "t1")
    now = LATE.astimezone(UTC)
    for i, router in enumerate((node_a, node_b, node_a)):
        routed = router.plan(CallRequest("+18005550100", f"+1212555{i:04d}"), now)
        assert routed is not None and [p.target_id for p in routed.plan.targets] == ["t1"]  # planned locally
        allowed = await router.acquire(routed, routed.plan.targets[0], now)
        assert allowed is (i < 2)
        if allowed:
            router.connected(routed, routed.plan.targets[0], now)
            router.release(routed, routed.plan.targets[0])
            await asyncio.gather(*router._releases)  # the shared count is written off the call path
    assert node_a.counters.active("t1") == 0  # the refused acquire gave its local slot back


# -- fraud velocity ---------------------------------------------------------------------------------------------


async def test_velocity_counts_calls_of_every_node_in_one_sliding_window(nodes) -> None:
    a, b, prefix = nodes
    node_a = RedisVelocity(a, prefix=prefix, timeout_s=SHARED_S)
    node_b = RedisVelocity(b, prefix=prefix, timeout_s=SHARED_S)
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 3600 + 10  # 10 s into an hour (and a minute)
    for i in range(3):
        await node_a.count(ANI, "p1", t0 + i)
        await node_b.count(ANI, "p2", t0 + i)
    shared = await node_b.count(ANI, "p1", t0 + 5)
    assert shared == (7, 7, 4)  # caller: 7 this minute and hour; publisher p1: 4
    later = await node_a.count(ANI, None, t0 + 60)  # the next minute, 10 s in: 5/6 of the last one still counts
    assert later is not None and later.publisher_minute is None
    assert later.ani_minute == pytest.approx(1 + 7 * 5 / 6)
    assert later.ani_hour == 8
    assert sliding(2, 6, 90.0, 60.0) == pytest.approx(5.0)
    assert (await node_a.count(None, None, t0)) == (None, None, None)  # an anonymous caller without publisher
    ttl = await a.ttl(f"{prefix}a:{ANI}:{int((t0 + 60) // 60)}")
    assert 60 < ttl <= 121


async def test_two_gates_flag_a_caller_that_is_fast_only_across_nodes(nodes) -> None:
    a, b, prefix = nodes
    gates = []
    for client in (a, b):
        check = FraudCheck(FraudScorer(), RedisVelocity(client, prefix=prefix, timeout_s=SHARED_S))
        gates.append(CallGate(Screener([check]), velocity=check.velocity))
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 5
    request, routed = CallRequest("+18005550100", ANI), Routed(plan=None)  # type: ignore[arg-type]
    verdicts = [await gates[i % 2].screen_shared(request, routed, t0 + i) for i in range(6)]
    assert [ReasonCode.VELOCITY_ANI in v.codes for v in verdicts] == [False] * 5 + [True]  # 3 calls per node
    alone = CallGate(Screener([FraudCheck(FraudScorer())]))
    assert not any([ReasonCode.VELOCITY_ANI in alone.screen(request, routed, t0 + i).codes for i in range(5)])


async def test_velocity_falls_back_to_this_nodes_counts_when_redis_is_away(caplog) -> None:
    client = nowhere()
    check = FraudCheck(FraudScorer(), RedisVelocity(client, timeout_s=1.0))
    gate = CallGate(Screener([check]), velocity=check.velocity)
    request, routed = CallRequest("+18005550100", ANI), Routed(plan=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        verdicts = [await gate.screen_shared(request, routed, 1000.0 + i) for i in range(6)]
    assert [ReasonCode.VELOCITY_ANI in v.codes for v in verdicts] == [False] * 5 + [True]
    assert sum("redis velocity unavailable" in r.message for r in caplog.records) == 1
    await client.aclose()


# -- rate limits ------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("name", ["webhooks", "auth"])
async def test_two_limiters_sharing_a_bucket_give_the_seeds_burst_in_total_not_twice(nodes, name: str) -> None:
    a, b, prefix = nodes
    clock = Clock()
    limiters = [RedisRateLimiter(c, prefix=prefix, timeout_s=SHARED_S, clock=clock) for c in (a, b)]
    rule = DEFAULT_RULES[name]
    hits = int(2 * rule.burst + 10)
    decisions = await asyncio.gather(*(limiters[i % 2].hit("ip:10.0.0.1|" + name, rule) for i in range(hits)))
    assert sum(d.allowed for d in decisions) == rule.burst
    refused = [d for d in decisions if not d.allowed]
    assert all(d.retry_after_s == pytest.approx(1 / rule.rate) for d in refused)
    clock.now += 1.0  # a second's worth of tokens back
    back = int(rule.rate)
    later = [await limiters[i % 2].hit("ip:10.0.0.1|" + name, rule) for i in range(back + 2)]
    assert [d.allowed for d in later] == [True] * back + [False] * 2
    assert (await limiters[0].hit("ip:10.0.0.2|" + name, rule)).allowed  # another caller's own bucket
    ttl_ms = await a.pttl(prefix + "ip:10.0.0.1|" + name)
    assert 0 < ttl_ms <= rule.refill_s * 1000 + 1000  # an idle bucket vanishes once it would be full again


async def test_a_bucket_never_refills_backwards_when_a_node_clock_is_behind(nodes) -> None:
    a, b, prefix = nodes
    ahead, behind = Clock(1000.0), Clock(990.0)
    rule = Rule(1, 2)
    fast = RedisRateLimiter(a, prefix=prefix, timeout_s=SHARED_S, clock=ahead)
    slow = RedisRateLimiter(b, prefix=prefix, timeout_s=SHARED_S, clock=behind)
    assert (await fast.hit("k", rule)).allowed and (await slow.hit("k", rule)).allowed
    assert not (await slow.hit("k", rule)).allowed
    behind.now += 5  # still behind the bucket's last refill: nothing back
    assert not (await slow.hit("k", rule)).allowed
    ahead.now += 1
    assert (await fast.hit("k", rule)).allowed


async def test_the_limiter_falls_back_to_its_own_buckets_when_redis_is_away(caplog) -> None:
    client = nowhere()
    limiter = RedisRateLimiter(client, timeout_s=1.0, clock=Clock())
    with caplog.at_level(logging.WARNING):
        decisions = [await limiter.hit("k", Rule(1, 3)) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert sum("redis rate limits unavailable" in r.message for r in caplog.records) == 1
    await client.aclose()


# -- agents' lines ------------------------------------------------------------------------------------------------
class Everyone:
    """Presence: every agent registered."""

    def contacts(self, agent_id: str) -> tuple[Contact, ...]:
        return (Contact(f"sip:{agent_id}@192.0.2.1"),)


async def test_an_agent_busy_on_one_node_is_not_rung_by_another_until_the_call_ends(nodes) -> None:
    a, b, prefix = nodes
    lines = []
    for client in (a, b):
        directory = AgentDirectory(Everyone())
        directory.replace([AgentInfo("a1", "b1"), AgentInfo("a2", "b1", max_concurrent=2)], [], 0.0)
        lines.append(AgentLines(directory, RedisSlots(client, prefix=prefix, timeout_s=SHARED_S)))
    node_a, node_b = lines
    assert await node_a.hold({"a1", "a2"}, "call-a") == {"a1", "a2"}
    assert node_b.directory.unavailable("agent:a1") is None  # node B's planning knows only its own calls
    assert await node_b.hold({"a1", "a2"}, "call-b") == {"a2"}  # at dial time the shared line count decides
    assert node_b.calls("a1") == 0 and node_b.calls("a2") == 1
    assert sorted(node_a.release("call-a", 10.0)) == ["a1", "a2"]
    await asyncio.sleep(0.2)  # the slots are given back off the call path
    assert await node_b.hold({"a1"}, "call-c") == {"a1"}
    assert await node_b.slots.held("@agent:a1") == 1 and await node_b.slots.held("@agent:a2") == 1


async def test_agents_lines_fall_back_to_this_nodes_count_when_redis_is_away() -> None:
    directory = AgentDirectory(Everyone())
    directory.replace([AgentInfo("a1", "b1")], [], 0.0)
    lines = AgentLines(directory, RedisSlots(nowhere(), timeout_s=0.2, retry_s=60.0))
    assert await lines.hold({"a1"}, "call-1") == {"a1"}
    assert await lines.hold({"a1"}, "call-2") == set()  # this node's count: a1 has its one call
    assert lines.release("call-1", 5.0) == ["a1"]
