"""side API auth: users (argon2 password hashes) and API keys (sha256 of the secret)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_TENANT = "buyer_id IS NULL OR publisher_id IS NULL"


def upgrade() -> None:
    op.create_table(
        "auth_users",
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=True),
        sa.Column("publisher_id", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_auth_users")),
        sa.CheckConstraint(ONE_TENANT, name=op.f("ck_auth_users_one_tenant")),
    )
    op.create_table(
        "auth_api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("prefix", sa.String(48), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=True),
        sa.Column("publisher_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_api_keys")),
        sa.CheckConstraint(ONE_TENANT, name=op.f("ck_auth_api_keys_one_tenant")),
    )


def downgrade() -> None:
    op.drop_table("auth_api_keys")
    op.drop_table("auth_users")
