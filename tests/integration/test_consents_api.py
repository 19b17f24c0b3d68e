"""Consents over HTTP and through the repository: versions, history, revoke, outbound check, erasure and the
version counter (SQLite, or PostgreSQL with DCE_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.compliance.consent import ConsentStatus, proof_hash_of
from dce.compliance.tcpa import CallingHours
from dce.compliance.verdict import Action, Finding, ReasonCode
from dce.db import consent_repository as repo
from dce.http_api.changes import CHANGES, Changes
from dce.http_api.consents import CALLING_HOURS, OUTBOUND_LISTS, consent_routes
from dce.http_api.keys import ENGINE
from dce.http_api.problems import problem_middleware

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
Client = TestClient[Any, Any]
NUMBER = "+12125550100"
PROOF = proof_hash_of("signed web form, lead 42")
DAYTIME = "2026-07-01T14:00:00Z"  # 10:00 EDT
NIGHT = "2026-07-02T03:00:00Z"  # 23:00 EDT


@pytest.fixture
def changes() -> list[int]:
    return []


def build(engine: AsyncEngine, changes: list[int], **keys: Any) -> web.Application:
    async def on_change() -> None:
        changes.append(1)

    app = web.Application()
    app[ENGINE] = engine
    app[CHANGES] = Changes(consents=on_change)
    for key, value in keys.items():
        app[{"calling_hours": CALLING_HOURS, "lists": OUTBOUND_LISTS}[key]] = value
    api = web.Application(middlewares=[problem_middleware])
    api.add_routes(consent_routes())
    app.add_subapp("/api/v1", api)
    return app


@pytest.fixture
async def client(engine: AsyncEngine, changes: list[int]) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build(engine, changes))) as client:
        yield client


async def ok(response: aiohttp.ClientResponse, status: int = 200) -> Any:
    body = await response.text()
    assert response.status == status, body
    return await response.json()


async def problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM
    return await response.json(content_type=PROBLEM)


def consent(**fields: Any) -> dict[str, Any]:
    body = {
        "number": NUMBER, "business": "buyer-1", "consent_type": "express_written", "channel": "web",
        "source": "https://leads.example.com/form/42", "proof_hash": PROOF, "granted_at": "2026-06-01T12:00:00Z",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def test_grant_history_revoke(client: Client, changes: list[int]) -> None:
    created = await ok(await client.post("/api/v1/consents", json=consent(number="(212) 555-0100")), 201)
    assert created["number"] == NUMBER
    assert (created["version"], created["status"], created["active"]) == (1, "granted", True)
    assert created["proof_hash"] == PROOF and created["granted_at"] == "2026-06-01T12:00:00Z"
    assert created["expires_at"] is None
    await ok(await client.post("/api/v1/consents", json=consent(consent_type="prior_express", proof="call 7",
                                                                 proof_hash=None)), 201)
    revoked = await ok(await client.post("/api/v1/consents/revoke", json={
        "number": NUMBER, "business": "buyer-1", "consent_type": "express_written", "reason": "asked to stop",
    }), 201)
    assert (revoked["version"], revoked["status"], revoked["active"]) == (2, "revoked", False)
    assert revoked["reason"] == "asked to stop" and revoked["granted_at"] == created["granted_at"]
    assert len(changes) == 3

    history = await ok(await client.get("/api/v1/consents", params={"number": "+1 212 555 0100"}))
    assert history["number"] == NUMBER
    assert [(i["consent_type"], i["version"], i["status"]) for i in history["items"]] == [
        ("express_written", 2, "revoked"),
        ("prior_express", 1, "granted"),
        ("express_written", 1, "granted"),
    ]
    assert history["items"][1]["proof_hash"] == proof_hash_of("call 7")
    assert (await ok(await client.get("/api/v1/consents", params={"number": "+13105550100"})))["items"] == []

    regranted = await ok(await client.post("/api/v1/consents", json=consent()), 201)
    assert regranted["version"] == 3 and regranted["active"]


async def test_revoke_unknown_is_404(client: Client, changes: list[int]) -> None:
    body = await problem(await client.post("/api/v1/consents/revoke", json={
        "number": NUMBER, "business": "buyer-1", "consent_type": "express_written"}), 404)
    assert NUMBER in body["detail"]
    assert changes == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (consent(number="not a number"), "number"),
        (consent(number=None), "number"),
        (consent(consent_type="implied"), "consent_type"),
        (consent(channel="pigeon"), "channel"),
        (consent(proof_hash="abc"), "proof_hash"),
        (consent(proof_hash=None), "proof_hash"),
        (consent(proof="something else"), "proof_hash"),
        (consent(granted_at="yesterday"), "granted_at"),
        (consent(granted_at="2026-06-01T12:00:00"), "granted_at"),  # naive
        (consent(expires_at="2026-05-01T00:00:00Z"), "expires_at"),  # before granted_at
        (consent(business=""), "business"),
        (consent(source=""), "source"),
        (consent(extra=1), "extra"),
    ],
)
async def test_grant_bad_input_is_422(client: Client, body: dict[str, Any], field: str) -> None:
    problem_body = await problem(await client.post("/api/v1/consents", json=body), 422)
    assert field in [p["name"] for p in problem_body["invalid_params"]]


async def test_bad_queries(client: Client) -> None:
    assert (await problem(await client.get("/api/v1/consents"), 422))["invalid_params"][0]["name"] == "number"
    bad = await problem(await client.get("/api/v1/consents", params={"number": "xyz"}), 422)
    assert bad["invalid_params"][0]["name"] == "number"
    await problem(await client.post("/api/v1/consents", data="{not json"), 400)
    await problem(await client.post("/api/v1/consents", json=[1]), 422)
    bad = await problem(await client.post("/api/v1/compliance/outbound-check", json={
        "number": NUMBER, "business": "b", "consent_type": "express_written", "at": "2026-07-01T10:00:00"}), 422)
    assert bad["invalid_params"][0]["name"] == "at"
    bad = await problem(await client.post("/api/v1/consents/revoke", json={
        "number": NUMBER, "business": "b", "consent_type": "nope"}), 422)
    assert bad["invalid_params"][0]["name"] == "consent_type"


async def test_outbound_check(client: Client) -> None:
    check = {"number": NUMBER, "business": "buyer-1", "consent_type": "express_written", "at": DAYTIME}
    answer = await ok(await client.post("/api/v1/compliance/outbound-check", json=check))
    assert answer["action"] == "reject"
    assert [f["code"] for f in answer["findings"]] == ["no_consent"]
    assert answer["local_time"] == "2026-07-01T10:00:00-04:00"
    assert answer["timezone"] == "America/New_York"
    assert answer["states"] == ["NY"]

    await ok(await client.post("/api/v1/consents", json=consent()), 201)
    answer = await ok(await client.post("/api/v1/compliance/outbound-check", json=check))
    assert answer["action"] == "allow" and answer["findings"] == []
    assert answer["consent"]["version"] == 1

    answer = await ok(await client.post("/api/v1/compliance/outbound-check", json={**check, "at": NIGHT}))
    assert answer["action"] == "reject"
    assert [f["code"] for f in answer["findings"]] == ["outside_calling_hours"]
    assert "23:00 EDT" in answer["findings"][0]["detail"]

    wrong_type = await ok(await client.post("/api/v1/compliance/outbound-check",
                                            json={**check, "consent_type": "prior_express"}))
    assert [f["code"] for f in wrong_type["findings"]] == ["no_consent"]

    await ok(await client.post("/api/v1/consents/revoke", json={
        "number": NUMBER, "business": "buyer-1", "consent_type": "express_written"}), 201)
    answer = await ok(await client.post("/api/v1/compliance/outbound-check", json={**check, "at": None}))  # now
    findings = {f["code"]: f["detail"] for f in answer["findings"]}
    assert set(findings) <= {"no_consent", "outside_calling_hours"}  # the hour depends on when the test runs
    assert "revoked" in findings["no_consent"]


async def test_outbound_check_with_configured_hours_and_lists(engine: AsyncEngine, changes: list[int]) -> None:
    miami = "+13053730000"
    hours = CallingHours(time(8), time(21), {"FL": {"start": time(8), "end": time(20)}})

    def lists(number: str) -> list[Finding]:
        return [Finding(Action.FLAG, ReasonCode.DNC_STATE, "state DNC")] if number == miami else []

    app = build(engine, changes, calling_hours=hours, lists=lists)
    async with TestClient(TestServer(app)) as client:
        await ok(await client.post("/api/v1/consents", json=consent(number=miami)), 201)
        check = {"number": miami, "business": "buyer-1", "consent_type": "express_written"}
        answer = await ok(await client.post("/api/v1/compliance/outbound-check",
                                            json={**check, "at": "2026-07-02T00:30:00Z"}))  # 20:30 EDT
        assert answer["action"] == "reject"
        assert [f["code"] for f in answer["findings"]] == ["outside_calling_hours", "dnc_state"]
        answer = await ok(await client.post("/api/v1/compliance/outbound-check",
                                            json={**check, "at": "2026-07-01T23:30:00Z"}))  # 19:30 EDT
        assert answer["action"] == "flag" and [f["code"] for f in answer["findings"]] == ["dnc_state"]


async def test_expired_consent(client: Client) -> None:
    await ok(await client.post("/api/v1/consents", json=consent(expires_at="2026-06-15T00:00:00+02:00")), 201)
    history = await ok(await client.get("/api/v1/consents", params={"number": NUMBER}))
    assert history["items"][0]["expires_at"] == "2026-06-14T22:00:00Z"
    assert history["items"][0]["active"] is False
    answer = await ok(await client.post("/api/v1/compliance/outbound-check", json={
        "number": NUMBER, "business": "buyer-1", "consent_type": "express_written", "at": DAYTIME}))
    assert "expired" in answer["findings"][0]["detail"]


# ------------------------------------------------------------------------------------------------ repository


T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def grant(engine: AsyncEngine, number: str = NUMBER, consent_type: str = "express_written",
                business: str = "buyer-1") -> None:
    await repo.record_consent(engine, number=number, business=business, consent_type=consent_type,
                              channel="web", source="test", proof_hash=PROOF, granted_at=T0, recorded_at=T0)


async def test_repository_book_version_and_erasure(engine: AsyncEngine) -> None:
    versions = [await repo.consents_version(engine)]
    await grant(engine)
    versions.append(await repo.consents_version(engine))
    await grant(engine, consent_type="prior_express")
    await grant(engine, number="+13105550100")
    revoked = await repo.revoke_consent(engine, number=NUMBER, business="buyer-1", consent_type="express_written",
                                        reason="stop", at=T0 + timedelta(hours=1))
    assert revoked is not None and revoked.version == 2 and revoked.status is ConsentStatus.REVOKED
    versions.append(await repo.consents_version(engine))
    assert await repo.revoke_consent(engine, number=NUMBER, business="nobody", consent_type="express_written") is None
    versions.append(await repo.consents_version(engine))
    assert versions[0] < versions[1] < versions[2] == versions[3]  # a 404 revoke writes nothing

    book = await repo.load_consent_book(engine)
    assert len(book) == 3
    latest = book.latest(NUMBER, "buyer-1", "express_written")
    assert latest == revoked
    assert book.active(NUMBER, "buyer-1", "express_written", T0 + timedelta(hours=2)) is None
    assert book.active(NUMBER, "buyer-1", "prior_express", T0 + timedelta(hours=2)) is not None
    assert [r.version for r in await repo.history(engine, NUMBER)] == [2, 1, 1]
    exported = await repo.export_number(engine, NUMBER)
    assert [(e["consent_type"], e["version"], e["status"]) for e in exported] == [
        ("express_written", 1, "granted"), ("prior_express", 1, "granted"), ("express_written", 2, "revoked")]
    assert exported[2]["reason"] == "stop" and exported[0]["granted_at"] == "2026-06-01T12:00:00+00:00"
    json.dumps(exported)

    before = await repo.consents_version(engine)
    assert await repo.erase_number(engine, NUMBER) == 3
    assert await repo.consents_version(engine) > before
    assert await repo.history(engine, NUMBER) == []
    assert await repo.latest_consent(engine, NUMBER, "buyer-1", "express_written") is None
    book = await repo.load_consent_book(engine)
    assert [r.number for r in book] == ["+13105550100"]

    # inside a caller's transaction (erasure across tables commits as one)
    async with engine.begin() as connection:
        assert await repo.erase_number(connection, "+13105550100") == 1
    assert len(await repo.load_consent_book(engine)) == 0


async def test_concurrent_grants_get_distinct_versions(engine: AsyncEngine) -> None:
    await asyncio.gather(*(grant(engine) for _ in range(8)))
    assert sorted(r.version for r in await repo.history(engine, NUMBER)) == list(range(1, 9))
