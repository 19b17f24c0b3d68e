"""The dead-letter table: records the writer set aside (see :mod:`dce.db.dead_letters`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base


class DeadLetterRow(Base):
    """One record the writer could not store on its own, with why."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # "cdr", "bid"
    record_key: Mapped[str] = mapped_column(String(255))  # the record's id (call_id, bid log id)
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the record as ASCII JSON
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_dead_letters_kind_record_key", "kind", "record_key"),)
