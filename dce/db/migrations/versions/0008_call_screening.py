"""call screening: campaigns' STIR/SHAKEN policy; the verification status on each CDR

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("stir_min_attestation", sa.String(1), nullable=True))
        batch.add_column(sa.Column("stir_action", sa.String(16), nullable=False, server_default="reject"))
        batch.add_column(sa.Column("stir_unsigned", sa.String(16), nullable=False, server_default="allow"))
    op.add_column("calls", sa.Column("verstat", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("verstat")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("stir_unsigned")
        batch.drop_column("stir_action")
        batch.drop_column("stir_min_attestation")
