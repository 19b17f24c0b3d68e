"""What a 422 says: every money field wants a decimal string, and every message of our validators shows the value."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
DCE = Path(__file__).resolve().parents[2] / "dce"

BUYER = {"id": "b1", "name": "Buyer"}
TARGET = {"id": "t1", "buyer_id": "b1", "name": "T", "destination": "sip:127.0.0.1:5080"}
CAMPAIGN = {"id": "c1", "name": "C"}


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[Client]:
    app = build_app(engine=engine, metrics=ExchangeMetrics(), live_bidding=LiveBidding())
    async with TestClient(TestServer(app)) as client:
        for path, body in (("/api/v1/buyers", BUYER), ("/api/v1/publishers", {"id": "p1", "name": "P"}),
                           ("/api/v1/targets", TARGET)):
            assert (await client.post(path, json=body)).status == 201
        yield client


async def _reason(client: Client, path: str, body: dict[str, Any], field: str) -> str:
    response = await client.post(path, json=body)
    assert response.status == 422, (path, body, await response.text())
    problem = await response.json(content_type=None)
    reasons = {p["name"]: p["reason"] for p in problem["invalid_params"]}
    assert field in reasons, problem
    return reasons[field]


MONEY_FIELDS = [
    ("/api/v1/buyers", {**BUYER, "id": "b2", "credit_limit": 12.5}, "credit_limit"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": 12.5}, "revenue"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "cost": 3}, "cost"),
    ("/api/v1/campaigns", {**CAMPAIGN, "reserve": 5}, "reserve"),
    ("/api/v1/campaigns", {**CAMPAIGN, "publisher_ids": ["p1"], "payouts": [{"publisher_id": "*", "fixed": 4.0}]},
     "payouts[0].fixed"),
    ("/api/v1/conversions", {"call_id": "call-1", "revenue": 12.5}, "revenue"),
    ("/api/v1/ledger/deposits", {"buyer_id": "b1", "amount": 100}, "amount"),
    ("/api/v1/ledger/payments", {"publisher_id": "p1", "amount": 100}, "amount"),
    ("/api/v1/ledger/adjustments", {"account": "exchange:cash", "amount": -1.5, "reason": "r", "actor": "a"},
     "amount"),
    ("/api/v1/bids", {"call_id": "call-1", "amount": 7.25, "buyer_id": "b1"}, "amount"),
]


@pytest.mark.parametrize(("path", "body", "field"), MONEY_FIELDS, ids=[f"{p}:{f}" for p, _, f in MONEY_FIELDS])
async def test_money_sent_as_a_json_number_is_refused_everywhere(client: Client, path: str, body: dict[str, Any],
                                                                  field: str) -> None:
    reason = await _reason(client, path, body, field)
    assert reason.startswith('send money as a decimal string, like "12.50"'), reason


async def test_money_as_a_decimal_string_is_taken(client: Client) -> None:
    response = await client.post("/api/v1/targets", json={**TARGET, "id": "t3", "revenue": "12.5", "cost": "0.75"})
    assert response.status == 201
    assert (await response.json())["revenue"] == "12.50"


CUSTOM_ERRORS = [  # every custom validator of the API, each with a value it refuses
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": "12,50"}, "revenue", "'12,50'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": ["1"]}, "revenue", "['1']"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": "1.0000001"}, "revenue", "'1.0000001'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": "-1"}, "revenue", "'-1'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": "Infinity"}, "revenue", "'Infinity'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "revenue": "1e13"}, "revenue", "'1e13'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "destination": "sip: x"}, "destination", "'sip: x'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "destination": "nowhere"}, "destination", "'nowhere'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "destination": 42}, "destination", "42"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "criteria": [{"field": "color", "op": "in", "values": ["x"]}]},
     "criteria[0].field", "'color'"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "criteria": [{"field": "state", "op": "in", "values": []}]},
     "criteria[0]", "[]"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "criteria": [{"field": "zip", "op": "regex", "values": ["("]}]},
     "criteria[0]", "'('"),
    ("/api/v1/targets", {**TARGET, "id": "t2", "hours": [{"weekday": 1, "start": "09:00+02:00", "end": "10:00"}]},
     "hours[0].start", "'09:00:00+02:00'"),
    ("/api/v1/buyers", {**BUYER, "id": "b2", "timezone": "Mars/Olympus"}, "timezone", "'Mars/Olympus'"),
    ("/api/v1/numbers", {"did": "hello", "campaign_id": "c1", "publisher_id": "p1"}, "did", "'hello'"),
    ("/api/v1/numbers", {"did": 5, "campaign_id": "c1", "publisher_id": "p1"}, "did", "5"),
    ("/api/v1/campaigns", {**CAMPAIGN, "publisher_ids": ["p1", "p1"]}, "publisher_ids", "'p1'"),
    ("/api/v1/campaigns", {**CAMPAIGN, "payouts": [{"publisher_id": "*"}]}, "payouts[0]", "fixed=None"),
    ("/api/v1/consents", {"proof_hash": "xyz"}, "proof_hash", "'xyz'"),
]


@pytest.mark.parametrize(("path", "body", "field", "value"), CUSTOM_ERRORS,
                         ids=[f"{p}:{f}:{v}" for p, _, f, v in CUSTOM_ERRORS])
async def test_every_custom_validation_message_shows_the_value(client: Client, path: str, body: dict[str, Any],
                                                               field: str, value: str) -> None:
    reason = await _reason(client, path, body, field)
    assert value in reason, reason
    assert "!r}" not in reason and "{value" not in reason and "{op}" not in reason, reason


def test_custom_errors_are_made_in_one_place() -> None:
    """pydantic does not format ``{value!r}`` in a custom error's template: our validators go through
    ``inputs.invalid_value`` (a message formatted by Python), never ``PydanticCustomError`` directly."""
    offenders = []
    for path in DCE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) \
                    == "PydanticCustomError" and path.name != "inputs.py":
                offenders.append(f"{path.relative_to(DCE.parent)}:{node.lineno}")
    assert offenders == []
