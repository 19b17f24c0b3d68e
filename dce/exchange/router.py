"""Where a call goes: one interface over the marketplace's routing engine and the static routes.

The CallFlow asks ``plan(request, now)`` once per call and tells the router about each leg it dials, so that
concurrency slots, caps and duplicate-caller records follow the calls. Both sources answer from memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from dce.billing.cdr import SaleTerms
from dce.routing.model import CallerContext, PlannedTarget, RoutingPlan
from dce.routing.static import StaticRoutes

STATIC_TARGET = "static"


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What routing may read about an inbound call."""

    did: str  # E.164 when the Request-URI user is a number
    caller_user: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """The call is refused outright (not "no route"): the SIP status and the reason for the caller and the CDR."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long a routed call may take beyond ringing: its auction's longest wait and its talk time."""

    auction_s: float = 0.0
    max_call_duration_s: float | None = None  # None: the exchange's routing.max_call_duration_s


@dataclass(slots=True)
class Routed:
    """A plan, with what the router needs to account for the legs it leads to."""

    plan: RoutingPlan
    context: CallerContext | None = None
    held: set[str] = field(default_factory=set)  # targets whose concurrency slot this call holds
    refusal: Refusal | None = None  # set when a campaign rule refuses the call (the plan is then empty)
    shared: set[str] = field(default_factory=set)  # held targets whose slot shared by every node (Redis) is held


class Router(Protocol):
    """A routing source as the CallFlow uses it."""

    def plan(self, request: CallRequest, now: datetime) -> Routed | None:
        """The plan for a call; None when the DID is unknown to every source."""
        ...

    async def acquire(self, routed: Routed, target: PlannedTarget, now: datetime) -> bool:
        """Take the target's concurrency slot before dialling it at ``now`` (on every node); False to skip it."""
        ...

    def release(self, routed: Routed, target: PlannedTarget) -> None:
        """Give the slot back when that leg ends (failed, or the call is over)."""
        ...

    def connected(self, routed: Routed, target: PlannedTarget, now: datetime) -> None:
        """The target answered: count the connect (caps) and remember the caller (duplicates)."""
        ...

    def completed(self, routed: Routed, target: PlannedTarget, billable_s: int, now: datetime) -> None:
        """An answered call ended after ``billable_s``: count a conversion when it reached the target's duration."""
        ...

    def needs_auction(self, routed: Routed) -> bool:
        """Whether the plan must be re-ranked by an auction before dialling."""
        ...

    async def auction(self, routed: Routed, call_id: str) -> Routed:
        """The plan re-ranked by bids (bounded by the campaign's ping timeout or live auction window)."""
        ...

    def without_buyers(self, routed: Routed, buyer_ids: frozenset[str]) -> Routed:
        """The plan without the targets of ``buyer_ids`` (buyers whose suppression list holds the caller)."""
        ...

    def limits(self, routed: Routed) -> CallLimits:
        """The call's campaign limits (the watchdog and the maximum call duration read them)."""
        ...

    def terms(self, routed: Routed, target: PlannedTarget | None) -> SaleTerms | None:
        """What the call is sold on when ``target`` takes it; with no target, only its campaign and publisher
        (for reports and postbacks). None for calls outside the marketplace."""
        ...


class StaticRouter:
    """Static routes from configuration: every destination with the default ring timeout, no accounting."""

    def __init__(self, routes: StaticRoutes, ring_timeout_s: float) -> None:
        self.routes = routes
        self.ring_timeout_s = ring_timeout_s

    def plan(self, request: CallRequest, now: datetime) -> Routed | None:
        destinations = self.routes.destinations(request.did)
        if not destinations:
            return None
        targets = tuple(PlannedTarget(STATIC_TARGET, destination, 0, self.ring_timeout_s)
                        for destination in destinations)
        return Routed(RoutingPlan(targets))

    async def acquire(self, routed: Routed, target: PlannedTarget, now: datetime) -> bool:
        return True

    def release(self, routed: Routed, target: PlannedTarget) -> None:
        return None

    def connected(self, routed: Routed, target: PlannedTarget, now: datetime) -> None:
        return None

    def completed(self, routed: Routed, target: PlannedTarget, billable_s: int, now: datetime) -> None:
        return None

    def needs_auction(self, routed: Routed) -> bool:
        return False

    async def auction(self, routed: Routed, call_id: str) -> Routed:
        return routed

    def without_buyers(self, routed: Routed, buyer_ids: frozenset[str]) -> Routed:
        return routed  # static routes belong to no buyer

    def limits(self, routed: Routed) -> CallLimits:
        return CallLimits()

    def terms(self, routed: Routed, target: PlannedTarget | None) -> SaleTerms | None:
        return None  # static routes are not sold


class OutboundTrunk:
    """Turns a target's destination into the URI to dial: SIP URIs as they are, E.164 numbers via the trunk."""

    def __init__(self, trunk_uri: str | None) -> None:
        self.trunk_uri = trunk_uri

    def uri_for(self, destination: str) -> str | None:
        """The dialable URI, or None for a number when no trunk is configured."""
        if destination.startswith(("sip:", "sips:")):
            return destination
        if self.trunk_uri is None or not destination.startswith("+"):
            return None
        scheme, _, rest = self.trunk_uri.partition(":")
        host = rest.split("@", 1)[-1]
        return f"{scheme}:{destination}@{host}"
