"""Tables of the marketplace: publishers, buyers, campaigns, targets and tracking numbers.

Rows mirror the value objects of :mod:`dce.routing.model` (money is BigInteger micro-units). Join tables keep the
campaign's ordered lists: ``campaign_publishers`` (allowed publishers with their payout rule) and
``campaign_targets`` (a target may serve several campaigns). ``marketplace_version`` holds one row whose counter
every write bumps in its own transaction, so a watcher can tell cheaply whether to reload.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base

ID = String(64)


class PublisherRow(Base):
    __tablename__ = "publishers"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean)


class BuyerRow(Base):
    __tablename__ = "buyers"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    credit_limit: Mapped[int | None] = mapped_column(BigInteger)  # micros it may owe; NULL: not funds-checked
    enabled: Mapped[bool] = mapped_column(Boolean)


class CampaignRow(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    vertical: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(32))
    # the payout rule for publisher "*" (any publisher without a rule of its own)
    default_payout_fixed: Mapped[int | None] = mapped_column(BigInteger)
    default_payout_revenue_share_bp: Mapped[int | None] = mapped_column(Integer)
    duplicate_rule: Mapped[dict[str, Any] | None]
    ping_timeout_ms: Mapped[int] = mapped_column(Integer)
    reserve: Mapped[int] = mapped_column(BigInteger)
    allow_caller_id: Mapped[bool] = mapped_column(Boolean)
    key: Mapped[str | None] = mapped_column(String(128), unique=True)
    unmatched_caller: Mapped[str] = mapped_column(String(16), server_default="route")
    live_auction: Mapped[bool] = mapped_column(Boolean, server_default=false())
    auction_window_ms: Mapped[int] = mapped_column(Integer, server_default="1000")
    stir_min_attestation: Mapped[str | None] = mapped_column(String(1))
    stir_action: Mapped[str] = mapped_column(String(16), server_default="reject")
    stir_unsigned: Mapped[str] = mapped_column(String(16), server_default="allow")
    conversion_from: Mapped[str] = mapped_column(String(16), server_default="answer")
    max_call_duration_s: Mapped[int | None] = mapped_column(Integer)  # NULL: routing.max_call_duration_s
    enabled: Mapped[bool] = mapped_column(Boolean)


class CampaignPublisherRow(Base):
    """A publisher allowed to send calls to a campaign, and what it earns there (no rule: the campaign's "*")."""

    __tablename__ = "campaign_publishers"

    campaign_id: Mapped[str] = mapped_column(ID, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    publisher_id: Mapped[str] = mapped_column(ID, ForeignKey("publishers.id", ondelete="RESTRICT"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    payout_fixed: Mapped[int | None] = mapped_column(BigInteger)
    payout_revenue_share_bp: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_campaign_publishers_publisher_id", "publisher_id"),)


class TargetRow(Base):
    __tablename__ = "targets"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    buyer_id: Mapped[str] = mapped_column(ID, ForeignKey("buyers.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(255))
    destination: Mapped[str] = mapped_column(String(1024))
    revenue: Mapped[int] = mapped_column(BigInteger)
    conversion_duration_s: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer)
    ring_timeout_s: Mapped[float] = mapped_column(Float)
    cap_concurrency: Mapped[int | None] = mapped_column(Integer)
    cap_hourly: Mapped[int | None] = mapped_column(Integer)
    cap_daily: Mapped[int | None] = mapped_column(Integer)
    cap_monthly: Mapped[int | None] = mapped_column(Integer)
    cap_counts: Mapped[str] = mapped_column(String(16))
    hours: Mapped[list[Any]]  # [{"weekday": 0, "start": "09:00:00", "end": "17:00:00"}]
    criteria: Mapped[list[Any]]  # [{"field": "state", "op": "in", "values": [...], "negate": false}]
    skills: Mapped[list[Any]]  # ["spanish", ...]
    cost: Mapped[int] = mapped_column(BigInteger)
    bid_url: Mapped[str | None] = mapped_column(String(2048))
    enabled: Mapped[bool] = mapped_column(Boolean)
    # outbound digest credentials (migration 0016): the password sealed (Fernet), or HA1s for auth_realm
    auth_username: Mapped[str | None] = mapped_column(String(255))
    auth_realm: Mapped[str | None] = mapped_column(String(255))
    auth_secret: Mapped[str | None] = mapped_column(String(1024))
    auth_ha1: Mapped[str | None] = mapped_column(String(512))  # "MD5:<hex> SHA-256:<hex>"

    __table_args__ = (Index("ix_targets_buyer_id", "buyer_id"),)


class CampaignTargetRow(Base):
    """A target serving a campaign, in the campaign's order."""

    __tablename__ = "campaign_targets"

    campaign_id: Mapped[str] = mapped_column(ID, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    target_id: Mapped[str] = mapped_column(ID, ForeignKey("targets.id", ondelete="RESTRICT"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_campaign_targets_target_id", "target_id"),)


class TrackingNumberRow(Base):
    __tablename__ = "tracking_numbers"

    did: Mapped[str] = mapped_column(String(32), primary_key=True)  # E.164
    campaign_id: Mapped[str] = mapped_column(ID, ForeignKey("campaigns.id", ondelete="RESTRICT"))
    publisher_id: Mapped[str] = mapped_column(ID, ForeignKey("publishers.id", ondelete="RESTRICT"))

    __table_args__ = (
        Index("ix_tracking_numbers_campaign_id", "campaign_id"),
        Index("ix_tracking_numbers_publisher_id", "publisher_id"),
    )


class MarketplaceVersionRow(Base):
    """One row (id 1): bumped by every marketplace write, in the write's transaction."""

    __tablename__ = "marketplace_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
