"""Tables of buyers' call-centre agents and their groups (see :mod:`dce.db.agent_repository`).

An agent belongs to a buyer and registers over SIP with a ``username`` unique on the exchange; its password is kept
only as HA1s for its ``realm`` (SHA-256 and MD5, never the password). A group of a buyer rings its members (agents
of the same buyer, in ``position`` order) by a ring strategy. ``agents_version`` holds one row whose counter every
agent or group write bumps in its own transaction, so a watcher can tell cheaply whether to reload.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base

ID = String(64)  # as marketplace ids
HA1_LENGTH = 64  # hex SHA-256 (MD5's 32 fits)


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    buyer_id: Mapped[str] = mapped_column(ID, ForeignKey("buyers.id", ondelete="RESTRICT"))
    username: Mapped[str] = mapped_column(String(128), unique=True)
    realm: Mapped[str] = mapped_column(String(128))
    ha1_sha256: Mapped[str] = mapped_column(String(HA1_LENGTH))
    ha1_md5: Mapped[str] = mapped_column(String(HA1_LENGTH))
    display_name: Mapped[str | None] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_agents_buyer_id", "buyer_id"),)


class AgentGroupRow(Base):
    __tablename__ = "agent_groups"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    buyer_id: Mapped[str] = mapped_column(ID, ForeignKey("buyers.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(16))  # ring_all | round_robin | longest_idle
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_agent_groups_buyer_id", "buyer_id"),)


class AgentGroupMemberRow(Base):
    """A group's member agents, in ring order (``position``); removing an agent or a group removes its rows."""

    __tablename__ = "agent_group_members"

    group_id: Mapped[str] = mapped_column(ID, ForeignKey("agent_groups.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ID, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_agent_group_members_agent_id", "agent_id"),)


class AgentsVersionRow(Base):
    """One row (id 1): bumped by every agent or group write, in the write's transaction."""

    __tablename__ = "agents_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
