"""SQLAlchemy 2 models. Alembic migrations (``dce/db/migrations``) are the only way the schema changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Dialect, Index, Integer, MetaData, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON everywhere, JSONB on PostgreSQL.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonDocument, list[Any]: JsonDocument}


class CallRecordRow(Base):
    """One row per finished call: a stored :class:`dce.billing.cdr.CallDetailRecord`."""

    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    a_leg_call_id: Mapped[str] = mapped_column(String(255))
    b_leg_call_id: Mapped[str | None] = mapped_column(String(255))
    caller: Mapped[str] = mapped_column(String(255))
    called: Mapped[str] = mapped_column(String(64))
    did: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str | None] = mapped_column(String(1024))
    invite_at: Mapped[datetime]
    ring_at: Mapped[datetime | None]
    answer_at: Mapped[datetime | None]
    end_at: Mapped[datetime]
    disposition: Mapped[str] = mapped_column(String(16))
    final_code: Mapped[int] = mapped_column(Integer)
    hangup_side: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[int] = mapped_column(Integer)
    billable_s: Mapped[int] = mapped_column(Integer)
    packets_relayed: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_relayed: Mapped[int] = mapped_column(BigInteger, default=0)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verstat: Mapped[str | None] = mapped_column(String(32))
    dial_at: Mapped[datetime | None]
    # the sale terms (marketplace calls), fixed at call time
    campaign_id: Mapped[str | None] = mapped_column(String(64))
    publisher_id: Mapped[str | None] = mapped_column(String(64))
    buyer_id: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    revenue: Mapped[int | None] = mapped_column(BigInteger)  # micros offered: static revenue or winning bid
    conversion_s: Mapped[int | None] = mapped_column(Integer)
    conversion_from: Mapped[str | None] = mapped_column(String(16))
    payout_fixed: Mapped[int | None] = mapped_column(BigInteger)
    payout_share_bp: Mapped[int | None] = mapped_column(Integer)
    duplicate_days: Mapped[int | None] = mapped_column(Integer)
    duplicate_after: Mapped[str | None] = mapped_column(String(16))
    bid_id: Mapped[str | None] = mapped_column(String(128))
    # written by settlement (billing), never by the call path
    converted: Mapped[bool | None] = mapped_column(Boolean)
    duplicate: Mapped[bool | None] = mapped_column(Boolean)
    settled_revenue: Mapped[int | None] = mapped_column(BigInteger)
    settled_payout: Mapped[int | None] = mapped_column(BigInteger)
    settled_at: Mapped[datetime | None]
    # the inbound trunk the call came in on, by name (None: no trunk matched, or trunks were not in use)
    trunk: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_calls_invite_at", "invite_at"),
        Index("ix_calls_did", "did"),
        Index("ix_calls_disposition", "disposition"),
        Index("ix_calls_campaign_id_invite_at", "campaign_id", "invite_at"),
        Index("ix_calls_publisher_id_invite_at", "publisher_id", "invite_at"),
        Index("ix_calls_buyer_id_invite_at", "buyer_id", "invite_at"),
        Index("ix_calls_target_id_invite_at", "target_id", "invite_at"),
        Index("ix_calls_caller_campaign_id", "caller", "campaign_id"),
        Index("ix_calls_settled_at", "settled_at"),
        Index("ix_calls_trunk_invite_at", "trunk", "invite_at"),
    )


# The marketplace tables live in their own module; importing it here registers them on Base.metadata.
from dce.db import agent_models as agent_models  # noqa: E402
from dce.db import audit_models as audit_models  # noqa: E402
from dce.db import auth_models as auth_models  # noqa: E402
from dce.db import bid_models as bid_models  # noqa: E402
from dce.db import consent_models as consent_models  # noqa: E402
from dce.db import dead_letter_models as dead_letter_models  # noqa: E402
from dce.db import ledger_models as ledger_models  # noqa: E402
from dce.db import list_models as list_models  # noqa: E402
from dce.db import marketplace_models as marketplace_models  # noqa: E402
from dce.db import postback_models as postback_models  # noqa: E402
from dce.db import trunk_models as trunk_models  # noqa: E402
