"""trunks: who may send us calls (source networks, digest HA1s, limits), and the trunk a CDR came in on

Revision ID: 0015_trunks
Revises: 0014_call_limits
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015_trunks"
down_revision: str | None = "0014_call_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "trunks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("publisher_id", sa.String(64), nullable=True),
        sa.Column("networks", JSON, nullable=False),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("realm", sa.String(128), nullable=True),
        sa.Column("ha1_sha256", sa.String(64), nullable=True),
        sa.Column("ha1_md5", sa.String(64), nullable=True),
        sa.Column("transport", sa.String(8), nullable=True),
        sa.Column("max_cps", sa.Float(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["publisher_id"], ["publishers.id"], name=op.f("fk_trunks_publisher_id_publishers"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trunks")),
        sa.UniqueConstraint("name", name=op.f("uq_trunks_name")),
    )
    op.create_index("ix_trunks_publisher_id", "trunks", ["publisher_id"])
    version = op.create_table(
        "trunks_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trunks_version")),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("trunk", sa.String(64), nullable=True))
    op.create_index("ix_calls_trunk_invite_at", "calls", ["trunk", "invite_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_trunk_invite_at", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("trunk")
    op.drop_table("trunks_version")
    op.drop_index("ix_trunks_publisher_id", table_name="trunks")
    op.drop_table("trunks")
