"""agents: buyers' call-centre agents (SIP username, HA1s, limits) and their ring groups

Revision ID: 0017_agents
Revises: 0016_target_credentials
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_agents"
down_revision: str | None = "0016_target_credentials"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("realm", sa.String(128), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("ha1_md5", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["buyer_id"], ["buyers.id"], name=op.f("fk_agents_buyer_id_buyers"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("username", name=op.f("uq_agents_username")),
    )
    op.create_index("ix_agents_buyer_id", "agents", ["buyer_id"])
    op.create_table(
        "agent_groups",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["buyer_id"], ["buyers.id"], name=op.f("fk_agent_groups_buyer_id_buyers"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_groups")),
    )
    op.create_index("ix_agent_groups_buyer_id", "agent_groups", ["buyer_id"])
    op.create_table(
        "agent_group_members",
        sa.Column("group_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["agent_groups.id"],
                                name=op.f("fk_agent_group_members_group_id_agent_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_agent_group_members_agent_id_agents"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "agent_id", name=op.f("pk_agent_group_members")),
    )
    op.create_index("ix_agent_group_members_agent_id", "agent_group_members", ["agent_id"])
    version = op.create_table(
        "agents_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_version")),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("agents_version")
    op.drop_index("ix_agent_group_members_agent_id", table_name="agent_group_members")
    op.drop_table("agent_group_members")
    op.drop_index("ix_agent_groups_buyer_id", table_name="agent_groups")
    op.drop_table("agent_groups")
    op.drop_index("ix_agents_buyer_id", table_name="agents")
    op.drop_table("agents")
