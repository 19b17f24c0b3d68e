"""Rate limits of the side API: a token bucket per (caller, endpoint class).

The caller is the authenticated principal (:func:`dce.http_api.auth.principal`: a user, an API key) when there
is one, else the client address. The endpoint class comes from the matched route's path template
(:func:`endpoint_class`), with the seed's defaults (:data:`DEFAULT_RULES`)::

    bids      1000/s burst 2000   /api/v1/bids*, /api/v1/rtb/* (publishers' RTB pings), /ws/v1/bidding
    calls      500/s burst 1000   /api/v1/calls*
    webhooks   100/s burst  200   /webhook*, /api/v1/conversions (buyers' conversion callbacks)
    auth        10/s burst   20   /api/v1/auth/login, /api/v1/auth/refresh (password guessing)
    default    200/s burst  400   everything else

Over the limit: 429 problem+json with ``Retry-After`` (whole seconds, at least 1). Put the middleware after the auth
middleware (so it keys on the principal) and before ``problem_middleware``::

    rate_limit_middleware(InProcessRateLimiter())

:class:`RateLimiter` is the interface: :class:`InProcessRateLimiter` keeps buckets in this process (LRU-bounded,
idle buckets evicted, injectable clock); :class:`dce.http_api.redis_rate_limit.RedisRateLimiter` (one Lua script
per hit: refill, take, store with a TTL of the bucket's refill time) shares them across nodes.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dce.http_api.permissions import principal
from dce.http_api.problems import problem


@dataclass(frozen=True, slots=True)
class Rule:
    """``rate`` tokens per second refill a bucket holding at most ``burst``."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError(f"rate must be > 0 and burst >= 1, not {self.rate}/{self.burst}")

    @property
    def refill_s(self) -> float:
        """Seconds an empty bucket takes to fill: an idle bucket older than this is a fresh one."""
        return self.burst / self.rate


DEFAULT_RULES: Mapping[str, Rule] = {
    "bids": Rule(1000, 2000),
    "calls": Rule(500, 1000),
    "webhooks": Rule(100, 200),
    "auth": Rule(10, 20),
    "default": Rule(200, 400),
}


UNLIMITED_PATHS: frozenset[str] = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
"""Probes and scrapes: load balancers and Prometheus call these from one address; a 429 there would take a healthy
node out of service."""


def endpoint_class(path: str) -> str:
    """The rule name for a route's path template (or a raw path)."""
    if path.startswith(("/api/v1/bids", "/api/v1/rtb/", "/ws/v1/bidding")):
        return "bids"
    if path.startswith("/api/v1/calls"):
        return "calls"
    if path.startswith(("/webhook", "/api/v1/webhook", "/api/v1/conversions")):
        return "webhooks"
    if path in ("/api/v1/auth/login", "/api/v1/auth/refresh"):
        return "auth"
    return "default"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0  # when refused: seconds until the request would be allowed
    remaining: float = 0.0  # tokens left after this hit


class RateLimiter(Protocol):
    async def hit(self, key: str, rule: Rule, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` (created full under ``rule``), or say how long to wait."""
        ...


class InProcessRateLimiter:
    """Token buckets in a dict, oldest-used first; at most ``max_buckets`` are kept (the least recently used go
    first), and buckets idle long enough to be full again are dropped as they age out (they would be created full).
    ``clock`` is monotonic seconds."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be >= 1")
        self._clock = clock
        self._max = max_buckets
        # key -> [tokens, last refill time, refill_s of its rule]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, rule: Rule, cost: float = 1.0) -> Decision:
        """The synchronous core of :meth:`hit`."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = rule.burst
        else:
            tokens = min(rule.burst, bucket[0] + max(0.0, now - bucket[1]) * rule.rate)
            self._buckets.move_to_end(key)
        if tokens >= cost:
            tokens -= cost
            decision = Decision(True, 0.0, tokens)
        else:
            decision = Decision(False, (cost - tokens) / rule.rate, tokens)
        if bucket is None:
            self._buckets[key] = [tokens, now, rule.refill_s]
            self._evict(now)
        else:
            bucket[0], bucket[1], bucket[2] = tokens, now, rule.refill_s
        return decision

    async def hit(self, key: str, rule: Rule, cost: float = 1.0) -> Decision:
        return self.take(key, rule, cost)

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while len(buckets) > self._max:
            buckets.popitem(last=False)
        # the least recently used few, while they are full again (a couple per new bucket keeps this O(1))
        for _ in range(2):
            if not buckets:
                return
            key, (_tokens, last, refill_s) = next(iter(buckets.items()))
            if now - last < refill_s:
                return
            del buckets[key]


def client_key(request: web.Request) -> str:
    """Who the bucket belongs to: the principal's subject when authenticated, else the peer address."""
    who = principal(request)
    if who is not None:
        return f"p:{who.subject}"
    return f"ip:{request.remote or 'unknown'}"


def rate_limit_middleware(
    limiter: RateLimiter,
    rules: Mapping[str, Rule] = DEFAULT_RULES,
    *,
    classify: Callable[[str], str] = endpoint_class,
    key: Callable[[web.Request], str] = client_key,
) -> Middleware:
    """429 problem+json with ``Retry-After`` once a caller's bucket for the route's class is empty."""
    default = rules["default"]

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        resource = route.resource if request.match_info.http_exception is None else None
        path = resource.canonical if resource is not None else request.path
        if path in UNLIMITED_PATHS:
            return await handler(request)
        name = classify(path)
        decision = await limiter.hit(f"{key(request)}|{name}", rules.get(name, default))
        if not decision.allowed:
            retry = max(1, math.ceil(decision.retry_after_s))
            response = problem(429, f"rate limit of {name!r} exceeded; retry in {retry} s")
            response.headers["Retry-After"] = str(retry)
            return response
        return await handler(request)

    return rate_limit
