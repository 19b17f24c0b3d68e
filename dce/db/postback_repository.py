"""Storing postback configs and the delivery outbox.

Configs: :func:`create_config`, :func:`get_config`, :func:`list_configs`, :func:`update_config`,
:func:`delete_config` (its pending deliveries become failed), :func:`load_configs` and :func:`configs_version` (every
write bumps it in its own transaction) for a dispatcher's in-memory copy.

Deliveries: :func:`enqueue` (idempotent on the delivery id, so a batching writer may retry it), :func:`due` (claims
the pending deliveries whose time has come: their ``next_attempt_at`` moves ``lease_s`` ahead, so another dispatcher
sharing the database skips them, and one that died mid-send is retried when the lease runs out; PostgreSQL claims
with ``FOR UPDATE SKIP LOCKED``), :func:`record_attempt` (one attempt's outcome: delivered, retry at, or failed), and
:func:`deliveries` (the log, with every attempt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.postback import EventName, Method, OwnerKind, PostbackConfig
from dce.db.postback_models import PostbackAttemptRow, PostbackConfigRow, PostbackConfigsVersionRow, PostbackDeliveryRow
from dce.db.queries import bump_version, exists, find, insert_new, page, record, table_of, values, version_of

configs_table = table_of(PostbackConfigRow)
version_table = table_of(PostbackConfigsVersionRow)
deliveries_table = table_of(PostbackDeliveryRow)
attempts_table = table_of(PostbackAttemptRow)

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, DELIVERED, FAILED)


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Request:
    """What every view of a delivery holds: its id, why it is sent, and the rendered request."""

    id: str
    config_id: str
    event: str
    call_id: str
    method: str
    url: str
    headers: dict[str, str]
    body: str | None


@dataclass(frozen=True, slots=True)
class NewDelivery(_Request):
    """A rendered request to store as a pending delivery (``id``: 32 characters, unique; made by the emitter)."""

    max_attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None  # default: created_at (due at once)


@dataclass(frozen=True, slots=True)
class DueDelivery(_Request):
    """A claimed delivery, with its config's current secret (None: unsigned; config gone or has none)."""

    attempts: int  # made so far
    max_attempts: int
    secret: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class Delivery(_Request):
    """A delivery as the log shows it."""

    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempt_log: tuple[Attempt, ...] = field(default=())


# ------------------------------------------------------------------------------------------------- configs


def _config_values(config: PostbackConfig) -> dict[str, Any]:
    return values(config, owner_kind=str(config.owner_kind), method=str(config.method),
                  events=sorted(str(e) for e in config.events))


def _config(row: Any) -> PostbackConfig:
    return record(PostbackConfig, row, owner_kind=OwnerKind(row.owner_kind), method=Method(row.method),
                  events=frozenset(EventName(e) for e in row.events))


async def configs_version(engine: AsyncEngine) -> int:
    """A counter every config write moves."""
    return await version_of(engine, version_table)


async def load_configs(engine: AsyncEngine) -> tuple[PostbackConfig, ...]:
    """Every config (enabled or not), ordered by id."""
    async with engine.connect() as connection:
        rows = (await connection.execute(select(configs_table).order_by(configs_table.c.id))).all()
    return tuple(_config(r) for r in rows)


async def create_config(engine: AsyncEngine, config: PostbackConfig, *, now: datetime | None = None) -> PostbackConfig:
    now = now or datetime.now(UTC)
    async with engine.begin() as connection:
        await bump_version(connection, version_table)
        if await exists(connection, configs_table.c.id, config.id):
            raise Conflict(f"postback {config.id!r} exists")
        await connection.execute(insert(configs_table).values(**_config_values(config), created_at=now, updated_at=now))
    return config


async def get_config(engine: AsyncEngine, config_id: str) -> PostbackConfig:
    row = await find(engine, configs_table.c.id, config_id)
    if row is None:
        raise NotFound(f"no postback {config_id!r}")
    return _config(row)


async def list_configs(engine: AsyncEngine, limit: int = 50, offset: int = 0, *, owner_kind: str | None = None,
                       owner_id: str | None = None) -> tuple[list[PostbackConfig], int]:
    """A page of configs ordered by id, and how many there are (optionally of one owner kind / owner)."""
    conditions = []
    if owner_kind is not None:
        conditions.append(configs_table.c.owner_kind == owner_kind)
    if owner_id is not None:
        conditions.append(configs_table.c.owner_id == owner_id)
    rows, total = await page(engine, configs_table, where=conditions, order_by=[configs_table.c.id], limit=limit,
                             offset=offset)
    return [_config(r) for r in rows], total


async def update_config(engine: AsyncEngine, config: PostbackConfig, *, now: datetime | None = None) -> PostbackConfig:
    now = now or datetime.now(UTC)
    values = _config_values(config)
    del values["id"]
    async with engine.begin() as connection:
        await bump_version(connection, version_table)
        result = await connection.execute(
            update(configs_table).where(configs_table.c.id == config.id).values(**values, updated_at=now)
        )
        if result.rowcount == 0:
            raise NotFound(f"no postback {config.id!r}")
    return config


async def delete_config(engine: AsyncEngine, config_id: str, *, now: datetime | None = None) -> None:
    """Delete a config; its pending deliveries become failed ("postback config deleted"). The log stays."""
    now = now or datetime.now(UTC)
    async with engine.begin() as connection:
        await bump_version(connection, version_table)
        result = await connection.execute(delete(configs_table).where(configs_table.c.id == config_id))
        if result.rowcount == 0:
            raise NotFound(f"no postback {config_id!r}")
        await connection.execute(
            update(deliveries_table)
            .where(deliveries_table.c.config_id == config_id, deliveries_table.c.status == PENDING)
            .values(status=FAILED, next_attempt_at=None, last_error="postback config deleted", updated_at=now)
        )


# ---------------------------------------------------------------------------------------------- deliveries


def _delivery_values(d: NewDelivery) -> dict[str, Any]:
    return values(
        d, event=str(d.event), headers=dict(d.headers), next_attempt_at=d.next_attempt_at or d.created_at,
        status=PENDING, attempts=0, last_status_code=None, last_error=None, updated_at=d.created_at, delivered_at=None,
    )


async def enqueue(engine: AsyncEngine, deliveries: Sequence[NewDelivery]) -> None:
    """Store pending deliveries in one transaction. Idempotent: an id already stored is left as it is."""
    if not deliveries:
        return
    async with engine.begin() as connection:
        await insert_new(connection, deliveries_table, [_delivery_values(d) for d in deliveries],
                         deliveries_table.c.id)


async def due(engine: AsyncEngine, now: datetime, limit: int, *, lease_s: float = 60.0) -> list[DueDelivery]:
    """Claim up to ``limit`` pending deliveries due at ``now`` (oldest due first) for ``lease_s`` seconds."""
    if limit <= 0:
        return []
    d, c = deliveries_table, configs_table
    async with engine.begin() as connection:
        query = (
            select(d.c.id)
            .where(d.c.status == PENDING, d.c.next_attempt_at <= now)
            .order_by(d.c.next_attempt_at)
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list((await connection.execute(query)).scalars())
        if not ids:
            return []
        await connection.execute(
            update(d).where(d.c.id.in_(ids)).values(next_attempt_at=now + timedelta(seconds=lease_s))
        )
        rows = (await connection.execute(
            select(d.c.id, d.c.config_id, d.c.event, d.c.call_id, d.c.method, d.c.url, d.c.headers, d.c.body,
                   d.c.attempts, d.c.max_attempts, d.c.next_attempt_at, c.c.secret)
            .select_from(d.outerjoin(c, c.c.id == d.c.config_id))
            .where(d.c.id.in_(ids))
        )).all()
    order = {key: i for i, key in enumerate(ids)}
    found = [record(DueDelivery, r, headers=dict(r.headers or {})) for r in rows]
    found.sort(key=lambda x: order[x.id])
    return found


async def record_attempt(engine: AsyncEngine, delivery_id: str, *, attempt: int, at: datetime,
                         status_code: int | None, error: str | None, elapsed_ms: int, delivered: bool,
                         retry_at: datetime | None) -> None:
    """Store attempt number ``attempt`` of a delivery and its outcome: ``delivered``; or pending again at
    ``retry_at``; or (neither) failed for good. Idempotent on (delivery, attempt)."""
    d, a = deliveries_table, attempts_table
    if delivered:
        outcome: dict[str, Any] = {"status": DELIVERED, "next_attempt_at": None, "delivered_at": at}
    elif retry_at is not None:
        outcome = {"status": PENDING, "next_attempt_at": retry_at}
    else:
        outcome = {"status": FAILED, "next_attempt_at": None}
    async with engine.begin() as connection:
        seen = (await connection.execute(
            select(a.c.attempt).where(a.c.delivery_id == delivery_id, a.c.attempt == attempt)
        )).first()
        if seen is not None:
            return
        await connection.execute(insert(a).values(
            delivery_id=delivery_id, attempt=attempt, at=at, status_code=status_code, error=error,
            elapsed_ms=elapsed_ms,
        ))
        await connection.execute(
            update(d).where(d.c.id == delivery_id, d.c.status == PENDING).values(
                attempts=attempt, last_status_code=status_code, last_error=error, updated_at=at, **outcome
            )
        )


def _delivery(row: Any, log: tuple[Attempt, ...]) -> Delivery:
    return record(Delivery, row, headers=dict(row.headers or {}), attempt_log=log)


async def deliveries(engine: AsyncEngine, *, call_id: str | None = None, status: str | None = None,
                     config_id: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Delivery], int]:
    """A page of the delivery log, newest first, each with its attempts; and the total matching."""
    d, a = deliveries_table, attempts_table
    conditions = []
    if call_id is not None:
        conditions.append(d.c.call_id == call_id)
    if status is not None:
        conditions.append(d.c.status == status)
    if config_id is not None:
        conditions.append(d.c.config_id == config_id)
    async with engine.connect() as connection:
        rows, total = await page(connection, d, where=conditions, order_by=[d.c.created_at.desc(), d.c.id.desc()],
                                 limit=limit, offset=offset)
        logs: dict[str, list[Attempt]] = {}
        if rows:
            for r in (await connection.execute(
                select(a).where(a.c.delivery_id.in_([r.id for r in rows])).order_by(a.c.delivery_id, a.c.attempt)
            )).all():
                logs.setdefault(r.delivery_id, []).append(record(Attempt, r))
    return [_delivery(r, tuple(logs.get(r.id, ()))) for r in rows], total
