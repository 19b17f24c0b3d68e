"""Bad input gets a clear problem+json answer naming what is wrong, never a 500 and never a stored row: one test per
class of bug schemathesis found (see test_schemathesis.py), on the real side API and a migrated database
(PostgreSQL when DCE_TEST_DATABASE_URL is set, which is where NUL characters used to crash)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.exchange.logging_setup import configure_logging
from dce.http_api.app import build_app
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.metrics import ExchangeMetrics

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
ADMIN_KEY = "input-errors-bootstrap-admin-key-0123456789"
JSON = {"Content-Type": "application/json"}

# every route that reads a JSON body, with a body it would accept
JSON_BODIES = [
    ("POST", "/api/v1/buyers", {"name": "b"}),
    ("PUT", "/api/v1/publishers/p1", {"name": "p"}),
    ("PATCH", "/api/v1/campaigns/c1", {"name": "c"}),
    ("POST", "/api/v1/consents", {"number": "+13125550199"}),
    ("POST", "/api/v1/compliance/outbound-check", {"number": "+13125550199"}),
    ("POST", "/api/v1/ledger/deposits", {"buyer_id": "b1", "amount": "1.00"}),
    ("POST", "/api/v1/postbacks", {"owner_kind": "buyer", "owner_id": "b1", "url": "http://127.0.0.1/"}),
    ("POST", "/api/v1/lists", {"kind": "dnc_internal"}),
    ("POST", "/api/v1/gdpr/erasures", {"number": "+13125550199"}),
    ("POST", "/api/v1/bids", {"call_id": "c1", "amount": "1", "buyer_id": "b1"}),
    ("POST", "/api/v1/auth/login", {"username": "u", "password": "p"}),
]
IDS = [f"{method} {path}" for method, path, _ in JSON_BODIES]


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[TestClient[Any, Any]]:
    auth = Authenticator(AuthConfig(secret="input-errors-jwt-secret-0123456789abcdef", bootstrap_admin_key=ADMIN_KEY),
                         engine=engine, hasher=PasswordHasher.from_parameters(CHEAPEST))
    app = build_app(engine=engine, metrics=ExchangeMetrics(), live_bidding=LiveBidding(), auth=auth)
    async with TestClient(TestServer(app), headers={"X-API-Key": ADMIN_KEY}) as client:
        yield client


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body = await response.json(content_type=None)
    assert body["status"] == status and body["title"]
    return body


@pytest.mark.parametrize(("method", "path", "_body"), JSON_BODIES, ids=IDS)
async def test_undecodable_body_is_400(client: TestClient[Any, Any], method: str, path: str, _body: Any) -> None:
    body = await problem(await client.request(method, path, data=b'{"name": "\xff\xfe"}', headers=JSON), 400)
    assert "utf-8" in body["detail"]


@pytest.mark.parametrize(("method", "path", "_body"), JSON_BODIES, ids=IDS)
async def test_unknown_charset_is_415(client: TestClient[Any, Any], method: str, path: str, _body: Any) -> None:
    headers = {"Content-Type": "application/json; charset=no-such-charset"}
    body = await problem(await client.request(method, path, data=b"{}", headers=headers), 415)
    assert "no-such-charset" in body["detail"]


@pytest.mark.parametrize(("method", "path", "_body"), JSON_BODIES, ids=IDS)
async def test_deeply_nested_json_is_400(client: TestClient[Any, Any], method: str, path: str, _body: Any) -> None:
    await problem(await client.request(method, path, data=b"[" * 100_000 + b"]" * 100_000, headers=JSON), 400)


@pytest.mark.parametrize(("method", "path", "valid"), JSON_BODIES, ids=IDS)
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"], ids=["nul", "lone-surrogate"])
async def test_unstorable_text_in_a_body_is_422_naming_the_field(
    client: TestClient[Any, Any], method: str, path: str, valid: dict[str, Any], bad: str
) -> None:
    field = next(iter(valid))
    nested = {**valid, "extra": [{"deep": bad}]}
    for body, name in (({**valid, field: bad}, field), (nested, "extra[0].deep")):
        answer = await problem(await client.request(method, path, data=json.dumps(body), headers=JSON), 422)
        assert answer["invalid_params"][0]["name"] == name, answer


async def test_nothing_is_stored_from_a_refused_body(client: TestClient[Any, Any]) -> None:
    data = json.dumps({"id": "p\x00", "name": "x"})
    await problem(await client.post("/api/v1/publishers", data=data, headers=JSON), 422)
    listing = await client.get("/api/v1/publishers")
    assert (await listing.json())["total"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/postbacks?owner_kind=buyer&owner_id=a%00b",
        "/api/v1/postbacks/deliveries?postback_id=%00",
        "/api/v1/calls?did=%00",
        "/api/v1/buyers/a%00b",
        "/api/v1/lists/check/%2B1312%00",
        "/health?x%00y=1",
    ],
)
async def test_nul_in_query_or_path_is_422(client: TestClient[Any, Any], url: str) -> None:
    body = await problem(await client.get(url), 422)
    assert "NUL" in body["detail"]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/audit", "/api/v1/calls", "/api/v1/bids", "/api/v1/buyers", "/api/v1/ledger/entries",
     "/api/v1/postbacks", "/api/v1/postbacks/deliveries"],
)
@pytest.mark.parametrize("offset", [str(2**63), "68275324033804569411584", "9" * 5000])
async def test_offset_past_bigint_is_422(client: TestClient[Any, Any], path: str, offset: str) -> None:
    body = await problem(await client.get(path, params={"offset": offset}), 422)
    assert body["invalid_params"][0]["name"] == "offset"


async def test_largest_offset_is_an_empty_page(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/v1/buyers", params={"offset": str(2**63 - 1)})
    assert response.status == 200
    assert (await response.json())["items"] == []



@pytest.mark.parametrize("list_id", ["a\x01b", "new\nline", "sp ace", "ünï%"])
async def test_location_of_a_list_with_any_id_is_a_valid_header(client: TestClient[Any, Any], list_id: str) -> None:
    """A control character in the id reached the Location header raw: aiohttp refused to write it (a 500)."""
    response = await client.post("/api/v1/lists", json={"kind": "dnc_internal", "id": list_id})
    assert response.status == 201, await response.text()
    location = response.headers["Location"]
    assert location.isascii() and location.isprintable()
    again = await client.get(location)
    assert again.status == 200 and (await again.json())["id"] == list_id


async def test_an_unparsable_request_is_400_and_one_warning_line_not_a_traceback(
        client: TestClient[Any, Any]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Probe: \x00\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        await asyncio.sleep(0.05)  # the server logs after answering
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert status_line.split()[1] == b"400"
    log = stream.getvalue()
    assert "WARNING aiohttp.server: malformed HTTP request from 127.0.0.1 (answered 400): Invalid header" in log, log
    assert "Traceback" not in log
