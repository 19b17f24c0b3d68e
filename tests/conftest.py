"""Shared fixtures: throwaway databases (SQLite by default, PostgreSQL when DCE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
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


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """:func:`database_url` with the Alembic migrations applied (head)."""
    upgrade(database_url)
    return database_url


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on :func:`migrated_database_url`, disposed afterwards."""
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()
