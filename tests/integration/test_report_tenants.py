"""Reports per tenant on the real side API with auth on: a seller's (and a buyer's, where its role may read reports)
summary, CSV and call list count only its own calls, whatever filters it sends; an admin sees all. The answers go
through the app's report caches, so these tests also show that a cached answer never crosses tenants."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.http_api.app import build_app
from dce.http_api.auth import ROLES, AuthConfig, Authenticator
from dce.http_api.metrics import ExchangeMetrics
from dce.routing.model import format_money
from tests.integration.test_reports import (  # noqa: F401 - engine: the fixture with the known, settled CDRs
    BY_BUYER,
    BY_PUBLISHER,
    TOTALS,
    engine,
)

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]

SECRET = "report-tenants-secret-0123456789abcdef"
ADMIN = "report-tenants-admin-key-0123456789abcdef"
ANALYST_BUYER = "buyer"  # buyers read their own reports (analytics:read on top of the seed's buyer role)
SUMMARY = "/api/v1/reports/summary?from=2025-03-01&to=2025-03-03"
FIGURES = ("incoming", "connected", "converted", "blocked", "duplicates")


@pytest.fixture
async def auth(engine: AsyncEngine) -> Authenticator:  # noqa: F811
    return Authenticator(AuthConfig(secret=SECRET, bootstrap_admin_key=ADMIN), engine=engine,
                         hasher=PasswordHasher.from_parameters(CHEAPEST),
                         roles={**ROLES, "nobody": frozenset()})


@pytest.fixture
async def client(engine: AsyncEngine, auth: Authenticator) -> AsyncIterator[Client]:  # noqa: F811
    async with TestClient(TestServer(build_app(engine=engine, metrics=ExchangeMetrics(), auth=auth))) as c:
        yield c


def _as(auth: Authenticator, role: str, tenant: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue('someone', role, tenant).access_token}"}


async def _get(client: Client, path: str, headers: dict[str, str], status: int = 200) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status == status, await response.text()
    return await response.json(content_type=None)


def _totals(body: dict[str, Any]) -> tuple[Any, ...]:
    totals = body["totals"]
    return (*(totals[name] for name in FIGURES), totals["revenue"], totals["payout"])


def _expected(figures: tuple[int, ...]) -> tuple[Any, ...]:
    return (*figures[:5], *(format_money(value) for value in figures[5:7]))


async def test_a_seller_sees_only_its_own_calls_in_every_report(client: Client, auth: Authenticator) -> None:
    admin = {"X-API-Key": ADMIN}
    seller = _as(auth, "seller", {"publisher_id": "pub-1"})
    other_seller = _as(auth, "seller", {"publisher_id": "pub-2"})

    everything = await _get(client, SUMMARY + "&group_by=publisher", admin)  # cached first, as the admin's
    assert tuple(everything["totals"][name] for name in FIGURES) == TOTALS[:5]
    assert {group["key"] for group in everything["groups"]} == {"pub-1", "pub-2", None}

    mine = await _get(client, SUMMARY + "&group_by=publisher", seller)
    assert [group["key"] for group in mine["groups"]] == ["pub-1"]
    assert tuple(mine["totals"][name] for name in FIGURES) == BY_PUBLISHER["pub-1"][:5]
    theirs = await _get(client, SUMMARY + "&group_by=publisher", other_seller)
    assert [group["key"] for group in theirs["groups"]] == ["pub-2"]
    assert tuple(theirs["totals"][name] for name in FIGURES) == BY_PUBLISHER["pub-2"][:5]

    # asking for another publisher's figures gives nothing of theirs, and the filter is echoed as sent
    spying = await _get(client, SUMMARY + "&group_by=campaign&publisher_id=pub-2", seller)
    assert spying["groups"] == [] and spying["totals"]["incoming"] == 0
    assert spying["filters"] == {"publisher_id": "pub-2"}
    by_buyer = await _get(client, SUMMARY + "&group_by=buyer", seller)
    assert sum(group["incoming"] for group in by_buyer["groups"]) == BY_PUBLISHER["pub-1"][0]

    response = await client.get(SUMMARY.replace("summary", "summary.csv") + "&group_by=campaign", headers=seller)
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(row["row"], row["campaign_id"], row["incoming"]) for row in rows] == [
        ("group", "cmp-a", "5"), ("total", "", "5")]

    calls = await _get(client, "/api/v1/reports/calls?limit=100", seller)
    assert calls["total"] == 6 and {item["publisher_id"] for item in calls["items"]} == {"pub-1"}
    assert sorted(item["call_id"] for item in calls["items"]) == [f"call-{n:02d}" for n in (1, 2, 3, 4, 5, 9)]
    assert (await _get(client, "/api/v1/reports/calls?limit=100&publisher_id=pub-2", seller))["total"] == 0
    assert (await _get(client, "/api/v1/reports/calls?limit=100", admin))["total"] == 10


async def test_a_buyer_role_that_may_read_reports_sees_only_its_own_calls(
        client: Client, auth: Authenticator) -> None:
    buyer = _as(auth, ANALYST_BUYER, {"buyer_id": "buy-1"})
    body = await _get(client, SUMMARY + "&group_by=buyer", buyer)
    assert [group["key"] for group in body["groups"]] == ["buy-1"]
    assert _totals(body) == _expected(BY_BUYER["buy-1"])
    calls = await _get(client, "/api/v1/reports/calls?limit=100&buyer_id=buy-2", buyer)
    assert calls["total"] == 0
    calls = await _get(client, "/api/v1/reports/calls?limit=100", buyer)
    assert {item["buyer_id"] for item in calls["items"]} == {"buy-1"}


async def test_who_may_not_read_reports(client: Client, auth: Authenticator) -> None:
    await _get(client, SUMMARY + "&group_by=campaign", {}, 401)
    # a role without analytics:read may not; a buyer's or seller's token without a tenant sees nothing
    await _get(client, SUMMARY + "&group_by=campaign", _as(auth, "nobody", {"buyer_id": "buy-1"}), 403)
    await _get(client, SUMMARY + "&group_by=campaign", _as(auth, "buyer", {}), 403)
    await _get(client, SUMMARY + "&group_by=campaign", _as(auth, "seller", {}), 403)
    await _get(client, "/api/v1/reports/calls", _as(auth, "seller", {}), 403)
