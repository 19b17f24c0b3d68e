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


def create_engine(url: str | URL, *, connect_timeout_s: float = 5.0, statement_timeout_s: float | None = None,
                  **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url``, tuned per backend, with every wait bounded.

    ``connect_timeout_s`` bounds opening a connection; ``statement_timeout_s`` (None: no limit, for tools such as
    migrations and list imports) bounds every statement: PostgreSQL's ``statement_timeout`` on the server and
    asyncpg's ``command_timeout`` on the client (which also ends a wait on a connection gone silent), SQLite's busy
    timeout. Pooled connections are pre-pinged, so a connection that died while idle is replaced, not used.
    SQLite: WAL journal, ``synchronous=NORMAL`` and foreign keys on; in-memory databases share one connection.
    """
    parsed = async_url(url)
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "sqlite":
        busy_timeout_s = statement_timeout_s if statement_timeout_s is not None else 30.0
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
    if parsed.get_backend_name() == "postgresql":
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("timeout", connect_timeout_s)
        if statement_timeout_s is not None:
            connect_args.setdefault("command_timeout", statement_timeout_s)
            connect_args.setdefault("server_settings", {}).setdefault(
                "statement_timeout", str(int(statement_timeout_s * 1000)))
    return create_async_engine(parsed, **kwargs)


async def check(engine: AsyncEngine, *, timeout_s: float = 2.0) -> None:
    """Run ``SELECT 1``; raise (``TimeoutError`` after ``timeout_s``, or the driver's error) on failure."""
    async with asyncio.timeout(timeout_s), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
