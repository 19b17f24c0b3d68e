"""Health and readiness: readiness follows the record writers, answers are cached and shared, and /health tells
the public only its status."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord
from dce.db.cdr_writer import CdrWriter
from dce.http_api import health as health_module
from dce.http_api.app import build_app
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.health import HEALTH_CACHE, READY_CHECKS
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.record_metrics import register
from tests.cdr_factory import make_cdr

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-key-" + "x" * 40


class Down:
    """An insert that fails as if the database were unreachable."""

    async def __call__(self, engine: AsyncEngine, cdrs: Sequence[CallDetailRecord]) -> None:
        raise ConnectionRefusedError("connection refused")


async def test_ready_goes_false_and_a_metric_fires_when_records_are_not_written(engine: AsyncEngine) -> None:
    now = [100.0]
    writer = CdrWriter(engine, flush_interval_s=0.01, initial_backoff_s=0.01, max_backoff_s=0.02, insert=Down(),
                       clock=lambda: now[0])
    metrics = ExchangeMetrics()
    register(metrics.registry, [writer], stall_after_s=30)
    app = build_app(engine=engine, metrics=metrics, state={READY_CHECKS: lambda: {"cdr_writer": writer.health(30)}})
    await writer.start()
    try:
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/health/ready")).status == 200
            writer.submit(make_cdr(1))
            now[0] += 31  # the database answers SELECT 1, but no record has been written for 31 s
            app[HEALTH_CACHE].expire()  # past the cache's second
            response = await client.get("/health/ready")
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            assert "cdr_writer: stalled: 1 records waiting" in (await response.json(content_type=None))["detail"]
            text = await (await client.get("/metrics")).text()
            assert 'dce_record_writer_stalled{kind="cdr"} 1.0' in text
            assert 'dce_records_pending{kind="cdr"} 1.0' in text
            assert 'dce_records_dead_lettered_total{kind="cdr"} 0.0' in text
            body = await (await client.get("/health")).json()
            assert body["status"] == "degraded" and body["checks"]["cdr_writer"].startswith("stalled")
    finally:
        await writer.close(timeout_s=0.1)


async def test_a_flood_of_health_checks_shares_one_database_query(engine: AsyncEngine,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    queries = 0
    real_check = health_module.check

    async def counting_check(engine_: AsyncEngine, **kwargs: Any) -> None:
        nonlocal queries
        queries += 1
        await asyncio.sleep(0.05)  # a query in flight while the other probes arrive
        await real_check(engine_, **kwargs)

    monkeypatch.setattr(health_module, "check", counting_check)
    async with TestClient(TestServer(build_app(engine=engine, metrics=ExchangeMetrics()))) as client:
        answers = await asyncio.gather(*(client.get(path) for path in ["/health", "/health/ready"] * 50))
        assert {response.status for response in answers} == {200}
        assert queries == 1  # concurrent checks share one query
        for _ in range(20):
            assert (await client.get("/health")).status == 200
        assert queries == 1  # and for a second, everyone gets that answer


async def test_health_tells_the_public_only_its_status(engine: AsyncEngine) -> None:
    auth = Authenticator(AuthConfig(secret="s" * 48, bootstrap_admin_key=ADMIN_KEY), engine=engine)
    app = build_app(engine=engine, metrics=ExchangeMetrics(), auth=auth, status=lambda: {"cdr_queue": 7})
    async with TestClient(TestServer(app)) as client:
        public = await (await client.get("/health")).json()
        assert public == {"status": "ok"}  # no version, uptime, queue depths or check texts
        wrong = await (await client.get("/health", headers={"X-API-Key": "nope"})).json()
        assert wrong == {"status": "ok"}
        admin = await (await client.get("/health", headers={"X-API-Key": ADMIN_KEY})).json()
        assert admin["version"] and admin["cdr_queue"] == 7 and admin["checks"] == {"database": "ok"}
