"""The conversions webhook and the ledger over HTTP (SQLite, or PostgreSQL with DCE_TEST_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord, Disposition, SaleTerms
from dce.db import ledger_repository as repo
from dce.db.cdr_repository import get_cdr, insert_cdrs
from dce.db.engine import create_engine
from dce.db.marketplace_models import BuyerRow, PublisherRow
from dce.db.settlement import settle_pending
from dce.http_api.auth import AuthConfig, Authenticator, auth_middleware
from dce.http_api.changes import CHANGES, Changes
from dce.http_api.keys import ENGINE
from dce.http_api.ledger import ledger_routes
from dce.http_api.permissions import required_permission
from dce.http_api.problems import problem_middleware

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
Client = TestClient[Any, Any]
T0 = datetime(2026, 4, 1, 12, tzinfo=UTC)
TERMS = SaleTerms(campaign_id="c1", publisher_id="p1", buyer_id="b1", target_id="t1", revenue=40_000_000,
                  conversion_s=60, payout_share_bp=2500)


def cdr(n: int, talk_s: int | None, terms: SaleTerms | None = TERMS) -> CallDetailRecord:
    invite = T0 + timedelta(minutes=n)
    answer = invite + timedelta(seconds=5) if talk_s is not None else None
    return CallDetailRecord(
        call_id=f"call-{n}", a_leg_call_id=f"a{n}", b_leg_call_id=None, caller=f"+1312555{n:04d}",
        called="+12125550100", did="+12125550100", destination=None, invite_at=invite,
        end_at=(answer + timedelta(seconds=talk_s)) if answer and talk_s is not None else invite + timedelta(seconds=9),
        disposition=Disposition.ANSWERED if answer else Disposition.NO_ANSWER, final_code=200 if answer else 480,
        answer_at=answer, dial_at=invite + timedelta(seconds=1), terms=terms,
    )


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    async with engine.begin() as connection:
        await connection.execute(insert(BuyerRow), [
            {"id": "b1", "name": "Buyer", "timezone": "UTC", "credit_limit": 5_000_000, "enabled": True}])
        await connection.execute(insert(PublisherRow), [{"id": "p1", "name": "Pub", "enabled": True}])
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[tuple[Client, list[int]]]:
    changes: list[int] = []
    app = web.Application()
    app[ENGINE] = engine
    app[CHANGES] = Changes(ledger=lambda: changes.append(1))
    api = web.Application(middlewares=[problem_middleware])
    api.add_routes(ledger_routes())
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, changes


async def balances(client: Client) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/ledger/balances")
    assert response.status == 200
    return {item["account"]: item for item in (await response.json())["items"]}


async def verified(client: Client) -> None:
    response = await client.get("/api/v1/ledger/verify")
    body = await response.json()
    assert body["ok"] is True and body["total"] == "0.00" and body["mismatches"] == [], body


async def test_routes_carry_permissions() -> None:
    assert all(required_permission(route.handler) for route in ledger_routes())  # type: ignore[attr-defined]


async def test_deposit_settle_refund_pay(client: tuple[Client, list[int]], engine: AsyncEngine) -> None:
    http, changes = client
    response = await http.post("/api/v1/ledger/deposits", json={"buyer_id": "b1", "amount": "100.00", "key": "w1"})
    assert response.status == 201
    entry = await response.json()
    assert entry["kind"] == "deposit" and entry["key"] == "deposit:w1"
    assert {line["account"]: line["amount"] for line in entry["lines"]} == {"exchange:cash": "100.00",
                                                                           "buyer:b1": "-100.00"}
    again = await http.post("/api/v1/ledger/deposits", json={"buyer_id": "b1", "amount": "100.00", "key": "w1"})
    assert again.status == 200 and (await again.json())["id"] == entry["id"]  # idempotent by key
    assert changes == [1]

    await insert_cdrs(engine, [cdr(1, 90), cdr(2, 10)])
    assert await settle_pending(engine, now=T0 + timedelta(hours=1)) == 2
    items = await balances(http)
    assert items["buyer:b1"]["balance"] == "60.00" and items["buyer:b1"]["available"] == "65.00"
    assert items["buyer:b1"]["credit_limit"] == "5.00"
    assert items["publisher:p1"]["balance"] == "10.00" and items["exchange:revenue"]["balance"] == "30.00"
    assert items["exchange:cash"]["balance"] == "100.00"

    response = await http.post("/api/v1/ledger/refunds", json={"call_id": "call-1", "reason": "bad", "actor": "ana"})
    assert response.status == 201
    refund = await response.json()
    assert refund["key"] == "refund:call-1" and refund["actor"] == "ana" and refund["memo"] == "bad"
    for call_id, status in [("call-1", 409), ("call-2", 409), ("nope", 404)]:
        response = await http.post("/api/v1/ledger/refunds", json={"call_id": call_id, "reason": "x", "actor": "a"})
        assert response.status == status and response.content_type == PROBLEM
    items = await balances(http)
    assert items["buyer:b1"]["balance"] == "100.00" and items["publisher:p1"]["balance"] == "0.00"

    response = await http.post("/api/v1/ledger/adjustments",
                               json={"account": "publisher:p1", "amount": "7.5", "reason": "bonus", "actor": "ana"})
    assert response.status == 201
    response = await http.post("/api/v1/ledger/payments", json={"publisher_id": "p1", "amount": "7.50"})
    assert response.status == 201
    items = await balances(http)
    assert items["publisher:p1"]["balance"] == "0.00" and items["exchange:adjustments"]["raw"] == "7.50"

    response = await http.get("/api/v1/ledger/entries", params={"account": "publisher:p1", "limit": "2"})
    page = await response.json()
    assert page["total"] == 4 and [e["kind"] for e in page["items"]] == ["payment", "adjustment"]
    response = await http.get("/api/v1/ledger/entries", params={"offset": "4"})
    assert [e["kind"] for e in (await response.json())["items"]] == ["deposit"]
    response = await http.get("/api/v1/ledger/balances", params={"account": "buyer:b1"})
    assert [i["account"] for i in (await response.json())["items"]] == ["buyer:b1"]
    await verified(http)
    assert len(changes) == 4


async def test_conversion_webhook(client: tuple[Client, list[int]], engine: AsyncEngine) -> None:
    http, changes = client
    await insert_cdrs(engine, [cdr(1, 10), cdr(2, 10), cdr(3, None, terms=None), cdr(4, 90)])
    # before settlement: recorded, settles with the call (revenue override)
    response = await http.post("/api/v1/conversions", json={"call_id": "call-1", "revenue": "12.50"})
    assert response.status == 201
    body = await response.json()
    assert body["state"] == "pending" and body["revenue"] == "12.50" and body["settlement"] is None
    second = await http.post("/api/v1/conversions", json={"call_id": "call-1"})
    assert second.status == 409 and second.content_type == PROBLEM
    assert await settle_pending(engine, now=T0 + timedelta(hours=1)) == 4
    stored = await get_cdr(engine, "call-1")
    assert stored is not None
    assert (await repo.get_entry(engine, "sale:call-1")) is not None

    # after settlement, unconverted: converts now
    response = await http.post("/api/v1/conversions", json={"call_id": "call-2"})
    body = await response.json()
    assert response.status == 201 and body["state"] == "converted_now"
    assert body["settlement"]["revenue"] == "40.00" and body["settlement"]["payout"] == "10.00"
    assert (await repo.get_entry(engine, "conversion:call-2")) is not None
    assert changes == [1]
    # already converted by duration: recorded, no money moves
    response = await http.post("/api/v1/conversions", json={"call_id": "call-4", "revenue": "99"})
    assert response.status == 201 and (await response.json())["state"] == "already_converted"

    items = await balances(http)
    assert items["buyer:b1"]["raw"] == "92.50"  # 12.50 + 40 + 40
    assert items["publisher:p1"]["balance"] == "23.125"
    await verified(http)

    for payload, status, name in [
        ({"call_id": "nope"}, 404, None),
        ({"call_id": "call-3"}, 422, "call_id"),
        ({}, 422, "call_id"),
        ({"call_id": "call-1", "revenue": "-1"}, 422, "revenue"),
        ({"call_id": "call-1", "revenue": "1.0000001"}, 422, "revenue"),
        ({"call_id": "call-1", "revenue": "1.5", "x": 1}, 422, "x"),
        ({"call_id": "call-1", "revenue": 1.5}, 422, "revenue"),
    ]:
        response = await http.post("/api/v1/conversions", json=payload)
        assert response.status == status, payload
        if name is not None:
            assert (await response.json())["invalid_params"][0]["name"] == name


async def test_bad_input_names_the_field(client: tuple[Client, list[int]]) -> None:
    http, _ = client
    for path, payload, name in [
        ("deposits", {"buyer_id": "b1", "amount": "0"}, "amount"),
        ("deposits", {"buyer_id": "b1", "amount": "abc"}, "amount"),
        ("deposits", {"buyer_id": "b1", "amount": True}, "amount"),
        ("deposits", {"buyer_id": "zz", "amount": "1"}, "buyer_id"),
        ("deposits", {"amount": "1"}, "buyer_id"),
        ("payments", {"publisher_id": "zz", "amount": "1"}, "publisher_id"),
        ("payments", {"publisher_id": "p1", "amount": "-1"}, "amount"),
        ("adjustments", {"account": "bank", "amount": "1", "reason": "r", "actor": "a"}, "account"),
        ("adjustments", {"account": "exchange:adjustments", "amount": "1", "reason": "r", "actor": "a"}, "account"),
        ("adjustments", {"account": "buyer:zz", "amount": "1", "reason": "r", "actor": "a"}, "account"),
        ("adjustments", {"account": "buyer:b1", "amount": "0", "reason": "r", "actor": "a"}, "amount"),
        ("adjustments", {"account": "buyer:b1", "amount": "-2", "actor": "a"}, "reason"),
        ("adjustments", {"account": "buyer:b1", "amount": "-2", "reason": "r"}, "actor"),
        ("refunds", {"call_id": "x", "reason": "r"}, "actor"),
    ]:
        response = await http.post(f"/api/v1/ledger/{path}", json=payload)
        assert response.status == 422 and response.content_type == PROBLEM, (path, payload)
        assert (await response.json())["invalid_params"][0]["name"] == name, (path, payload)
    response = await http.post("/api/v1/ledger/deposits", data="[1]")
    assert response.status == 422
    response = await http.post("/api/v1/ledger/deposits", data="{")
    assert response.status == 400
    for query, name in [({"account": "bank"}, "account"), ({"limit": "0"}, "limit"), ({"offset": "-1"}, "offset")]:
        response = await http.get("/api/v1/ledger/entries", params=query)
        assert response.status == 422 and (await response.json())["invalid_params"][0]["name"] == name
    response = await http.post("/api/v1/ledger/adjustments",
                               json={"account": "buyer:b1", "amount": "-2.25", "reason": "fee", "actor": "a"})
    assert response.status == 201
    items = await balances(http)
    assert items["buyer:b1"]["balance"] == "-2.25" and items["buyer:b1"]["available"] == "2.75"


async def test_tenants_read_only_their_own_account_and_lines(engine: AsyncEngine) -> None:
    auth = Authenticator(AuthConfig(secret="k" * 40), engine=engine)
    app = web.Application(middlewares=[auth_middleware(auth), problem_middleware])
    app[ENGINE] = engine
    api = web.Application(middlewares=[problem_middleware])
    api.add_routes(ledger_routes())
    app.add_subapp("/api/v1", api)
    admin = {"Authorization": f"Bearer {auth.issue('root', 'admin').access_token}"}
    buyer = {"Authorization": f"Bearer {auth.issue('ann', 'buyer', {'buyer_id': 'b1'}).access_token}"}
    seller = {"Authorization": f"Bearer {auth.issue('sam', 'seller', {'publisher_id': 'p1'}).access_token}"}
    async with TestClient(TestServer(app)) as http:
        response = await http.post("/api/v1/ledger/deposits", json={"buyer_id": "b1", "amount": "100.00"},
                                   headers=admin)
        assert response.status == 201
        assert (await http.post("/api/v1/ledger/deposits", json={"buyer_id": "b1", "amount": "1.00"},
                                headers=buyer)).status == 403  # reading is not writing
        await insert_cdrs(engine, [cdr(1, 90)])
        assert await settle_pending(engine, now=T0 + timedelta(hours=1)) == 1

        response = await http.get("/api/v1/ledger/balances", headers=buyer)
        assert [item["account"] for item in (await response.json())["items"]] == ["buyer:b1"]
        response = await http.get("/api/v1/ledger/balances", headers=seller)
        items = (await response.json())["items"]
        assert [(item["account"], item["balance"]) for item in items] == [("publisher:p1", "10.00")]
        for who, other in ((buyer, "publisher:p1"), (seller, "buyer:b1"), (buyer, "exchange:revenue")):
            for path in ("/api/v1/ledger/balances", "/api/v1/ledger/entries"):
                response = await http.get(path, params={"account": other}, headers=who)
                assert response.status == 404 and response.content_type == PROBLEM

        page = await (await http.get("/api/v1/ledger/entries", headers=buyer)).json()
        assert [e["kind"] for e in page["items"]] == ["sale", "deposit"] and page["total"] == 2
        for entry in page["items"]:  # only its own lines: never the publisher's payout or the exchange's margin
            assert {line["account"] for line in entry["lines"]} == {"buyer:b1"}
        page = await (await http.get("/api/v1/ledger/entries", headers=seller)).json()
        assert page["total"] == 1 and page["items"][0]["lines"] == [{"account": "publisher:p1", "amount": "-10.00"}]
        assert (await http.get("/api/v1/ledger/verify", headers=seller)).status == 403
        assert (await http.get("/api/v1/ledger/verify", headers=admin)).status == 200
        page = await (await http.get("/api/v1/ledger/entries", headers=admin)).json()
        assert len(page["items"][0]["lines"]) > 1  # the admin sees whole entries
