"""The decision engine: reasons, strategies, weighted shares, snapshot validation and swap."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import (
    Buyer,
    CallerContext,
    Campaign,
    Criterion,
    CriterionOp,
    HoursWindow,
    Publisher,
    RoutingStrategy,
    TrackingNumber,
)
from dce.routing.snapshot import MarketplaceSnapshot
from tests.unit.routing_fixtures import DID, market, target

NOW = datetime(2026, 6, 15, 16, 30, tzinfo=UTC)  # Monday 12:30 in New York
CTX = CallerContext(ani="+12125551234", did=DID, state="NY", area_code="212", campaign_id="c", publisher_id="p")

# chi-square critical values at p = 0.001 by degrees of freedom
CHI2_CRIT_0001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}


def engine_for(snap: MarketplaceSnapshot, seed: int = 0) -> RoutingEngine:
    return RoutingEngine(snap, InMemoryCounters(), DuplicateLedger(), random.Random(seed))


def ids(engine: RoutingEngine, ctx: CallerContext = CTX) -> list[str]:
    return [p.target_id for p in engine.plan(ctx, NOW).targets]


def test_plan_carries_destination_revenue_and_ring_timeout() -> None:
    engine = engine_for(market(target("t", revenue=12_500_000, ring_timeout_s=15.0)))
    (planned,) = engine.plan(CTX, NOW).targets
    assert (planned.target_id, planned.destination, planned.revenue, planned.ring_timeout_s) == (
        "t",
        "sip:t@x",
        12_500_000,
        15.0,
    )


def test_reasons() -> None:
    closed = (HoursWindow(6, datetime.min.time(), datetime.max.time()),)  # Sundays only
    snap = market(
        target("a", hours=closed),
        target("b", hours=closed),
        target("c", hours=closed),
        target("d", enabled=False),
        target("e", criteria=(Criterion("state", CriterionOp.EQUALS, ("CA",)),)),
        target("f", criteria=(Criterion("tag:lang", CriterionOp.EXISTS),)),
    )
    engine = engine_for(snap)
    assert engine.plan(CTX, NOW).reason == "no eligible target: 1 disabled, 3 closed, 2 criteria"
    assert engine.plan(CallerContext(ani=None, did="+19999999999"), NOW).reason == "unknown DID"
    via_q = CallerContext(ani=None, did="+18005550199")  # DID credited to publisher q, not allowed on c
    assert engine.plan(via_q, NOW).reason == "publisher not allowed"
    assert engine.plan(via_q, NOW).targets == ()
    assert engine.eligible(via_q, NOW) == []
    off = market(target("t"), campaign=Campaign("c", "C", target_ids=("t",), enabled=False))
    assert engine_for(off).plan(CTX, NOW).reason == "campaign disabled"
    empty = market(campaign=Campaign("c", "C"))
    assert engine_for(empty).plan(CTX, NOW).reason == "no eligible target: campaign has no targets"


def test_disabled_buyer_disables_its_targets() -> None:
    snap = market(target("t", buyer_id="z"), target("u"), buyers=(Buyer("z", "Z", enabled=False),))
    assert ids(engine_for(snap)) == ["u"]


def test_campaign_from_did_when_context_has_none() -> None:
    engine = engine_for(market(target("t")))
    assert ids(engine, CallerContext(ani=None, did=DID)) == ["t"]


def test_priority_tiers_first() -> None:
    snap = market(target("low", priority=3), target("high", priority=1), target("mid", priority=2))
    assert ids(engine_for(snap)) == ["high", "mid", "low"]


def test_weights_match_shares_chi_square() -> None:
    weights = {"a": 1, "b": 2, "c": 3, "d": 4}
    snap = market(*(target(t, weight=w) for t, w in weights.items()), target("backup", priority=2, weight=100))
    engine = engine_for(snap, seed=12345)
    n = 10_000
    firsts = Counter()
    for _ in range(n):
        plan = ids(engine)
        assert plan[-1] == "backup" and sorted(plan[:-1]) == sorted(weights)
        firsts[plan[0]] += 1
    total = sum(weights.values())
    chi2 = sum((firsts[t] - n * w / total) ** 2 / (n * w / total) for t, w in weights.items())
    assert chi2 < CHI2_CRIT_0001[len(weights) - 1], (chi2, firsts)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=2, max_size=6), st.integers(0, 2**32))
def test_weights_property(weights: list[int], seed: int) -> None:
    snap = market(*(target(f"t{i}", weight=w) for i, w in enumerate(weights)))
    engine = engine_for(snap, seed=seed)
    n = 3000
    firsts = Counter(ids(engine)[0] for _ in range(n))
    total = sum(weights)
    chi2 = sum((firsts[f"t{i}"] - n * w / total) ** 2 / (n * w / total) for i, w in enumerate(weights))
    assert chi2 < CHI2_CRIT_0001[len(weights) - 1] * 1.5  # looser: many examples, each a separate trial


def test_zero_weight_goes_last_in_its_tier() -> None:
    snap = market(target("zero", weight=0), target("one", weight=1), target("two", priority=2))
    engine = engine_for(snap)
    assert all(ids(engine) == ["one", "zero", "two"] for _ in range(50))


def test_round_robin_rotates_per_campaign() -> None:
    camp = Campaign("c", "C", target_ids=("a", "b", "c"), strategy=RoutingStrategy.ROUND_ROBIN)
    engine = engine_for(market(target("a"), target("b"), target("c"), campaign=camp))
    assert [ids(engine)[0] for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert ids(engine) == ["a", "b", "c"]


def test_skill_routing_puts_matching_skills_first() -> None:
    camp = Campaign("c", "C", target_ids=("gen", "es", "auto"), strategy=RoutingStrategy.SKILL)
    snap = market(
        target("gen"), target("es", skills=("Spanish",)), target("auto", skills=("auto", "home")), campaign=camp
    )
    engine = engine_for(snap)
    spanish = CallerContext(ani=None, did=DID, tags=(("lang", "spanish"),))
    assert ids(engine, spanish) == ["es", "gen", "auto"]
    auto = CallerContext(ani=None, did=DID, tags=(("vertical", "auto"),))
    assert ids(engine, auto) == ["auto", "gen", "es"]


def test_cost_routing_orders_by_margin() -> None:
    camp = Campaign("c", "C", target_ids=("a", "b", "c"), strategy=RoutingStrategy.COST)
    snap = market(
        target("a", revenue=10_000_000, cost=1_000_000),
        target("b", revenue=20_000_000, cost=15_000_000),
        target("c", revenue=12_000_000),
        campaign=camp,
    )
    assert ids(engine_for(snap)) == ["c", "a", "b"]


def test_eligible_and_replace() -> None:
    engine = engine_for(market(target("t"), target("u", enabled=False)))
    assert [t.id for t in engine.eligible(CTX, NOW)] == ["t"]
    engine.replace(market(target("t", enabled=False), target("u")))
    assert ids(engine) == ["u"]
    assert engine.snapshot.targets["u"].target.id == "u"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numbers": [TrackingNumber("+1800", "nope", "p")]}, "number '\\+1800': unknown campaign 'nope'"),
        ({"numbers": [TrackingNumber("+1800", "c", "nope")]}, "number '\\+1800': unknown publisher 'nope'"),
        ({"campaigns": [Campaign("c", "C", target_ids=("ghost",))]}, "campaign 'c': unknown target 'ghost'"),
        ({"campaigns": [Campaign("c", "C", publisher_ids=("ghost",))]}, "campaign 'c': unknown publisher"),
        ({"targets": [target("t", buyer_id="ghost")]}, "target 't': unknown buyer 'ghost'"),
        ({"buyers": [Buyer("b", "B", timezone="Mars/Olympus")]}, "buyer 'b': unknown time zone"),
        ({"targets": [target("t", criteria=(Criterion("zip", CriterionOp.REGEX, ("(",)),))]}, "target 't': "),
        ({"publishers": [Publisher("p", "P"), Publisher("p", "P2")]}, "publisher 'p': duplicate id"),
    ],
)
def test_snapshot_validation_names_the_object(kwargs: dict[str, list[object]], message: str) -> None:
    base: dict[str, list[object]] = {
        "publishers": [Publisher("p", "P")],
        "buyers": [Buyer("b", "B")],
        "campaigns": [Campaign("c", "C")],
        "targets": [],
        "numbers": [],
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MarketplaceSnapshot.build(**base)  # type: ignore[arg-type]


def test_campaign_targets_index() -> None:
    snap = market(target("t"), target("u"))
    assert [ct.target.id for ct in snap.campaign_targets("c")] == ["t", "u"]
    assert snap.campaign_targets("nope") == ()
    assert snap.numbers[DID].campaign_id == "c"


def test_incremental_build_reuses_unchanged_and_recompiles_changed() -> None:
    first = market(target("t"), target("u"))
    t2, u2 = target("t"), target("u", revenue=5)
    again = MarketplaceSnapshot.build(
        first.publishers.values(),
        first.buyers.values(),
        [cc.campaign for cc in first.campaigns.values()],
        [t2, u2],
        first.numbers.values(),
        previous=first,
    )
    assert again.targets["t"] is first.targets["t"]
    assert again.targets["u"] is not first.targets["u"] and again.targets["u"].planned.revenue == 5
    assert again.campaigns["c"] is not first.campaigns["c"]
    same = MarketplaceSnapshot.build(
        again.publishers.values(),
        again.buyers.values(),
        [cc.campaign for cc in again.campaigns.values()],
        [t2, u2],
        again.numbers.values(),
        previous=again,
    )
    assert same.campaigns["c"] is again.campaigns["c"]
    engine = engine_for(first)
    engine.replace(same)
    assert [p.revenue for p in engine.plan(CTX, NOW).targets if p.target_id == "u"] == [5]


def test_context_without_publisher_is_a_keyed_ping_and_skips_the_publisher_check() -> None:
    engine = engine_for(market(target("t")))
    ping = CallerContext(ani=None, did="", campaign_id="c")
    assert ids(engine, ping) == ["t"]
    assert engine.plan(CallerContext(ani=None, did="", campaign_id="nope"), NOW).reason == "unknown campaign"
