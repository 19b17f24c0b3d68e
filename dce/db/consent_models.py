"""The consents table: one append-only row per version of a consent; and the counter pollers watch."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base


class ConsentRow(Base):
    """One version of one consent (:class:`dce.compliance.consent.ConsentRecord`). Never updated; erasure of a
    number deletes all its rows."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32))
    business: Mapped[str] = mapped_column(String(128))
    consent_type: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    proof_hash: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("uq_consents_key_version", "number", "business", "consent_type", "version", unique=True),
    )


class ConsentsVersionRow(Base):
    """One row (id 1): bumped by every consent write and erasure, in the write's transaction."""

    __tablename__ = "consents_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
