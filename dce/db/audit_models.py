"""The audit_log table: an append-only, hash-chained record of GDPR and compliance actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base


class AuditLogRow(Base):
    """One entry; ``hash`` chains it to the entry before (see :mod:`dce.compliance.audit`).

    ``seq`` is assigned by :func:`dce.db.audit_repository.append` under a lock (gapless, 1-based); the primary key
    also makes a forked chain (two entries with the same ``seq``) impossible to store. ``subject`` never holds a
    raw phone number: erasure and export entries store a hash of it.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_action", "action"),
        Index("ix_audit_log_subject", "subject"),
    )
