"""Targets' outbound credentials over the marketplace API: the password is write-only, stored sealed (or as HA1s
for a realm), kept across updates that do not change it, and loaded into routing for the dial."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.marketplace_repository import load_marketplace
from dce.http_api.app import build_app
from dce.http_api.marketplace import TARGET_CREDENTIALS
from dce.http_api.metrics import ExchangeMetrics
from dce.sip.digest import ha1
from dce.sip.secret_box import SecretBox
from tests.integration.test_marketplace_api import ok, problem

pytestmark = pytest.mark.integration
BOX = SecretBox.from_secret("credentials key for the tests, long enough")
TARGET = {"id": "t1", "buyer_id": "b1", "name": "Acme", "destination": "sip:acme@buyer.test"}


async def _client(engine: AsyncEngine, box: SecretBox | None) -> TestClient[Any, Any]:
    state = {TARGET_CREDENTIALS: box} if box is not None else {}
    return TestClient(TestServer(build_app(engine=engine, metrics=ExchangeMetrics(), state=state)))


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[TestClient[Any, Any]]:
    async with await _client(engine, BOX) as client:
        await ok(await client.post("/api/v1/buyers", json={"id": "b1", "name": "Buyer"}), 201)
        yield client


async def _row(engine: AsyncEngine) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(
            "SELECT auth_username, auth_realm, auth_secret, auth_ha1 FROM targets WHERE id = 't1'"))).one()


async def test_a_password_is_write_only_and_stored_sealed(client: TestClient[Any, Any], engine: AsyncEngine) -> None:
    body = await ok(await client.post("/api/v1/targets", json={
        **TARGET, "auth": {"username": "acct", "password": "s3cret pass"}}), 201)
    assert body["auth"] == {"username": "acct", "realm": None, "password_set": True}
    assert "s3cret" not in str(await ok(await client.get("/api/v1/targets/t1")))
    row = await _row(engine)
    assert row.auth_username == "acct" and "s3cret" not in row.auth_secret and row.auth_ha1 is None
    assert BOX.open(row.auth_secret) == "s3cret pass"

    # PATCH without a password keeps the sealed one; loading gives routing the seal, never the plain text
    await ok(await client.patch("/api/v1/targets/t1", json={"name": "Renamed"}))
    assert (await _row(engine)).auth_secret == row.auth_secret
    [target] = (await load_marketplace(engine)).targets
    assert target.auth is not None and target.auth.sealed_password == row.auth_secret
    assert target.auth.password is None

    # a new username needs the password again; removing the credentials clears every column
    await problem(await client.patch("/api/v1/targets/t1", json={"auth": {"username": "other"}}), 422)
    await ok(await client.patch("/api/v1/targets/t1", json={"auth": None}))
    assert tuple(await _row(engine)) == (None, None, None, None)


async def test_with_a_realm_the_password_is_stored_as_ha1(client: TestClient[Any, Any], engine: AsyncEngine) -> None:
    body = await ok(await client.post("/api/v1/targets", json={
        **TARGET, "auth": {"username": "acct", "password": "pw", "realm": "buyer.test"}}), 201)
    assert body["auth"] == {"username": "acct", "realm": "buyer.test", "password_set": True}
    row = await _row(engine)
    assert row.auth_secret is None
    assert row.auth_ha1 == (f"SHA-256:{ha1('acct', 'buyer.test', 'pw', 'SHA-256')} "
                            f"MD5:{ha1('acct', 'buyer.test', 'pw', 'MD5')}")
    [target] = (await load_marketplace(engine)).targets
    assert target.auth is not None and dict(target.auth.ha1)["MD5"] == ha1("acct", "buyer.test", "pw", "MD5")


async def test_bad_credentials_input_is_a_clear_422(client: TestClient[Any, Any]) -> None:
    await problem(await client.post("/api/v1/targets", json={**TARGET, "auth": {"username": "acct"}}), 422)
    await problem(await client.post("/api/v1/targets", json={
        **TARGET, "auth": {"username": "ac\r\nct", "password": "pw"}}), 422)
    await problem(await client.post("/api/v1/targets", json={**TARGET, "auth": {"password": "pw"}}), 422)


async def test_without_a_key_a_password_is_refused_but_ha1_is_stored(engine: AsyncEngine) -> None:
    async with await _client(engine, None) as client:
        await ok(await client.post("/api/v1/buyers", json={"id": "b1", "name": "Buyer"}), 201)
        body = await problem(await client.post("/api/v1/targets", json={
            **TARGET, "auth": {"username": "acct", "password": "pw"}}), 422)
        assert "target_credentials_key" in body["detail"]
        await ok(await client.post("/api/v1/targets", json={
            **TARGET, "auth": {"username": "acct", "password": "pw", "realm": "buyer.test"}}), 201)
