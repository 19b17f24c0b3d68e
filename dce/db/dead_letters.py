"""Records the database refused, set aside with the error so they never block the others (the dead-letter table).

A row keeps the record as ASCII JSON text (:mod:`dce.db.record_codec`), not JSONB: the record may hold exactly the
text the database refused, and ASCII JSON with escapes is storable whatever it holds. An operator reads them
(``SELECT * FROM dead_letters``), fixes the cause and replays them by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.storable import storable
from dce.db.dead_letter_models import DeadLetterRow

ERROR_LIMIT = 4096


dead_letters = cast(Table, DeadLetterRow.__table__)


def error_text(exc: BaseException) -> str:
    """The error as stored: its type and message, storable and bounded."""
    message = str(exc)
    return storable(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, ERROR_LIMIT)


async def insert_dead_letter(engine: AsyncEngine, *, kind: str, key: str, payload: str, error: str) -> None:
    """Store one dead letter (``payload`` must be ASCII JSON, ``error`` from :func:`error_text`)."""
    row: dict[str, Any] = {"kind": kind, "record_key": storable(key, 255), "error": error, "payload": payload,
                           "created_at": datetime.now(UTC)}
    async with engine.begin() as connection:
        await connection.execute(dead_letters.insert(), [row])


async def list_dead_letters(engine: AsyncEngine, kind: str | None = None) -> list[dict[str, Any]]:
    """Every dead letter (of ``kind``), oldest first."""
    query = select(dead_letters).order_by(dead_letters.c.id)
    if kind is not None:
        query = query.where(dead_letters.c.kind == kind)
    async with engine.connect() as connection:
        return [dict(row) for row in (await connection.execute(query)).mappings()]


async def count_dead_letters(engine: AsyncEngine) -> int:
    """How many dead letters are stored."""
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(dead_letters))).scalar_one())
