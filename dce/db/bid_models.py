"""The bids table: every bid of every auction (won, lost or rejected, and why)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base


class BidRow(Base):
    __tablename__ = "bids"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime]
    call_id: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(64))
    buyer_id: Mapped[str | None] = mapped_column(String(64))
    bid_id: Mapped[str | None] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(BigInteger)  # micro-units
    outcome: Mapped[str] = mapped_column(String(16))
    reject_reason: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_bids_at", "at"),
        Index("ix_bids_call_id", "call_id"),
        Index("ix_bids_target_id", "target_id"),
        Index("ix_bids_buyer_id", "buyer_id"),
    )
