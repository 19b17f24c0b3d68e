"""The body model an operation documents is the one its handler validates with: send each documented body route
an empty object and watch which models pydantic is asked to validate (a drift between the two fails here)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pydantic
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.db import marketplace_repository as marketplace
from dce.http_api.app import build_app
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.describe import handler_doc
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.openapi import iter_routes
from dce.routing.model import Publisher

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
ADMIN = {"X-API-Key": "bootstrap-admin-key-0123456789abcdefghijkl"}
PATH_VALUE = "12125550100"  # fits every path parameter: an id, a list id, a DID, a username
POSTBACK = {"id": PATH_VALUE, "owner_kind": "publisher", "owner_id": "pub", "events": ["converted"], "method": "post",
            "url": "https://rx.test/pb"}


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[tuple[Client, Any]]:
    await marketplace.create_publisher(engine, Publisher(id="pub", name="Publisher"))
    auth = Authenticator(AuthConfig(secret="k" * 40, bootstrap_admin_key=ADMIN["X-API-Key"]), engine=engine)
    app = build_app(engine=engine, metrics=ExchangeMetrics(), live_bidding=LiveBidding(), auth=auth)
    async with TestClient(TestServer(app)) as http:
        response = await http.post("/api/v1/postbacks", json=POSTBACK, headers=ADMIN)  # PUT reads a stored one
        assert response.status == 201, await response.text()
        yield http, app


async def test_every_documented_body_is_the_model_its_handler_validates(client: tuple[Client, Any]) -> None:
    http, app = client
    validated: list[type[pydantic.BaseModel]] = []
    original = pydantic.BaseModel.model_validate.__func__  # type: ignore[attr-defined]

    def spy(cls: type[pydantic.BaseModel], *args: Any, **kwargs: Any) -> Any:
        validated.append(cls)
        return original(cls, *args, **kwargs)

    documented = [(route, handler_doc(route.handler).body) for route in iter_routes(app)]
    documented = [(route, body) for route, body in documented if body is not None]
    assert len(documented) > 20
    drifted = []
    with mock.patch.object(pydantic.BaseModel, "model_validate", classmethod(spy)):
        for route, body in documented:
            validated.clear()
            path = re.sub(r"\{[^}]+\}", PATH_VALUE, route.path)
            response = await http.request(route.method, path, json={}, headers=ADMIN)
            if body not in validated:
                drifted.append(f"{route.method} {route.path} documents {body.__name__}, validated {validated} "
                               f"({response.status})")
    assert not drifted, drifted
