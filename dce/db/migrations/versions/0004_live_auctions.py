"""live auctions and caller-ID matching on campaigns; the bidding buyer on each logged bid

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("unmatched_caller", sa.String(16), nullable=False, server_default="route"))
        batch.add_column(sa.Column("live_auction", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("auction_window_ms", sa.Integer(), nullable=False, server_default="1000"))
    op.add_column("bids", sa.Column("buyer_id", sa.String(64), nullable=True))
    op.create_index("ix_bids_buyer_id", "bids", ["buyer_id"])


def downgrade() -> None:
    op.drop_index("ix_bids_buyer_id", table_name="bids")
    with op.batch_alter_table("bids") as batch:
        batch.drop_column("buyer_id")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("auction_window_ms")
        batch.drop_column("live_auction")
        batch.drop_column("unmatched_caller")
