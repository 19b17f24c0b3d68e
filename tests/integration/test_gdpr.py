"""GDPR and the audit log against a real database (SQLite; PostgreSQL with DCE_TEST_DATABASE_URL):
erasure leaves the number nowhere, export returns it, retention pseudonymises only old callers, and the
hash-chained audit log verifies, detects tampering and never forks under concurrent appends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import JSON, String, Text, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.billing.cdr import CallDetailRecord
from dce.compliance.audit import GENESIS_HASH
from dce.db.audit_repository import append, list_entries, verify
from dce.db.cdr_repository import get_cdr, insert_cdrs
from dce.db.engine import create_engine
from dce.db.gdpr import (
    ERASED,
    erase_number,
    export_number,
    number_subject,
    pseudonym,
    pseudonymise_old_calls,
)
from dce.db.models import Base
from dce.exchange.cli import main
from dce.http_api.gdpr import ERASERS, EXPORTERS, PSEUDONYM_KEY, gdpr_routes
from dce.http_api.keys import ENGINE
from dce.http_api.problems import problem_middleware
from tests.cdr_factory import T0, make_cdr
from tests.databases import run_coroutine

pytestmark = pytest.mark.integration

NUMBER = "+13125550199"  # make_cdr's caller
DIGITS = "3125550199"
OTHER = "+14155550123"
KEY = b"test-pseudonym-key"


def cdr(n: int, **changes: Any) -> CallDetailRecord:
    return dataclasses.replace(make_cdr(n), **changes)


def sample_cdrs() -> list[CallDetailRecord]:
    """Calls holding NUMBER in every place a number can hide, and calls of OTHER that must stay."""
    return [
        cdr(1),
        cdr(2),
        cdr(3, caller=OTHER),
        cdr(4, caller=OTHER, called=NUMBER, did=NUMBER),  # a callback to the number
        cdr(5, caller=OTHER, destination=f"sip:{NUMBER}@gw.example;user=phone"),
        cdr(6, caller=OTHER, extra={"ani": NUMBER, "list": [DIGITS, "x"], "n": {"deep": "1" + DIGITS}}),
        cdr(7, caller=OTHER, extra={f"from:{NUMBER}": "seen"}),
        cdr(8, caller=OTHER, reason=f"blocked: {NUMBER} on DNC"),
    ]


async def holders(engine: AsyncEngine, needle: str) -> list[tuple[str, str]]:
    """(table, column) of every text/JSON column of every table that holds ``needle`` anywhere."""
    found: list[tuple[str, str]] = []
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if not isinstance(column.type, (String, Text, JSON)):
                    continue
                query = select(func.count()).select_from(table).where(cast(column, Text).contains(needle))
                if (await connection.execute(query)).scalar_one():
                    found.append((table.name, column.name))
    return found


# --- erasure --------------------------------------------------------------------------------------------------


async def test_erase_number_leaves_it_in_no_table(engine: AsyncEngine) -> None:
    await insert_cdrs(engine, sample_cdrs())
    assert ("calls", "caller") in await holders(engine, DIGITS)

    report = await erase_number(engine, NUMBER, actor="test", key=KEY)

    assert report.counts == {"calls": 7}  # all but call 3
    assert report.total == 7
    assert await holders(engine, DIGITS) == []
    assert await holders(engine, "4155550123")  # the other caller is untouched
    first = await get_cdr(engine, "call-00001")
    assert first is not None and first.caller == ERASED and first.did == "+12125550100"
    callback = await get_cdr(engine, "call-00004")
    assert callback is not None and (callback.caller, callback.called, callback.did) == (OTHER, ERASED, ERASED)
    extra = await get_cdr(engine, "call-00006")
    assert extra is not None and extra.extra == {"ani": ERASED, "list": [ERASED, "x"], "n": {"deep": ERASED}}
    dest = await get_cdr(engine, "call-00005")
    assert dest is not None and dest.destination == f"sip:{ERASED}@gw.example;user=phone"

    entries, total = await list_entries(engine)
    assert total == 1
    (entry,) = entries
    assert (entry.seq, entry.action, entry.actor, entry.subject) == (1, "gdpr.erase", "test", report.subject)
    assert entry.subject == number_subject(NUMBER, KEY) and entry.subject.startswith("hmac-sha256:")
    assert entry.details == {"counts": {"calls": 7}, "total": 7}
    assert entry.prev_hash == GENESIS_HASH
    assert (await verify(engine)).ok

    again = await erase_number(engine, NUMBER, actor="test", key=KEY)
    assert again.counts == {"calls": 0} and again.audit_seq == 2


async def test_erasure_runs_the_registry_in_one_transaction(engine: AsyncEngine) -> None:
    await insert_cdrs(engine, sample_cdrs())
    seen: list[str] = []

    async def other_table(connection: AsyncConnection, number: str) -> int:
        assert connection.in_transaction()
        seen.append(number)
        return 3

    report = await erase_number(engine, NUMBER, {"lists": other_table})
    assert report.counts == {"calls": 7, "lists": 3}
    assert seen == [NUMBER]
    assert report.subject == number_subject(NUMBER)  # no key: plain sha256
    with pytest.raises(ValueError, match="calls"):
        await erase_number(engine, NUMBER, {"calls": other_table})


async def test_a_failing_eraser_rolls_everything_back(engine: AsyncEngine) -> None:
    await insert_cdrs(engine, sample_cdrs())

    async def broken(connection: AsyncConnection, number: str) -> int:
        raise RuntimeError("lists are down")

    with pytest.raises(RuntimeError):
        await erase_number(engine, NUMBER, {"lists": broken})
    assert ("calls", "caller") in await holders(engine, DIGITS)
    assert (await list_entries(engine))[1] == 0


# --- export ---------------------------------------------------------------------------------------------------


async def test_export_returns_every_row_holding_the_number(engine: AsyncEngine) -> None:
    await insert_cdrs(engine, [*sample_cdrs(), cdr(9, caller=OTHER, extra={"id": "x" + DIGITS[:7]})])

    async def consents(connection: AsyncConnection, number: str) -> list[Any]:
        return [{"number": number, "type": "express"}]

    document = await export_number(engine, NUMBER, {"consents": consents}, actor="test", key=KEY)
    json.dumps(document)  # JSON-able as is
    assert document["number"] == NUMBER
    assert [row["call_id"] for row in document["data"]["calls"]] == [f"call-0000{n}" for n in (1, 2, 4, 5, 6, 7, 8)]
    assert document["data"]["calls"][0]["caller"] == NUMBER
    assert document["data"]["calls"][0]["invite_at"] == "2025-03-01T12:00:01.000000Z"
    assert document["data"]["consents"] == [{"number": NUMBER, "type": "express"}]
    entries, _ = await list_entries(engine)
    assert entries[0].action == "gdpr.export" and entries[0].seq == document["audit_seq"]
    assert entries[0].details == {"counts": {"calls": 7, "consents": 1}}
    assert DIGITS not in json.dumps(entries[0].to_json())

    empty = await export_number(engine, "+16175550000")
    assert empty["data"] == {"calls": []}


# --- retention ------------------------------------------------------------------------------------------------


async def test_retention_pseudonymises_only_old_callers_and_is_idempotent(engine: AsyncEngine) -> None:
    recent = datetime.now(UTC) - timedelta(days=1)
    old = [cdr(n, caller=NUMBER if n % 2 else OTHER) for n in range(1, 12)]
    old.append(cdr(12, caller="anonymous"))
    new = [dataclasses.replace(make_cdr(100 + n, start=recent), caller=NUMBER) for n in range(3)]
    await insert_cdrs(engine, [*old, *new])
    cutoff = datetime.now(UTC) - timedelta(days=30)

    changed = await pseudonymise_old_calls(engine, cutoff, KEY, batch_size=3, actor="test")

    assert changed == 11
    async with engine.connect() as connection:
        rows = dict((await connection.execute(text("SELECT call_id, caller FROM calls"))).all())
    assert {rows[f"call-{n:05d}"] for n in range(1, 12, 2)} == {pseudonym(NUMBER, KEY)}
    assert {rows[f"call-{n:05d}"] for n in range(2, 12, 2)} == {pseudonym(OTHER, KEY)}
    assert pseudonym(NUMBER, KEY) != pseudonym(OTHER, KEY) != pseudonym(OTHER, b"another key")
    assert rows["call-00012"] == "anonymous"
    assert {rows[f"call-{100 + n:05d}"] for n in range(3)} == {NUMBER}
    assert await pseudonymise_old_calls(engine, cutoff, KEY, batch_size=3) == 0

    entries, total = await list_entries(engine)
    assert total == 2
    assert [entry.details["pseudonymised"] for entry in entries] == [0, 11]
    assert entries[1].details["older_than"].endswith("Z") and entries[1].action == "gdpr.retention"
    assert (await verify(engine)).ok
    with pytest.raises(ValueError):
        await pseudonymise_old_calls(engine, cutoff.replace(tzinfo=None), KEY)


# --- the audit chain ------------------------------------------------------------------------------------------


async def test_tampering_with_a_row_is_found_at_its_seq(engine: AsyncEngine) -> None:
    for n in range(5):
        await append(engine, "test", "lists.add", f"list:dnc:{n}", {"n": n, "when": T0})
    assert await verify(engine) == type(await verify(engine))(ok=True, checked=5)

    async with engine.begin() as connection:
        await connection.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    result = await verify(engine)
    assert (result.ok, result.checked, result.first_bad_seq) == (False, 2, 3)
    assert result.detail is not None and "hash" in result.detail


async def test_tampering_with_details_or_deleting_a_row_is_found(engine: AsyncEngine) -> None:
    for n in range(4):
        await append(engine, "test", "consent.revoke", None, {"n": n})
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE audit_log SET details = :d WHERE seq = 2"), {"d": '{"n": 7}'})
    assert (await verify(engine)).first_bad_seq == 2
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    result = await verify(engine)
    assert result.first_bad_seq == 3 and result.detail is not None and "seq" in result.detail


async def test_concurrent_appends_keep_one_chain(engine: AsyncEngine, migrated_database_url: str) -> None:
    second = create_engine(migrated_database_url)  # a second pool, as another process would have
    try:
        await asyncio.gather(
            *(append(engine if n % 2 else second, "test", "concurrent", None, {"n": n}) for n in range(50))
        )
    finally:
        await second.dispose()
    result = await verify(engine)
    assert (result.ok, result.checked) == (True, 50)
    entries, total = await list_entries(engine, limit=100)
    assert total == 50
    assert sorted(entry.details["n"] for entry in entries) == list(range(50))
    assert [entry.seq for entry in entries] == list(range(50, 0, -1))


async def test_append_inside_a_transaction_rolls_back_with_it(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as connection:
            await append(connection, "test", "x")
            raise RuntimeError("abort")
    assert (await list_entries(engine))[1] == 0
    async with engine.connect() as connection:
        entry = await append(connection, "test", "y")  # a connection outside a transaction commits itself
    assert entry.seq == 1 and (await list_entries(engine))[1] == 1
    with pytest.raises(TypeError):
        await append(engine, "test", "z", None, {"ratio": 0.5})


# --- the CLI --------------------------------------------------------------------------------------------------


def test_cli_verify_erase_export_retention(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = ["--database-url", migrated_database_url]
    run_coroutine(_insert(migrated_database_url, sample_cdrs()))
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")

    assert main(["audit", "verify", *url]) == 0
    assert "ok: 0 entries" in capsys.readouterr().out

    out = tmp_path / "export.json"
    assert main(["gdpr", "export", "(312) 555-0199", "--out", str(out), *url]) == 0
    document = json.loads(out.read_text())
    assert document["number"] == NUMBER and len(document["data"]["calls"]) == 7

    monkeypatch.setattr("builtins.input", lambda _prompt: "n")
    assert main(["gdpr", "erase", NUMBER, *url]) == 1
    assert "not erased" in capsys.readouterr().out
    assert main(["gdpr", "erase", NUMBER, "--yes", "--key-file", str(key_file), *url]) == 0
    assert "calls=7" in capsys.readouterr().out
    assert main(["gdpr", "erase", "not-a-number", "--yes", *url]) == 2

    assert main(["gdpr", "retention", "--days", "30", *url]) == 2  # no key configured
    assert main(["gdpr", "retention", "--days", "30", "--key-file", str(key_file), *url]) == 0
    assert "pseudonymised 6 callers" in capsys.readouterr().out  # calls 3-8 (OTHER); 1-2 were erased

    assert main(["audit", "verify", *url]) == 0
    assert "ok: 3 entries" in capsys.readouterr().out
    run_coroutine(_tamper(migrated_database_url, 2))
    assert main(["audit", "verify", *url]) == 1
    assert "seq 2" in capsys.readouterr().out


def test_cli_on_an_unmigrated_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"]) == 2
    assert "dce migrate" in capsys.readouterr().err


async def _insert(url: str, cdrs: list[CallDetailRecord]) -> None:
    engine = create_engine(url)
    try:
        await insert_cdrs(engine, cdrs)
    finally:
        await engine.dispose()


async def _tamper(url: str, seq: int) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE audit_log SET action = 'edited' WHERE seq = :s"), {"s": seq})
    finally:
        await engine.dispose()


# --- HTTP -----------------------------------------------------------------------------------------------------


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[TestClient[Any, Any]]:
    async def lists(connection: AsyncConnection, number: str) -> int:
        return 1

    async def list_export(connection: AsyncConnection, number: str) -> list[Any]:
        return [{"list": "dnc", "number": number}]

    app = web.Application(middlewares=[problem_middleware])
    app[ENGINE] = engine
    app[ERASERS] = {"lists": lists}
    app[EXPORTERS] = {"lists": list_export}
    app[PSEUDONYM_KEY] = KEY
    api = web.Application()
    api.add_routes(gdpr_routes())
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_http_erase_export_and_audit(client: TestClient[Any, Any], engine: AsyncEngine) -> None:
    await insert_cdrs(engine, sample_cdrs())

    response = await client.get("/api/v1/gdpr/export/+13125550199")
    assert response.status == 200
    body = await response.json()
    assert len(body["data"]["calls"]) == 7 and body["data"]["lists"] == [{"list": "dnc", "number": NUMBER}]

    response = await client.post("/api/v1/gdpr/erasures", json={"number": "312-555-0199"})
    assert response.status == 200
    report = await response.json()
    assert report["counts"] == {"calls": 7, "lists": 1} and report["total"] == 8
    assert report["subject"] == number_subject(NUMBER, KEY) and report["audit_seq"] == 2
    assert await holders(engine, DIGITS) == []

    response = await client.get("/api/v1/audit", params={"limit": "1"})
    page = await response.json()
    assert page["total"] == 2 and page["limit"] == 1
    assert [item["action"] for item in page["items"]] == ["gdpr.erase"]
    assert page["items"][0]["at"].endswith("Z")

    response = await client.get("/api/v1/audit/verify")
    assert await response.json() == {"ok": True, "checked": 2, "first_bad_seq": None, "detail": None}
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE audit_log SET subject = NULL WHERE seq = 1"))
    verdict = await (await client.get("/api/v1/audit/verify")).json()
    assert (verdict["ok"], verdict["first_bad_seq"]) == (False, 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"number": "banana"}, "number"), ({"number": 3125550199}, "number"), ({}, "number"), ({"number": "12"}, "number"),
     ([1], "body"), ({"number": "+1312555\u00000199"}, "number")],
)
async def test_http_erasure_refuses_bad_input(client: TestClient[Any, Any], body: Any, field: str) -> None:
    response = await client.post("/api/v1/gdpr/erasures", json=body)
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json(content_type=None)
    assert problem["invalid_params"][0]["name"] == field


async def test_http_bad_requests(client: TestClient[Any, Any]) -> None:
    response = await client.post("/api/v1/gdpr/erasures", data=b"{not json")
    assert response.status == 400
    response = await client.get("/api/v1/gdpr/export/banana")
    assert response.status == 422
    assert (await response.json(content_type=None))["invalid_params"][0]["name"] == "number"
    response = await client.get("/api/v1/audit", params={"limit": "0"})
    assert response.status == 422
