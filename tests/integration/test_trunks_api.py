"""``/api/v1/trunks`` on the real side API (auth on): CRUD, validation as problem+json naming the field, the
password never echoed (nor its hashes), admins only, and every write heard by the ``trunks`` change hook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.db import marketplace_repository as market
from dce.db import trunk_repository as repo
from dce.db.cdr_repository import insert_cdrs
from dce.http_api.app import build_app
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.changes import Changes
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.trunks import DEFAULT_REALM
from dce.routing.model import Buyer, Publisher
from dce.sip.digest import ha1
from tests.cdr_factory import make_cdr

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
BOOTSTRAP = "bootstrap-admin-key-0123456789abcdefghijkl"
ADMIN = {"X-API-Key": BOOTSTRAP}
PROBLEM = "application/problem+json"
PASSWORD = "carrier-secret-123"
TRUNK = {"name": "carrier-a", "networks": ["192.0.2.0/24", "2001:db8::/32"], "transport": "udp", "max_cps": 12.5,
         "max_concurrent": 40}


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[tuple[Client, list[str], Authenticator]]:
    heard: list[str] = []
    auth = Authenticator(AuthConfig(secret="s" * 40, bootstrap_admin_key=BOOTSTRAP), engine=engine)
    app = build_app(engine=engine, metrics=ExchangeMetrics(), live_bidding=LiveBidding(), auth=auth,
                    changes=Changes(trunks=lambda: heard.append("trunks")))
    async with TestClient(TestServer(app)) as client:
        yield client, heard, auth


async def ok(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json() if status != 204 else None


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    return await response.json()


def invalid(body: dict[str, Any]) -> set[str]:
    return {p["name"] for p in body["invalid_params"]}


async def test_crud(api: tuple[Client, list[str], Authenticator]) -> None:
    client, heard, _ = api
    created = await ok(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t1"}, headers=ADMIN), 201)
    assert created["id"] == "t1" and created["networks"] == TRUNK["networks"]
    assert created["has_credentials"] is False and created["username"] is None and created["enabled"] is True
    assert created["created_at"] == created["updated_at"]
    generated = await client.post("/api/v1/trunks", json={"name": "b-carrier", "networks": ["198.51.100.7"]},
                                  headers=ADMIN)
    generated_body = await ok(generated, 201)
    assert generated.headers["Location"] == f"/api/v1/trunks/{generated_body['id']}"
    assert generated_body["networks"] == ["198.51.100.7/32"]  # a bare address is one host

    assert await ok(await client.get("/api/v1/trunks/t1", headers=ADMIN)) == created
    listed = await ok(await client.get("/api/v1/trunks?limit=1", headers=ADMIN))
    assert listed["total"] == 2 and [t["name"] for t in listed["items"]] == ["b-carrier"]

    patched = await ok(await client.patch("/api/v1/trunks/t1", json={"max_cps": 0, "transport": None,
                                                                       "enabled": False}, headers=ADMIN))
    assert (patched["max_cps"], patched["transport"], patched["enabled"]) == (0, None, False)
    assert patched["networks"] == created["networks"] and patched["created_at"] == created["created_at"]

    await ok(await client.delete("/api/v1/trunks/t1", headers=ADMIN), 204)
    await problem(await client.get("/api/v1/trunks/t1", headers=ADMIN), 404)
    await problem(await client.delete("/api/v1/trunks/t1", headers=ADMIN), 404)
    await problem(await client.patch("/api/v1/trunks/t1", json={"enabled": True}, headers=ADMIN), 404)
    assert heard == ["trunks"] * 4  # two creates, a patch, a delete; failed writes are not announced


async def test_credentials_are_hashed_and_never_echoed(api: tuple[Client, list[str], Authenticator],
                                                        engine: AsyncEngine) -> None:
    client, _, _ = api
    body = {**TRUNK, "id": "t1", "username": "acme", "realm": "sip.example.com", "password": PASSWORD}
    response = await client.post("/api/v1/trunks", json=body, headers=ADMIN)
    created = await ok(response, 201)
    assert created["has_credentials"] is True and created["username"] == "acme"
    assert created["realm"] == "sip.example.com"
    sha256 = ha1("acme", "sip.example.com", PASSWORD, "SHA-256")
    md5 = ha1("acme", "sip.example.com", PASSWORD, "MD5")
    answers = [await response.text(), await (await client.get("/api/v1/trunks/t1", headers=ADMIN)).text(),
               await (await client.get("/api/v1/trunks", headers=ADMIN)).text()]
    for answer in answers:
        assert PASSWORD not in answer and sha256 not in answer and md5 not in answer and "ha1" not in answer
    stored = await repo.get_trunk(engine, "t1")
    assert (stored.ha1_sha256, stored.ha1_md5) == (sha256, md5)
    async with engine.connect() as connection:
        assert PASSWORD not in json.dumps([list(r) for r in (await connection.execute(
            text("SELECT * FROM trunks"))).all()], default=str)

    # the password is not echoed in a validation error either
    short = await problem(await client.post("/api/v1/trunks", json={**body, "id": "t2", "name": "x",
                                                                      "password": "short!"}, headers=ADMIN), 422)
    assert invalid(short) == {"password"} and "short!" not in json.dumps(short)


async def test_patching_credentials(api: tuple[Client, list[str], Authenticator], engine: AsyncEngine) -> None:
    client, _, _ = api
    await ok(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t1", "username": "acme",
                                                       "password": PASSWORD}, headers=ADMIN), 201)
    stored = await repo.get_trunk(engine, "t1")
    assert stored.realm == DEFAULT_REALM and stored.ha1_sha256 == ha1("acme", "dce", PASSWORD)

    # the HA1s bind username and realm: changing either needs the password again
    for change in ({"username": "acme2"}, {"realm": "other.example"}):
        refused = await problem(await client.patch("/api/v1/trunks/t1", json=change, headers=ADMIN), 422)
        assert invalid(refused) == {"password"}
    same = await ok(await client.patch("/api/v1/trunks/t1", json={"username": "acme"}, headers=ADMIN))
    assert same["has_credentials"] is True

    await ok(await client.patch("/api/v1/trunks/t1", json={"realm": "other.example", "password": "new-password-1"},
                                headers=ADMIN))
    stored = await repo.get_trunk(engine, "t1")
    assert (stored.username, stored.realm) == ("acme", "other.example")
    assert stored.ha1_md5 == ha1("acme", "other.example", "new-password-1", "MD5")

    cleared = await ok(await client.patch("/api/v1/trunks/t1", json={"username": None}, headers=ADMIN))
    assert cleared["has_credentials"] is False and cleared["username"] is None and cleared["realm"] is None
    stored = await repo.get_trunk(engine, "t1")
    assert stored.ha1_sha256 is None and stored.ha1_md5 is None

    lonely = await problem(await client.patch("/api/v1/trunks/t1", json={"password": "new-password-2"},
                                              headers=ADMIN), 422)
    assert invalid(lonely) == {"username"}
    added = await ok(await client.patch("/api/v1/trunks/t1", json={"username": "new", "password": "new-password-2"},
                                        headers=ADMIN))
    assert added["has_credentials"] is True and added["realm"] == DEFAULT_REALM


@pytest.mark.parametrize(("body", "field"), [
    ({**TRUNK, "networks": ["192.0.2.0/24", "300.1.2.3/8"]}, "networks[1]"),
    ({**TRUNK, "networks": ["192.0.2.1/24"]}, "networks[0]"),  # host bits set
    ({**TRUNK, "networks": ["2001:db8::/129"]}, "networks[0]"),
    ({**TRUNK, "networks": [42]}, "networks[0]"),
    ({**TRUNK, "networks": []}, "networks"),
    ({**TRUNK, "networks": "192.0.2.0/24"}, "networks"),
    ({"name": "carrier-a"}, "networks"),
    ({**TRUNK, "name": "has space"}, "name"),
    ({**TRUNK, "name": ""}, "name"),
    ({**TRUNK, "transport": "sctp"}, "transport"),
    ({**TRUNK, "max_cps": -1}, "max_cps"),
    ({**TRUNK, "max_concurrent": -1}, "max_concurrent"),
    ({**TRUNK, "max_concurrent": 1.5}, "max_concurrent"),
    ({**TRUNK, "username": "acme"}, "password"),
    ({**TRUNK, "password": PASSWORD}, "username"),
    ({**TRUNK, "realm": "r"}, "username"),
    ({**TRUNK, "username": "a:b", "password": PASSWORD}, "username"),
    ({**TRUNK, "surprise": 1}, "surprise"),
])
async def test_bad_input_is_a_422_naming_the_field(api: tuple[Client, list[str], Authenticator],
                                                    body: dict[str, Any], field: str) -> None:
    client, heard, _ = api
    answer = await problem(await client.post("/api/v1/trunks", json=body, headers=ADMIN), 422)
    assert field in invalid(answer), answer
    assert heard == []


async def test_cidr_errors_say_what_was_wrong(api: tuple[Client, list[str], Authenticator]) -> None:
    client, _, _ = api
    answer = await problem(await client.post("/api/v1/trunks", json={**TRUNK, "networks": ["192.0.2.1/24"]},
                                             headers=ADMIN), 422)
    assert "did you mean 192.0.2.0/24" in answer["detail"]
    await ok(await client.post("/api/v1/trunks", json={**TRUNK, "transport": "TLS",
                                                       "networks": ["2001:DB8:0:0::/64", "::ffff:10.0.0.0/104"]},
                               headers=ADMIN), 201)
    stored = await ok(await client.get("/api/v1/trunks", headers=ADMIN))
    assert stored["items"][0]["networks"] == ["2001:db8::/64", "::ffff:a00:0/104"]  # normalised
    assert stored["items"][0]["transport"] == "tls"


async def test_bad_patches(api: tuple[Client, list[str], Authenticator]) -> None:
    client, _, _ = api
    await ok(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t1"}, headers=ADMIN), 201)
    for patch, field in (({"name": None}, "name"), ({"networks": None}, "networks"), ({"enabled": None}, "enabled"),
                         ({"networks": ["x"]}, "networks[0]"), ({"id": "t2"}, "id"), ({"max_cps": "fast"}, "max_cps")):
        answer = await problem(await client.patch("/api/v1/trunks/t1", json=patch, headers=ADMIN), 422)
        assert field in invalid(answer), (patch, answer)
    await problem(await client.patch("/api/v1/trunks/t1", data="[]", headers={**ADMIN, "Content-Type":
                                                                                 "application/json"}), 422)


async def test_conflicts_and_references(api: tuple[Client, list[str], Authenticator], engine: AsyncEngine) -> None:
    client, _, _ = api
    await ok(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t1"}, headers=ADMIN), 201)
    await problem(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t1", "name": "other"}, headers=ADMIN),
                  409)
    await problem(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t2"}, headers=ADMIN), 409)  # name
    await ok(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t2", "name": "carrier-b"}, headers=ADMIN),
             201)
    await problem(await client.patch("/api/v1/trunks/t2", json={"name": "carrier-a"}, headers=ADMIN), 409)

    unknown = await problem(await client.patch("/api/v1/trunks/t1", json={"publisher_id": "p1"}, headers=ADMIN),
                            422)
    assert invalid(unknown) == {"publisher_id"}
    await market.create_publisher(engine, Publisher(id="p1", name="Publisher 1"))
    owned = await ok(await client.patch("/api/v1/trunks/t1", json={"publisher_id": "p1"}, headers=ADMIN))
    assert owned["publisher_id"] == "p1"
    await problem(await client.delete("/api/v1/publishers/p1", headers=ADMIN), 409)  # still a trunk's


async def test_admins_only(api: tuple[Client, list[str], Authenticator], engine: AsyncEngine) -> None:
    client, heard, auth = api
    await market.create_publisher(engine, Publisher(id="p1", name="Publisher 1"))
    await market.create_buyer(engine, Buyer(id="b1", name="Buyer 1"))
    _, seller = await auth.create_api_key("seller", publisher_id="p1")
    _, buyer = await auth.create_api_key("buyer", buyer_id="b1")
    await ok(await client.post("/api/v1/trunks", json={**TRUNK, "id": "t1", "publisher_id": "p1"}, headers=ADMIN),
             201)
    for key in (seller, buyer):
        headers = {"X-API-Key": key}
        await problem(await client.get("/api/v1/trunks", headers=headers), 403)
        await problem(await client.get("/api/v1/trunks/t1", headers=headers), 403)  # not even its own publisher's
        await problem(await client.post("/api/v1/trunks", json={**TRUNK, "name": "mine"}, headers=headers), 403)
        await problem(await client.patch("/api/v1/trunks/t1", json={"enabled": False}, headers=headers), 403)
        await problem(await client.delete("/api/v1/trunks/t1", headers=headers), 403)
    await problem(await client.get("/api/v1/trunks"), 401)
    assert heard == ["trunks"]


async def test_documented_with_its_body_models(api: tuple[Client, list[str], Authenticator]) -> None:
    client, _, _ = api
    document = await ok(await client.get("/api/openapi.json"))
    paths = document["paths"]
    assert set(paths["/api/v1/trunks"]) == {"get", "post"}
    assert set(paths["/api/v1/trunks/{key}"]) == {"get", "patch", "delete"}
    post, patch = paths["/api/v1/trunks"]["post"], paths["/api/v1/trunks/{key}"]["patch"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TrunkIn"}
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TrunkPatch"}
    assert post["x-permission"] == "trunks:write" and paths["/api/v1/trunks"]["get"]["x-permission"] == "trunks:read"
    schema = document["components"]["schemas"]["TrunkIn"]
    password = schema["properties"]["password"]["anyOf"][0]
    assert password["writeOnly"] is True and password["format"] == "password"
    assert schema["properties"]["networks"]["items"]["type"] == "string"
    assert schema["properties"]["transport"]["anyOf"][0]["enum"] == ["udp", "tcp", "tls"]


async def test_reports_group_and_filter_by_trunk(api: tuple[Client, list[str], Authenticator],
                                                 engine: AsyncEngine) -> None:
    client, _, _ = api
    await insert_cdrs(engine, [replace(make_cdr(n), trunk="carrier-a" if n < 3 else None) for n in range(5)])
    window = "from=2025-03-01&to=2025-03-02"
    summary = await ok(await client.get(f"/api/v1/reports/summary?{window}&group_by=trunk", headers=ADMIN))
    assert [(g["key"], g["incoming"]) for g in summary["groups"]] == [("carrier-a", 3), (None, 2)]
    assert summary["totals"]["incoming"] == 5
    only = await ok(await client.get(f"/api/v1/reports/summary?{window}&group_by=day&trunk=carrier-a", headers=ADMIN))
    assert only["filters"] == {"trunk": "carrier-a"} and only["totals"]["incoming"] == 3
    csv = await (await client.get(f"/api/v1/reports/summary.csv?{window}&group_by=trunk", headers=ADMIN)).text()
    assert csv.splitlines()[0].startswith("row,trunk,incoming") and "group,carrier-a,3," in csv
    calls = await ok(await client.get("/api/v1/reports/calls?trunk=carrier-a", headers=ADMIN))
    assert calls["total"] == 3 and {c["trunk"] for c in calls["items"]} == {"carrier-a"}
    every = await ok(await client.get("/api/v1/calls?limit=5", headers=ADMIN))
    assert {c["trunk"] for c in every["items"]} == {"carrier-a", None}  # the CDR's trunk is in the call list
