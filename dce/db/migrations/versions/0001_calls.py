"""calls: one row per finished call (CDR)

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("a_leg_call_id", sa.String(255), nullable=False),
        sa.Column("b_leg_call_id", sa.String(255), nullable=True),
        sa.Column("caller", sa.String(255), nullable=False),
        sa.Column("called", sa.String(64), nullable=False),
        sa.Column("did", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(1024), nullable=True),
        sa.Column("invite_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ring_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("final_code", sa.Integer(), nullable=False),
        sa.Column("hangup_side", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("billable_s", sa.Integer(), nullable=False),
        sa.Column("packets_relayed", sa.BigInteger(), nullable=False),
        sa.Column("bytes_relayed", sa.BigInteger(), nullable=False),
        sa.Column("extra", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_calls")),
    )
    op.create_index("ix_calls_invite_at", "calls", ["invite_at"])
    op.create_index("ix_calls_did", "calls", ["did"])
    op.create_index("ix_calls_disposition", "calls", ["disposition"])


def downgrade() -> None:
    op.drop_index("ix_calls_disposition", table_name="calls")
    op.drop_index("ix_calls_did", table_name="calls")
    op.drop_index("ix_calls_invite_at", table_name="calls")
    op.drop_table("calls")
