"""marketplace: publishers, buyers, campaigns, targets, tracking numbers and a change counter

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id(name: str, *args: object, **kwargs: object) -> sa.Column[str]:
    return sa.Column(name, sa.String(64), *args, nullable=False, **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "publishers",
        _id("id"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publishers")),
    )
    op.create_table(
        "buyers",
        _id("id"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buyers")),
    )
    op.create_table(
        "campaigns",
        _id("id"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("vertical", sa.String(255), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("default_payout_fixed", sa.BigInteger(), nullable=True),
        sa.Column("default_payout_revenue_share_bp", sa.Integer(), nullable=True),
        sa.Column("duplicate_rule", _json(), nullable=True),
        sa.Column("ping_timeout_ms", sa.Integer(), nullable=False),
        sa.Column("reserve", sa.BigInteger(), nullable=False),
        sa.Column("allow_caller_id", sa.Boolean(), nullable=False),
        sa.Column("key", sa.String(128), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("key", name=op.f("uq_campaigns_key")),
    )
    op.create_table(
        "campaign_publishers",
        _id("campaign_id"),
        _id("publisher_id"),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("payout_fixed", sa.BigInteger(), nullable=True),
        sa.Column("payout_revenue_share_bp", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_publishers_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["publisher_id"],
            ["publishers.id"],
            name=op.f("fk_campaign_publishers_publisher_id_publishers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "publisher_id", name=op.f("pk_campaign_publishers")),
    )
    op.create_index("ix_campaign_publishers_publisher_id", "campaign_publishers", ["publisher_id"])
    op.create_table(
        "targets",
        _id("id"),
        _id("buyer_id"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("destination", sa.String(1024), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("conversion_duration_s", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("ring_timeout_s", sa.Float(), nullable=False),
        sa.Column("cap_concurrency", sa.Integer(), nullable=True),
        sa.Column("cap_hourly", sa.Integer(), nullable=True),
        sa.Column("cap_daily", sa.Integer(), nullable=True),
        sa.Column("cap_monthly", sa.Integer(), nullable=True),
        sa.Column("cap_counts", sa.String(16), nullable=False),
        sa.Column("hours", _json(), nullable=False),
        sa.Column("criteria", _json(), nullable=False),
        sa.Column("skills", _json(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("bid_url", sa.String(2048), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["buyer_id"], ["buyers.id"], name=op.f("fk_targets_buyer_id_buyers"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_targets")),
    )
    op.create_index("ix_targets_buyer_id", "targets", ["buyer_id"])
    op.create_table(
        "campaign_targets",
        _id("campaign_id"),
        _id("target_id"),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_targets_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["targets.id"], name=op.f("fk_campaign_targets_target_id_targets"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "target_id", name=op.f("pk_campaign_targets")),
    )
    op.create_index("ix_campaign_targets_target_id", "campaign_targets", ["target_id"])
    op.create_table(
        "tracking_numbers",
        sa.Column("did", sa.String(32), nullable=False),
        _id("campaign_id"),
        _id("publisher_id"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_tracking_numbers_campaign_id_campaigns"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["publisher_id"],
            ["publishers.id"],
            name=op.f("fk_tracking_numbers_publisher_id_publishers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("did", name=op.f("pk_tracking_numbers")),
    )
    op.create_index("ix_tracking_numbers_campaign_id", "tracking_numbers", ["campaign_id"])
    op.create_index("ix_tracking_numbers_publisher_id", "tracking_numbers", ["publisher_id"])
    version = op.create_table(
        "marketplace_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_version")),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("marketplace_version")
    op.drop_index("ix_tracking_numbers_publisher_id", table_name="tracking_numbers")
    op.drop_index("ix_tracking_numbers_campaign_id", table_name="tracking_numbers")
    op.drop_table("tracking_numbers")
    op.drop_index("ix_campaign_targets_target_id", table_name="campaign_targets")
    op.drop_table("campaign_targets")
    op.drop_index("ix_targets_buyer_id", table_name="targets")
    op.drop_table("targets")
    op.drop_index("ix_campaign_publishers_publisher_id", table_name="campaign_publishers")
    op.drop_table("campaign_publishers")
    op.drop_table("campaigns")
    op.drop_table("buyers")
    op.drop_table("publishers")
