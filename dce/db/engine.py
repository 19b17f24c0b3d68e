"""Async engine construction and a liveness check."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str | URL) -> URL:
    """``url`` with an async driver: ``sqlite://`` -> aiosqlite, ``postgresql://`` -> asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    return parsed


def create_engine(url: str | URL, *, busy_timeout_s: float = 30.0, **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url``, tuned per backend.

    SQLite: WAL journal, ``synchronous=NORMAL``, a busy timeout of ``busy_timeout_s`` and foreign keys on;
    in-memory databases share one connection. PostgreSQL: pre-ping pooled connections.
    """
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        kwargs.setdefault("connect_args", {}).setdefault("timeout", busy_timeout_s)
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_async_engine(parsed, **kwargs)
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if not memory:
                    cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, **kwargs)


async def check(engine: AsyncEngine, *, timeout_s: float = 2.0) -> None:
    """Run ``SELECT 1``; raise (``TimeoutError`` after ``timeout_s``, or the driver's error) on failure."""
    async with asyncio.timeout(timeout_s), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
