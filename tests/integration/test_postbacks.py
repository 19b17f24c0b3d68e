"""Postbacks end to end against a real aiohttp receiver on loopback: retries with backoff, signatures, the delivery
log over HTTP, a restart, and emit() staying off the I/O path (SQLite, or PostgreSQL with DCE_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.postback import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    EventName,
    Method,
    OwnerKind,
    PostbackConfig,
    PostbackEvent,
    verify,
)
from dce.db import marketplace_repository as marketplace
from dce.db import postback_repository as repo
from dce.db.postback_dispatcher import DispatcherSettings, PostbackDispatcher
from dce.http_api.changes import CHANGES, Changes
from dce.http_api.keys import ENGINE
from dce.http_api.postbacks import postback_routes
from dce.http_api.problems import problem_middleware
from dce.routing.model import Buyer, Publisher

pytestmark = pytest.mark.integration

SECRET = "receiver-shared-secret"
FAST = DispatcherSettings(poll_interval_s=0.05, timeout_s=2.0, backoff_base_s=0.05, backoff_cap_s=0.5,
                          configs_interval_s=0.05, flush_interval_s=0.01, stop_timeout_s=5.0)
Client = TestClient[Any, Any]


@dataclass
class Receiver:
    """A loopback HTTP server answering each request with the next status of ``statuses`` (then 200)."""

    statuses: list[int] = field(default_factory=list)
    hits: list[dict[str, Any]] = field(default_factory=list)
    verified: list[bool] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        header = request.headers.get(SIGNATURE_HEADER, "")
        payload = body if request.method == "POST" else str(request.url)
        self.verified.append(verify(SECRET, header, payload, now=time.time()))
        self.hits.append({"method": request.method, "url": str(request.url), "headers": dict(request.headers),
                          "body": body, "query": dict(request.query)})
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status < 300 else "nope")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rx.url = f"http://127.0.0.1:{port}"
    yield rx
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def converted(call_id: str = "call-1", **overrides: Any) -> PostbackEvent:
    fields: dict[str, Any] = {
        "name": EventName.CONVERTED, "call_id": call_id, "at": datetime.now(UTC), "caller": "+12125550100",
        "did": "+18005550199", "campaign_id": "camp", "publisher_id": "pub", "buyer_id": "buy",
        "target_id": "tgt", "revenue": 25_000_000, "payout": 10_000_000, "duration": 120,
        "disposition": "answered",
    }  # fmt: skip
    fields.update(overrides)
    return PostbackEvent(**fields)


async def add_config(engine: AsyncEngine, receiver: Receiver, *, method: Method = Method.POST,
                     max_attempts: int = 8, config_id: str = "pb-pub") -> PostbackConfig:
    url = f"{receiver.url}/hook?cid=[call_id]&ani=[caller]&rev=[revenue]&ev=[event]"
    config = PostbackConfig(id=config_id, owner_kind=OwnerKind.PUBLISHER, owner_id="pub",
                            events=frozenset({EventName.CONVERTED, EventName.COMPLETED}), method=method, url=url,
                            secret=SECRET, max_attempts=max_attempts)
    return await repo.create_config(engine, config)


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def status_of(engine: AsyncEngine, call_id: str) -> list[str]:
    items, _ = await repo.deliveries(engine, call_id=call_id)
    return [d.status for d in items]


def _settings(**overrides: Any) -> DispatcherSettings:
    return replace(FAST, **overrides)


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


def emit_from_sync_code(dispatcher: PostbackDispatcher, event: PostbackEvent) -> int:
    """emit() called from plain sync code: there is no way for it to await anything."""
    return dispatcher.emit(event)


# ---------------------------------------------------------------------------------------------------- tests


async def test_fails_twice_then_succeeds_signed(engine: AsyncEngine, receiver: Receiver,
                                                session: aiohttp.ClientSession) -> None:
    await add_config(engine, receiver)
    receiver.statuses = [500, 500]
    dispatcher = PostbackDispatcher(engine, session, settings=FAST, rng=random.Random(1))
    await dispatcher.start()
    try:
        assert emit_from_sync_code(dispatcher, converted("call-3x")) == 1
        await wait_for(lambda: _equals(status_of(engine, "call-3x"), ["delivered"]))
    finally:
        await dispatcher.stop()
    assert len(receiver.hits) == 3
    assert receiver.verified == [True, True, True]  # every attempt signed, with the time it was sent
    first = receiver.hits[0]
    assert first["method"] == "POST"
    assert first["headers"][EVENT_HEADER] == "converted"
    assert first["query"] == {"cid": "call-3x", "ani": "+12125550100", "rev": "25.00", "ev": "converted"}
    body = json.loads(first["body"])
    assert (body["call_id"], body["revenue"], body["payout"]) == ("call-3x", "25.00", "10.00")
    assert len({h["headers"][DELIVERY_HEADER] for h in receiver.hits}) == 1  # same delivery id on each retry
    [delivery], total = await repo.deliveries(engine, call_id="call-3x")
    assert total == 1
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert [(a.attempt, a.status_code) for a in delivery.attempt_log] == [(1, 500), (2, 500), (3, 200)]
    assert delivery.attempt_log[0].error == "HTTP 500 Internal Server Error"
    assert delivery.attempt_log[2].error is None
    assert delivery.attempt_log[0].at < delivery.attempt_log[1].at < delivery.attempt_log[2].at
    assert (dispatcher.attempts, dispatcher.delivered, dispatcher.retried) == (3, 1, 2)


async def test_get_signature_verifies_and_gives_up_after_max_attempts(
        engine: AsyncEngine, receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await add_config(engine, receiver, method=Method.GET, max_attempts=3)
    receiver.statuses = [503, 503, 503, 503]
    dispatcher = PostbackDispatcher(engine, session, settings=FAST, rng=random.Random(2))
    await dispatcher.start()
    try:
        dispatcher.emit(converted("call-get"))
        await wait_for(lambda: _equals(status_of(engine, "call-get"), ["failed"]))
    finally:
        await dispatcher.stop()
    assert len(receiver.hits) == 3
    assert all(h["method"] == "GET" and h["body"] == "" for h in receiver.hits)
    assert receiver.verified == [True, True, True]  # the signature covers the URL as sent
    [delivery], _ = await repo.deliveries(engine, status="failed")
    assert delivery.attempts == 3 and delivery.last_status_code == 503
    assert dispatcher.failed == 1


async def test_unreachable_receiver_is_retried(engine: AsyncEngine, receiver: Receiver,
                                               session: aiohttp.ClientSession) -> None:
    # a port nobody listens on: connection refused counts as a failed attempt
    dead = Receiver(url="http://127.0.0.1:9")
    await add_config(engine, dead, method=Method.GET, max_attempts=2)
    dispatcher = PostbackDispatcher(engine, session, settings=FAST)
    await dispatcher.start()
    try:
        dispatcher.emit(converted("call-dead"))
        await wait_for(lambda: _equals(status_of(engine, "call-dead"), ["failed"]))
    finally:
        await dispatcher.stop()
    [delivery], _ = await repo.deliveries(engine, call_id="call-dead")
    assert [a.status_code for a in delivery.attempt_log] == [None, None]
    assert all(a.error and "Connect" in a.error for a in delivery.attempt_log)


async def test_pending_delivery_survives_a_restart(engine: AsyncEngine, receiver: Receiver,
                                                   session: aiohttp.ClientSession) -> None:
    await add_config(engine, receiver)
    receiver.statuses = [503]
    slow = _settings(backoff_base_s=30.0, backoff_cap_s=30.0)
    first = PostbackDispatcher(engine, session, settings=slow)
    await first.start()
    first.emit(converted("call-restart"))
    await wait_for(lambda: len(receiver.hits) == 1)
    await wait_for(lambda: first.attempts == 1)
    first.emit(converted("call-queued"))  # stored by stop(), never sent by this dispatcher
    await first.stop()
    assert len(receiver.hits) == 1
    assert sorted(await status_of(engine, "call-restart") + await status_of(engine, "call-queued")) == [
        "pending", "pending"]
    # the first retry is ~30 s away: a new dispatcher (new process) picks it up when it is due; make it due now
    async with engine.begin() as connection:
        await connection.execute(repo.deliveries_table.update().values(next_attempt_at=datetime.now(UTC)))
    async with aiohttp.ClientSession() as fresh_session:
        second = PostbackDispatcher(engine, fresh_session, settings=FAST)
        await second.start()
        try:
            await wait_for(lambda: _equals(status_of(engine, "call-restart"), ["delivered"]))
            await wait_for(lambda: _equals(status_of(engine, "call-queued"), ["delivered"]))
        finally:
            await second.stop()
    [delivery], _ = await repo.deliveries(engine, call_id="call-restart")
    assert [a.status_code for a in delivery.attempt_log] == [503, 200]
    assert len(receiver.hits) == 3 and all(receiver.verified)


async def test_emit_is_sync_and_only_queues(engine: AsyncEngine, receiver: Receiver,
                                      session: aiohttp.ClientSession) -> None:
    assert not inspect.iscoroutinefunction(PostbackDispatcher.emit)
    await add_config(engine, receiver, config_id="pb-1")
    await add_config(engine, receiver, config_id="pb-2")
    dispatcher = PostbackDispatcher(engine, session, settings=_settings(poll_interval_s=60.0))
    await dispatcher.start()
    try:
        assert len(dispatcher.configs) == 2
        n = 2000
        for i in range(n):
            emit_from_sync_code(dispatcher, converted(f"bulk-{i}"))
        # nothing reached the database or the network during those calls: they are only queued (what emit costs
        # is a benchmark's business, not a timed assertion on a shared machine)
        assert dispatcher.pending_writes == 2 * n
        assert receiver.hits == []
        assert emit_from_sync_code(dispatcher, converted("nobody", publisher_id="other")) == 0
        await dispatcher.flush()
        _, total = await repo.deliveries(engine, limit=1)
        assert total == 2 * n
    finally:
        await dispatcher.stop()


async def test_config_changes_reach_the_dispatcher(engine: AsyncEngine, receiver: Receiver,
                                                   session: aiohttp.ClientSession) -> None:
    dispatcher = PostbackDispatcher(engine, session, settings=_settings(configs_interval_s=60.0))
    await dispatcher.start()
    try:
        assert dispatcher.emit(converted("before")) == 0
        await add_config(engine, receiver)
        dispatcher.notify_configs_changed()
        await wait_for(lambda: len(dispatcher.configs) == 1)
        assert dispatcher.emit(converted("after")) == 1
        await wait_for(lambda: _equals(status_of(engine, "after"), ["delivered"]))
    finally:
        await dispatcher.stop()


# ------------------------------------------------------------------------------------------------------ HTTP


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[tuple[Client, list[int]]]:
    await marketplace.create_publisher(engine, Publisher(id="pub", name="Publisher"))
    await marketplace.create_buyer(engine, Buyer(id="buy", name="Buyer"))
    changes: list[int] = []
    app = web.Application()
    app[ENGINE] = engine
    app[CHANGES] = Changes(postbacks=lambda: changes.append(1))
    sub = web.Application(middlewares=[problem_middleware])
    sub.add_routes(postback_routes())
    app.add_subapp("/api/v1", sub)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client, changes
    await client.close()


async def test_http_crud_hides_the_secret(api: tuple[Client, list[int]], engine: AsyncEngine) -> None:
    client, changes = api
    body = {"id": "p1", "owner_kind": "publisher", "owner_id": "pub", "events": ["converted", "completed"],
            "method": "post", "url": "https://rx.test/pb?c=[call_id]", "secret": "0123456789abcdef"}
    r = await client.post("/api/v1/postbacks", json=body)
    assert r.status == 201, await r.text()
    created = await r.json()
    assert r.headers["Location"] == "/api/v1/postbacks/p1"
    assert "secret" not in created and created["secret_set"] is True
    assert created["method"] == "POST" and created["events"] == ["completed", "converted"]
    assert "0123456789abcdef" not in json.dumps(created)
    assert changes == [1]

    r = await client.post("/api/v1/postbacks", json=body)
    assert r.status == 409
    r = await client.post("/api/v1/postbacks", json={**body, "id": "p2", "owner_id": "ghost"})
    assert r.status == 422 and (await r.json())["invalid_params"][0]["name"] == "owner_id"
    r = await client.post("/api/v1/postbacks", json={**body, "id": "p3", "events": ["exploded"]})
    assert r.status == 422 and r.content_type == "application/problem+json"
    r = await client.post("/api/v1/postbacks", json={**body, "id": "deliveries"})
    assert r.status == 422
    r = await client.post("/api/v1/postbacks", json={**body, "id": "p4", "method": "GET", "body": "x=1"})
    assert r.status == 422

    r = await client.patch("/api/v1/postbacks/p1", json={"enabled": False})
    assert r.status == 200 and (await r.json())["enabled"] is False
    assert (await repo.get_config(engine, "p1")).secret == "0123456789abcdef"  # kept
    r = await client.put("/api/v1/postbacks/p1", json={k: v for k, v in body.items() if k != "secret"})
    assert (await r.json())["secret_set"] is True and (await r.json())["enabled"] is True
    r = await client.patch("/api/v1/postbacks/p1", json={"secret": None})
    assert (await r.json())["secret_set"] is False
    r = await client.get("/api/v1/postbacks/p1")
    assert r.status == 200 and (await r.json())["secret_set"] is False
    r = await client.get("/api/v1/postbacks?owner_kind=publisher&owner_id=pub")
    listed = await r.json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == "p1"
    r = await client.post("/api/v1/postbacks", json={**body, "id": None, "owner_kind": "buyer", "owner_id": "buy"})
    assert r.status == 201 and len((await r.json())["id"]) == 32
    r = await client.delete("/api/v1/postbacks/p1")
    assert r.status == 204
    r = await client.get("/api/v1/postbacks/p1")
    assert r.status == 404 and r.content_type == "application/problem+json"
    assert len(changes) == 6


async def test_http_delivery_log(api: tuple[Client, list[int]], engine: AsyncEngine, receiver: Receiver,
                                 session: aiohttp.ClientSession) -> None:
    client, _ = api
    await add_config(engine, receiver)
    receiver.statuses = [500, 500]
    dispatcher = PostbackDispatcher(engine, session, settings=FAST)
    await dispatcher.start()
    try:
        dispatcher.emit(converted("call-log"))
        dispatcher.emit(converted("call-other"))
        await wait_for(lambda: _equals(status_of(engine, "call-log"), ["delivered"]))
        await wait_for(lambda: _equals(status_of(engine, "call-other"), ["delivered"]))
    finally:
        await dispatcher.stop()
    r = await client.get("/api/v1/postbacks/deliveries?call_id=call-log")
    assert r.status == 200
    page = await r.json()
    assert page["total"] == 1
    [item] = page["items"]
    assert item["status"] == "delivered" and item["postback_id"] == "pb-pub"
    assert item["attempts"] == len(item["attempt_log"])
    assert item["attempt_log"][-1]["status_code"] == 200
    assert SIGNATURE_HEADER not in item["headers"]  # stored unsigned; each attempt is signed when sent
    r = await client.get("/api/v1/postbacks/deliveries?status=delivered&limit=1&offset=1")
    page = await r.json()
    assert page["total"] == 2 and len(page["items"]) == 1
    r = await client.get("/api/v1/postbacks/deliveries?status=lost")
    assert r.status == 422
    r = await client.get("/api/v1/postbacks/deliveries?limit=0")
    assert r.status == 422
