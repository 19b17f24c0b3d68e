"""Postbacks: tell campaigns, publishers and buyers about their calls over HTTP. Pure: no I/O, no clock.

A :class:`PostbackConfig` subscribes one owner (a campaign, publisher or buyer) to some call events; a
:class:`PostbackEvent` is one thing that happened to one call. :func:`matching` picks the configs an event concerns,
:func:`render` turns a config and an event into the HTTP :class:`Request` to send, :func:`sign` (at send time) adds
the signature, :func:`verify` checks one (what a receiver does), and :func:`next_attempt_at` schedules a retry.

Templates use ``[token]`` placeholders (see :data:`TOKENS`): URL-encoded in the URL and in a form body,
JSON-escaped in a JSON body; an unknown ``[word]`` is left as it is. A POST without a body template sends a JSON
object of every token (a missing value is ``null``). A body template starting with ``{`` or ``[`` is JSON
(``Content-Type: application/json``), anything else a form (``application/x-www-form-urlencoded``).

Signature: ``X-DCE-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{payload}")>`` where the payload
is the body (POST) or the full URL (GET). ``X-DCE-Event`` names the event.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol
from urllib.parse import quote

from dce.billing.cdr import CallDetailRecord

SIGNATURE_HEADER = "X-DCE-Signature"
EVENT_HEADER = "X-DCE-Event"
DELIVERY_HEADER = "X-DCE-Delivery"  # the delivery id, the same on every retry (receivers can deduplicate)
USER_AGENT = "dce-postback/1"

DEFAULT_MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 3600.0
JITTER = 0.2  # each delay is the nominal one times a random factor in [1 - JITTER, 1 + JITTER]

TOKENS: tuple[str, ...] = (
    "event", "call_id", "timestamp", "caller", "did", "campaign_id", "publisher_id", "buyer_id", "target_id",
    "revenue", "payout", "duration", "disposition", "reason",
)  # fmt: skip
_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")


class OwnerKind(enum.StrEnum):
    """Whose postback it is: its events are the calls of that campaign, publisher or buyer."""

    CAMPAIGN = "campaign"
    PUBLISHER = "publisher"
    BUYER = "buyer"


class EventName(enum.StrEnum):
    """The call events a postback can subscribe to."""

    INCOMING = "incoming"  # the call arrived and passed screening (campaign and publisher known)
    CONNECTED = "connected"  # a buyer's target answered
    CONVERTED = "converted"  # the call converted (duration reached, or the buyer's conversion webhook)
    COMPLETED = "completed"  # the call ended (any disposition)
    BLOCKED = "blocked"  # the compliance/fraud gate refused the call


class Method(enum.StrEnum):
    GET = "GET"
    POST = "POST"


def money(micros: int) -> str:
    """Micros as a decimal string of currency units, no float: 12_500_000 -> "12.50", 1 -> "0.000001".

    The same rule as :func:`dce.routing.model.format_money` (billing imports nothing outside billing)."""
    units = Decimal(micros).scaleb(-6)
    cents = units.quantize(Decimal("0.01"))
    return str(cents) if cents == units else f"{units.normalize():f}"


@dataclass(frozen=True, slots=True)
class PostbackConfig:
    """One owner's subscription: which events, where to send them, how, and the signing secret."""

    id: str
    owner_kind: OwnerKind
    owner_id: str
    events: frozenset[EventName]
    url: str  # template
    method: Method = Method.GET
    body: str | None = None  # POST body template; None: a JSON object of every token
    secret: str | None = None  # HMAC key; None: requests are not signed
    enabled: bool = True
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        object.__setattr__(self, "owner_kind", OwnerKind(self.owner_kind))
        object.__setattr__(self, "method", Method(str(self.method).upper()))
        object.__setattr__(self, "events", frozenset(EventName(e) for e in self.events))
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"postback url must be http:// or https://, not {self.url!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.body is not None and self.method is Method.GET:
            raise ValueError("a GET postback has no body template")


@dataclass(frozen=True, slots=True)
class PostbackEvent:
    """Something that happened to one call. Money in integer micros (tokens render it as decimal strings)."""

    name: EventName
    call_id: str
    at: datetime  # timezone-aware
    caller: str | None = None
    did: str | None = None
    campaign_id: str | None = None
    publisher_id: str | None = None
    buyer_id: str | None = None
    target_id: str | None = None
    revenue: int | None = None  # micros
    payout: int | None = None  # micros
    duration: int | None = None  # billable seconds (answer to end), when known
    disposition: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", EventName(self.name))
        if self.at.tzinfo is None:
            raise ValueError("PostbackEvent.at must be timezone-aware")

    @classmethod
    def from_cdr(cls, name: EventName | str, cdr: CallDetailRecord, *, at: datetime | None = None,
                 revenue: int | None = None, payout: int | None = None) -> PostbackEvent:
        """An event of a finished (or blocked) call; ``revenue`` defaults to the sale terms' revenue of an answered
        call, ``at`` to the end of the call."""
        terms = cdr.terms
        if revenue is None and terms is not None and cdr.answer_at is not None:
            revenue = terms.revenue
        return cls(
            name=EventName(name), call_id=cdr.call_id, at=at or cdr.end_at, caller=cdr.caller, did=cdr.did,
            campaign_id=terms.campaign_id if terms else None, publisher_id=terms.publisher_id if terms else None,
            buyer_id=terms.buyer_id if terms else None, target_id=terms.target_id if terms else None,
            revenue=revenue, payout=payout, duration=cdr.billable_s, disposition=str(cdr.disposition),
            reason=cdr.reason,
        )

    def tokens(self) -> dict[str, str | None]:
        """Every token's value as text (None when unknown), in :data:`TOKENS` order."""
        return {
            "event": str(self.name),
            "call_id": self.call_id,
            "timestamp": str(int(self.at.timestamp())),
            "caller": self.caller,
            "did": self.did,
            "campaign_id": self.campaign_id,
            "publisher_id": self.publisher_id,
            "buyer_id": self.buyer_id,
            "target_id": self.target_id,
            "revenue": None if self.revenue is None else money(self.revenue),
            "payout": None if self.payout is None else money(self.payout),
            "duration": None if self.duration is None else str(self.duration),
            "disposition": self.disposition,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request to make. ``headers`` is a plain dict; treat it as read-only."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None

    @property
    def payload(self) -> str:
        """What the signature covers: the body of a POST, the URL of a GET."""
        return self.url if self.body is None else self.body


# ------------------------------------------------------------------------------------------------- matching


def _owned(config: PostbackConfig, event: PostbackEvent) -> bool:
    kind = config.owner_kind
    owner = (
        event.campaign_id if kind is OwnerKind.CAMPAIGN
        else event.publisher_id if kind is OwnerKind.PUBLISHER
        else event.buyer_id
    )  # fmt: skip
    return owner is not None and owner == config.owner_id


def matching(configs: Iterable[PostbackConfig], event: PostbackEvent) -> list[PostbackConfig]:
    """The enabled configs of the event's campaign, publisher and buyer that subscribe to its event."""
    return [c for c in configs if c.enabled and event.name in c.events and _owned(c, event)]


class PostbackBook:
    """Configs indexed by owner, for matching many events against many configs (the dispatcher's copy)."""

    __slots__ = ("_by_owner", "configs")

    def __init__(self, configs: Iterable[PostbackConfig] = ()) -> None:
        self.configs: tuple[PostbackConfig, ...] = tuple(configs)
        by_owner: dict[tuple[OwnerKind, str], list[PostbackConfig]] = {}
        for config in self.configs:
            if config.enabled:
                by_owner.setdefault((config.owner_kind, config.owner_id), []).append(config)
        self._by_owner = {key: tuple(value) for key, value in by_owner.items()}

    def __len__(self) -> int:
        return len(self.configs)

    def get(self, config_id: str) -> PostbackConfig | None:
        return next((c for c in self.configs if c.id == config_id), None)

    def matching(self, event: PostbackEvent) -> list[PostbackConfig]:
        """As :func:`matching`, in owner order campaign, publisher, buyer."""
        if not self._by_owner:
            return []
        found: list[PostbackConfig] = []
        for kind, owner in (
            (OwnerKind.CAMPAIGN, event.campaign_id),
            (OwnerKind.PUBLISHER, event.publisher_id),
            (OwnerKind.BUYER, event.buyer_id),
        ):
            if owner is not None:
                found.extend(c for c in self._by_owner.get((kind, owner), ()) if event.name in c.events)
        return found


# -------------------------------------------------------------------------------------------------- render


def substitute(template: str, values: Mapping[str, str | None], *, encode: str = "raw") -> str:
    """Replace each known ``[token]`` with its value (None -> ""), encoded as ``encode``: ``url``
    (percent-encoded, nothing safe), ``json`` (escaped for inside a JSON string) or ``raw``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name] or ""
        if encode == "url":
            return quote(value, safe="")
        if encode == "json":
            return json.dumps(value)[1:-1]
        return value

    return _PLACEHOLDER.sub(one, template)


def is_json_template(body: str) -> bool:
    return body.lstrip().startswith(("{", "["))


def render(config: PostbackConfig, event: PostbackEvent, *, timestamp: int | None = None,
           signed: bool = True) -> Request:
    """The request ``config`` makes for ``event``. Signed (when the config has a secret and ``signed``) with
    ``timestamp`` (unix seconds; default the event's time) — a dispatcher renders unsigned and :func:`sign`\\ s
    each attempt with the time it is sent."""
    values = event.tokens()
    url = substitute(config.url, values, encode="url")
    headers = {EVENT_HEADER: str(event.name), "User-Agent": USER_AGENT}
    body: str | None = None
    if config.method is Method.POST:
        if config.body is None:
            body = json.dumps(values, separators=(",", ":"))
            headers["Content-Type"] = "application/json"
        elif is_json_template(config.body):
            body = substitute(config.body, values, encode="json")
            headers["Content-Type"] = "application/json"
        else:
            body = substitute(config.body, values, encode="url")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = Request(str(config.method), url, headers, body)
    if signed and config.secret:
        request = sign(request, config.secret, int(event.at.timestamp()) if timestamp is None else timestamp)
    return request


# ------------------------------------------------------------------------------------------------ signature


def signature(secret: str, timestamp: int, payload: str) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{payload}"`` keyed by ``secret``."""
    return hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()


def sign(request: Request, secret: str, timestamp: int) -> Request:
    """``request`` with its ``X-DCE-Signature`` header for ``timestamp`` (unix seconds)."""
    value = f"t={timestamp},v1={signature(secret, timestamp, request.payload)}"
    return replace(request, headers={**request.headers, SIGNATURE_HEADER: value})


def verify(secret: str, header: str, payload: str, *, now: float | None = None, tolerance_s: float = 300.0) -> bool:
    """Does ``header`` (an ``X-DCE-Signature`` value) sign ``payload`` (the body, or the URL of a GET) with
    ``secret``? With ``now`` (unix seconds), also refuse a timestamp more than ``tolerance_s`` away."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if now is not None and abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, payload)
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", ()))


# -------------------------------------------------------------------------------------------------- backoff


class Random(Protocol):
    def random(self) -> float: ...


def backoff_delay(attempts: int, rng: Random, *, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S,
                  jitter: float = JITTER) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``base_s * 2**(attempts-1)`` (1, 2, 4 ... s)
    times a random factor in [1-jitter, 1+jitter], never more than ``cap_s``."""
    nominal = base_s * 2.0 ** min(max(attempts, 1) - 1, 64)
    return min(cap_s, nominal * (1.0 + jitter * (2.0 * rng.random() - 1.0)))


def next_attempt_at(attempts: int, now: datetime, rng: Random, *, base_s: float = BACKOFF_BASE_S,
                    cap_s: float = BACKOFF_CAP_S, jitter: float = JITTER) -> datetime:
    """When to try again after ``attempts`` failed attempts (see :func:`backoff_delay`)."""
    return now + timedelta(seconds=backoff_delay(attempts, rng, base_s=base_s, cap_s=cap_s, jitter=jitter))
