"""Tables of the side API's principals: users (who log in with a password) and API keys (machines).

Neither stores a secret: users keep an argon2 hash of their password, keys a SHA-256 hex digest of their random
secret (the secret is shown once, when the key is made). A principal belongs to at most one tenant: ``buyer_id``
or ``publisher_id`` (admins to none). Tenants are not foreign keys, so deleting a buyer or publisher is never
blocked by a login; such a principal simply sees nothing of theirs any more.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base

TENANT_ID = String(64)  # as marketplace ids
ONE_TENANT = "buyer_id IS NULL OR publisher_id IS NULL"


class AuthUserRow(Base):
    __tablename__ = "auth_users"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    buyer_id: Mapped[str | None] = mapped_column(TENANT_ID)
    publisher_id: Mapped[str | None] = mapped_column(TENANT_ID)
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (CheckConstraint(ONE_TENANT, name="one_tenant"),)


class AuthApiKeyRow(Base):
    """A machine's key ``dce_<id>_<secret>``: ``prefix`` (``dce_<id>``) is what lists show."""

    __tablename__ = "auth_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(48))
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the secret
    name: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    buyer_id: Mapped[str | None] = mapped_column(TENANT_ID)
    publisher_id: Mapped[str | None] = mapped_column(TENANT_ID)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (CheckConstraint(ONE_TENANT, name="one_tenant"),)
