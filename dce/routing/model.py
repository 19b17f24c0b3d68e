"""The marketplace model: who sells calls, who buys them, and the rules that decide where a call goes.

Immutable value objects. The in-memory snapshot the INVITE path reads is built from them (``routing.snapshot``);
the database stores them (``db``); the API edits them. Money is integer micro-units of the account currency
(``1_000_000`` = 1.00), never a float.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal

Micros = int  # money: millionths of the currency unit
MICROS_PER_UNIT = 1_000_000
ANY_PUBLISHER = "*"  # the publisher id of a campaign's payout rule for publishers without their own


def format_money(amount: Micros) -> str:
    """Micros as a decimal string of currency units, no float in between: 12_500_000 -> "12.50", 1 -> "0.000001"."""
    units = Decimal(amount).scaleb(-6)
    cents = units.quantize(Decimal("0.01"))
    return str(cents) if cents == units else f"{units.normalize():f}"


class CriterionOp(enum.StrEnum):
    """How a targeting criterion compares the caller's value."""

    EQUALS = "equals"
    IN = "in"
    REGEX = "regex"
    EXISTS = "exists"


@dataclass(frozen=True, slots=True)
class Criterion:
    """One targeting rule. ``field`` is ``state``, ``zip``, ``area_code`` or ``tag:<name>``."""

    field: str
    op: CriterionOp
    values: tuple[str, ...] = ()
    negate: bool = False


@dataclass(frozen=True, slots=True)
class HoursWindow:
    """Open from ``start`` to ``end`` (local time of the buyer) on ``weekday`` (0 = Monday)."""

    weekday: int
    start: time
    end: time


class CapCounts(enum.StrEnum):
    """What a target's hourly/daily/monthly caps count."""

    CONNECTS = "connects"
    CONVERSIONS = "conversions"


@dataclass(frozen=True, slots=True)
class Caps:
    """Limits per target; None means unlimited."""

    concurrency: int | None = None
    hourly: int | None = None
    daily: int | None = None
    monthly: int | None = None
    counts: CapCounts = CapCounts.CONNECTS


@dataclass(frozen=True, slots=True)
class Publisher:
    """A seller of calls (traffic source)."""

    id: str
    name: str
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Buyer:
    """An account that buys calls; its targets' hours are in its time zone (IANA name)."""

    id: str
    name: str
    timezone: str = "America/New_York"
    credit_limit: Micros | None = None  # how far below zero its balance may go; None: not funds-checked
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """A destination owned by a buyer, with its price, rules and limits.

    ``destination`` is a SIP URI, an E.164 number dialled through the configured outbound trunk, or a buyer's agent
    or agent group (``agent:ID``, ``group:ID``: its registered, idle agents are rung, see ``routing.agents``).
    ``bid_url`` makes it an RTB target: it is pinged per call and its bid replaces ``revenue``.
    """

    id: str
    buyer_id: str
    name: str
    destination: str
    revenue: Micros = 0
    conversion_duration_s: int = 60
    priority: int = 1  # lower tiers are tried first
    weight: int = 1  # share inside a tier
    ring_timeout_s: float = 30.0
    caps: Caps = field(default_factory=Caps)
    hours: tuple[HoursWindow, ...] = ()  # empty: always open
    criteria: tuple[Criterion, ...] = ()
    skills: tuple[str, ...] = ()  # for skill-based routing: tags this target handles
    cost: Micros = 0  # for cost-based routing: what the exchange pays to reach it
    bid_url: str | None = None
    enabled: bool = True
    auth: TargetAuth | None = None  # digest credentials for the buyer's 401/407


@dataclass(frozen=True, slots=True)
class TargetAuth:
    """A target's outbound digest credentials as stored: its password sealed (encrypted, opened only to answer a
    challenge), or HA1s per algorithm for one realm. ``password`` (plain) only travels from the API to the sealing
    and is never stored."""

    username: str
    realm: str | None = None
    sealed_password: str | None = field(default=None, repr=False)
    ha1: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (algorithm, hex)
    password: str | None = field(default=None, repr=False)


class RoutingStrategy(enum.StrEnum):
    """How a campaign orders its eligible targets."""

    PRIORITY_WEIGHTED = "priority_weighted"  # tiers by priority, weighted random inside a tier
    ROUND_ROBIN = "round_robin"
    SKILL = "skill"  # targets whose skills match the caller's tags first
    COST = "cost"  # highest revenue minus cost first


class DuplicateAfter(enum.StrEnum):
    """When a repeat caller counts as a duplicate."""

    CONNECTED = "connected"
    CONVERTED = "converted"


class DuplicateScope(enum.StrEnum):
    """Where a repeat caller is looked for."""

    CAMPAIGN = "campaign"
    TARGET = "target"


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    """Restrict a caller who already connected (or converted) within ``days``."""

    after: DuplicateAfter = DuplicateAfter.CONNECTED
    days: int = 30
    scope: DuplicateScope = DuplicateScope.CAMPAIGN


@dataclass(frozen=True, slots=True)
class PayoutRule:
    """What a publisher earns per converted call: a fixed amount or a share of revenue (basis points)."""

    fixed: Micros | None = None
    revenue_share_bp: int | None = None  # 5000 = 50 %


class UnmatchedCaller(enum.StrEnum):
    """What a call gets when its caller ID holds no winner reserved by a publisher's RTB ping."""

    ROUTE = "route"  # routed like any other call
    REJECT = "reject"  # refused (403): the campaign only takes calls it bid on


class StirAction(enum.StrEnum):
    """What a call failing the campaign's STIR/SHAKEN policy (or arriving unsigned) gets."""

    ALLOW = "allow"
    FLAG = "flag"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Campaign:
    """An offer: tracking numbers, who may send calls, how they are routed and paid."""

    id: str
    name: str
    vertical: str = ""
    publisher_ids: tuple[str, ...] = ()  # publishers allowed to send calls
    target_ids: tuple[str, ...] = ()
    strategy: RoutingStrategy = RoutingStrategy.PRIORITY_WEIGHTED
    payouts: tuple[tuple[str, PayoutRule], ...] = ()  # (publisher id or "*", rule)
    duplicate_rule: DuplicateRule | None = None
    ping_timeout_ms: int = 2000  # RTB: how long to wait for bids (minimum 50)
    reserve: Micros = 0  # RTB/auction: the lowest acceptable bid
    allow_caller_id: bool = False  # RTB: send the caller's number to bidders unmasked
    key: str | None = None  # public key for inbound RTB pings (POST /api/v1/rtb/{key}/ping)
    unmatched_caller: UnmatchedCaller = UnmatchedCaller.ROUTE
    live_auction: bool = False  # offer each call on /ws/v1/bidding and let buyers bid during the window
    auction_window_ms: int = 1000  # live auction: how long bids are taken (50..10000)
    stir_min_attestation: str | None = None  # "A", "B" or "C": the weakest attestation accepted (None: any)
    stir_action: StirAction = StirAction.REJECT  # for a failed verification or a weaker attestation
    stir_unsigned: StirAction = StirAction.ALLOW  # for a call without an Identity header
    conversion_from: str = "answer"  # the conversion duration is timed from "answer", "dial" or "incoming"
    max_call_duration_s: int | None = None  # answered calls are hung up after this; None: the exchange's default
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class TrackingNumber:
    """A DID: calls to it belong to ``campaign_id`` and are credited to ``publisher_id``."""

    did: str  # E.164
    campaign_id: str
    publisher_id: str


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What routing knows about a call, built once per call (phonenumbers work is cached per number)."""

    ani: str | None  # caller in E.164, None when anonymous or not a number
    did: str
    state: str | None = None  # two-letter US/CA region of the caller
    area_code: str | None = None
    zip: str | None = None
    timezone: str | None = None
    campaign_id: str | None = None
    publisher_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    """One step of a routing plan: where to dial, for how much, for how long."""

    target_id: str
    destination: str
    revenue: Micros
    ring_timeout_s: float
    bid_id: str | None = None  # set when the revenue comes from an RTB bid
    auth: TargetAuth | None = None  # the target's digest credentials, carried to the dial


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    """Targets to dial in order; when empty, ``reason`` says why (no_route CDR detail)."""

    targets: tuple[PlannedTarget, ...]
    reason: str | None = None
