"""Tables of postbacks: configurations, deliveries (the outbox; pending ones survive a restart) and attempts.

``postback_configs_version`` holds one row whose counter every config write bumps in its own transaction, so a
dispatcher can tell cheaply whether to reload. Deliveries are not foreign-keyed to their config: the log outlives a
deleted config (deleting one fails its pending deliveries).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base

ID = String(64)


class PostbackConfigRow(Base):
    __tablename__ = "postback_configs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(ID)
    events: Mapped[list[Any]]  # event names
    method: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean)
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_postback_configs_owner_kind_owner_id", "owner_kind", "owner_id"),)


class PostbackConfigsVersionRow(Base):
    """One row (id 1): bumped by every postback config write."""

    __tablename__ = "postback_configs_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class PostbackDeliveryRow(Base):
    """One request to make (rendered, unsigned: each attempt is signed when sent) and where it stands."""

    __tablename__ = "postback_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    config_id: Mapped[str] = mapped_column(ID)
    event: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]]
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]  # pending: when it is due (or its claim expires); else NULL
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_postback_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_postback_deliveries_call_id", "call_id"),
        Index("ix_postback_deliveries_config_id_status", "config_id", "status"),
        Index("ix_postback_deliveries_created_at", "created_at"),
    )


class PostbackAttemptRow(Base):
    """One HTTP attempt of a delivery: the response status (or the error) and how long it took."""

    __tablename__ = "postback_attempts"

    delivery_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    elapsed_ms: Mapped[int] = mapped_column(Integer)
