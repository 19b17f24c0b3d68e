"""What sharing caps, velocity and rate limits through Redis costs per call, against the in-process counters,
measured in the same run on the same event loop (uvloop when installed).

Measured per operation, sequentially (one call at a time: the latency a call sees, not throughput):
  local     ``MarketplaceRouter.acquire`` + ``release`` with in-memory counters only (concurrency and a daily cap)
  shared    the same with Redis: the local slot, then one Lua call checking the slot and the day's count
  velocity  ``RedisVelocity.count``: one Lua call counting a caller's and a publisher's calls
  ratelimit ``RedisRateLimiter.hit``: one Lua token-bucket call

    .venv/bin/python bench/redis_counters.py [--url redis://127.0.0.1:6379/0] [--n 20000]

One line per operation: ``op=... n=... p50_us=... p99_us=...`` (the release of a shared slot is off the call path
and not timed). Keys go under a throwaway prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.clock import SystemClock
from dce.db.redis_slots import RedisSlots
from dce.db.redis_velocity import RedisVelocity
from dce.exchange.cluster import connect
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.router import CallRequest, StaticRouter
from dce.http_api.rate_limit import Rule
from dce.http_api.redis_rate_limit import RedisRateLimiter
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import Buyer, Campaign, Caps, Publisher, Target, TrackingNumber
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

DID = "+18005550100"


def router() -> MarketplaceRouter:
    target = Target("t1", "b1", "T", "sip:127.0.0.1:5080", caps=Caps(concurrency=1000, daily=10**9))
    snapshot = MarketplaceSnapshot.build(
        [Publisher("p1", "P")], [Buyer("b1", "B")], [Campaign("c1", "C", publisher_ids=("p1",), target_ids=("t1",))],
        [target], [TrackingNumber(DID, "c1", "p1")])
    counters, duplicates = InMemoryCounters(), DuplicateLedger()
    return MarketplaceRouter(RoutingEngine(snapshot, counters, duplicates, random.Random(1)), counters, duplicates,
                             StaticRouter(StaticRoutes({}), 30), clock=SystemClock())


def line(op: str, samples: list[float]) -> str:
    samples.sort()
    p50 = samples[len(samples) // 2] * 1e6
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6
    return f"op={op} n={len(samples)} p50_us={p50:.1f} p99_us={p99:.1f}"


async def run(url: str, n: int) -> None:
    client = connect(url)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    try:
        now = datetime.now(UTC)
        for op in ("local", "shared"):
            r = router()
            if op == "shared":
                r.slots = RedisSlots(client, prefix=prefix, timeout_s=1.0)
            routed = r.plan(CallRequest(DID, "+12125551234"), now)
            assert routed is not None
            target = routed.plan.targets[0]
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                ok = await r.acquire(routed, target, now)
                samples.append(time.perf_counter() - started)
                assert ok
                r.release(routed, target)
                if r._releases:
                    await asyncio.gather(*r._releases)
            print(line(op, samples), flush=True)

        velocity = RedisVelocity(client, prefix=prefix + "vel:", timeout_s=1.0)
        samples = []
        for i in range(n):
            started = time.perf_counter()
            assert await velocity.count(f"+1212555{i % 10_000:04d}", "p1", time.time()) is not None
            samples.append(time.perf_counter() - started)
        print(line("velocity", samples), flush=True)

        limiter = RedisRateLimiter(client, prefix=prefix + "rl:", timeout_s=1.0)
        rule = Rule(1e9, 1e9)
        samples = []
        for i in range(n):
            started = time.perf_counter()
            assert (await limiter.hit(f"ip:10.0.{i % 256}.1|default", rule)).allowed
            samples.append(time.perf_counter() - started)
        print(line("ratelimit", samples), flush=True)
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i:i + 1000])
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    (uvloop.run if uvloop is not None else asyncio.run)(run(args.url, args.n))


if __name__ == "__main__":
    main()
