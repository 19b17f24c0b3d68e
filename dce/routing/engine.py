"""The decision engine: which targets a call may go to, in which order. Pure, synchronous, in memory.

Per call the work is one dict lookup for the campaign plus a pass over that campaign's compiled targets; cap
state comes from ``RoutingCounters.over_cap`` in one batch. Local time per buyer zone is derived from a UTC
offset cached for the current minute, so hours checks are integer arithmetic.
"""

from __future__ import annotations

import random
from datetime import datetime
from operator import attrgetter
from zoneinfo import ZoneInfo

from dce.routing.agents import UNAVAILABLE_REASONS, AgentDirectory
from dce.routing.counters import RoutingCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.hours import DAY
from dce.routing.model import (
    Buyer,
    CallerContext,
    DuplicateScope,
    RoutingPlan,
    RoutingStrategy,
    Target,
)
from dce.routing.snapshot import CompiledCampaign, CompiledTarget, MarketplaceSnapshot

_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_PRIORITY = attrgetter("priority")
_COST_KEY = attrgetter("cost_key")
_REASONS = ("disabled", "closed", "criteria", "duplicate", "capped", "unfunded", *UNAVAILABLE_REASONS)
_Rejected = tuple[int, ...]  # how many targets each of ``_REASONS`` excluded


class RoutingEngine:
    """Plans calls against the current snapshot; ``replace`` swaps in a new one atomically."""

    def __init__(
        self,
        snapshot: MarketplaceSnapshot,
        counters: RoutingCounters,
        duplicates: DuplicateLedger,
        rng: random.Random,
        agents: AgentDirectory | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.agents = agents if agents is not None else AgentDirectory()  # who may take agent targets now
        self._counters = counters
        self._duplicates = duplicates
        self._rng = rng
        self._rr: dict[str, int] = {}
        self._minute = -1
        self._offsets: dict[ZoneInfo, int] = {}  # zone -> UTC offset (s) during self._minute
        self._open: dict[str, tuple[int, CompiledCampaign, tuple[int, int, int, int]]] = {}
        self._balances: dict[str, int] = {}  # buyer id -> ledger balance (micros; negative: it owes)

    @property
    def snapshot(self) -> MarketplaceSnapshot:
        """The marketplace currently routed against."""
        return self._snapshot

    def replace(self, snapshot: MarketplaceSnapshot) -> None:
        """Route against ``snapshot`` from the next call on (one reference swap)."""
        self._snapshot = snapshot
        self._open = {}

    def set_balances(self, balances: dict[str, int]) -> None:
        """Buyers' ledger balances (micros) from the next call on; a buyer missing from it has 0."""
        self._balances = balances

    def can_pay(self, buyer: Buyer, amount: int) -> bool:
        """Whether ``buyer`` may be charged ``amount``: its balance plus its credit limit covers it (a buyer
        without a credit limit is not funds-checked)."""
        limit = buyer.credit_limit
        return limit is None or self._balances.get(buyer.id, 0) + limit >= amount

    def plan(self, ctx: CallerContext, now: datetime) -> RoutingPlan:
        """Ordered targets for the call, or no targets and the reason (for the 480 and the no_route CDR)."""
        cc, reason = self._campaign(ctx, now)
        if cc is None:
            return RoutingPlan((), reason)
        targets, rejected = self._eligible(cc, ctx, now)
        if rejected is not None:
            return RoutingPlan((), _no_target_reason(cc, rejected))
        if len(targets) > 1:
            targets = self._order(cc, targets, ctx)
        return RoutingPlan(tuple([ct.planned for ct in targets]))

    def eligible(self, ctx: CallerContext, now: datetime) -> list[Target]:
        """The call's eligible targets in campaign order, unordered by strategy (for the RTB auction)."""
        cc, _ = self._campaign(ctx, now)
        if cc is None:
            return []
        return [ct.target for ct in self._eligible(cc, ctx, now)[0]]

    def _campaign(self, ctx: CallerContext, now: datetime) -> tuple[CompiledCampaign | None, str | None]:
        snap = self._snapshot
        campaign_id, publisher_id = ctx.campaign_id, ctx.publisher_id
        if campaign_id is None:
            number = snap.numbers.get(ctx.did)
            if number is None:
                return None, "unknown DID"
            campaign_id, publisher_id = number.campaign_id, number.publisher_id
        cc = snap.campaigns.get(campaign_id)
        if cc is None:
            return None, "unknown campaign"
        campaign = cc.campaign
        if not campaign.enabled:
            return None, "campaign disabled"
        if publisher_id is not None:
            publisher = snap.publishers.get(publisher_id)
            if publisher is None or (cc.publishers is not None and publisher_id not in cc.publishers):
                return None, "publisher not allowed"
            if not publisher.enabled:
                return None, "publisher disabled"
        # publisher None: a context built for a keyed RTB ping (no DID); the campaign key stands for the publisher
        rule = campaign.duplicate_rule
        if (
            rule is not None
            and rule.scope is DuplicateScope.CAMPAIGN
            and self._duplicates.is_duplicate(rule, ctx.ani, campaign.id, None, now)
        ):
            return None, f"duplicate caller ({rule.after} within {rule.days} days)"
        return cc, None

    def _open_now(self, cc: CompiledCampaign, minute: int) -> tuple[int, int, int, int]:
        """(bitmask of enabled targets open this minute, how many, how many disabled, how many closed).

        Cached per campaign per minute. Hours are evaluated at minute resolution (the start of the current
        minute); zone offsets only change on minute boundaries, so one UTC offset per zone per minute gives the
        local (weekday, second) exactly.
        """
        cached = self._open.get(cc.campaign.id)
        if cached is not None and cached[0] == minute and cached[1] is cc:
            return cached[2]
        if minute != self._minute:
            self._minute = minute
            self._offsets.clear()
        offsets = self._offsets
        epoch = minute * 60
        mask = opened = disabled = closed = 0
        for i, ct in enumerate(cc.targets):
            if not ct.active:
                disabled += 1
                continue
            hours = ct.hours
            if hours is not None:
                offset = offsets.get(ct.zone)
                if offset is None:
                    utc = datetime.fromtimestamp(epoch, ct.zone).utcoffset()
                    offset = offsets[ct.zone] = int(utc.total_seconds()) if utc is not None else 0
                local = epoch + offset
                second = local % DAY
                for start, end in hours[(local // DAY + _EPOCH_WEEKDAY) % 7]:
                    if start <= second < end:
                        break
                else:
                    closed += 1
                    continue
            mask |= 1 << i
            opened += 1
        result = (mask, opened, disabled, closed)
        self._open[cc.campaign.id] = (minute, cc, result)
        return result

    def _eligible(
        self, cc: CompiledCampaign, ctx: CallerContext, now: datetime
    ) -> tuple[list[CompiledTarget], _Rejected | None]:
        """(eligible targets in campaign order, None) or ([], how many were rejected per ``_REASONS``)."""
        minute = int(now.timestamp()) // 60
        cached = self._open.get(cc.campaign.id)
        if cached is not None and cached[0] == minute and cached[1] is cc:
            mask, opened, disabled, closed = cached[2]
        else:
            mask, opened, disabled, closed = self._open_now(cc, minute)
        if not mask:
            return [], (disabled, closed)
        out, checks = cc.filter(ctx, mask)
        if not out:
            return out, (disabled, closed, opened)
        matched = len(out)
        duplicates = 0
        rule = cc.campaign.duplicate_rule
        if rule is not None and rule.scope is DuplicateScope.TARGET and ctx.ani:
            is_duplicate, ani, campaign_id = self._duplicates.is_duplicate, ctx.ani, cc.campaign.id
            fresh = [ct for ct in out if not is_duplicate(rule, ani, campaign_id, ct.target.id, now)]
            duplicates = matched - len(fresh)
            if duplicates:
                out = fresh
                if not out:
                    return out, (disabled, closed, opened - matched, duplicates)
                checks = [ct.cap_check for ct in out if ct.capped]
        capped = 0
        if checks:
            over = self._counters.over_cap(checks, now)
            if over:
                out = [ct for ct in out if ct.target.id not in over]
                capped = len(over)
                if not out:
                    return out, (disabled, closed, opened - matched, duplicates, capped)
        unfunded = 0
        if cc.funds_checked:
            can_pay = self.can_pay
            funded = [ct for ct in out if can_pay(ct.buyer, ct.target.revenue)]
            if len(funded) < len(out):
                unfunded = len(out) - len(funded)
                if not funded:
                    return funded, (disabled, closed, opened - matched, duplicates, capped, unfunded)
                out = funded
        if cc.has_agents:
            unavailable = self.agents.unavailable
            why = {ct.target.id: reason for ct in out if ct.agent and (reason := unavailable(ct.target.destination))}
            if why:
                out = [ct for ct in out if ct.target.id not in why]
                if not out:
                    counts = [list(why.values()).count(reason) for reason in UNAVAILABLE_REASONS]
                    return out, (disabled, closed, opened - matched, duplicates, capped, unfunded, *counts)
        return out, None

    def _order(self, cc: CompiledCampaign, targets: list[CompiledTarget], ctx: CallerContext) -> list[CompiledTarget]:
        strategy = cc.campaign.strategy
        if strategy is RoutingStrategy.PRIORITY_WEIGHTED:
            rnd = self._rng.random
            keyed = [
                (ct.priority, -(rnd() ** ct.inv_weight) if ct.inv_weight else 1.0, i, ct)
                for i, ct in enumerate(targets)
            ]
            keyed.sort()
            return [k[3] for k in keyed]
        if strategy is RoutingStrategy.ROUND_ROBIN:
            turn = self._rr.get(cc.campaign.id, 0)
            self._rr[cc.campaign.id] = turn + 1
            k = turn % len(targets)
            return targets[k:] + targets[:k]
        if strategy is RoutingStrategy.SKILL:
            wanted = {part.lower() for tag in ctx.tags for part in tag}
            matched = [ct for ct in targets if ct.skills and not ct.skills.isdisjoint(wanted)]
            rest = [ct for ct in targets if not (ct.skills and not ct.skills.isdisjoint(wanted))]
            matched.sort(key=_PRIORITY)
            rest.sort(key=_PRIORITY)
            return matched + rest
        if strategy is RoutingStrategy.COST:
            return sorted(targets, key=_COST_KEY)
        raise ValueError(f"campaign {cc.campaign.id!r}: unknown strategy {strategy!r}")


def _no_target_reason(cc: CompiledCampaign, rejected: tuple[int, ...]) -> str:
    if not cc.targets:
        return "no eligible target: campaign has no targets"
    parts = [f"{n} {name}" for n, name in zip(rejected, _REASONS, strict=False) if n]
    return "no eligible target: " + ", ".join(parts)
