"""``/api/v1/agents`` and ``/api/v1/agent_groups`` on the real side API (auth on): CRUD, the password kept as HA1s
and never echoed, a buyer's token seeing and writing its own only, groups refusing another buyer's agents, the
migration's tables and the ``agents`` change hook, and the registrations an exchange reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.db import agent_repository as repo
from dce.db import marketplace_repository as market
from dce.db.agent_repository import AgentBook
from dce.db.agent_watcher import AgentWatcher
from dce.http_api.agents import REGISTRATIONS
from dce.http_api.app import build_app
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.changes import Changes
from dce.http_api.metrics import ExchangeMetrics
from dce.routing.agents import AgentInfo, GroupInfo
from dce.routing.model import Buyer
from dce.sip.digest import ha1
from dce.sip.registrar import Account

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
BOOTSTRAP = "bootstrap-admin-key-0123456789abcdefghijkl"
ADMIN = {"X-API-Key": BOOTSTRAP}
PROBLEM = "application/problem+json"
PASSWORD = "agent-secret-123"


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[tuple[Client, list[str], Authenticator]]:
    heard: list[str] = []
    for key in ("b1", "b2"):
        await market.create_buyer(engine, Buyer(id=key, name=key))
    auth = Authenticator(AuthConfig(secret="s" * 40, bootstrap_admin_key=BOOTSTRAP), engine=engine)
    app = build_app(engine=engine, metrics=ExchangeMetrics(), live_bidding=LiveBidding(), auth=auth,
                    changes=Changes(agents=lambda: heard.append("agents")),
                    state={REGISTRATIONS: lambda agent_id: [{"uri": f"sip:{agent_id}@192.0.2.1"}]})
    async with TestClient(TestServer(app)) as client:
        yield client, heard, auth


def bearer(auth: Authenticator, buyer_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(buyer_id + '-user', 'buyer', {'buyer_id': buyer_id}).access_token}"}


async def ok(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json() if status != 204 else None


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    return await response.json()


def invalid(body: dict[str, Any]) -> set[str]:
    return {p["name"] for p in body["invalid_params"]}


async def test_agent_crud_and_the_password_as_ha1s(api: tuple[Client, list[str], Authenticator],
                                                   engine: AsyncEngine) -> None:
    client, heard, _ = api
    body = {"id": "a1", "buyer_id": "b1", "username": "alice", "password": PASSWORD, "display_name": "Alice"}
    response = await client.post("/api/v1/agents", json=body, headers=ADMIN)
    created = await ok(response, 201)
    assert response.headers["Location"] == "/api/v1/agents/a1"
    assert created["max_concurrent"] == 1 and created["enabled"] is True and created["realm"] == "dce"
    sha256, md5 = ha1("alice", "dce", PASSWORD, "SHA-256"), ha1("alice", "dce", PASSWORD, "MD5")
    answers = [await response.text(), await (await client.get("/api/v1/agents/a1", headers=ADMIN)).text(),
               await (await client.get("/api/v1/agents", headers=ADMIN)).text()]
    for answer in answers:
        assert PASSWORD not in answer and sha256 not in answer and md5 not in answer and "ha1" not in answer
    stored = await repo.get_agent(engine, "a1")
    assert (stored.ha1_sha256, stored.ha1_md5) == (sha256, md5)
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM agents"))).all()
    assert PASSWORD not in json.dumps([list(r) for r in rows], default=str)

    await problem(await client.post("/api/v1/agents", json={**body, "id": "a2"}, headers=ADMIN), 409)  # username
    await problem(await client.post("/api/v1/agents", json={**body, "username": "x"}, headers=ADMIN), 409)  # id
    short = await problem(await client.post("/api/v1/agents", json={**body, "id": "a3", "username": "c",
                                                                      "password": "short"}, headers=ADMIN), 422)
    assert invalid(short) == {"password"} and "short" not in json.dumps(short["invalid_params"][0]["reason"])
    for bad, field in (({"max_concurrent": 0}, "max_concurrent"), ({"username": "a b"}, "username"),
                       ({"buyer_id": "nobody"}, "buyer_id"), ({"color": "red"}, "color")):
        refused = await problem(await client.post("/api/v1/agents", json={**body, "id": "a4", "username": "d",
                                                                           **bad}, headers=ADMIN), 422)
        assert invalid(refused) == {field}, refused
    no_buyer = {k: v for k, v in body.items() if k != "buyer_id"}
    assert invalid(await problem(await client.post("/api/v1/agents", json=no_buyer, headers=ADMIN), 422)) == {
        "buyer_id"}

    refused = await problem(await client.patch("/api/v1/agents/a1", json={"username": "alice2"}, headers=ADMIN), 422)
    assert invalid(refused) == {"password"}
    patched = await ok(await client.patch("/api/v1/agents/a1", json={"username": "alice2", "password": "new-pass-1",
                                                                     "max_concurrent": 3, "enabled": False},
                                          headers=ADMIN))
    assert (patched["username"], patched["max_concurrent"], patched["enabled"]) == ("alice2", 3, False)
    assert (await repo.get_agent(engine, "a1")).ha1_md5 == ha1("alice2", "dce", "new-pass-1", "MD5")
    assert invalid(await problem(await client.patch("/api/v1/agents/a1", json={"enabled": None}, headers=ADMIN),
                                 422)) == {"enabled"}

    registrations = await ok(await client.get("/api/v1/agents/a1/registrations", headers=ADMIN))
    assert registrations == {"agent_id": "a1", "items": [{"uri": "sip:a1@192.0.2.1"}]}
    await ok(await client.delete("/api/v1/agents/a1", headers=ADMIN), 204)
    await problem(await client.get("/api/v1/agents/a1", headers=ADMIN), 404)
    await problem(await client.get("/api/v1/agents/a1/registrations", headers=ADMIN), 404)
    assert heard == ["agents"] * 3  # create, patch, delete; refused writes are not announced


async def test_a_buyer_sees_and_writes_its_own_only(api: tuple[Client, list[str], Authenticator]) -> None:
    client, _, auth = api
    b1, b2 = bearer(auth, "b1"), bearer(auth, "b2")
    mine = await ok(await client.post("/api/v1/agents", json={"id": "a1", "username": "alice", "password": PASSWORD},
                                      headers=b1), 201)
    assert mine["buyer_id"] == "b1"  # a buyer's own, without naming it
    await ok(await client.post("/api/v1/agents", json={"id": "a2", "username": "bob", "password": PASSWORD},
                               headers=b2), 201)
    foreign = await problem(await client.post("/api/v1/agents", json={"id": "a3", "buyer_id": "b2", "username": "eve",
                                                                       "password": PASSWORD}, headers=b1), 422)
    assert invalid(foreign) == {"buyer_id"}

    listed = await ok(await client.get("/api/v1/agents", headers=b1))
    assert [a["id"] for a in listed["items"]] == ["a1"] and listed["total"] == 1
    assert (await ok(await client.get("/api/v1/agents", headers=ADMIN)))["total"] == 2
    for method, path in (("GET", "/api/v1/agents/a2"), ("PATCH", "/api/v1/agents/a2"),
                         ("DELETE", "/api/v1/agents/a2"), ("GET", "/api/v1/agents/a2/registrations")):
        await problem(await client.request(method, path, json={"enabled": False}, headers=b1), 404)
    refused = await problem(await client.patch("/api/v1/agents/a1", json={"buyer_id": "b2"}, headers=b1), 422)
    assert invalid(refused) == {"buyer_id"}

    seller = {"Authorization": f"Bearer {auth.issue('s', 'seller', {'publisher_id': 'p1'}).access_token}"}
    await problem(await client.get("/api/v1/agents", headers=seller), 403)
    await problem(await client.get("/api/v1/agents"), 401)


async def test_groups(api: tuple[Client, list[str], Authenticator]) -> None:
    client, heard, auth = api
    b1 = bearer(auth, "b1")
    for key, buyer in (("a1", "b1"), ("a2", "b1"), ("x1", "b2")):
        await ok(await client.post("/api/v1/agents", json={"id": key, "buyer_id": buyer, "username": key,
                                                           "password": PASSWORD}, headers=ADMIN), 201)
    created = await ok(await client.post("/api/v1/agent_groups", json={"id": "g1", "name": "sales",
                                                                       "members": ["a2", "a1"]}, headers=b1), 201)
    assert created["strategy"] == "ring_all" and created["members"] == ["a2", "a1"] and created["buyer_id"] == "b1"
    other = await problem(await client.post("/api/v1/agent_groups", json={"id": "g2", "name": "x",
                                                                           "members": ["a1", "x1"]}, headers=b1), 422)
    assert invalid(other) == {"members[1]"} and "x1" in other["detail"]
    for bad, field in (({"strategy": "random"}, "strategy"), ({"members": ["a1", "a1"]}, "members"),
                       ({"members": ["nobody"]}, "members[0]")):
        refused = await problem(await client.post("/api/v1/agent_groups", json={"id": "g3", "name": "y", **bad},
                                                  headers=b1), 422)
        assert invalid(refused) == {field}, refused
    patched = await ok(await client.patch("/api/v1/agent_groups/g1", json={"strategy": "longest_idle",
                                                                           "members": ["a1"]}, headers=b1))
    assert (patched["strategy"], patched["members"], patched["name"]) == ("longest_idle", ["a1"], "sales")
    assert (await ok(await client.get("/api/v1/agent_groups", headers=b1)))["items"] == [patched]
    assert (await ok(await client.get("/api/v1/agent_groups", headers=bearer(auth, "b2"))))["total"] == 0
    await problem(await client.get("/api/v1/agent_groups/g1", headers=bearer(auth, "b2")), 404)

    await ok(await client.delete("/api/v1/agents/a1", headers=b1), 204)  # an agent deleted leaves its groups
    assert (await ok(await client.get("/api/v1/agent_groups/g1", headers=b1)))["members"] == []
    await ok(await client.delete("/api/v1/agent_groups/g1", headers=b1), 204)
    await problem(await client.get("/api/v1/agent_groups/g1", headers=b1), 404)
    assert heard.count("agents") == 3 + 1 + 1 + 1 + 1


async def test_a_buyer_with_agents_cannot_be_deleted_and_the_watcher_loads_enabled_agents(
        api: tuple[Client, list[str], Authenticator], engine: AsyncEngine) -> None:
    client, _, _ = api
    for key, enabled in (("a1", True), ("a2", False)):
        await ok(await client.post("/api/v1/agents", json={"id": key, "buyer_id": "b1", "username": f"u{key}",
                                                           "password": PASSWORD, "enabled": enabled},
                                   headers=ADMIN), 201)
    await problem(await client.delete("/api/v1/buyers/b1", headers=ADMIN), 409)
    await ok(await client.post("/api/v1/agent_groups", json={"id": "g1", "buyer_id": "b1", "name": "Sales",
                                                             "strategy": "longest_idle", "members": ["a2", "a1"]},
                               headers=ADMIN), 201)
    loaded: list[tuple[Account, ...]] = []
    books: list[AgentBook] = []
    watcher = AgentWatcher(engine, lambda book: (loaded.append(book.accounts), books.append(book)))
    await watcher.start()
    try:
        assert [a.id for a in loaded[-1]] == ["a1"]  # the registrar's: enabled agents only
        assert books[-1].agents == (AgentInfo("a1", "b1"), AgentInfo("a2", "b1", enabled=False))  # routing's: all
        assert books[-1].groups == (GroupInfo("g1", "b1", "longest_idle", ("a2", "a1")),)
        assert loaded[-1][0].ha1_sha256 == ha1("ua1", "dce", PASSWORD) and loaded[-1][0].buyer_id == "b1"
        await ok(await client.patch("/api/v1/agents/a2", json={"enabled": True}, headers=ADMIN))
        assert await watcher.refresh() is not None and [a.id for a in loaded[-1]] == ["a1", "a2"]
        assert await watcher.refresh() is None  # nothing changed since
    finally:
        await watcher.stop()


async def test_a_target_may_point_at_its_buyers_agent_or_group_only(
        api: tuple[Client, list[str], Authenticator]) -> None:
    client, _, _ = api
    for key, buyer in (("a1", "b1"), ("a2", "b2")):
        await ok(await client.post("/api/v1/agents", json={"id": key, "buyer_id": buyer, "username": f"u{key}",
                                                           "password": PASSWORD}, headers=ADMIN), 201)
    await ok(await client.post("/api/v1/agent_groups", json={"id": "g1", "buyer_id": "b1", "name": "Sales",
                                                             "strategy": "round_robin", "members": ["a1"]},
                               headers=ADMIN), 201)
    for key, destination in (("t1", "agent:a1"), ("t2", "group:g1")):
        created = await ok(await client.post("/api/v1/targets", json={"id": key, "buyer_id": "b1", "name": key,
                                                                      "destination": destination},
                                             headers=ADMIN), 201)
        assert created["destination"] == destination
    for destination, why in (("agent:a2", "no agent of buyer 'b1' 'a2'"), ("group:nope", "no agent group"),
                             ("agent:", "expected agent:ID or group:ID")):
        body = await problem(await client.post("/api/v1/targets", json={
            "id": "t9", "buyer_id": "b1", "name": "t9", "destination": destination}, headers=ADMIN), 422)
        assert invalid(body) == {"destination"}, body
        assert why in json.dumps(body), body
    moved = await client.patch("/api/v1/targets/t1", json={"buyer_id": "b2"}, headers=ADMIN)
    assert invalid(await problem(moved, 422)) == {"destination"}, "the agent stays with its buyer"
    for path in ("/api/v1/agents/a1", "/api/v1/agent_groups/g1"):  # a target points at it: not stranded
        refused = await problem(await client.delete(path, headers=ADMIN), 409)
        assert "is the destination of target(s) t" in refused["detail"], refused
    await ok(await client.delete("/api/v1/targets/t2", headers=ADMIN), 204)
    await ok(await client.delete("/api/v1/agent_groups/g1", headers=ADMIN), 204)
    moved = await problem(await client.patch("/api/v1/agents/a1", json={"buyer_id": "b2"}, headers=ADMIN), 409)
    assert "target(s) t1" in moved["detail"], moved
