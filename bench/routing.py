"""Routing decision latency: RoutingEngine.plan() over 10k targets in 1k campaigns, random callers.

Each campaign has 10 targets with mixed criteria (state/area code/tags, equals/in/regex/exists, negation), hours of
operation in their buyer's zone, caps (concurrency, hourly/daily/monthly with some recorded history) and mixed
strategies. Callers are contexts built once with ``build_context`` (cached phonenumbers work, measured separately),
spread over every campaign. Prints per-decision latency; the last line is machine-readable.

    .venv/bin/python bench/routing.py [--decisions 50000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import timeit
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

from dce.routing.context import build_context
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import (
    Buyer,
    Campaign,
    CapCounts,
    Caps,
    Criterion,
    CriterionOp,
    DuplicateAfter,
    DuplicateRule,
    DuplicateScope,
    HoursWindow,
    Publisher,
    RoutingStrategy,
    Target,
    TrackingNumber,
)
from dce.routing.snapshot import MarketplaceSnapshot

ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Phoenix")
STATES = ("NY", "CA", "TX", "FL", "IL", "PA", "OH", "GA", "NC", "MI")
AREA_CODES = ("212", "415", "713", "305", "312", "215", "614", "404", "704", "313")
CALLERS = tuple(f"+1{ac}55501{i:02d}" for ac in AREA_CODES for i in range(20))


def _criteria(rng: random.Random) -> tuple[Criterion, ...]:
    pick = rng.randrange(6)
    if pick == 0:
        return ()
    if pick == 1:
        return (Criterion("state", CriterionOp.IN, tuple(rng.sample(STATES, 6))),)
    if pick == 2:
        return (Criterion("area_code", CriterionOp.REGEX, (r"^(2|3|4)\d\d$",)),)
    if pick == 3:
        return (
            Criterion("state", CriterionOp.EQUALS, ("TX",), negate=True),
            Criterion("tag:source", CriterionOp.EXISTS),
        )
    if pick == 4:
        return (Criterion("tag:vertical", CriterionOp.IN, ("auto", "home", "health")),)
    return (
        Criterion("state", CriterionOp.IN, STATES[:8]),
        Criterion("area_code", CriterionOp.IN, AREA_CODES[:9]),
    )


def _hours(rng: random.Random) -> tuple[HoursWindow, ...]:
    pick = rng.randrange(4)
    if pick == 0:
        return ()
    if pick == 1:  # weekdays 9-17
        return tuple(HoursWindow(d, dtime(9), dtime(17)) for d in range(5))
    if pick == 2:  # every day 08-22
        return tuple(HoursWindow(d, dtime(8), dtime(22)) for d in range(7))
    return tuple(HoursWindow(d, dtime(18), dtime(6)) for d in range(7))  # overnight, wraps


def _caps(rng: random.Random) -> Caps:
    pick = rng.randrange(4)
    if pick == 0:
        return Caps()
    if pick == 1:
        return Caps(concurrency=rng.randint(1, 5))
    if pick == 2:
        return Caps(hourly=rng.randint(5, 50), daily=rng.randint(50, 500))
    return Caps(concurrency=rng.randint(2, 10), monthly=rng.randint(100, 5000), counts=CapCounts.CONVERSIONS)


def build(seed: int) -> tuple[MarketplaceSnapshot, list[str], InMemoryCounters, DuplicateLedger]:
    """The marketplace: 100 buyers, 50 publishers, 1000 campaigns of 10 targets each, 2 DIDs per campaign."""
    rng = random.Random(seed)
    publishers = [Publisher(f"p{i}", f"Publisher {i}") for i in range(50)]
    buyers = [Buyer(f"b{i}", f"Buyer {i}", timezone=ZONES[i % len(ZONES)]) for i in range(100)]
    strategies = list(RoutingStrategy)
    targets: list[Target] = []
    campaigns: list[Campaign] = []
    numbers: list[TrackingNumber] = []
    for c in range(1000):
        ids = []
        for k in range(10):
            tid = f"t{c}-{k}"
            ids.append(tid)
            targets.append(
                Target(
                    id=tid,
                    buyer_id=f"b{rng.randrange(100)}",
                    name=tid,
                    destination=f"sip:{tid}@buyer.example",
                    revenue=rng.randint(5, 80) * 1_000_000,
                    cost=rng.randint(0, 5) * 1_000_000,
                    priority=rng.randint(1, 3),
                    weight=rng.randint(1, 10),
                    caps=_caps(rng),
                    hours=_hours(rng),
                    criteria=_criteria(rng),
                    skills=tuple(rng.sample(("auto", "home", "health", "spanish"), rng.randint(0, 2))),
                )
            )
        pubs = tuple(f"p{i}" for i in rng.sample(range(50), 3))
        rule = None
        if c % 4 == 0:
            rule = DuplicateRule(
                DuplicateAfter.CONNECTED, 30, DuplicateScope.TARGET if c % 8 else DuplicateScope.CAMPAIGN
            )
        campaigns.append(
            Campaign(
                id=f"c{c}",
                name=f"Campaign {c}",
                publisher_ids=pubs,
                target_ids=tuple(ids),
                strategy=strategies[c % len(strategies)],
                duplicate_rule=rule,
            )
        )
        for n in range(2):
            numbers.append(TrackingNumber(f"+1800{c:04d}{n:03d}", f"c{c}", pubs[n]))
    snapshot = MarketplaceSnapshot.build(publishers, buyers, campaigns, targets, numbers)
    counters = InMemoryCounters()
    duplicates = DuplicateLedger()
    now = datetime.now(UTC)
    for t in rng.sample(targets, 2000):  # some history: connects/conversions, calls in progress
        for _ in range(rng.randint(1, 20)):
            counters.record(t.id, t.caps.counts, now - timedelta(minutes=rng.randint(0, 60 * 24 * 20)))
        for _ in range(rng.randint(0, 3)):
            counters.try_acquire(t.id, None)
    for _ in range(5000):
        c = rng.randrange(1000)
        duplicates.record(rng.choice(CALLERS), f"c{c}", f"t{c}-{rng.randrange(10)}", DuplicateAfter.CONNECTED, now)
    return snapshot, [n.did for n in numbers], counters, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    snapshot, dids, counters, duplicates = build(args.seed)
    rng = random.Random(args.seed)
    engine = RoutingEngine(snapshot, counters, duplicates, random.Random(args.seed))
    tag_sets = ((), (("X-DCE-Source", "web"),), (("X-DCE-Vertical", "auto"), ("X-DCE-Source", "tv")))
    ctx_ns: list[int] = []
    contexts = []
    for _ in range(5000):
        kwargs = {"caller_user": rng.choice(CALLERS), "did": rng.choice(dids), "headers": rng.choice(tag_sets)}
        t0 = time.perf_counter_ns()
        contexts.append(build_context(snapshot=snapshot, **kwargs))
        ctx_ns.append(time.perf_counter_ns() - t0)
    now = datetime.now(UTC)
    for ctx in contexts:  # warm-up
        engine.plan(ctx, now)
    gc.collect()
    gc.freeze()
    latencies: list[int] = []
    routed = 0
    plan = engine.plan
    clock = time.perf_counter_ns
    for i in range(args.decisions):
        ctx = contexts[i % len(contexts)]
        t0 = clock()
        result = plan(ctx, now)
        latencies.append(clock() - t0)
        routed += bool(result.targets)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] / 1000
    p99 = latencies[int(len(latencies) * 0.99)] / 1000
    ctx_cached = sorted(ctx_ns[2500:])
    loop = min(timeit.repeat("for i in r: i + 1", "r = range(10)", number=100_000, repeat=5)) / 100_000 * 1e9
    print(f"machine calibration: a 10-iteration Python loop takes {loop:.0f} ns")
    print(f"build_context (cached numbers): p50_us={ctx_cached[len(ctx_cached) // 2] / 1000:.1f}")
    print(f"mean_us={statistics.fmean(latencies) / 1000:.1f} max_us={latencies[-1] / 1000:.1f} routed={routed}")
    print(
        f"decisions={len(latencies)} p50_us={p50:.1f} p99_us={p99:.1f} "
        f"targets={len(snapshot.targets)} campaigns={len(snapshot.campaigns)}"
    )


if __name__ == "__main__":
    main()
