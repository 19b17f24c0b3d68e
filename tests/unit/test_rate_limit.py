"""Token buckets on a virtual clock, bounded memory, endpoint classes and the 429 middleware."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dce.http_api.problems import problem_middleware
from dce.http_api.rate_limit import (
    DEFAULT_RULES,
    InProcessRateLimiter,
    Rule,
    endpoint_class,
    rate_limit_middleware,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seed_defaults() -> None:
    assert DEFAULT_RULES["bids"] == Rule(1000, 2000)
    assert DEFAULT_RULES["calls"] == Rule(500, 1000)
    assert DEFAULT_RULES["webhooks"] == Rule(100, 200)
    assert DEFAULT_RULES["default"] == Rule(200, 400)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/bids", "bids"),
        ("/api/v1/rtb/{key}/ping", "bids"),
        ("/ws/v1/bidding", "bids"),
        ("/api/v1/calls", "calls"),
        ("/webhook/ringba", "webhooks"),
        ("/api/v1/conversions", "webhooks"),
        ("/api/v1/auth/login", "auth"),
        ("/api/v1/campaigns", "default"),
        ("/health", "default"),
    ],
)
def test_endpoint_classes(path: str, name: str) -> None:
    assert endpoint_class(path) == name


def test_burst_then_rate() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rule = Rule(rate=10, burst=20)
    assert all(limiter.take("k", rule).allowed for _ in range(20))
    refused = limiter.take("k", rule)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.take("k", rule).allowed
    assert not limiter.take("k", rule).allowed
    clock.now += 1.0  # 10 tokens back
    assert sum(limiter.take("k", rule).allowed for _ in range(15)) == 10
    clock.now += 100  # never more than the burst
    assert sum(limiter.take("k", rule).allowed for _ in range(30)) == 20


def test_sustained_rate_over_virtual_time() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rule = Rule(rate=500, burst=1000)
    allowed = 0
    for _ in range(10_000):  # 2000 requests/s offered for 5 s
        clock.now += 0.0005
        allowed += limiter.take("k", rule).allowed
    assert allowed == pytest.approx(1000 + 500 * 5, abs=2)


def test_keys_are_independent() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rule = Rule(rate=1, burst=1)
    assert limiter.take("a", rule).allowed
    assert not limiter.take("a", rule).allowed
    assert limiter.take("b", rule).allowed


def test_memory_is_bounded_and_idle_buckets_go() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock, max_buckets=100)
    rule = Rule(rate=10, burst=20)
    for i in range(1000):
        limiter.take(f"ip{i}", rule)
    assert len(limiter) == 100
    clock.now += rule.refill_s + 1  # all full again: they go as new buckets come
    for i in range(60):
        limiter.take(f"new{i}", rule)
    assert len(limiter) == 60
    # a busy key is not evicted by LRU while others come and go
    limiter.take("busy", rule)
    for i in range(500):
        limiter.take(f"x{i}", rule)
        limiter.take("busy", rule)
        clock.now += 0.001
    assert len(limiter) <= 100


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        Rule(0, 10)
    with pytest.raises(ValueError):
        Rule(1, 0)


async def test_middleware_answers_429_with_retry_after() -> None:
    clock = Clock()

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    rules = {**DEFAULT_RULES, "calls": Rule(1, 2), "default": Rule(1, 1)}
    app = web.Application(middlewares=[rate_limit_middleware(InProcessRateLimiter(clock=clock), rules),
                                       problem_middleware])  # fmt: skip
    app.router.add_get("/api/v1/calls", ok)
    app.router.add_get("/other", ok)
    app.router.add_get("/health/live", ok)
    async with TestClient(TestServer(app)) as client:
        client: TestClient[Any, Any]
        assert (await client.get("/api/v1/calls")).status == 200
        assert (await client.get("/api/v1/calls")).status == 200
        response = await client.get("/api/v1/calls")
        assert response.status == 429
        assert response.content_type == "application/problem+json"
        assert response.headers["Retry-After"] == "1"
        body = await response.json(content_type=None)
        assert body["status"] == 429 and "calls" in body["detail"]
        assert (await client.get("/other")).status == 200  # another class, another bucket
        assert (await client.get("/other")).status == 429
        clock.now += 1
        assert (await client.get("/api/v1/calls")).status == 200
        assert (await client.get("/nowhere")).status == 404  # unmatched paths count under "default"
        for _ in range(5):  # probes are never limited (the "default" bucket is empty now)
            assert (await client.get("/health/live")).status == 200
