"""Number lists through the repository, the HTTP API and the CLI (SQLite; PostgreSQL with DCE_TEST_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.compliance.lists import ListKind
from dce.compliance.verdict import ReasonCode
from dce.db import list_repository as repo
from dce.exchange.cli import main as dce_main
from dce.http_api.changes import CHANGES, Changes
from dce.http_api.keys import ENGINE
from dce.http_api.lists import list_routes
from dce.http_api.problems import problem_middleware

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[tuple[Client, list[int]]]:
    changes: list[int] = []
    api = web.Application(middlewares=[problem_middleware])
    api[ENGINE] = engine
    api[CHANGES] = Changes(lists=lambda: changes.append(1))
    api.add_routes(list_routes())
    app = web.Application()
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as c:
        yield c, changes


async def test_repository_round_trip_with_chunks_adds_and_erasure(engine: AsyncEngine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repo, "CHUNK", 100)  # many chunks from a few numbers
    v0 = await repo.lists_version(engine)
    info = await repo.create_list(engine, ListKind.DNC_NATIONAL, name="federal")
    numbers = np.arange(12125550000, 12125551000, 3, dtype=np.int64)
    summary = await repo.import_numbers(engine, info.id, numbers)
    assert (summary.imported, summary.duplicates, summary.total) == (334, 0, 334)
    again = await repo.import_numbers(engine, info.id, [12125550000, 13105550100])
    assert (again.received, again.imported, again.duplicates, again.total) == (2, 1, 1, 335)
    added = await repo.add_numbers(engine, info.id, [14155550100, 12125550003, 14155550100])
    assert (added.added, added.duplicates, added.total) == (1, 2, 336)
    assert await repo.remove_number(engine, info.id, 12125550300)  # in a chunk
    assert await repo.remove_number(engine, info.id, 14155550100)  # in the adds
    assert not await repo.remove_number(engine, info.id, 14155550100)
    sup = await repo.create_list(engine, "suppression", "buyer-1")
    await repo.add_numbers(engine, sup.id, [12125550003])
    assert await repo.lists_version(engine) > v0

    book = await repo.load_book(engine)
    assert book.version == await repo.lists_version(engine)
    assert book.contains(ListKind.DNC_NATIONAL, "+12125550003")
    assert not book.contains(ListKind.DNC_NATIONAL, "+12125550300")
    findings, suppressed = book.screen("+12125550003", "+18005550100", None)
    assert [f.code for f in findings] == [ReasonCode.DNC_NATIONAL] and suppressed == {"buyer-1"}
    assert len(book.get(info.id).numbers) == (await repo.get_list(engine, info.id)).count == 334

    assert await repo.erase_number(engine, "+12125550003") == 2
    assert await repo.lists_holding(engine, "+12125550003") == []
    assert 12125550003 not in (await repo.list_numbers(engine, info.id)).tolist()
    async with engine.begin() as connection:  # inside a caller's transaction
        assert await repo.erase_number(connection, "+12125550006") == 1
    book = await repo.load_book(engine)
    assert book.hits("+12125550003") == [] and book.hits("+12125550006") == []
    assert [i.id for i in await repo.lists_holding(engine, 12125550009)] == [info.id]

    replaced = await repo.import_numbers(engine, info.id, [13105550100, 16465550100], replace=True)
    assert (replaced.imported, replaced.duplicates, replaced.removed, replaced.total) == (1, 1, 331, 2)
    await repo.delete_list(engine, info.id)
    with pytest.raises(repo.ListNotFound):
        await repo.get_list(engine, info.id)
    assert [i.id for i in await repo.list_lists(engine)] == [sup.id]


async def test_api_lists_numbers_import_and_check(client: tuple[Client, list[int]]) -> None:
    c, changes = client
    r = await c.post("/api/v1/lists", json={"kind": "dnc_state", "scope": "ca", "name": "California", "id": "ca"})
    assert r.status == 201, await r.text()
    assert (await r.json())["scope"] == "CA"
    r = await c.post("/api/v1/lists", json={"kind": "dnc_state"})
    assert r.status == 422
    assert (await r.json())["invalid_params"][0]["name"] == "scope"
    r = await c.post("/api/v1/lists", json={"kind": "nope"})
    assert r.status == 422 and r.content_type == "application/problem+json"
    assert (await c.post("/api/v1/lists", json={"kind": "litigator", "id": "ca"})).status == 409

    r = await c.post("/api/v1/lists/ca/numbers", json={"numbers": ["+12125550100", "(310) 555-0100", "junk", 5,
                                                                   "2125550100"]})
    body = await r.json()
    assert r.status == 200, body
    assert (body["added"], body["duplicates"], body["total"]) == (2, 1, 2)
    assert [i["index"] for i in body["invalid"]] == [2, 3]
    assert (await c.post("/api/v1/lists/ca/numbers", json={"numbers": "x"})).status == 422
    assert (await c.post("/api/v1/lists/nope/numbers", json={"numbers": ["2125550100"]})).status == 404

    csv_body = "phone,name\n4155550100,a\nbad,b\n4155550100,c\n+12125550100,d\n"
    r = await c.post("/api/v1/lists/ca/import", data=csv_body, headers={"Content-Type": "text/csv"})
    body = await r.json()
    assert r.status == 200, body
    assert (body["imported"], body["duplicates_in_file"], body["duplicates_on_list"]) == (1, 1, 1)
    assert body["invalid"] == [{"line": 3, "text": "bad", "reason": "no digits"}]
    assert body["total"] == 3 and body["header"] == "phone,name"

    r = await c.get("/api/v1/lists/check/%2B14155550100")
    assert (await r.json())["hits"] == [{"kind": "dnc_state", "scope": "CA", "list_id": "ca"}]
    r = await c.get("/api/v1/lists/check/junk")
    assert r.status == 422

    assert (await c.delete("/api/v1/lists/ca/numbers/+14155550100")).status == 204
    assert (await c.delete("/api/v1/lists/ca/numbers/+14155550100")).status == 404
    assert (await (await c.get("/api/v1/lists/check/4155550100")).json())["hits"] == []
    r = await c.get("/api/v1/lists?kind=dnc_state")
    assert [i["count"] for i in (await r.json())["items"]] == [2]
    assert (await (await c.get("/api/v1/lists/ca")).json())["count"] == 2
    assert (await c.delete("/api/v1/lists/ca")).status == 204
    assert (await c.get("/api/v1/lists/ca")).status == 404
    assert len(changes) == 5  # create, add, import, remove, delete


def test_cli_import_reports_bad_lines_and_duplicates(migrated_database_url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    good = [f"+1212555{i:04d}" for i in range(30)]
    lines = [*good[:10], "not a number", "", good[0], *(f"bad{i}" for i in range(22)), *good[10:], "2125550001"]
    path = tmp_path / "dnc.txt"
    path.write_text("\n".join(lines) + "\n")
    args = ["lists", "import", str(path), "--kind", "litigator", "--name", "lit", "--no-progress",
            "--database-url", migrated_database_url]
    assert dce_main(args) == 0
    out = capsys.readouterr().out
    assert "imported:            30" in out
    assert "duplicates in file:  2" in out
    assert "blank lines:         1 (lines 12)" in out
    assert "invalid lines:       23" in out
    assert "line 11: no digits: 'not a number'" in out
    report = tmp_path / "dnc.txt.invalid.txt"
    assert len(report.read_text().splitlines()) == 1 + 23
    assert "... 3 more" in out

    assert dce_main(args) == 0  # the same list again: everything is already there
    out = capsys.readouterr().out
    assert "imported:            0" in out and "already on the list: 30" in out
    assert dce_main(["lists", "ls", "--database-url", migrated_database_url]) == 0
    listing = capsys.readouterr().out
    assert "litigator" in listing and " 30 " in listing
    assert dce_main(["lists", "create", "--kind", "dnc_state", "--database-url", migrated_database_url]) == 2
