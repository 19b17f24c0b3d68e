"""The read caches on the real side API: a marketplace write through this node is visible to the very next read,
a write made elsewhere within the cache's lifetime; call pages and reports are at most their lifetime old and say
so in Cache-Control."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db import marketplace_repository as repo
from dce.db.cdr_repository import insert_cdrs
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.read_cache import MARKETPLACE_CACHE, CacheTtls
from dce.routing.model import Publisher
from tests.cdr_factory import make_cdr
from tests.integration.sipp import ExchangeProcess, admin_headers

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
TTLS = CacheTtls(marketplace_s=0.3, calls_s=0.3, reports_s=0.3)


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[Client]:
    app = build_app(engine=engine, metrics=ExchangeMetrics(), cache_ttls=TTLS)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _json(client: Client, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    assert response.status == status, await response.text()
    return await response.json()


async def test_marketplace_reads_see_this_nodes_writes_at_once(client: Client) -> None:
    cache = client.app[MARKETPLACE_CACHE]
    assert (await _json(client, "GET", "/api/v1/publishers"))["total"] == 0
    for n in range(3):
        await _json(client, "POST", "/api/v1/publishers", 201, json={"id": f"p{n}", "name": f"P{n}"})
        listed = await _json(client, "GET", "/api/v1/publishers")
        assert [p["id"] for p in listed["items"]] == [f"p{i}" for i in range(n + 1)]
        assert (await _json(client, "GET", f"/api/v1/publishers/p{n}"))["name"] == f"P{n}"
    hits = cache.hits
    for _ in range(2):
        assert (await _json(client, "GET", "/api/v1/publishers/p0"))["name"] == "P0"
    assert cache.hits == hits + 1  # the second from memory: no write in between

    await _json(client, "PATCH", "/api/v1/publishers/p0", json={"name": "Renamed"})
    assert (await _json(client, "GET", "/api/v1/publishers/p0"))["name"] == "Renamed"
    assert (await _json(client, "GET", "/api/v1/publishers"))["items"][0]["name"] == "Renamed"
    await _json(client, "PUT", "/api/v1/publishers/p1", json={"name": "Replaced"})
    assert (await _json(client, "GET", "/api/v1/publishers/p1"))["name"] == "Replaced"
    response = await client.delete("/api/v1/publishers/p2")
    assert response.status == 204
    await _json(client, "GET", "/api/v1/publishers/p2", 404)
    assert (await _json(client, "GET", "/api/v1/publishers"))["total"] == 2


async def test_writes_made_elsewhere_show_within_the_lifetime(client: Client, engine: AsyncEngine) -> None:
    assert (await _json(client, "GET", "/api/v1/publishers"))["total"] == 0
    await repo.create_publisher(engine, Publisher("p1", "Another node"))  # no invalidation reaches this app
    for _ in range(40):
        if (await _json(client, "GET", "/api/v1/publishers"))["total"] == 1:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("another node's write not visible within 2 s")


async def test_call_pages_and_reports_are_bounded_in_age_and_say_so(client: Client, engine: AsyncEngine) -> None:
    response = await client.get("/api/v1/calls")
    assert response.headers["Cache-Control"] == "private, max-age=0"  # int(0.3)
    assert (await response.json())["total"] == 0
    await insert_cdrs(engine, [make_cdr(n) for n in range(3)])
    for _ in range(40):
        if (await _json(client, "GET", "/api/v1/calls"))["total"] == 3:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("new calls not visible within 2 s")
    # another query is another entry
    assert (await _json(client, "GET", "/api/v1/calls?limit=1"))["items"][0]["call_id"] == "call-00002"

    summary = "/api/v1/reports/summary?from=2025-03-01&to=2025-03-02&group_by=day"
    response = await client.get(summary)
    assert response.status == 200 and "Cache-Control" in response.headers
    assert (await response.json())["totals"]["incoming"] == 3
    await _json(client, "GET", "/api/v1/reports/summary?from=2025-03-02&to=2025-03-01&group_by=day", 422)


def test_dce_serve_takes_the_cache_lifetimes_from_http_cache(tmp_path: Path, migrated_database_url: str) -> None:
    config = {"http": {"cache": {"calls_s": 0, "reports_s": 30}}}
    with ExchangeProcess(tmp_path / "dce", migrated_database_url, extra_config=config) as exchange:
        calls = urllib.request.Request(f"{exchange.http_base}/api/v1/calls",
                                       headers=admin_headers(exchange.http_base))
        with urllib.request.urlopen(calls, timeout=5) as response:
            assert response.status == 200 and "Cache-Control" not in response.headers  # 0: no cache
        summary = urllib.request.Request(
            f"{exchange.http_base}/api/v1/reports/summary?from=2025-03-01&to=2025-03-02&group_by=day",
            headers=admin_headers(exchange.http_base))
        with urllib.request.urlopen(summary, timeout=5) as response:
            assert response.headers["Cache-Control"] == "private, max-age=30"
