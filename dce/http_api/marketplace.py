"""``/api/v1`` CRUD for the marketplace: publishers, buyers, campaigns, targets and tracking numbers.

JSON in and out. Input is validated with pydantic; a bad field gets 422 problem+json naming it in
``invalid_params`` (``payouts[0].fixed``, ``caps.daily``...). Money is a decimal string of currency units
(``"12.50"``, at most 6 decimal places; a JSON number is refused, see :mod:`dce.http_api.money`) and is stored as
integer micro-units; responses carry money as decimal strings. DIDs and number destinations are
normalised to E.164.

Per entity (``{key}`` is ``id``, or ``did`` for numbers; a ``+`` in a path DID must be sent as ``%2B``)::

    GET    /{collection}?limit=50&offset=0   -> 200 {"items": [...], "total", "limit", "offset"}  (ordered by key)
    POST   /{collection}                     -> 201 the entity (Location header); id generated when omitted
    GET    /{collection}/{key}               -> 200 the entity
    PUT    /{collection}/{key}               -> 200 replaced (omitted fields take their defaults)
    PATCH  /{collection}/{key}               -> 200 merged into the stored entity (objects merge one level deep)
    DELETE /{collection}/{key}               -> 204

Unknown key -> 404; taken id/DID/campaign key, or deleting something still referenced -> 409; an unknown id in
the body (``buyer_id``, ``target_ids[2]``...) -> 422 naming it. After every successful write the
app's :class:`~dce.http_api.changes.Changes` hears of it (``marketplace``), so live routing can reload.

Reads are served from the app's ``MARKETPLACE_CACHE`` (:mod:`dce.http_api.read_cache`), encoded once per
marketplace state: every write through the API drops it first (read-your-writes on this node), writes made
elsewhere (another node) show within the cache's ``ttl_s`` (1 s by default).

Handlers carry the permission they need (:func:`require`, :func:`required_permission`) for the auth layer to come.
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import time
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from dce.db import marketplace_repository as repo
from dce.http_api.changes import Change
from dce.http_api.inputs import invalid_value, shown
from dce.http_api.money import Money
from dce.http_api.problems import invalid_parameter
from dce.http_api.read_cache import MARKETPLACE_CACHE
from dce.http_api.resource import Resource, Summaries
from dce.routing.agents import agent_reference
from dce.routing.criteria import compile_criterion
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
    Micros,
    PayoutRule,
    Publisher,
    RoutingStrategy,
    StirAction,
    Target,
    TargetAuth,
    TrackingNumber,
    UnmatchedCaller,
)
from dce.routing.model import format_money as money_text  # the API's money out
from dce.routing.numbers import to_e164
from dce.sip.digest import PREFERRED, ha1
from dce.sip.secret_box import SecretBox

TARGET_CREDENTIALS = web.AppKey("target_credentials", SecretBox)  # seals targets' outbound SIP passwords

log = logging.getLogger(__name__)

READ = "marketplace:read"
WRITE = "marketplace:write"


# ----------------------------------------------------------------------------------------------- field types


def _optional_money(micros: Micros | None) -> str | None:
    return None if micros is None else money_text(micros)


def _e164(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid_value("phone_number", f"expected a phone number string, got {shown(value)}")
    number = to_e164(value)
    if number is None:
        raise invalid_value("phone_number", f"not a phone number: {shown(value)}")
    return number


def _destination(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid_value("destination", f"expected a SIP URI or a phone number, got {shown(value)}")
    text = value.strip()
    if agent_reference(text) is not None:  # agent:ID or group:ID; the repository checks it is the buyer's
        if not _AGENT_DESTINATION.fullmatch(text):
            raise invalid_value("destination", f"expected agent:ID or group:ID, got {shown(value)}")
        return text
    if text.lower().startswith(("sip:", "sips:")):
        if len(text) <= 5 or any(ch.isspace() for ch in text):
            raise invalid_value("destination", f"not a SIP URI: {shown(value)}")
        return text
    number = to_e164(text)
    if number is None:
        raise invalid_value("destination", f"expected a SIP URI (sip:...), a phone number, agent:ID or group:ID, "
                                           f"got {shown(value)}")
    return number


_AGENT_DESTINATION = re.compile(r"(agent|group):[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
E164 = Annotated[str, BeforeValidator(_e164)]
Destination = Annotated[str, BeforeValidator(_destination)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Name = Annotated[str, Field(min_length=1, max_length=255)]
Count = Annotated[int, Field(ge=0)]
PUBLISHER_OR_ANY = r"^(\*|[A-Za-z0-9][A-Za-z0-9_.:-]{0,63})$"
CRITERION_FIELD = re.compile(r"^(state|zip|area_code|tag:[A-Za-z0-9_.-]{1,64})$")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PublisherIn(_Input):
    id: Id | None = None
    name: Name
    enabled: bool = True

    def to_model(self, key: str) -> Publisher:
        return Publisher(id=key, name=self.name, enabled=self.enabled)


class BuyerIn(_Input):
    id: Id | None = None
    name: Name
    timezone: str = "America/New_York"
    credit_limit: Money | None = None  # None: not funds-checked
    enabled: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise invalid_value("timezone", f"unknown IANA time zone: {shown(value)}") from None
        return value

    def to_model(self, key: str) -> Buyer:
        return Buyer(id=key, name=self.name, timezone=self.timezone, credit_limit=self.credit_limit,
                     enabled=self.enabled)


class CapsIn(_Input):
    concurrency: Count | None = None
    hourly: Count | None = None
    daily: Count | None = None
    monthly: Count | None = None
    counts: CapCounts = CapCounts.CONNECTS


class HoursIn(_Input):
    """Local wall-clock times in the buyer's zone; ``end`` <= ``start`` wraps past midnight, equal means all day."""

    weekday: int = Field(ge=0, le=6)
    start: time
    end: time

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise invalid_value("local_time", f"a local time without an offset (the buyer's zone applies), got "
                                              f"{value.isoformat()!r}")
        return value


class CriterionIn(_Input):
    field: str
    op: CriterionOp
    values: list[Annotated[str, Field(max_length=255)]] = []
    negate: bool = False

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if not CRITERION_FIELD.match(value):
            raise invalid_value("criterion_field", f"expected state, zip, area_code or tag:<name>, got {shown(value)}")
        return value

    @model_validator(mode="after")
    def _compiles(self) -> CriterionIn:
        """Accept exactly what the routing snapshot accepts (it compiles criteria the same way)."""
        if self.op is not CriterionOp.EXISTS and not self.values:
            raise invalid_value("criterion_values", f"{self.op} needs at least one value, got {shown(self.values)}")
        try:
            compile_criterion(Criterion(field=self.field, op=self.op, values=tuple(self.values), negate=self.negate))
        except ValueError as exc:
            raise invalid_value("criterion", f"{exc}, got values {shown(self.values)}") from None
        return self


AuthText = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]


class TargetAuthIn(_Input):
    """Outbound digest credentials for the buyer's 401/407. ``password`` is write-only: stored sealed (encrypted),
    or as HA1s (MD5 and SHA-256) when ``realm`` is given; omitted on an update, the stored one is kept."""

    username: AuthText
    password: Annotated[AuthText | None, Field(json_schema_extra={"writeOnly": True})] = None
    realm: AuthText | None = None
    # what reads show; ignored on input (so a read can be PUT back)
    password_set: Annotated[bool | None, Field(json_schema_extra={"readOnly": True})] = None

    def to_model(self) -> TargetAuth:
        return TargetAuth(self.username, self.realm, password=self.password)


class TargetIn(_Input):
    id: Id | None = None
    buyer_id: Id
    name: Name
    destination: Destination
    revenue: Money = 0
    conversion_duration_s: Count = 60
    priority: Count = 1
    weight: Count = 1
    ring_timeout_s: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False)
    caps: CapsIn = CapsIn()
    hours: list[HoursIn] = []
    criteria: list[CriterionIn] = []
    skills: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    cost: Money = 0
    bid_url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2048)] | None = None
    enabled: bool = True
    auth: TargetAuthIn | None = None

    def to_model(self, key: str) -> Target:
        return Target(
            id=key,
            buyer_id=self.buyer_id,
            name=self.name,
            destination=self.destination,
            revenue=self.revenue,
            conversion_duration_s=self.conversion_duration_s,
            priority=self.priority,
            weight=self.weight,
            ring_timeout_s=float(self.ring_timeout_s),
            caps=Caps(**self.caps.model_dump()),
            hours=tuple(HoursWindow(weekday=h.weekday, start=h.start, end=h.end) for h in self.hours),
            criteria=tuple(
                Criterion(field=c.field, op=c.op, values=tuple(c.values), negate=c.negate) for c in self.criteria
            ),
            skills=tuple(self.skills),
            cost=self.cost,
            bid_url=self.bid_url,
            enabled=self.enabled,
            auth=self.auth.to_model() if self.auth is not None else None,
        )


class PayoutIn(_Input):
    publisher_id: Annotated[str, Field(pattern=PUBLISHER_OR_ANY)]
    fixed: Money | None = None
    revenue_share_bp: int | None = Field(default=None, ge=0, le=10_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> PayoutIn:
        if (self.fixed is None) == (self.revenue_share_bp is None):
            fixed = None if self.fixed is None else money_text(self.fixed)
            raise invalid_value("payout", f"give exactly one of fixed or revenue_share_bp, got fixed={fixed!r} and "
                                          f"revenue_share_bp={self.revenue_share_bp!r}")
        return self


class DuplicateRuleIn(_Input):
    after: DuplicateAfter = DuplicateAfter.CONNECTED
    days: int = Field(default=30, ge=1, le=3650)
    scope: DuplicateScope = DuplicateScope.CAMPAIGN


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise invalid_value("duplicate", f"{shown(value)} is listed twice (item {index})")
        seen.add(value)
    return values


class CampaignIn(_Input):
    id: Id | None = None
    name: Name
    vertical: Annotated[str, Field(max_length=255)] = ""
    publisher_ids: list[Id] = []
    target_ids: list[Id] = []
    strategy: RoutingStrategy = RoutingStrategy.PRIORITY_WEIGHTED
    payouts: list[PayoutIn] = []
    duplicate_rule: DuplicateRuleIn | None = None
    ping_timeout_ms: int = Field(default=2000, ge=50, le=60_000)
    reserve: Money = 0
    allow_caller_id: bool = False
    key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")] | None = None
    unmatched_caller: UnmatchedCaller = UnmatchedCaller.ROUTE
    live_auction: bool = False
    auction_window_ms: int = Field(default=1000, ge=50, le=10_000)
    stir_min_attestation: Literal["A", "B", "C"] | None = None
    stir_action: StirAction = StirAction.REJECT
    stir_unsigned: StirAction = StirAction.ALLOW
    conversion_from: Literal["answer", "dial", "incoming"] = "answer"
    max_call_duration_s: int | None = Field(
        default=None, ge=1, le=86_400,
        description="Answered calls are hung up (BYE to both legs) after this many seconds; "
                    "null: the exchange's routing.max_call_duration_s.")
    enabled: bool = True

    @field_validator("publisher_ids", "target_ids")
    @classmethod
    def _no_repeats(cls, values: list[str]) -> list[str]:
        return _unique(values)

    @field_validator("payouts")
    @classmethod
    def _one_rule_per_publisher(cls, payouts: list[PayoutIn]) -> list[PayoutIn]:
        _unique([p.publisher_id for p in payouts])
        return payouts

    def to_model(self, key: str) -> Campaign:
        rule = self.duplicate_rule
        return Campaign(
            id=key,
            name=self.name,
            vertical=self.vertical,
            publisher_ids=tuple(self.publisher_ids),
            target_ids=tuple(self.target_ids),
            strategy=self.strategy,
            payouts=tuple(
                (p.publisher_id, PayoutRule(fixed=p.fixed, revenue_share_bp=p.revenue_share_bp)) for p in self.payouts
            ),
            duplicate_rule=DuplicateRule(after=rule.after, days=rule.days, scope=rule.scope) if rule else None,
            ping_timeout_ms=self.ping_timeout_ms,
            reserve=self.reserve,
            allow_caller_id=self.allow_caller_id,
            key=self.key,
            unmatched_caller=self.unmatched_caller,
            live_auction=self.live_auction,
            auction_window_ms=self.auction_window_ms,
            stir_min_attestation=self.stir_min_attestation,
            stir_action=self.stir_action,
            stir_unsigned=self.stir_unsigned,
            conversion_from=self.conversion_from,
            max_call_duration_s=self.max_call_duration_s,
            enabled=self.enabled,
        )


class NumberIn(_Input):
    did: E164 | None = None
    campaign_id: Id
    publisher_id: Id

    def to_model(self, key: str) -> TrackingNumber:
        return TrackingNumber(did=key, campaign_id=self.campaign_id, publisher_id=self.publisher_id)


# ------------------------------------------------------------------------------------------------ JSON out


def publisher_json(p: Publisher) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "enabled": p.enabled}


def buyer_json(b: Buyer) -> dict[str, Any]:
    return {"id": b.id, "name": b.name, "timezone": b.timezone, "credit_limit": _optional_money(b.credit_limit),
            "enabled": b.enabled}


def target_json(t: Target) -> dict[str, Any]:
    return {
        "id": t.id,
        "buyer_id": t.buyer_id,
        "name": t.name,
        "destination": t.destination,
        "revenue": money_text(t.revenue),
        "conversion_duration_s": t.conversion_duration_s,
        "priority": t.priority,
        "weight": t.weight,
        "ring_timeout_s": t.ring_timeout_s,
        "caps": {
            "concurrency": t.caps.concurrency,
            "hourly": t.caps.hourly,
            "daily": t.caps.daily,
            "monthly": t.caps.monthly,
            "counts": str(t.caps.counts),
        },
        "hours": [{"weekday": h.weekday, "start": h.start.isoformat(), "end": h.end.isoformat()} for h in t.hours],
        "criteria": [
            {"field": c.field, "op": str(c.op), "values": list(c.values), "negate": c.negate} for c in t.criteria
        ],
        "skills": list(t.skills),
        "cost": money_text(t.cost),
        "bid_url": t.bid_url,
        "enabled": t.enabled,
        "auth": None if t.auth is None else {
            "username": t.auth.username, "realm": t.auth.realm,
            "password_set": t.auth.sealed_password is not None or bool(t.auth.ha1)},
    }


async def seal_target(request: web.Request, target: Target, existing: Target | None) -> Target:
    """The target as stored: a new password sealed with the exchange's key, or hashed to HA1s for its realm; no
    new password keeps the stored one when the username and realm are unchanged (422 otherwise)."""
    auth = target.auth
    if auth is None:
        return target
    if auth.password is None:
        kept = existing.auth if existing is not None else None
        if kept is None or (kept.username, kept.realm) != (auth.username, auth.realm):
            raise invalid_parameter("auth.password", "required with a new username or realm")
        return replace(target, auth=kept)
    if auth.realm is not None:
        hashes = tuple((algorithm, ha1(auth.username, auth.realm, auth.password, algorithm))
                       for algorithm in PREFERRED)
        return replace(target, auth=TargetAuth(auth.username, auth.realm, ha1=hashes))
    box = request.config_dict.get(TARGET_CREDENTIALS)
    if box is None:
        raise invalid_parameter("auth.password", "cannot be stored: no secrets.target_credentials_key (nor "
                                                 "auth.secret) is configured; give a realm to store it as HA1 instead")
    return replace(target, auth=TargetAuth(auth.username, None, sealed_password=box.seal(auth.password)))


def campaign_json(c: Campaign) -> dict[str, Any]:
    rule = c.duplicate_rule
    return {
        "id": c.id,
        "name": c.name,
        "vertical": c.vertical,
        "publisher_ids": list(c.publisher_ids),
        "target_ids": list(c.target_ids),
        "strategy": str(c.strategy),
        "payouts": [
            {"publisher_id": publisher_id, "fixed": _optional_money(p.fixed), "revenue_share_bp": p.revenue_share_bp}
            for publisher_id, p in c.payouts
        ],
        "duplicate_rule": (
            {"after": str(rule.after), "days": rule.days, "scope": str(rule.scope)} if rule is not None else None
        ),
        "ping_timeout_ms": c.ping_timeout_ms,
        "reserve": money_text(c.reserve),
        "allow_caller_id": c.allow_caller_id,
        "key": c.key,
        "unmatched_caller": str(c.unmatched_caller),
        "live_auction": c.live_auction,
        "auction_window_ms": c.auction_window_ms,
        "stir_min_attestation": c.stir_min_attestation,
        "stir_action": str(c.stir_action),
        "stir_unsigned": str(c.stir_unsigned),
        "conversion_from": c.conversion_from,
        "max_call_duration_s": c.max_call_duration_s,
        "enabled": c.enabled,
    }


def number_json(n: TrackingNumber) -> dict[str, Any]:
    return {"did": n.did, "campaign_id": n.campaign_id, "publisher_id": n.publisher_id}


# -------------------------------------------------------------------------------------------------- plumbing


def _did(raw: str) -> str:
    number = to_e164(raw)
    if number is None:
        raise invalid_parameter("did", f"not a phone number: {raw!r}")
    return number


def _resource(collection: str, schema: type[_Input], to_json: Callable[[Any], dict[str, Any]],
              *functions: Callable[..., Coroutine[Any, Any, Any]], key_field: str = "id", **options: Any) -> Resource:
    """A marketplace collection: ``functions`` are its repository's create, get, list, update and delete."""
    create, get, list_, update, delete = functions
    return Resource(
        collection, schema, to_json, create, get, list_, update, delete, READ, WRITE, Change.MARKETPLACE,
        Summaries(list=f"List {collection} (ordered by {key_field})", create=f"Create one of the {collection}",
                  get=f"One of the {collection} by {key_field}",
                  patch=f"Merge fields into one of the {collection} (objects merge one level deep)",
                  delete=f"Delete one of the {collection}",
                  put=f"Replace one of the {collection} (omitted fields take their defaults)"),
        key_field=key_field, decimals=True, cache=MARKETPLACE_CACHE, delete_problems=(404, 409), **options)


RESOURCES: tuple[Resource, ...] = (
    _resource("publishers", PublisherIn, publisher_json, repo.create_publisher, repo.get_publisher,
              repo.list_publishers, repo.update_publisher, repo.delete_publisher),
    _resource("buyers", BuyerIn, buyer_json, repo.create_buyer, repo.get_buyer, repo.list_buyers, repo.update_buyer,
              repo.delete_buyer),
    _resource("targets", TargetIn, target_json, repo.create_target, repo.get_target, repo.list_targets,
              repo.update_target, repo.delete_target, prepare=seal_target),
    _resource("campaigns", CampaignIn, campaign_json, repo.create_campaign, repo.get_campaign, repo.list_campaigns,
              repo.update_campaign, repo.delete_campaign),
    _resource("numbers", NumberIn, number_json, repo.create_tracking_number, repo.get_tracking_number,
              repo.list_tracking_numbers, repo.update_tracking_number, repo.delete_tracking_number,
              key_field="did", generated_keys=False, path_key=_did),
)


def marketplace_routes() -> list[web.RouteDef]:
    """Every marketplace route, relative to ``/api/v1``."""
    return [route for resource in RESOURCES for route in resource.routes()]
