"""bids: every bid of every auction, with its outcome and reject reason

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bids",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("campaign_id", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("bid_id", sa.String(128), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reject_reason", sa.String(32), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_bids_at", "bids", ["at"])
    op.create_index("ix_bids_call_id", "bids", ["call_id"])
    op.create_index("ix_bids_target_id", "bids", ["target_id"])


def downgrade() -> None:
    op.drop_table("bids")
