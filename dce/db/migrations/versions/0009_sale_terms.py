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


# PostgreSQL guesses one group per row for the reports' hour/day buckets without these (no parallel aggregate).
_STATISTICS = (
    "CREATE STATISTICS st_calls_invite_hour ON (date_trunc('hour', invite_at AT TIME ZONE 'UTC')) FROM calls",
    "CREATE STATISTICS st_calls_invite_day ON (date_trunc('day', invite_at AT TIME ZONE 'UTC')) FROM calls",
)


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for name, type_ in _TERMS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    for name, columns in _INDEXES:
        op.create_index(name, "calls", columns)
    if op.get_bind().dialect.name == "postgresql":
        for statement in _STATISTICS:
            op.execute(statement)
    with op.batch_alter_table("buyers") as batch:
        batch.add_column(sa.Column("credit_limit", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("conversion_from", sa.String(16), nullable=False, server_default="answer"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_calls_invite_hour")
        op.execute("DROP STATISTICS IF EXISTS st_calls_invite_day")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("conversion_from")
    with op.batch_alter_table("buyers") as batch:
        batch.drop_column("credit_limit")
    for name, _columns in _INDEXES:
        op.drop_index(name, table_name="calls")
    with op.batch_alter_table("calls") as batch:
        for name, _type in reversed(_TERMS):
            batch.drop_column(name)
