"""Shared fixtures: throwaway databases (SQLite by default, PostgreSQL when DCE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.engine import create_engine
from dce.db.migrate import upgrade
from tests.databases import postgres_database, postgres_server_url, sqlite_url


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: a SQLite file in tmp_path, or — when DCE_TEST_DATABASE_URL is set — a
    uniquely named PostgreSQL database on that server, dropped afterwards. An async SQLAlchemy URL."""
    server = postgres_server_url()
    if server is None:
        yield sqlite_url(tmp_path)
        return
    with postgres_database(server) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_template() -> Iterator[str | None]:
    """PostgreSQL only (else None): the name of one database per session migrated to head, for
    :func:`migrated_database_url` to copy; dropped at the end."""
    server = postgres_server_url()
    if server is None:
        yield None
        return
    with postgres_database(server) as url:
        upgrade(url)
        yield make_url(url).database


@pytest.fixture
def migrated_database_url(request: pytest.FixtureRequest, migrated_template: str | None) -> Iterator[str]:
    """A database of its own with the Alembic migrations applied (head): on PostgreSQL a copy of
    :func:`migrated_template` (``CREATE DATABASE ... TEMPLATE``, milliseconds where a migration takes a second or two
    on a loaded CI machine). A test that also asks for :func:`database_url` gets that same database, migrated."""
    server = postgres_server_url()
    if server is None or migrated_template is None or "database_url" in request.fixturenames:
        url = request.getfixturevalue("database_url")
        upgrade(url)
        yield url
        return
    with postgres_database(server, template=migrated_template) as url:
        yield url


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on :func:`migrated_database_url`, disposed afterwards."""
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()
