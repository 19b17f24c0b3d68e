"""number lists (DNC, litigators, suppression, blocked): list metadata and their numbers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "number_lists",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_number_lists")),
    )
    op.create_index("ix_number_lists_kind_scope", "number_lists", ["kind", "scope"])
    op.create_table(
        "number_list_chunks",
        sa.Column("list_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("first_number", sa.BigInteger(), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["number_lists.id"], name=op.f("fk_number_list_chunks_list_id_number_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", "seq", name=op.f("pk_number_list_chunks")),
    )
    op.create_index("ix_number_list_chunks_last_number", "number_list_chunks", ["last_number"])
    op.create_table(
        "number_list_adds",
        sa.Column("list_id", sa.String(64), nullable=False),
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["number_lists.id"], name=op.f("fk_number_list_adds_list_id_number_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", "number", name=op.f("pk_number_list_adds")),
    )
    op.create_index("ix_number_list_adds_number", "number_list_adds", ["number"])
    version = op.create_table(
        "number_lists_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_number_lists_version")),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("number_lists_version")
    op.drop_index("ix_number_list_adds_number", table_name="number_list_adds")
    op.drop_table("number_list_adds")
    op.drop_index("ix_number_list_chunks_last_number", table_name="number_list_chunks")
    op.drop_table("number_list_chunks")
    op.drop_index("ix_number_lists_kind_scope", table_name="number_lists")
    op.drop_table("number_lists")
