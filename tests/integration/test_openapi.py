"""The OpenAPI document, Swagger UI, security headers and CORS of the side API."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.db.engine import create_engine
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.openapi import OPENAPI_PATH, SWAGGER_PATH
from dce.http_api.permissions import PUBLIC_PATHS, required_permission
from tests.databases import run_coroutine
from tests.route_table import route_table

pytestmark = pytest.mark.integration

ALLOWED = "https://console.example.com"
OTHER = "https://evil.example.net"
PROBLEM = "application/problem+json"


def make_app(engine: AsyncEngine | None = None, **kwargs: Any) -> web.Application:
    """The real side API as the exchange builds it, with this test's CORS origin."""
    kwargs.setdefault("cors_origins", [ALLOWED])
    return build_app(engine=engine if engine is not None else create_engine("sqlite+aiosqlite://"),
                     metrics=ExchangeMetrics(), **kwargs)  # fmt: skip


HANDLERS = {(method, path): handler for method, path, handler in route_table(make_app())}
ROUTES = sorted(HANDLERS)


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(engine, live_bidding=LiveBidding()))) as client:
        yield client


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as the real app serves it, fetched once per module (the route checks are a hundred tests)."""

    async def fetch() -> dict[str, Any]:
        async with TestClient(TestServer(make_app(live_bidding=LiveBidding()))) as client:
            response = await client.get(OPENAPI_PATH)
            assert response.status == 200
            assert response.content_type == "application/json"
            return await response.json()

    return run_coroutine(fetch())


# --------------------------------------------------------------------------------------------- the document


async def test_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # openapi-spec-validator picks the 3.1 schema from the version
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "Problem" in document["components"]["schemas"]


def test_the_app_has_routes() -> None:
    assert len(ROUTES) > 40
    assert ("GET", OPENAPI_PATH) in ROUTES and ("POST", "/api/v1/campaigns") in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_route_is_documented(document: dict[str, Any], method: str, path: str) -> None:
    operation = document["paths"].get(path, {}).get(method.lower())
    assert operation is not None, f"{method} {path} is not in the OpenAPI document"
    assert operation["summary"]
    assert operation["responses"]
    names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
    assert names == set(re.findall(r"\{([^}:]+)", path))
    assert operation.get("x-permission") == required_permission(HANDLERS[method, path])
    if path in PUBLIC_PATHS:
        assert operation["security"] == []
    else:
        assert operation["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
        assert {"401", "403"} <= operation["responses"].keys()


async def test_document_has_no_extra_operations(document: dict[str, Any]) -> None:
    documented = sorted((m.upper(), p) for p, ops in document["paths"].items() for m in ops)
    assert documented == ROUTES


async def test_problem_responses_and_body_schemas(document: dict[str, Any]) -> None:
    problem = document["components"]["responses"]["422"]["content"][PROBLEM]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    schemas = document["components"]["schemas"]
    bodies = {
        ("post", "/api/v1/campaigns"): "CampaignIn",
        ("put", "/api/v1/buyers/{key}"): "BuyerIn",
        ("post", "/api/v1/postbacks"): "PostbackIn",
        ("post", "/api/v1/conversions"): "ConversionIn",
        ("post", "/api/v1/ledger/deposits"): "DepositIn",
        ("post", "/api/v1/ledger/adjustments"): "AdjustmentIn",
        ("post", "/api/v1/bids"): "BidIn",
        ("post", "/api/v1/lists"): "ListIn",
        ("post", "/api/v1/consents"): "ConsentIn",
    }
    for (method, path), name in bodies.items():
        operation = document["paths"][path][method]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}, (method, path)
        assert name in schemas
        assert {"400", "422", "500"} <= operation["responses"].keys()
    assert "name" in schemas["CampaignIn"]["required"]
    # money is documented as the decimal string the API reads (never a number, nor integer micros)
    credit = schemas["BuyerIn"]["properties"]["credit_limit"]
    assert credit["anyOf"][0]["type"] == "string" and credit["anyOf"][0]["pattern"]
    assert schemas["CampaignIn"]["properties"]["reserve"]["default"] == "0.00"
    assert schemas["DepositIn"]["properties"]["amount"]["type"] == "string"
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document))
    assert set(refs) <= schemas.keys()
    assert document["paths"]["/api/v1/ledger/deposits"]["post"]["x-permission"] == "ledger:write"
    assert "201" in document["paths"]["/api/v1/campaigns"]["post"]["responses"]
    assert "204" in document["paths"]["/api/v1/campaigns/{key}"]["delete"]["responses"]
    limit = next(p for p in document["paths"]["/api/v1/calls"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["in"] == "query" and limit["schema"]["type"] == "integer"


async def test_document_matches_what_the_server_answers(document: dict[str, Any]) -> None:
    """What schemathesis (test_schemathesis.py) found the document getting wrong."""
    api_key = dict(document["components"]["securitySchemes"]["apiKeyAuth"])
    assert api_key.pop("description")
    assert api_key == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path in ("/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/rtb/{key}/ping"):  # answered without a key
        assert document["paths"][path]["post"]["security"] == [], path
    assert {"401", "503"} <= document["paths"]["/api/v1/auth/login"]["post"]["responses"].keys()
    for kind in ("deposits", "payments", "adjustments"):  # 200: the idempotency key was posted already
        assert {"200", "201"} <= document["paths"][f"/api/v1/ledger/{kind}"]["post"]["responses"].keys()
    tcpa = document["paths"]["/api/v1/debug/compliance/tcpa"]["get"]
    assert {p["name"]: p["required"] for p in tcpa["parameters"]} == {"number": True, "at": False}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"].keys()
            assert "429" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= responses, (method, path)
            offset = [p for p in operation.get("parameters", []) if p["name"] == "offset"]
            assert all(p["schema"]["maximum"] == 2**63 - 1 for p in offset), (method, path)


async def test_compat_view_for_swagger_ui(client: TestClient[Any, Any], document: dict[str, Any]) -> None:
    response = await client.get(OPENAPI_PATH, params={"compat": "3.0"})
    compat = await response.json()
    assert compat["openapi"] == "3.0.3"
    assert compat["paths"] == document["paths"]
    bad = await client.get(OPENAPI_PATH, params={"compat": "2"})
    assert bad.status == 422 and bad.content_type == PROBLEM


# ----------------------------------------------------------------------------------------------- Swagger UI


async def test_swagger_ui_is_served_locally(client: TestClient[Any, Any]) -> None:
    response = await client.get(SWAGGER_PATH)
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(urls) >= 4
    assert "<script>" not in html and "style=" not in html and "<style" not in html  # no inline code
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status == 200, url
        assert len(await asset.read()) > 0
    scripts = [u for u in urls if u.endswith(".js")]
    initializer = await (await client.get(scripts[-1])).text()
    assert f'"{OPENAPI_PATH}?compat=3.0"' in initializer
    assert "http://" not in initializer and "https://" not in initializer


# ------------------------------------------------------------------------------------------ security headers


def assert_security_headers(response: Any, csp: str = "default-src 'self'") -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["Content-Security-Policy"] == csp
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_security_headers_on_ok_problem_and_metrics(client: TestClient[Any, Any]) -> None:
    ok = await client.get("/health")
    assert ok.status == 200
    assert_security_headers(ok)
    missing = await client.get("/api/v1/no-such-thing")
    assert missing.status == 404 and missing.content_type == PROBLEM
    assert_security_headers(missing)
    unknown = await client.get("/api/v1/campaigns/nope")
    assert unknown.status == 404 and unknown.content_type == PROBLEM
    assert_security_headers(unknown)
    wrong_method = await client.request("TRACE", "/health")
    assert wrong_method.status == 405
    assert_security_headers(wrong_method)
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert_security_headers(metrics)
    document = await client.get(OPENAPI_PATH)
    assert_security_headers(document)


async def test_swagger_csp_allows_inline_styles_only(client: TestClient[Any, Any]) -> None:
    response = await client.get(SWAGGER_PATH)
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'self'")
    assert "script-src" not in csp and "unsafe-eval" not in csp
    assert "style-src 'self' 'unsafe-inline'" in csp
    assert_security_headers(response, csp)


async def test_websocket_upgrade_still_works(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws/v1/bidding?buyer_id=b1", headers={"Origin": ALLOWED}) as ws:
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.TEXT
        assert message.json() == {"type": "subscribed", "buyer_id": "b1"}


# ---------------------------------------------------------------------------------------------------- CORS


async def test_cors_allowed_origin_is_echoed(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]
    problem = await client.get("/api/v1/campaigns/nope", headers={"Origin": ALLOWED})
    assert problem.status == 404
    assert problem.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_cors_other_origin_gets_nothing(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health", headers={"Origin": OTHER})
    assert response.status == 200
    assert not any(name.lower().startswith("access-control-") for name in response.headers)
    plain = await client.get("/health")
    assert "Access-Control-Allow-Origin" not in plain.headers


async def test_cors_preflight(client: TestClient[Any, Any]) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = await client.options("/api/v1/campaigns", headers={"Origin": ALLOWED, **preflight})
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    allowed_headers = allowed.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert int(allowed.headers["Access-Control-Max-Age"]) > 0
    assert_security_headers(allowed)

    refused = await client.options("/api/v1/campaigns", headers={"Origin": OTHER, **preflight})
    assert refused.status == 403 and refused.content_type == PROBLEM
    assert not any(name.lower().startswith("access-control-") for name in refused.headers)
    assert_security_headers(refused)


async def test_no_origins_configured_allows_none(engine: AsyncEngine) -> None:
    app = build_app(engine=engine, metrics=ExchangeMetrics())
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/health", headers={"Origin": ALLOWED})
        assert "Access-Control-Allow-Origin" not in response.headers
        preflight = await client.options(
            "/health", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status == 403
