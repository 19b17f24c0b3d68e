"""The immutable in-memory marketplace the INVITE path reads, with every index built once.

``MarketplaceSnapshot.build`` validates references (ValueError naming the object) and pre-compiles per target:
criteria, hours, the buyer's ZoneInfo, skills and the ``PlannedTarget`` the engine hands out (no per-call
allocation). Lookups are dict accesses; a campaign's targets are a tuple, so work per call does not grow with
targets in other campaigns. Rebuild and swap (``RoutingEngine.replace``) to apply changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dce.routing.agents import agent_reference
from dce.routing.counters import CapCheck, UsageQuery
from dce.routing.criteria import CompiledCriterion, compile_criteria, compile_filter
from dce.routing.hours import CompiledHours, compile_hours, zone
from dce.routing.model import (
    ANY_PUBLISHER,
    Buyer,
    CallerContext,
    Campaign,
    Caps,
    PlannedTarget,
    Publisher,
    Target,
    TrackingNumber,
)


@dataclass(frozen=True, slots=True)
class CompiledTarget:
    """A target with everything the engine needs per call precomputed."""

    target: Target
    buyer: Buyer
    zone: ZoneInfo
    hours: CompiledHours | None  # None: always open
    criteria: tuple[CompiledCriterion, ...]
    cap_check: CapCheck  # what the engine asks the counters for a capped target
    usage_query: UsageQuery  # what the engine asks the counters for a capped target
    caps: Caps
    capped: bool  # any cap set
    counted: bool  # an hourly/daily/monthly cap set
    skills: frozenset[str]
    planned: PlannedTarget
    margin: int  # revenue - cost, for cost-based routing
    priority: int
    cost_key: tuple[int, int]  # (-margin, priority): cost-based order
    inv_weight: float  # 1/weight for weighted random order; 0.0 when weight <= 0 (always last in its tier)
    active: bool  # target and buyer enabled
    agent: bool = False  # its destination is an agent or an agent group (``agent:ID``, ``group:ID``)


@dataclass(frozen=True, slots=True)
class CompiledCampaign:
    """A campaign with its allowed publishers and compiled targets (in configured order)."""

    campaign: Campaign
    publishers: frozenset[str] | None  # None: any publisher may send calls
    targets: tuple[CompiledTarget, ...]
    # (ctx, bitmask of open targets) -> (matching targets, their CapChecks when capped)
    filter: Callable[[CallerContext, int], tuple[list[CompiledTarget], list[CapCheck]]]
    any_capped: bool  # some target has a cap (the engine asks the counters)
    funds_checked: bool = False  # some target's buyer has a credit limit (the engine checks its balance)
    has_agents: bool = False  # some target is an agent or a group (the engine asks who is available)


T = TypeVar("T")
_INF = float("inf")


def _index(kind: str, items: Iterable[T], key: str) -> dict[str, T]:
    out: dict[str, T] = {}
    for item in items:
        k = getattr(item, key)
        if k in out:
            raise ValueError(f"{kind} {k!r}: duplicate id")
        out[k] = item
    return out


def _compile_target(t: Target, buyer: Buyer) -> CompiledTarget:
    try:
        criteria = compile_criteria(t.criteria)
        hours = compile_hours(t.hours)
    except ValueError as exc:
        raise ValueError(f"target {t.id!r}: {exc}") from None
    caps = t.caps
    counted = caps.hourly is not None or caps.daily is not None or caps.monthly is not None
    return CompiledTarget(
        target=t,
        buyer=buyer,
        zone=zone(buyer.timezone),
        hours=hours,
        criteria=criteria,
        cap_check=CapCheck(
            t.id,
            caps.counts,
            zone(buyer.timezone),
            *(_INF if v is None else v for v in (caps.concurrency, caps.hourly, caps.daily, caps.monthly)),
        ),
        usage_query=UsageQuery(t.id, caps.counts, zone(buyer.timezone)),
        caps=caps,
        capped=counted or caps.concurrency is not None,
        counted=counted,
        skills=frozenset(s.lower() for s in t.skills),
        planned=PlannedTarget(t.id, t.destination, t.revenue, t.ring_timeout_s, auth=t.auth),
        margin=t.revenue - t.cost,
        priority=t.priority,
        cost_key=(t.cost - t.revenue, t.priority),
        inv_weight=1.0 / t.weight if t.weight > 0 else 0.0,
        active=t.enabled and buyer.enabled,
        agent=agent_reference(t.destination) is not None,
    )


@dataclass(frozen=True, slots=True)
class MarketplaceSnapshot:
    """Read-only marketplace with indexes: DID -> number, campaign/buyer/publisher/target by id."""

    publishers: Mapping[str, Publisher]
    buyers: Mapping[str, Buyer]
    targets: Mapping[str, CompiledTarget]
    campaigns: Mapping[str, CompiledCampaign]
    numbers: Mapping[str, TrackingNumber]  # DID (E.164) -> number
    by_key: Mapping[str, CompiledCampaign]  # RTB campaign key -> campaign

    @classmethod
    def build(
        cls,
        publishers: Iterable[Publisher],
        buyers: Iterable[Buyer],
        campaigns: Iterable[Campaign],
        targets: Iterable[Target],
        numbers: Iterable[TrackingNumber],
        previous: MarketplaceSnapshot | None = None,
    ) -> MarketplaceSnapshot:
        """Validate and index the marketplace; ValueError naming the first object with a bad reference.

        With ``previous``, unchanged targets and campaigns (equal value objects, same buyer) reuse its compiled
        forms, so a refresh after a small API change costs equality checks instead of recompiling everything.
        """
        old_targets = previous.targets if previous is not None else {}
        old_campaigns = previous.campaigns if previous is not None else {}
        pubs = _index("publisher", publishers, "id")
        buys = _index("buyer", buyers, "id")
        for b in buys.values():
            try:
                zone(b.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"buyer {b.id!r}: unknown time zone {b.timezone!r}") from None
        raw_targets = _index("target", targets, "id")
        compiled: dict[str, CompiledTarget] = {}
        for t in raw_targets.values():
            buyer = buys.get(t.buyer_id)
            if buyer is None:
                raise ValueError(f"target {t.id!r}: unknown buyer {t.buyer_id!r}")
            old = old_targets.get(t.id)
            if old is not None and old.target == t and old.buyer == buyer:
                compiled[t.id] = old
            else:
                compiled[t.id] = _compile_target(t, buyer)
        camps: dict[str, CompiledCampaign] = {}
        by_key: dict[str, CompiledCampaign] = {}
        for c in _index("campaign", campaigns, "id").values():
            for pid in c.publisher_ids:
                if pid not in pubs:
                    raise ValueError(f"campaign {c.id!r}: unknown publisher {pid!r}")
            for tid in c.target_ids:
                if tid not in compiled:
                    raise ValueError(f"campaign {c.id!r}: unknown target {tid!r}")
            for pid, _rule in c.payouts:
                if pid != ANY_PUBLISHER and pid not in pubs:
                    raise ValueError(f"campaign {c.id!r}: payout for unknown publisher {pid!r}")
            members = tuple(compiled[tid] for tid in dict.fromkeys(c.target_ids))
            cc = old_campaigns.get(c.id)
            if (
                cc is None
                or cc.campaign != c
                or len(cc.targets) != len(members)
                or not all(a is b for a, b in zip(cc.targets, members, strict=True))
            ):
                cc = CompiledCampaign(
                    campaign=c,
                    publishers=frozenset(c.publisher_ids) if c.publisher_ids else None,
                    targets=members,
                    filter=compile_filter([(ct, ct.criteria, ct.cap_check if ct.capped else None) for ct in members]),
                    any_capped=any(ct.capped for ct in members),
                    funds_checked=any(ct.buyer.credit_limit is not None for ct in members),
                    has_agents=any(ct.agent for ct in members),
                )
            camps[c.id] = cc
            if c.key is not None:
                if c.key in by_key:
                    raise ValueError(f"campaign {c.id!r}: key {c.key!r} already used by {by_key[c.key].campaign.id!r}")
                by_key[c.key] = cc
        nums: dict[str, TrackingNumber] = {}
        for n in numbers:
            if n.did in nums:
                raise ValueError(f"number {n.did!r}: duplicate DID")
            if n.campaign_id not in camps:
                raise ValueError(f"number {n.did!r}: unknown campaign {n.campaign_id!r}")
            if n.publisher_id not in pubs:
                raise ValueError(f"number {n.did!r}: unknown publisher {n.publisher_id!r}")
            nums[n.did] = n
        return cls(
            publishers=MappingProxyType(pubs),
            buyers=MappingProxyType(buys),
            targets=MappingProxyType(compiled),
            campaigns=MappingProxyType(camps),
            numbers=MappingProxyType(nums),
            by_key=MappingProxyType(by_key),
        )

    @classmethod
    def empty(cls) -> MarketplaceSnapshot:
        """A marketplace with nothing in it."""
        return cls.build((), (), (), (), ())

    def campaign_targets(self, campaign_id: str) -> tuple[CompiledTarget, ...]:
        """A campaign's compiled targets in configured order (empty for an unknown campaign)."""
        cc = self.campaigns.get(campaign_id)
        return cc.targets if cc is not None else ()
