"""The database layer on SQLite and (with DCE_TEST_DATABASE_URL) PostgreSQL: migrate, insert, list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord, Disposition
from dce.db.cdr_repository import get_cdr, insert_cdrs, list_cdrs, row_to_cdr
from dce.db.engine import check, create_engine
from dce.db.migrate import upgrade, upgrade_async
from dce.db.models import Base
from tests.cdr_factory import T0, make_cdr
from tests.databases import postgres_database, postgres_server_url, sqlite_url
from tests.externals import require

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend (PostgreSQL needs DCE_TEST_DATABASE_URL)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server = postgres_server_url()
    require(server is not None, "PostgreSQL (set DCE_TEST_DATABASE_URL)")
    assert server is not None
    with postgres_database(server) as url:
        yield url


@pytest.fixture
async def engine(any_database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_async(any_database_url)
    engine = create_engine(any_database_url)
    yield engine
    await engine.dispose()


HEAD = "0017_agents"


async def _schema_state(url: str) -> tuple[str, list[object]]:
    """The database's Alembic revision, and how its schema differs from the models (empty: not at all)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            diff = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    return version, diff


async def test_migrations_match_models(any_database_url: str) -> None:
    await upgrade_async(any_database_url)
    await upgrade_async(any_database_url)  # a second run is a no-op
    version, diff = await _schema_state(any_database_url)
    assert version == HEAD
    assert diff == []


async def _store_and_read(url: str, cdr: CallDetailRecord | None) -> CallDetailRecord | None:
    engine = create_engine(url)
    try:
        if cdr is not None:
            await insert_cdrs(engine, [cdr])
        return await get_cdr(engine, make_cdr(1).call_id)
    finally:
        await engine.dispose()


def test_sync_upgrade(any_database_url: str) -> None:
    """From sync code (no running loop): the database ends at the head revision with the models' schema, and a
    second run changes nothing (the rows stored in between are still there)."""
    upgrade(any_database_url)
    assert asyncio.run(_schema_state(any_database_url)) == (HEAD, [])
    cdr = make_cdr(1)
    assert asyncio.run(_store_and_read(any_database_url, cdr)) == cdr
    upgrade(any_database_url)
    assert asyncio.run(_schema_state(any_database_url)) == (HEAD, [])
    assert asyncio.run(_store_and_read(any_database_url, None)) == cdr


async def test_sync_upgrade_inside_running_loop(any_database_url: str) -> None:
    upgrade(any_database_url)  # runs on a worker thread rather than failing
    engine = create_engine(any_database_url)
    try:
        assert await list_cdrs(engine) == ([], 0)
    finally:
        await engine.dispose()


async def test_check(engine: AsyncEngine, tmp_path: Path) -> None:
    await check(engine)
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        with pytest.raises(Exception, match="unable to open"):
            await check(broken)
    finally:
        await broken.dispose()


async def test_insert_and_read_back(engine: AsyncEngine) -> None:
    cdr = make_cdr(1)
    cdr.extra = {"campaign": "c1", "publisher": "p9"}
    await insert_cdrs(engine, [cdr])
    stored = await get_cdr(engine, cdr.call_id)
    assert stored == cdr
    assert stored is not None and stored.invite_at.tzinfo is not None
    assert await get_cdr(engine, "nope") is None


async def test_list_orders_filters_and_pages(engine: AsyncEngine) -> None:
    answered = [make_cdr(n) for n in range(0, 10)]
    busy = [make_cdr(n, disposition=Disposition.BUSY, did="+13105550111") for n in range(10, 15)]
    await insert_cdrs(engine, answered + busy)

    rows, total = await list_cdrs(engine, limit=4)
    assert total == 15
    assert [row["call_id"] for row in rows] == ["call-00014", "call-00013", "call-00012", "call-00011"]
    first = rows[0]
    assert first["duration_s"] == 3 and first["billable_s"] == 0
    assert first["invite_at"] == T0 + timedelta(seconds=14)
    assert first["invite_at"].tzinfo is not None

    rows, total = await list_cdrs(engine, limit=4, offset=12)
    assert total == 15
    assert [row["call_id"] for row in rows] == ["call-00002", "call-00001", "call-00000"]

    rows, total = await list_cdrs(engine, disposition="answered", limit=100)
    assert total == 10 and {row["disposition"] for row in rows} == {"answered"}
    assert rows[0]["duration_s"] == 70 and rows[0]["billable_s"] == 65
    assert row_to_cdr(rows[-1]) == answered[0]

    rows, total = await list_cdrs(engine, did="+13105550111", disposition="busy")
    assert total == 5 and len(rows) == 5

    rows, total = await list_cdrs(engine, since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=5))
    assert [row["call_id"] for row in rows] == ["call-00004", "call-00003"]


async def test_time_zones_are_normalised_to_utc(engine: AsyncEngine) -> None:
    from datetime import timezone

    cdr = make_cdr(1)
    plus2 = timezone(timedelta(hours=2))
    cdr.invite_at = cdr.invite_at.astimezone(plus2)
    await insert_cdrs(engine, [cdr])
    stored = await get_cdr(engine, cdr.call_id)
    assert stored is not None
    assert stored.invite_at == cdr.invite_at
    assert stored.invite_at.utcoffset() == timedelta(0) and stored.invite_at.tzinfo == UTC


async def test_insert_is_idempotent(engine: AsyncEngine) -> None:
    cdrs = [make_cdr(n) for n in range(5)]
    await insert_cdrs(engine, cdrs)
    await insert_cdrs(engine, cdrs)  # all already stored
    await insert_cdrs(engine, [*cdrs[3:], make_cdr(5), make_cdr(5)])  # some stored, one repeated in the batch
    await insert_cdrs(engine, [])
    rows, total = await list_cdrs(engine, limit=100)
    assert total == 6
    assert sorted(row["call_id"] for row in rows) == [f"call-{n:05d}" for n in range(6)]


async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
    finally:
        await engine.dispose()
    assert mode == "wal"


async def test_fixture_database_is_migrated(migrated_database_url: str) -> None:
    engine = create_engine(migrated_database_url)
    try:
        await insert_cdrs(engine, [make_cdr(1)])
        assert (await list_cdrs(engine))[1] == 1
    finally:
        await engine.dispose()
