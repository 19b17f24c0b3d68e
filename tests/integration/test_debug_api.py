"""Debug endpoints (config with secrets redacted, phone inspector, TCPA check) and the HTTP metrics middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.compliance.tcpa import CallingHours
from dce.db.engine import create_engine
from dce.exchange.config import Settings
from dce.http_api.app import build_app
from dce.http_api.consents import CALLING_HOURS
from dce.http_api.debug import SETTINGS_DUMP, debug_api_routes, debug_routes, redact
from dce.http_api.http_metrics import http_metrics_middleware
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.permissions import required_permission
from dce.http_api.problems import problem_middleware

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
Client = TestClient[Any, Any]


@pytest.fixture
async def engine(tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/debug.db")
    yield engine
    await engine.dispose()


def settings_dump() -> dict[str, Any]:
    settings = Settings.model_validate({
        "database": {"url": "postgresql+asyncpg://dce:s3cr3t-pw@db.internal:5432/dce"},
        "compliance": {"gdpr": {"pseudonym_key": "hmac-key-material"}},
    })
    dump = settings.model_dump(mode="json")
    dump["redis"] = {"url": "redis://:redis-pw@cache:6379/0", "password": "redis-pw", "db": 0}
    dump["security"] = {"jwt_secret": "jwt-material", "api_tokens": ["tok-one", "tok-two"], "token_expiry": "24h"}
    return dump


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[Client]:
    app = build_app(engine=engine, metrics=ExchangeMetrics(), state={SETTINGS_DUMP: settings_dump})
    app.add_routes(debug_routes())
    async with TestClient(TestServer(app)) as client:
        yield client


def api_app(hours: CallingHours | None = None) -> web.Application:
    app = web.Application(middlewares=[problem_middleware])
    app.add_routes(debug_routes())
    if hours is not None:
        app[CALLING_HOURS] = hours
    api = web.Application(middlewares=[problem_middleware])
    api.add_routes(debug_api_routes())
    app.add_subapp("/api/v1", api)
    return app


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    async with TestClient(TestServer(api_app())) as client:
        yield client


async def test_config_is_shown_with_every_secret_redacted(client: Client) -> None:
    response = await client.get("/debug/config")
    assert response.status == 200
    body = await response.json()
    text = await response.text()
    for secret in ("s3cr3t-pw", "hmac-key-material", "redis-pw", "jwt-material", "tok-one", "**********"):
        assert secret not in text, secret
    assert body["database"]["url"] == "postgresql+asyncpg://dce:***@db.internal:5432/dce"
    assert body["compliance"]["gdpr"]["pseudonym_key"] == "***"
    assert body["redis"] == {"url": "redis://:***@cache:6379/0", "password": "***", "db": 0}
    assert body["security"]["jwt_secret"] == "***"
    assert body["security"]["api_tokens"] == "***"
    # what is not secret stays readable
    assert body["sip"]["t1_ms"] == 500
    assert body["compliance"]["calling_hours"]["start"] == "08:00:00"
    assert body["database"]["batch_size"] == 200


async def test_config_404_without_a_settings_dump(engine: AsyncEngine) -> None:
    app = build_app(engine=engine, metrics=ExchangeMetrics())
    app.add_routes(debug_routes())
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/debug/config")
        assert response.status == 404
        assert response.content_type == PROBLEM


def test_redact_secret_objects_and_unset_secrets() -> None:
    dump = {"a": SecretStr("x"), "nested": [{"token": "t"}, {"name": "n"}], "api_key": None, "n": 1.5}
    assert redact(dump) == {"a": "***", "nested": [{"token": "***"}, {"name": "n"}], "api_key": None, "n": 1.5}


async def test_validate_phone(client: Client) -> None:
    response = await client.get("/debug/validate/phone/+13055550123")
    assert response.status == 200
    body = await response.json()
    assert body["e164"] == "+13055550123"
    assert body["region"] == "US"
    assert body["possible"] is True
    assert body["time_zones"] == ["America/New_York"]
    assert body["states"] == ["FL"]
    assert body["country_code"] == 1
    mobile = await (await client.get("/debug/validate/phone/%2B447400123456")).json()
    assert mobile["valid"] is True
    assert mobile["type"] == "mobile"
    assert mobile["region"] == "GB"
    assert mobile["states"] == []
    assert mobile["carrier"] == "Three"
    national = await (await client.get("/debug/validate/phone/2125550123", params={"region": "us"})).json()
    assert national["e164"] == "+12125550123"
    assert national["states"] == ["NY"]


async def test_validate_phone_rejects_what_is_no_number(client: Client) -> None:
    for path, field in (("/debug/validate/phone/not-a-number", "number"),
                        ("/debug/validate/phone/2125550123?region=FR", "number"),  # not a French number
                        ("/debug/validate/phone/2125550123?region=USA", "region")):
        response = await client.get(path)
        assert response.status == 422, path
        assert response.content_type == PROBLEM
        body = await response.json()
        assert body["invalid_params"][0]["name"] == field, path


async def test_tcpa_inside_and_outside_calling_hours(api: Client) -> None:
    # 14:00 UTC in January: 09:00 in New York (inside), 06:00 in Los Angeles (outside)
    inside = await (await api.get("/api/v1/debug/compliance/tcpa",
                                  params={"number": "+12125550123", "at": "2025-01-15T14:00:00Z"})).json()
    assert inside["allowed"] is True
    assert inside["reason"] is None
    assert inside["states"] == ["NY"]
    assert inside["windows"] == ["08:00-21:00"]
    assert inside["local_times"] == [
        {"time_zone": "America/New_York", "local_time": "2025-01-15T09:00:00-05:00", "inside": True}
    ]
    assert inside["at"] == "2025-01-15T14:00:00Z"
    outside = await (await api.get("/api/v1/debug/compliance/tcpa",
                                   params={"number": "+13105550123", "at": "2025-01-15T14:00:00+00:00"})).json()
    assert outside["allowed"] is False
    assert "06:00" in outside["reason"]
    assert outside["local_times"][0]["inside"] is False


async def test_tcpa_uses_the_configured_calling_hours() -> None:
    hours = CallingHours(state_overrides={"NY": {"start": time(10, 0)}})
    async with TestClient(TestServer(api_app(hours))) as api:
        body = await (await api.get("/api/v1/debug/compliance/tcpa",
                                    params={"number": "+12125550123", "at": "2025-01-15T14:00:00Z"})).json()
    assert body["windows"] == ["10:00-21:00"]
    assert body["allowed"] is False


async def test_tcpa_accepts_an_unencoded_plus_and_defaults_to_now(api: Client) -> None:
    response = await api.get("/api/v1/debug/compliance/tcpa?number=+12125550123")
    assert response.status == 200
    body = await response.json()
    assert body["number"] == "+12125550123"
    assert len(body["local_times"]) == 1


async def test_tcpa_names_the_bad_parameter(api: Client) -> None:
    cases = (
        ({}, "number"),
        ({"number": "nope"}, "number"),
        ({"number": "+12125550123", "at": "yesterday"}, "at"),
        ({"number": "+12125550123", "at": "2025-01-15T14:00:00"}, "at"),  # no offset
    )
    for params, field in cases:
        response = await api.get("/api/v1/debug/compliance/tcpa", params=params)
        assert response.status == 422, params
        assert response.content_type == PROBLEM
        assert (await response.json())["invalid_params"][0]["name"] == field, params


def test_debug_handlers_need_debug_read() -> None:
    for route in (*debug_routes(), *debug_api_routes()):
        assert required_permission(route.handler) == "debug:read", route.path


# --- http_requests_total through the middleware ---------------------------------------------------------------


async def _item(request: web.Request) -> web.Response:
    if request.match_info["key"] == "missing":
        raise web.HTTPNotFound()
    return web.json_response({"key": request.match_info["key"]})


METRICS = web.AppKey("test_metrics", ExchangeMetrics)


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _boom(_request: web.Request) -> web.Response:
    raise RuntimeError("boom")


async def test_http_metrics_label_by_route_template() -> None:
    metrics = ExchangeMetrics()
    app = web.Application(middlewares=[http_metrics_middleware(metrics), problem_middleware])
    app[METRICS] = metrics
    app.add_routes([web.get("/metrics", _metrics), web.get("/boom", _boom)])
    api = web.Application()
    api.add_routes([web.get("/campaigns/{key}", _item), web.post("/campaigns/{key}", _item)])
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as client:
        for key in ("a", "b", "c", "missing"):
            await client.get(f"/api/v1/campaigns/{key}")
        assert (await client.post("/api/v1/campaigns/d")).status == 200
        assert (await client.get("/nowhere/1")).status == 404
        assert (await client.get("/nowhere/2")).status == 404
        assert (await client.get("/boom")).status == 500
        await client.get("/metrics")
        text = await (await client.get("/metrics")).text()
    assert 'http_requests_total{method="GET",route="/api/v1/campaigns/{key}",status="200"} 3.0' in text
    assert 'http_requests_total{method="GET",route="/api/v1/campaigns/{key}",status="404"} 1.0' in text
    assert 'http_requests_total{method="POST",route="/api/v1/campaigns/{key}",status="200"} 1.0' in text
    assert 'http_requests_total{method="GET",route="<unmatched>",status="404"} 2.0' in text
    assert 'http_requests_total{method="GET",route="/boom",status="500"} 1.0' in text
    assert 'http_request_duration_seconds_count{method="GET",route="/api/v1/campaigns/{key}"} 4.0' in text
    assert "/metrics" not in text.split("# TYPE http_requests_total")[1]
    assert "/api/v1/campaigns/a" not in text
