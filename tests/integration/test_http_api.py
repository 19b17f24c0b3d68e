"""The side API over HTTP: health, metrics, calls listing and problem+json errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import Disposition
from dce.db.cdr_repository import insert_cdrs
from dce.db.engine import create_engine
from dce.http_api.app import build_app, run_http
from dce.http_api.metrics import ExchangeMetrics
from tests.cdr_factory import make_cdr

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
def metrics() -> ExchangeMetrics:
    return ExchangeMetrics()


@pytest.fixture
async def client(engine: AsyncEngine, metrics: ExchangeMetrics) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(engine=engine, metrics=metrics, status=lambda: {"active_calls": 2})
    async with TestClient(TestServer(app)) as client:
        yield client


async def assert_problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == PROBLEM
    body = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    return body


async def test_health(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok"}
    assert body["active_calls"] == 2
    assert body["version"] == "0.1.0"
    assert body["uptime_s"] >= 0


async def test_live_and_ready(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/health/live")).status == 200
    response = await client.get("/health/ready")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_degraded_when_database_is_unreachable(metrics: ExchangeMetrics, tmp_path: Path) -> None:
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    app = build_app(engine=broken, metrics=metrics, status=lambda: {"checks": {"sip": "ok"}})
    try:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/health")
            assert response.status == 200
            body = await response.json()
            assert body["status"] == "degraded"
            assert body["checks"]["sip"] == "ok"
            assert "unable to open" in body["checks"]["database"]

            assert (await client.get("/health/live")).status == 200
            problem = await assert_problem(await client.get("/health/ready"), 503)
            assert "database" in problem["detail"]
    finally:
        await broken.dispose()


async def test_status_callback_failure_degrades(engine: AsyncEngine, metrics: ExchangeMetrics) -> None:
    def status() -> dict[str, Any]:
        raise RuntimeError("b2bua gone")

    async with TestClient(TestServer(build_app(engine=engine, metrics=metrics, status=status))) as client:
        body = await (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert "b2bua gone" in body["checks"]["status"]


async def test_metrics(client: TestClient[Any, Any], metrics: ExchangeMetrics) -> None:
    metrics.sip_message("in", "INVITE")
    metrics.call_finished(Disposition.ANSWERED)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'dce_sip_messages_total{direction="in",method="INVITE"} 1.0' in text
    assert 'dce_calls_total{status="answered"} 1.0' in text
    assert "dce_exchange_added_delay_seconds_bucket" in text


async def test_list_calls(client: TestClient[Any, Any], engine: AsyncEngine) -> None:
    answered = [make_cdr(n) for n in range(5)]
    busy = [make_cdr(n, disposition=Disposition.BUSY, did="+13105550111") for n in range(5, 8)]
    await insert_cdrs(engine, answered + busy)

    response = await client.get("/api/v1/calls")
    assert response.status == 200
    body = await response.json()
    assert (body["total"], body["limit"], body["offset"]) == (8, 50, 0)
    assert [item["call_id"] for item in body["items"]] == [f"call-{n:05d}" for n in range(7, -1, -1)]

    item = body["items"][-1]
    cdr = answered[0]
    expected = {
        "call_id": cdr.call_id,
        "a_leg_call_id": cdr.a_leg_call_id,
        "b_leg_call_id": cdr.b_leg_call_id,
        "caller": cdr.caller,
        "called": cdr.called,
        "did": cdr.did,
        "destination": cdr.destination,
        "invite_at": cdr.invite_at.isoformat(),
        "ring_at": cdr.ring_at.isoformat() if cdr.ring_at else None,
        "answer_at": cdr.answer_at.isoformat() if cdr.answer_at else None,
        "end_at": cdr.end_at.isoformat(),
        "disposition": "answered",
        "final_code": 200,
        "hangup_side": "caller",
        "reason": None,
        "duration_s": 70,
        "billable_s": 65,
        "packets_relayed": cdr.packets_relayed,
        "bytes_relayed": cdr.bytes_relayed,
        "extra": {"campaign": "c1"},
        "verstat": None,
    }
    assert {key: item[key] for key in expected} == expected
    assert item["campaign_id"] is None and item["settled_at"] is None  # not a marketplace call, not settled
    assert item["invite_at"].endswith("+00:00")

    body = await (await client.get("/api/v1/calls", params={"limit": "2", "offset": "1"})).json()
    assert [item["call_id"] for item in body["items"]] == ["call-00006", "call-00005"]
    assert (body["total"], body["limit"], body["offset"]) == (8, 2, 1)

    body = await (await client.get("/api/v1/calls", params={"disposition": "busy"})).json()
    assert body["total"] == 3

    # '+' unencoded in a query string means a space; the API takes it as the DID's '+'
    for query in ("did=+13105550111", "did=%2B13105550111", "did=3105550111"):
        body = await (await client.get(f"/api/v1/calls?{query}")).json()
        assert body["total"] == 3, query

    body = await (
        await client.get("/api/v1/calls?since=2025-03-01T12:00:02Z&until=2025-03-01T12:00:04Z")
    ).json()
    assert [item["call_id"] for item in body["items"]] == ["call-00003", "call-00002"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=abc", "limit"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
        ("disposition=exploded", "disposition"),
        ("did=nonsense", "did"),
        ("since=yesterday", "since"),
    ],
)
async def test_bad_parameters_are_422(client: TestClient[Any, Any], query: str, parameter: str) -> None:
    body = await assert_problem(await client.get(f"/api/v1/calls?{query}"), 422)
    assert repr(parameter) in body["detail"]
    assert body["invalid_params"][0]["name"] == parameter


async def test_unknown_routes_are_problems(client: TestClient[Any, Any]) -> None:
    await assert_problem(await client.get("/nope"), 404)
    await assert_problem(await client.get("/api/v1/nope"), 404)
    response = await client.post("/health")
    await assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


async def test_run_http_serves_on_a_real_port(engine: AsyncEngine, metrics: ExchangeMetrics) -> None:
    runner = await run_http(build_app(engine=engine, metrics=metrics), "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session, session.get(f"http://{host}:{port}/health/live") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()
