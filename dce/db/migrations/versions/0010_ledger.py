"""the double-entry ledger: accounts, journal entries and lines; conversions by webhook

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "journal_entries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal_entries")),
    )
    op.create_index("uq_journal_entries_key", "journal_entries", ["key"], unique=True)
    op.create_table(
        "journal_lines",
        sa.Column("entry_id", _ID, nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name=op.f("fk_journal_lines_entry_id_journal_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", "account", name=op.f("pk_journal_lines")),
    )
    op.create_index("ix_journal_lines_account_entry_id", "journal_lines", ["account", "entry_id"])
    op.create_table(
        "account_balances",
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_account_balances")),
    )
    op.create_table(
        "conversions",
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_conversions")),
    )


def downgrade() -> None:
    op.drop_table("conversions")
    op.drop_table("account_balances")
    op.drop_index("ix_journal_lines_account_entry_id", table_name="journal_lines")
    op.drop_table("journal_lines")
    op.drop_index("uq_journal_entries_key", table_name="journal_entries")
    op.drop_table("journal_entries")
