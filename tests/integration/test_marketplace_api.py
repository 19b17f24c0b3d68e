"""Marketplace CRUD over HTTP, load_marketplace and the watcher (SQLite, or PostgreSQL with DCE_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import time as clock
from collections.abc import AsyncIterator
from datetime import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db import marketplace_repository as repo
from dce.db.engine import create_engine
from dce.db.marketplace_repository import MarketplaceData, load_marketplace
from dce.db.marketplace_watcher import MarketplaceWatcher
from dce.http_api.app import build_app
from dce.http_api.changes import Changes
from dce.http_api.marketplace import WRITE, money_text
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.permissions import required_permission
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
    PayoutRule,
    Publisher,
    RoutingStrategy,
    Target,
    TrackingNumber,
)
from dce.routing.snapshot import MarketplaceSnapshot

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
Client = TestClient[Any, Any]


@pytest.fixture
def changes() -> list[int]:
    return []


@pytest.fixture
async def client(engine: AsyncEngine, changes: list[int]) -> AsyncIterator[Client]:
    async def on_change() -> None:
        changes.append(1)

    app = build_app(engine=engine, metrics=ExchangeMetrics(), changes=Changes(marketplace=on_change))
    async with TestClient(TestServer(app)) as client:
        yield client


async def ok(response: aiohttp.ClientResponse, status: int = 200) -> Any:
    body = await response.text()
    assert response.status == status, body
    return await response.json() if body else None


async def problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM
    body = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    return body


def invalid_names(body: dict[str, Any]) -> list[str]:
    return [param["name"] for param in body["invalid_params"]]


TARGET = {
    "id": "t1",
    "buyer_id": "b1",
    "name": "Acme line",
    "destination": "(212) 555-0199",
    "revenue": "12.50",
    "conversion_duration_s": 90,
    "priority": 2,
    "weight": 3,
    "ring_timeout_s": 20,
    "caps": {"concurrency": 2, "daily": 10, "counts": "conversions"},
    "hours": [{"weekday": 0, "start": "09:00", "end": "17:30"}],
    "criteria": [
        {"field": "state", "op": "in", "values": ["CA", "NY"]},
        {"field": "tag:source", "op": "regex", "values": ["^g"], "negate": True},
    ],
    "skills": ["spanish"],
    "cost": "0.75",
    "bid_url": "http://127.0.0.1:9/bid",
}

CAMPAIGN = {
    "id": "c1",
    "name": "Auto insurance",
    "vertical": "insurance",
    "publisher_ids": ["p1"],
    "target_ids": ["t1"],
    "strategy": "round_robin",
    "payouts": [{"publisher_id": "p1", "fixed": "4.00"}, {"publisher_id": "*", "revenue_share_bp": 5000}],
    "duplicate_rule": {"after": "converted", "days": 7, "scope": "target"},
    "ping_timeout_ms": 500,
    "reserve": "1.25",
    "allow_caller_id": True,
    "key": "auto-1",
}


async def seed(client: Client) -> None:
    await ok(await client.post("/api/v1/publishers", json={"id": "p1", "name": "Pub One"}), 201)
    await ok(
        await client.post("/api/v1/buyers", json={"id": "b1", "name": "Buyer", "timezone": "America/Chicago"}), 201
    )
    await ok(await client.post("/api/v1/targets", json=TARGET), 201)
    await ok(await client.post("/api/v1/campaigns", json=CAMPAIGN), 201)
    await ok(
        await client.post("/api/v1/numbers", json={"did": "212-555-0100", "campaign_id": "c1", "publisher_id": "p1"}),
        201,
    )


EXPECTED_TARGET = Target(
    id="t1",
    buyer_id="b1",
    name="Acme line",
    destination="+12125550199",
    revenue=12_500_000,
    conversion_duration_s=90,
    priority=2,
    weight=3,
    ring_timeout_s=20.0,
    caps=Caps(concurrency=2, daily=10, counts=CapCounts.CONVERSIONS),
    hours=(HoursWindow(0, time(9), time(17, 30)),),
    criteria=(
        Criterion("state", CriterionOp.IN, ("CA", "NY")),
        Criterion("tag:source", CriterionOp.REGEX, ("^g",), negate=True),
    ),
    skills=("spanish",),
    cost=750_000,
    bid_url="http://127.0.0.1:9/bid",
)

EXPECTED_CAMPAIGN = Campaign(
    id="c1",
    name="Auto insurance",
    vertical="insurance",
    publisher_ids=("p1",),
    target_ids=("t1",),
    strategy=RoutingStrategy.ROUND_ROBIN,
    payouts=(("p1", PayoutRule(fixed=4_000_000)), ("*", PayoutRule(revenue_share_bp=5000))),
    duplicate_rule=DuplicateRule(DuplicateAfter.CONVERTED, 7, DuplicateScope.TARGET),
    ping_timeout_ms=500,
    reserve=1_250_000,
    allow_caller_id=True,
    key="auto-1",
)


async def test_load_marketplace_returns_model_objects(client: Client, engine: AsyncEngine, changes: list[int]) -> None:
    await seed(client)
    assert len(changes) == 5
    data = await load_marketplace(engine)
    assert data.publishers == (Publisher("p1", "Pub One"),)
    assert data.buyers == (Buyer("b1", "Buyer", "America/Chicago"),)
    assert data.targets == (EXPECTED_TARGET,)
    assert data.campaigns == (EXPECTED_CAMPAIGN,)
    assert data.tracking_numbers == (TrackingNumber("+12125550100", "c1", "p1"),)
    assert data.version == 5
    # exactly what the routing snapshot is built from
    snapshot = MarketplaceSnapshot.build(
        data.publishers, data.buyers, data.campaigns, data.targets, data.tracking_numbers
    )
    assert snapshot.numbers["+12125550100"].campaign_id == "c1"
    assert snapshot.by_key["auto-1"].campaign == EXPECTED_CAMPAIGN


async def test_target_round_trip(client: Client, changes: list[int]) -> None:
    await seed(client)
    body = await ok(await client.get("/api/v1/targets/t1"))
    assert body["revenue"] == "12.50"
    assert body["cost"] == "0.75"
    assert body["destination"] == "+12125550199"
    assert body["caps"] == {"concurrency": 2, "hourly": None, "daily": 10, "monthly": None, "counts": "conversions"}
    assert body["hours"] == [{"weekday": 0, "start": "09:00:00", "end": "17:30:00"}]
    # PATCH merges (caps one level deep); PUT replaces
    patched = await ok(await client.patch("/api/v1/targets/t1", json={"revenue": "20", "caps": {"hourly": 3}}))
    assert patched["revenue"] == "20.00"
    assert patched["caps"]["hourly"] == 3 and patched["caps"]["daily"] == 10
    put = await ok(
        await client.put(
            "/api/v1/targets/t1",
            json={"buyer_id": "b1", "name": "Renamed", "destination": "sip:acme@10.0.0.1", "revenue": "0.000001"},
        )
    )
    assert put["name"] == "Renamed" and put["revenue"] == "0.000001" and put["caps"]["daily"] is None
    listing = await ok(await client.get("/api/v1/targets?limit=1&offset=0"))
    assert listing["total"] == 1 and listing["items"][0]["name"] == "Renamed"
    before = len(changes)
    # in use by c1: remove it from the campaign first
    await problem(await client.delete("/api/v1/targets/t1"), 409)
    await ok(await client.patch("/api/v1/campaigns/c1", json={"target_ids": []}))
    await ok(await client.delete("/api/v1/targets/t1"), 204)
    assert len(changes) == before + 2
    await problem(await client.get("/api/v1/targets/t1"), 404)


async def test_publisher_and_buyer_crud(client: Client, changes: list[int]) -> None:
    created = await ok(await client.post("/api/v1/publishers", json={"name": "Generated"}), 201)
    assert created["id"] and created["enabled"] is True
    pid = created["id"]
    assert (await ok(await client.get(f"/api/v1/publishers/{pid}")))["name"] == "Generated"
    assert (await ok(await client.patch(f"/api/v1/publishers/{pid}", json={"enabled": False})))["enabled"] is False
    assert (await ok(await client.put(f"/api/v1/publishers/{pid}", json={"name": "New"})))["enabled"] is True
    await ok(await client.delete(f"/api/v1/publishers/{pid}"), 204)
    await problem(await client.get(f"/api/v1/publishers/{pid}"), 404)
    await problem(await client.delete(f"/api/v1/publishers/{pid}"), 404)
    await problem(await client.put("/api/v1/publishers/nope", json={"name": "x"}), 404)

    await ok(await client.post("/api/v1/buyers", json={"id": "b9", "name": "B"}), 201)
    await problem(await client.post("/api/v1/buyers", json={"id": "b9", "name": "B"}), 409)
    body = await problem(await client.patch("/api/v1/buyers/b9", json={"timezone": "Mars/Base"}), 422)
    assert invalid_names(body) == ["timezone"]
    assert (await ok(await client.patch("/api/v1/buyers/b9", json={"timezone": "Europe/Paris"})))["timezone"] == (
        "Europe/Paris"
    )
    listing = await ok(await client.get("/api/v1/buyers"))
    assert [b["id"] for b in listing["items"]] == ["b9"]
    await ok(await client.delete("/api/v1/buyers/b9"), 204)
    assert len(changes) == 7


async def test_campaign_and_number_crud(client: Client) -> None:
    await seed(client)
    body = await ok(await client.get("/api/v1/campaigns/c1"))
    assert body["payouts"] == [
        {"publisher_id": "p1", "fixed": "4.00", "revenue_share_bp": None},
        {"publisher_id": "*", "fixed": None, "revenue_share_bp": 5000},
    ]
    assert body["reserve"] == "1.25" and body["strategy"] == "round_robin"
    assert body["max_call_duration_s"] is None  # the exchange's routing.max_call_duration_s
    limited = await ok(await client.patch("/api/v1/campaigns/c1", json={"max_call_duration_s": 600}))
    assert limited["max_call_duration_s"] == 600
    body = await ok(await client.patch("/api/v1/campaigns/c1", json={"max_call_duration_s": None}))
    listing = await ok(await client.get("/api/v1/campaigns"))
    assert listing["total"] == 1 and listing["items"][0] == body

    # a target may serve several campaigns
    second = {**CAMPAIGN, "id": "c2", "key": None, "payouts": []}
    await ok(await client.post("/api/v1/campaigns", json=second), 201)
    await problem(await client.post("/api/v1/campaigns", json={**CAMPAIGN, "id": "c3"}), 409)  # key taken

    number = await ok(await client.get("/api/v1/numbers/%2B12125550100"))
    assert number == {"did": "+12125550100", "campaign_id": "c1", "publisher_id": "p1"}
    assert (await ok(await client.get("/api/v1/numbers/2125550100")))["did"] == "+12125550100"
    moved = await ok(await client.patch("/api/v1/numbers/%2B12125550100", json={"campaign_id": "c2"}))
    assert moved["campaign_id"] == "c2"
    dup = {"did": "+1 212 555 0100", "campaign_id": "c1", "publisher_id": "p1"}
    await problem(await client.post("/api/v1/numbers", json=dup), 409)
    await problem(await client.delete("/api/v1/campaigns/c2"), 409)  # a number points at it
    await problem(await client.delete("/api/v1/publishers/p1"), 409)
    await ok(await client.delete("/api/v1/numbers/%2B12125550100"), 204)
    await ok(await client.delete("/api/v1/campaigns/c2"), 204)
    await problem(await client.get("/api/v1/numbers/%2B12125550100"), 404)
    assert (await ok(await client.get("/api/v1/numbers")))["total"] == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/targets", {**TARGET, "revenue": "12.5x"}, "revenue"),
        ("/api/v1/targets", {**TARGET, "revenue": "NaN"}, "revenue"),
        ("/api/v1/targets", {**TARGET, "revenue": "-1"}, "revenue"),
        ("/api/v1/targets", {**TARGET, "cost": "0.0000001"}, "cost"),
        ("/api/v1/targets", {**TARGET, "revenue": True}, "revenue"),
        ("/api/v1/targets", {**TARGET, "destination": "not a number"}, "destination"),
        ("/api/v1/targets", {**TARGET, "buyer_id": "nobody"}, "buyer_id"),
        ("/api/v1/targets", {**TARGET, "caps": {"daily": -1}}, "caps.daily"),
        (
            "/api/v1/targets",
            {**TARGET, "hours": [{"weekday": 7, "start": "09:00", "end": "10:00"}]},
            "hours[0].weekday",
        ),
        (
            "/api/v1/targets",
            {**TARGET, "criteria": [{"field": "state", "op": "regex", "values": ["("]}]},
            "criteria[0]",
        ),
        ("/api/v1/targets", {**TARGET, "criteria": [{"field": "colour", "op": "exists"}]}, "criteria[0].field"),
        ("/api/v1/targets", {k: v for k, v in TARGET.items() if k != "name"}, "name"),
        ("/api/v1/targets", {**TARGET, "surprise": 1}, "surprise"),
        (
            "/api/v1/targets",
            {**TARGET, "criteria": [{"field": "zip", "op": "regex", "values": ["(?i)abc"]}]},  # routing refuses it
            "criteria[0]",
        ),
        (
            "/api/v1/targets",
            {**TARGET, "hours": [{"weekday": 1, "start": "09:00+02:00", "end": "10:00"}]},
            "hours[0].start",
        ),
        ("/api/v1/campaigns", {**CAMPAIGN, "strategy": "lottery"}, "strategy"),
        ("/api/v1/campaigns", {**CAMPAIGN, "name": ""}, "name"),
        ("/api/v1/campaigns", {**CAMPAIGN, "payouts": [{"publisher_id": "p1", "fixed": "NaN"}]}, "payouts[0].fixed"),
        ("/api/v1/campaigns", {**CAMPAIGN, "payouts": [{"publisher_id": "p1"}]}, "payouts[0]"),
        ("/api/v1/campaigns", {**CAMPAIGN, "payouts": [{"publisher_id": "p2", "fixed": "1"}]},
         "payouts[0].publisher_id"),
        ("/api/v1/campaigns", {**CAMPAIGN, "target_ids": ["t1", "t404"]}, "target_ids[1]"),
        ("/api/v1/campaigns", {**CAMPAIGN, "ping_timeout_ms": 10}, "ping_timeout_ms"),
        ("/api/v1/campaigns", {**CAMPAIGN, "max_call_duration_s": 0}, "max_call_duration_s"),
        ("/api/v1/numbers", {"did": "hello", "campaign_id": "c1", "publisher_id": "p1"}, "did"),
        ("/api/v1/numbers", {"did": "+12125550123", "campaign_id": "c404", "publisher_id": "p1"}, "campaign_id"),
        ("/api/v1/numbers", {"campaign_id": "c1", "publisher_id": "p1"}, "did"),
        ("/api/v1/publishers", {}, "name"),
    ],
)
async def test_invalid_input_names_the_field(
    client: Client, changes: list[int], path: str, body: dict[str, Any], field: str
) -> None:
    await seed(client)
    if path == "/api/v1/targets":
        body = {**body, "id": "t2"}
    elif path == "/api/v1/campaigns":
        body = {**body, "id": "c2", "key": None}
    before = len(changes)
    problem_body = await problem(await client.post(path, json=body), 422)
    assert field in invalid_names(problem_body), problem_body
    assert field in problem_body["detail"]
    assert len(changes) == before


async def test_literal_nan_and_bad_json(client: Client) -> None:
    await seed(client)
    body = await problem(
        await client.patch("/api/v1/targets/t1", data='{"revenue": NaN}', headers={"Content-Type": "application/json"}),
        422,
    )
    assert invalid_names(body) == ["revenue"]
    await problem(await client.post("/api/v1/publishers", data="{", headers={"Content-Type": "application/json"}), 400)
    body = await problem(await client.post("/api/v1/publishers", json=[1]), 422)
    assert invalid_names(body) == ["body"]
    body = await problem(await client.get("/api/v1/publishers?limit=0"), 422)
    assert invalid_names(body) == ["limit"]
    body = await problem(await client.put("/api/v1/publishers/p1", json={"id": "p2", "name": "x"}), 422)
    assert invalid_names(body) == ["id"]


async def test_money_is_exact(client: Client, engine: AsyncEngine) -> None:
    await seed(client)
    await ok(await client.patch("/api/v1/targets/t1", json={"revenue": "0.1", "cost": "1e-6"}))
    target = await repo.get_target(engine, "t1")
    assert target.revenue == 100_000 and target.cost == 1
    assert money_text(1_234_567) == "1.234567" and money_text(0) == "0.00"


async def test_handlers_carry_permissions(client: Client) -> None:
    resources = client.server.app._subapps[0].router.resources()  # type: ignore[attr-defined]
    permissions = {
        (route.method, resource.canonical): required_permission(route.handler)
        for resource in resources
        for route in resource
    }
    assert permissions[("POST", "/api/v1/campaigns")] == WRITE
    assert permissions[("GET", "/api/v1/numbers/{key}")] == "marketplace:read"


async def test_sync_on_change_and_failure_does_not_fail_the_write(engine: AsyncEngine) -> None:
    calls: list[int] = []

    def on_change() -> None:
        calls.append(1)
        raise RuntimeError("hook broke")

    app = build_app(engine=engine, metrics=ExchangeMetrics(), changes=Changes(marketplace=on_change))
    async with TestClient(TestServer(app)) as client:
        await ok(await client.post("/api/v1/publishers", json={"id": "p1", "name": "x"}), 201)
    assert calls == [1]


async def test_watcher_sees_a_change_within_one_second(engine: AsyncEngine, migrated_database_url: str) -> None:
    snapshots: list[MarketplaceData] = []
    got = asyncio.Event()

    def on_snapshot(data: MarketplaceData) -> None:
        snapshots.append(data)
        got.set()

    # the writer is another "node": its own engine, no notify()
    other = create_engine(migrated_database_url)
    watcher = MarketplaceWatcher(engine, on_snapshot, interval_s=0.2)
    try:
        async with watcher:
            assert len(snapshots) == 1 and snapshots[0].publishers == ()
            got.clear()
            await asyncio.sleep(0.5)
            assert len(snapshots) == 1  # nothing changed: no reload
            started = clock.monotonic()
            await repo.create_publisher(other, Publisher("p1", "Other node"))
            await asyncio.wait_for(got.wait(), 1.0)
            assert clock.monotonic() - started < 1.0
            assert snapshots[-1].publishers == (Publisher("p1", "Other node"),)

            # notify() reloads at once, long before the next poll
            slow = MarketplaceWatcher(engine, on_snapshot, interval_s=60)
            async with slow:
                got.clear()
                await repo.create_buyer(engine, Buyer("b1", "B"))
                slow.notify()
                await asyncio.wait_for(got.wait(), 1.0)
                assert slow.version == snapshots[-1].version
    finally:
        await other.dispose()
