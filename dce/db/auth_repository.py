"""Reading and writing the side API's users and API keys (:mod:`dce.db.auth_models`).

Plain records in, plain records out; hashing and key generation live in :mod:`dce.http_api.auth`. Creating a
user or key whose tenant is not a known buyer/publisher raises :class:`UnknownTenant`; a taken username
:class:`Taken`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.db.auth_models import AuthApiKeyRow, AuthUserRow
from dce.db.marketplace_models import BuyerRow, PublisherRow
from dce.db.queries import exists, find, page, record, table_of, values

users = table_of(AuthUserRow)
api_keys = table_of(AuthApiKeyRow)
_buyers = table_of(BuyerRow)
_publishers = table_of(PublisherRow)


class AuthStoreError(Exception):
    """Base of the errors below."""


class Taken(AuthStoreError):
    """The username (or key id) exists already."""


class UnknownTenant(AuthStoreError):
    """``buyer_id`` / ``publisher_id`` names no buyer / publisher."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"unknown {field.removesuffix('_id')}: {value!r}")
        self.field = field
        self.value = value


@dataclass(frozen=True, slots=True)
class UserRecord:
    username: str
    password_hash: str
    role: str
    buyer_id: str | None
    publisher_id: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Everything but the hash."""
        return values(self, omit=("password_hash",), created_at=self.created_at.isoformat(),
                      updated_at=self.updated_at.isoformat())


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    prefix: str
    secret_hash: str
    name: str | None
    role: str
    buyer_id: str | None
    publisher_id: str | None
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        """Everything but the secret's hash."""
        return values(
            self,
            omit=("secret_hash",),
            created_at=self.created_at.isoformat(),
            last_used_at=self.last_used_at.isoformat() if self.last_used_at else None,
            revoked_at=self.revoked_at.isoformat() if self.revoked_at else None,
            revoked=self.revoked,
        )


async def _check_tenant(connection: AsyncConnection, buyer_id: str | None, publisher_id: str | None) -> None:
    for field, value, table in (("buyer_id", buyer_id, _buyers), ("publisher_id", publisher_id, _publishers)):
        if value is None:
            continue
        if not await exists(connection, table.c.id, value):
            raise UnknownTenant(field, value)


async def create_user(engine: AsyncEngine, user: UserRecord) -> UserRecord:
    """Store a new user; :class:`Taken` when the username exists, :class:`UnknownTenant` for a bad tenant."""
    async with engine.begin() as connection:
        await _check_tenant(connection, user.buyer_id, user.publisher_id)
        if await exists(connection, users.c.username, user.username):
            raise Taken(f"username {user.username!r} is taken")
        try:
            await connection.execute(insert(users).values(values(user)))
        except IntegrityError:  # a concurrent create of the same name
            raise Taken(f"username {user.username!r} is taken") from None
    return user


async def get_user(engine: AsyncEngine, username: str) -> UserRecord | None:
    row = await find(engine, users.c.username, username)
    return None if row is None else record(UserRecord, row)


async def set_password_hash(engine: AsyncEngine, username: str, password_hash: str, at: datetime) -> None:
    """Replace a user's hash (rehash on login after the hasher's parameters changed)."""
    async with engine.begin() as connection:
        await connection.execute(
            update(users).where(users.c.username == username).values(password_hash=password_hash, updated_at=at)
        )


async def create_api_key(engine: AsyncEngine, key: ApiKeyRecord) -> ApiKeyRecord:
    """Store a new key; :class:`UnknownTenant` for a bad tenant."""
    async with engine.begin() as connection:
        await _check_tenant(connection, key.buyer_id, key.publisher_id)
        try:
            await connection.execute(insert(api_keys).values(values(key)))
        except IntegrityError:
            raise Taken(f"api key id {key.id!r} exists") from None
    return key


async def get_api_key(engine: AsyncEngine, key_id: str) -> ApiKeyRecord | None:
    row = await find(engine, api_keys.c.id, key_id)
    return None if row is None else record(ApiKeyRecord, row)


async def revoke_api_key(engine: AsyncEngine, key_id: str, at: datetime) -> bool:
    """Mark the key revoked (a revoked key stays revoked at its first time); False when there is no such key."""
    async with engine.begin() as connection:
        if not await exists(connection, api_keys.c.id, key_id):
            return False
        await connection.execute(
            update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=at)
        )
    return True


async def touch_api_key(engine: AsyncEngine, key_id: str, at: datetime) -> None:
    """Record a use of the key."""
    async with engine.begin() as connection:
        await connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))


@dataclass(frozen=True, slots=True)
class Filter:
    """Which users or keys a listing holds: by role and tenant; keys also by revoked or not (None: all)."""

    role: str | None = None
    buyer_id: str | None = None
    publisher_id: str | None = None
    revoked: bool | None = None

    def where(self, table: Table) -> list[Any]:
        clauses = [table.c[name] == value for name in ("role", "buyer_id", "publisher_id")
                   if (value := getattr(self, name)) is not None]
        if self.revoked is not None and "revoked_at" in table.c:
            clauses.append(table.c.revoked_at.is_not(None) if self.revoked else table.c.revoked_at.is_(None))
        return clauses


async def list_users(engine: AsyncEngine, which: Filter, limit: int, offset: int) -> tuple[list[UserRecord], int]:
    """A page of users by username, and how many match."""
    rows, total = await page(engine, users, where=which.where(users), order_by=[users.c.username], limit=limit,
                             offset=offset)
    return [record(UserRecord, row) for row in rows], total


async def update_user(engine: AsyncEngine, username: str, at: datetime, *, enabled: bool | None = None,
                      password_hash: str | None = None) -> UserRecord | None:
    """Enable/disable a user or replace its password hash; the updated user, None when there is no such user."""
    changes: dict[str, Any] = {"updated_at": at}
    if enabled is not None:
        changes["enabled"] = enabled
    if password_hash is not None:
        changes["password_hash"] = password_hash
    async with engine.begin() as connection:
        changed = await connection.execute(update(users).where(users.c.username == username).values(**changes))
        if changed.rowcount == 0:
            return None
        row = (await connection.execute(select(users).where(users.c.username == username))).one()
    return record(UserRecord, row)


async def list_api_keys(engine: AsyncEngine, which: Filter, limit: int,
                        offset: int) -> tuple[list[ApiKeyRecord], int]:
    """A page of API keys, newest first, and how many match."""
    order = (api_keys.c.created_at.desc(), api_keys.c.id)
    rows, total = await page(engine, api_keys, where=which.where(api_keys), order_by=order, limit=limit,
                             offset=offset)
    return [record(ApiKeyRecord, row) for row in rows], total
