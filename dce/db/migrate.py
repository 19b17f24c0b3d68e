"""Apply the Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from dce.db.engine import create_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic :class:`Config` pointing at the packaged migrations (and ``url``, if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # attributes, not set_main_option: ConfigParser would choke on '%' in encoded passwords
        config.attributes["url"] = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return config


async def upgrade_async(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``; safe to await inside a running loop."""
    config = alembic_config(url)
    engine = create_engine(url, poolclass=NullPool)

    def _upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` from sync code.

    Called from a thread whose loop is running (a sync helper inside async code), it runs the migration on a
    worker thread and blocks until done; prefer :func:`upgrade_async` there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(upgrade_async(url, revision))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dce-migrate") as pool:
        pool.submit(asyncio.run, upgrade_async(url, revision)).result()
