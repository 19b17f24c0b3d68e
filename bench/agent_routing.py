"""What agent targets add to a routing decision: RoutingEngine.plan() on a campaign of 10 group targets (20 agents
each, half registered, a quarter of those busy) against the same campaign with SIP URI targets, and the dial-time
``AgentDirectory.hunt`` of one group per strategy. Prints microseconds per call; the last line is machine-readable.

    .venv/bin/python bench/agent_routing.py [--decisions 50000]
"""

from __future__ import annotations

import argparse
import random
import timeit
from datetime import UTC, datetime

from dce.routing.agents import AgentDirectory, AgentInfo, Contact, GroupInfo
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import Buyer, CallerContext, Campaign, Publisher, Target, TrackingNumber
from dce.routing.snapshot import MarketplaceSnapshot

DID = "+18005550100"
NOW = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)
STRATEGIES = ("ring_all", "round_robin", "longest_idle")


class Registered:
    def __init__(self, contacts: dict[str, tuple[Contact, ...]]) -> None:
        self.by_agent = contacts

    def contacts(self, agent_id: str) -> tuple[Contact, ...]:
        return self.by_agent.get(agent_id, ())


def build(agent_targets: bool) -> tuple[RoutingEngine, AgentDirectory]:
    rng = random.Random(1)
    agents, groups, targets, contacts = [], [], [], {}
    for g in range(10):
        members = []
        for a in range(20):
            agent_id = f"a{g}-{a}"
            members.append(agent_id)
            agents.append(AgentInfo(agent_id, "b", max_concurrent=1))
            if rng.random() < 0.5:
                contacts[agent_id] = (Contact(f"sip:{agent_id}@192.0.2.{a + 1}:5062", ("udp", "192.0.2.1", 5062)),)
        groups.append(GroupInfo(f"g{g}", "b", STRATEGIES[g % 3], tuple(members)))  # type: ignore[arg-type]
        destination = f"group:g{g}" if agent_targets else f"sip:g{g}@buyer.example"
        targets.append(Target(id=f"t{g}", buyer_id="b", name=f"t{g}", destination=destination, priority=g % 3 + 1))
    directory = AgentDirectory(Registered(contacts))
    directory.replace(agents, groups, 0.0)
    for n, agent_id in enumerate(a for a in contacts if rng.random() < 0.25):
        directory.hold(agent_id, f"busy-{n}")
    snapshot = MarketplaceSnapshot.build(
        [Publisher("p", "P")], [Buyer("b", "B")],
        [Campaign("c", "C", publisher_ids=("p",), target_ids=tuple(t.id for t in targets))], targets,
        [TrackingNumber(DID, "c", "p")])
    engine = RoutingEngine(snapshot, InMemoryCounters(), DuplicateLedger(), random.Random(1), directory)
    return engine, directory


def per_call_us(work: object, n: int) -> float:
    return min(timeit.repeat(work, number=n, repeat=5)) / n * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    n = parser.parse_args().decisions
    ctx = CallerContext(ani="+13125550199", did=DID)
    sip_engine, _ = build(agent_targets=False)
    agent_engine, directory = build(agent_targets=True)
    assert len(agent_engine.plan(ctx, NOW).targets) == 10, "every group has an available agent"
    sip_us = per_call_us(lambda: sip_engine.plan(ctx, NOW), n)
    agent_us = per_call_us(lambda: agent_engine.plan(ctx, NOW), n)
    hunts = {strategy: per_call_us(lambda g=f"group:g{i}": directory.hunt(g), n // 5)
             for i, strategy in enumerate(STRATEGIES)}
    print(f"plan, 10 SIP URI targets:          {sip_us:7.2f} us")
    print(f"plan, 10 group targets (20 agents): {agent_us:7.2f} us")
    for strategy, us in hunts.items():
        print(f"hunt {strategy:<13} (20 agents):    {us:7.2f} us")
    print(f"plan_sip_us={sip_us:.2f} plan_agent_groups_us={agent_us:.2f} "
          + " ".join(f"hunt_{strategy}_us={us:.2f}" for strategy, us in hunts.items()))


if __name__ == "__main__":
    main()
