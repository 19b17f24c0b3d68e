"""sale terms and settlement on calls; buyers' credit limits; campaigns' conversion timing

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TERMS = (
    ("dial_at", sa.DateTime(timezone=True)),
    ("campaign_id", sa.String(64)),
    ("publisher_id", sa.String(64)),
    ("buyer_id", sa.String(64)),
    ("target_id", sa.String(64)),
    ("revenue", sa.BigInteger()),
    ("conversion_s", sa.Integer()),
    ("conversion_from", sa.String(16)),
    ("payout_fixed", sa.BigInteger()),
    ("payout_share_bp", sa.Integer()),
    ("duplicate_days", sa.Integer()),
    ("duplicate_after", sa.String(16)),
    ("bid_id", sa.String(128)),
    ("converted", sa.Boolean()),
    ("duplicate", sa.Boolean()),
    ("settled_revenue", sa.BigInteger()),
    ("settled_payout", sa.BigInteger()),
    ("settled_at", sa.DateTime(timezone=True)),
)
_INDEXES = (
    ("ix_calls_campaign_id_invite_at", ["campaign_id", "invite_at"]),
    ("ix_calls_publisher_id_invite_at", ["publisher_id", "invite_at"]),
    ("ix_calls_buyer_id_invite_at", ["buyer_id", "invite_at"]),
    ("ix_calls_target_id_invite_at", ["target_id", "invite_at"]),
    ("ix_calls_caller_campaign_id", ["caller", "campaign_id"]),
    ("ix_calls_settled_at", ["settled_at"]),
)


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for name, type_ in _TERMS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    for name, columns in _INDEXES:
        op.create_index(name, "calls", columns)
    with op.batch_alter_table("buyers") as batch:
        batch.add_column(sa.Column("credit_limit", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("conversion_from", sa.String(16), nullable=False, server_default="answer"))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("conversion_from")
    with op.batch_alter_table("buyers") as batch:
        batch.drop_column("credit_limit")
    for name, _columns in _INDEXES:
        op.drop_index(name, table_name="calls")
    with op.batch_alter_table("calls") as batch:
        for name, _type in reversed(_TERMS):
            batch.drop_column(name)
