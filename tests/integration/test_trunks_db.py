"""The trunks table on SQLite and (with DCE_TEST_DATABASE_URL) PostgreSQL: the migration up and down, the
repository, the rules the INVITE path gets, the watcher that keeps them fresh, and the trunk on CDRs and reports."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from dce.db import marketplace_repository as market
from dce.db import trunk_repository as repo
from dce.db.cdr_repository import get_cdr, insert_cdrs, list_cdrs
from dce.db.engine import create_engine
from dce.db.migrate import alembic_config, upgrade_async
from dce.db.models import Base
from dce.db.report_repository import list_calls, summary
from dce.db.trunk_repository import Trunk
from dce.db.trunk_watcher import TrunkWatcher
from dce.http_api.trunks import DEFAULT_REALM, with_password
from dce.routing.model import Publisher
from dce.sip.digest import ha1
from dce.sip.trunk_rule import TrunkRule
from tests.cdr_factory import T0, make_cdr
from tests.databases import postgres_database, postgres_server_url, sqlite_url
from tests.externals import require

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CARRIER = Trunk(id="t1", name="carrier-a", networks=("192.0.2.0/24", "2001:db8::/32"), transport="udp",
                max_cps=12.5, max_concurrent=40)


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


# ----------------------------------------------------------------------------------------------- the migration


async def _migrate(url: str, direction: str, revision: str) -> None:
    config = alembic_config(url)
    engine = create_engine(url, poolclass=NullPool)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def _schema(url: str) -> tuple[set[str], set[str], list[object]]:
    """Tables, the calls table's columns, and how the schema differs from the models."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            def read(sync: Connection) -> tuple[set[str], set[str], list[object]]:
                inspector = inspect(sync)
                diff = compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata)
                return (set(inspector.get_table_names()), {c["name"] for c in inspector.get_columns("calls")}, diff)

            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_migration_up_down_up_keeps_calls(any_database_url: str) -> None:
    await upgrade_async(any_database_url)
    tables, columns, diff = await _schema(any_database_url)
    assert {"trunks", "trunks_version"} <= tables and "trunk" in columns and diff == []
    engine = create_engine(any_database_url)
    try:
        await insert_cdrs(engine, [replace(make_cdr(1), trunk="carrier-a")])
        await repo.create_trunk(engine, CARRIER, now=NOW)
    finally:
        await engine.dispose()

    await _migrate(any_database_url, "downgrade", "0014_call_limits")
    tables, columns, _ = await _schema(any_database_url)
    assert not {"trunks", "trunks_version"} & tables and "trunk" not in columns
    engine = create_engine(any_database_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT call_id FROM calls"))).scalars().all() == ["call-00001"]
    finally:
        await engine.dispose()

    await upgrade_async(any_database_url)
    tables, columns, diff = await _schema(any_database_url)
    assert {"trunks", "trunks_version"} <= tables and "trunk" in columns and diff == []
    engine = create_engine(any_database_url)
    try:
        stored = await get_cdr(engine, "call-00001")
        assert stored is not None and stored.trunk is None  # the column came back empty
        assert await repo.trunks_version(engine) == 0
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------- the repository


async def test_create_get_list_update_delete(engine: AsyncEngine) -> None:
    created = await repo.create_trunk(engine, CARRIER, now=NOW)
    assert created == replace(CARRIER, created_at=NOW, updated_at=NOW)
    assert await repo.get_trunk(engine, "t1") == created
    assert await repo.find_trunk(engine, "carrier-a") == created
    assert await repo.find_trunk(engine, "t1") == created

    second = Trunk(id="t0", name="b-carrier", networks=("198.51.100.7/32",))
    await repo.create_trunk(engine, second, now=NOW)
    items, total = await repo.list_trunks(engine)
    assert total == 2 and [t.name for t in items] == ["b-carrier", "carrier-a"]  # by name
    assert (await repo.list_trunks(engine, limit=1, offset=1))[0][0].name == "carrier-a"

    later = NOW + timedelta(minutes=5)
    changed = replace(CARRIER, networks=("203.0.113.0/24",), max_cps=0.5, enabled=False)
    updated = await repo.update_trunk(engine, changed, now=later)
    assert updated.created_at == NOW and updated.updated_at == later
    assert await repo.get_trunk(engine, "t1") == updated

    await repo.delete_trunk(engine, "t1")
    with pytest.raises(repo.NotFound):
        await repo.get_trunk(engine, "t1")
    with pytest.raises(repo.NotFound):
        await repo.delete_trunk(engine, "t1")
    with pytest.raises(repo.NotFound):
        await repo.update_trunk(engine, CARRIER)
    with pytest.raises(repo.NotFound):
        await repo.find_trunk(engine, "carrier-a")


async def test_taken_id_or_name_is_a_conflict(engine: AsyncEngine) -> None:
    await repo.create_trunk(engine, CARRIER)
    with pytest.raises(repo.Conflict, match="already exists"):
        await repo.create_trunk(engine, replace(CARRIER, name="other"))
    with pytest.raises(repo.Conflict, match="name 'carrier-a' is taken"):
        await repo.create_trunk(engine, replace(CARRIER, id="t2"))
    await repo.create_trunk(engine, replace(CARRIER, id="t2", name="carrier-b"))
    with pytest.raises(repo.Conflict, match="name 'carrier-a' is taken"):
        await repo.update_trunk(engine, replace(CARRIER, id="t2"))


async def test_publisher_is_a_checked_reference(engine: AsyncEngine) -> None:
    with pytest.raises(repo.UnknownReference) as unknown:
        await repo.create_trunk(engine, replace(CARRIER, publisher_id="p1"))
    assert unknown.value.field == "publisher_id"
    await market.create_publisher(engine, Publisher(id="p1", name="Publisher 1"))
    await repo.create_trunk(engine, replace(CARRIER, publisher_id="p1"))
    with pytest.raises(market.Conflict):  # the foreign key holds it
        await market.delete_publisher(engine, "p1")
    await repo.update_trunk(engine, CARRIER)  # no publisher any more
    await market.delete_publisher(engine, "p1")


async def test_every_write_bumps_the_version(engine: AsyncEngine) -> None:
    assert await repo.trunks_version(engine) == 0
    await repo.create_trunk(engine, CARRIER)
    await repo.update_trunk(engine, replace(CARRIER, max_concurrent=1))
    await repo.delete_trunk(engine, CARRIER.id)
    assert await repo.trunks_version(engine) == 3


async def test_rules_are_the_enabled_trunks_with_parsed_networks_and_ha1s(engine: AsyncEngine) -> None:
    secured = with_password(CARRIER, "acme", None, "s3cret-pass")
    await repo.create_trunk(engine, secured)
    await repo.create_trunk(engine, Trunk(id="t2", name="a-off", networks=("10.0.0.0/8",), enabled=False))
    await repo.create_trunk(engine, Trunk(id="t3", name="b-open", networks=("::1/128",)))
    rules = await repo.load_trunk_rules(engine)
    assert [r.name for r in rules] == ["b-open", "carrier-a"]
    rule = rules[1]
    assert rule == TrunkRule(
        name="carrier-a", publisher_id=None,
        networks=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")),
        username="acme", realm=DEFAULT_REALM, ha1_sha256=ha1("acme", "dce", "s3cret-pass", "SHA-256"),
        ha1_md5=ha1("acme", "dce", "s3cret-pass", "MD5"), transport="udp", max_cps=12.5, max_concurrent=40)
    assert rules[0].username is None and rules[0].max_cps == 0 and rules[0].max_concurrent == 0


async def test_the_password_is_not_stored(engine: AsyncEngine) -> None:
    await repo.create_trunk(engine, with_password(CARRIER, "acme", "sip.example.com", "s3cret-pass"))
    async with engine.connect() as connection:
        row = (await connection.execute(text("SELECT * FROM trunks"))).mappings().one()
    assert "s3cret-pass" not in str(dict(row))
    assert row["ha1_sha256"] == ha1("acme", "sip.example.com", "s3cret-pass", "SHA-256")
    assert row["ha1_md5"] == ha1("acme", "sip.example.com", "s3cret-pass", "MD5")


async def test_a_stored_network_that_no_longer_parses_is_left_out(engine: AsyncEngine) -> None:
    await repo.create_trunk(engine, replace(CARRIER, networks=("192.0.2.0/24", "not-a-network")))
    (rule,) = await repo.load_trunk_rules(engine)
    assert rule.networks == (ipaddress.ip_network("192.0.2.0/24"),)


# ------------------------------------------------------------------------------------------------- the watcher


async def test_watcher_delivers_at_start_and_after_changes(engine: AsyncEngine) -> None:
    seen: list[tuple[TrunkRule, ...]] = []
    watcher = TrunkWatcher(engine, seen.append, interval_s=3600)  # only notify() wakes it here
    async with watcher:
        assert seen == [()]
        await repo.create_trunk(engine, CARRIER)
        watcher.notify()
        async with asyncio.timeout(5):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
        assert [r.name for r in seen[-1]] == ["carrier-a"]
        assert await watcher.refresh() is None  # nothing changed since: no reload
        await repo.update_trunk(engine, replace(CARRIER, enabled=False))
        assert await watcher.refresh() == ()
        assert seen[-1] == ()


async def test_watcher_polls_for_writes_made_elsewhere(engine: AsyncEngine) -> None:
    seen: list[tuple[TrunkRule, ...]] = []
    async with TrunkWatcher(engine, seen.append, interval_s=0.05):
        await repo.create_trunk(engine, CARRIER)  # e.g. `dce trunks add`, or another node: nobody notifies
        async with asyncio.timeout(5):
            while not seen[-1]:
                await asyncio.sleep(0.02)
    assert seen[-1][0].name == "carrier-a"


# ---------------------------------------------------------------------------------------- CDRs and reports


async def test_the_trunk_is_on_the_cdr_and_in_reports(engine: AsyncEngine) -> None:
    cdrs = [replace(make_cdr(n), trunk="carrier-a" if n < 3 else "carrier-b" if n < 5 else None) for n in range(6)]
    await insert_cdrs(engine, cdrs)
    assert await get_cdr(engine, "call-00001") == cdrs[1]
    rows, _ = await list_cdrs(engine)
    assert {row["trunk"] for row in rows} == {"carrier-a", "carrier-b", None}

    groups = await summary(engine, since=T0, until=T0 + timedelta(days=1), group_by="trunk")
    assert [(g.key, g.incoming) for g in groups] == [("carrier-a", 3), ("carrier-b", 2), (None, 1), (None, 6)]
    assert groups[-1].is_total
    only_b = await summary(engine, since=T0, until=T0 + timedelta(days=1), group_by="trunk",
                           filters={"trunk": "carrier-b"})
    assert [(g.key, g.incoming) for g in only_b] == [("carrier-b", 2), (None, 2)]
    listed, total = await list_calls(engine, filters={"trunk": "carrier-a"})
    assert total == 3 and {row["trunk"] for row in listed} == {"carrier-a"}
