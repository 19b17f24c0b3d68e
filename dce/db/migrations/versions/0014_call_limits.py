"""call limits: a campaign's maximum call duration (NULL: the exchange's routing.max_call_duration_s)

Revision ID: 0014_call_limits
Revises: 0013_dead_letters
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_call_limits"
down_revision: str | None = "0013_dead_letters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("max_call_duration_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("max_call_duration_s")
