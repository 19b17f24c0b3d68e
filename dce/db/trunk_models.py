"""Tables of the inbound trunks: who may send the exchange calls (see :mod:`dce.db.trunk_repository`).

A trunk has a unique ``name`` (it is what CDRs, reports and metrics show), the source networks it sends from (a
JSON list of CIDR strings, IPv4 and IPv6), optional digest credentials stored only as HA1 (SHA-256 and MD5, never
the password), an optional transport and its limits (``max_cps``, ``max_concurrent``; 0: unlimited). The publisher
it belongs to, if any, is a foreign key like the marketplace's other publisher references. ``trunks_version`` holds
one row whose counter every trunk write bumps in its own transaction, so a watcher can tell cheaply whether to
reload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base

ID = String(64)  # as marketplace ids
NAME_LENGTH = 64  # the CDR's trunk column holds a name: same length
HA1_LENGTH = 64  # hex SHA-256 (MD5's 32 fits)


class TrunkRow(Base):
    __tablename__ = "trunks"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    publisher_id: Mapped[str | None] = mapped_column(ID, ForeignKey("publishers.id", ondelete="RESTRICT"))
    networks: Mapped[list[Any]]  # ["192.0.2.0/24", "2001:db8::/32"]
    username: Mapped[str | None] = mapped_column(String(128))
    realm: Mapped[str | None] = mapped_column(String(128))
    ha1_sha256: Mapped[str | None] = mapped_column(String(HA1_LENGTH))
    ha1_md5: Mapped[str | None] = mapped_column(String(HA1_LENGTH))
    transport: Mapped[str | None] = mapped_column(String(8))  # udp | tcp | tls; NULL: any
    max_cps: Mapped[float] = mapped_column(Float)  # 0: unlimited
    max_concurrent: Mapped[int] = mapped_column(Integer)  # 0: unlimited
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_trunks_publisher_id", "publisher_id"),)


class TrunksVersionRow(Base):
    """One row (id 1): bumped by every trunk write, in the write's transaction."""

    __tablename__ = "trunks_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
