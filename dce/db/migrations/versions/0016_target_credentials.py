"""target credentials: a target's outbound digest credentials (username; the password sealed, or HA1s per algorithm
for one realm) to answer the buyer's 401/407

Revision ID: 0016_target_credentials
Revises: 0015_trunks
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_target_credentials"
down_revision: str | None = "0015_trunks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        batch.add_column(sa.Column("auth_username", sa.String(255), nullable=True))
        batch.add_column(sa.Column("auth_realm", sa.String(255), nullable=True))
        batch.add_column(sa.Column("auth_secret", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("auth_ha1", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        for name in ("auth_ha1", "auth_secret", "auth_realm", "auth_username"):
            batch.drop_column(name)
