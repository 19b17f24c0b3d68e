"""postback configurations and their deliveries (pending ones survive a restart)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "postback_configs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postback_configs")),
    )
    op.create_index("ix_postback_configs_owner_kind_owner_id", "postback_configs", ["owner_kind", "owner_id"])
    version = op.create_table(
        "postback_configs_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postback_configs_version")),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    op.create_table(
        "postback_deliveries",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("config_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postback_deliveries")),
    )
    op.create_index(
        "ix_postback_deliveries_status_next_attempt_at", "postback_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_postback_deliveries_call_id", "postback_deliveries", ["call_id"])
    op.create_index("ix_postback_deliveries_config_id_status", "postback_deliveries", ["config_id", "status"])
    op.create_index("ix_postback_deliveries_created_at", "postback_deliveries", ["created_at"])
    op.create_table(
        "postback_attempts",
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("elapsed_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", "attempt", name=op.f("pk_postback_attempts")),
    )


def downgrade() -> None:
    op.drop_table("postback_attempts")
    op.drop_table("postback_deliveries")
    op.drop_table("postback_configs_version")
    op.drop_table("postback_configs")
