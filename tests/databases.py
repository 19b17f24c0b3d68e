"""Throwaway test databases: a SQLite file, or a uniquely named PostgreSQL database on a shared server."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL, make_url

POSTGRES_ENV = "DCE_TEST_DATABASE_URL"

T = TypeVar("T")


def postgres_server_url() -> str | None:
    """The PostgreSQL server CI points the tests at (``DCE_TEST_DATABASE_URL``), if any."""
    return os.environ.get(POSTGRES_ENV) or None


def sqlite_url(directory: Path) -> str:
    """A fresh SQLite file URL in ``directory``."""
    return f"sqlite+aiosqlite:///{directory / f'dce-{uuid.uuid4().hex[:8]}.db'}"


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private loop in a helper thread (safe inside any loop)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="dce-test-db")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server: URL, statements: list[str]) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(server), timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _create(server: URL, name: str, template: str | None) -> None:
    statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    for attempt in range(50):  # a template's last session may still be closing on the server: bounded retry
        try:
            await _admin(server, [statement])
            return
        except asyncpg.ObjectInUseError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)


@contextmanager
def postgres_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """Create ``dce_t_<hex>`` on the server of ``server_url`` (a copy of the database ``template`` when given, which
    nobody may be connected to), yield its URL, then drop it."""
    server = make_url(server_url)
    name = f"dce_t_{uuid.uuid4().hex[:12]}"
    run_coroutine(_create(server, name, template))
    try:
        yield server.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    finally:
        run_coroutine(
            _admin(
                server,
                [
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
                    f'DROP DATABASE IF EXISTS "{name}"',
                ],
            )
        )
