"""Storing and reading the inbound trunks (:mod:`dce.db.trunk_models`), and the rules the INVITE path matches.

:class:`Trunk` is a stored trunk as the API and CLI see it; its digest credentials are HA1s only
(SHA-256 per RFC 8760 and MD5, made by :func:`dce.http_api.trunks.with_password`; the password is never kept).
:func:`load_trunk_rules` turns the enabled trunks into :class:`~dce.sip.trunk_rule.TrunkRule` values for the
in-memory copy the INVITE path reads (:class:`dce.db.trunk_watcher.TrunkWatcher`).

Every write runs in one transaction that bumps ``trunks_version`` (:func:`trunks_version` is cheap to poll). Errors
are typed: :class:`NotFound`, :class:`Conflict` (a taken id or name; deleting a publisher still used is refused by
the foreign key) and :class:`UnknownReference` (``publisher_id`` names no publisher).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.db.errors import Conflict, NotFound, RepositoryError, UnknownReference
from dce.db.marketplace_models import PublisherRow
from dce.db.queries import bump_version, exists, find, page, record, table_of, values, version_of
from dce.db.trunk_models import TrunkRow, TrunksVersionRow
from dce.sip.trunk_rule import TrunkRule

log = logging.getLogger(__name__)

trunks = table_of(TrunkRow)
trunks_version_table = table_of(TrunksVersionRow)
_publishers = table_of(PublisherRow)

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


TrunkError = RepositoryError  # a trunk's errors: NotFound, Conflict, UnknownReference


def network(text: str) -> Network:
    """A source network from ``192.0.2.0/24``, ``2001:db8::/32`` or a bare address (a /32 or /128); ValueError
    saying why otherwise (host bits set: the network meant is suggested)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a CIDR string like 192.0.2.0/24 or 2001:db8::/32")
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 network: {exc}") from None
        raise ValueError(f"host bits set: did you mean {loose}?") from None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A stored trunk. ``networks`` are normalised CIDR strings; ``max_cps``/``max_concurrent`` 0: unlimited;
    ``transport`` None: any. ``created_at``/``updated_at`` are set by the repository."""

    id: str
    name: str
    networks: tuple[str, ...]
    publisher_id: str | None = None
    username: str | None = None
    realm: str | None = None
    ha1_sha256: str | None = None
    ha1_md5: str | None = None
    transport: str | None = None
    max_cps: float = 0
    max_concurrent: int = 0
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def has_credentials(self) -> bool:
        return self.username is not None and self.ha1_sha256 is not None

    def without_credentials(self) -> Trunk:
        return replace(self, username=None, realm=None, ha1_sha256=None, ha1_md5=None)

    def rule(self) -> TrunkRule:
        """What the INVITE path matches (a stored network that no longer parses is left out, with a warning)."""
        parsed: list[Network] = []
        for text in self.networks:
            try:
                parsed.append(network(text))
            except ValueError as exc:
                log.warning("trunk %s: ignoring network %r: %s", self.name, text, exc)
        return TrunkRule(name=self.name, publisher_id=self.publisher_id, networks=tuple(parsed),
                         username=self.username, realm=self.realm, ha1_sha256=self.ha1_sha256,
                         ha1_md5=self.ha1_md5, transport=self.transport, max_cps=float(self.max_cps),
                         max_concurrent=int(self.max_concurrent))


# ---------------------------------------------------------------------------------------------------- codecs


def _row(trunk: Trunk) -> dict[str, Any]:
    return values(trunk, omit=("created_at", "updated_at"), networks=list(trunk.networks),
                  max_cps=float(trunk.max_cps))


def _trunk(row: Any) -> Trunk:
    return record(Trunk, row, networks=tuple(row.networks or ()), max_cps=float(row.max_cps))


# ---------------------------------------------------------------------------------------------------- helpers


async def _check(connection: AsyncConnection, trunk: Trunk) -> None:
    if trunk.publisher_id is not None and not await exists(connection, _publishers.c.id, trunk.publisher_id):
        raise UnknownReference("publisher_id", "publisher", trunk.publisher_id)
    taken = (await connection.execute(
        select(trunks.c.id).where(trunks.c.name == trunk.name, trunks.c.id != trunk.id).limit(1))).first()
    if taken is not None:
        raise Conflict(f"trunk name {trunk.name!r} is taken (by trunk {taken.id!r})")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# ---------------------------------------------------------------------------------------------------- writes


async def create_trunk(engine: AsyncEngine, trunk: Trunk, *, now: datetime | None = None) -> Trunk:
    """Store a new trunk; :class:`Conflict` when its id or name is taken."""
    now = _now(now)
    stored = replace(trunk, created_at=now, updated_at=now)
    try:
        async with engine.begin() as connection:
            await bump_version(connection, trunks_version_table)  # first: serialises writers on PostgreSQL
            if await exists(connection, trunks.c.id, trunk.id):
                raise Conflict(f"trunk {trunk.id!r} already exists")
            await _check(connection, trunk)
            await connection.execute(insert(trunks).values(**_row(trunk), created_at=now, updated_at=now))
    except IntegrityError as exc:  # a concurrent create of the same id or name
        raise Conflict(f"trunk {trunk.id!r} ({trunk.name!r}): {exc.orig}") from exc
    return stored


async def update_trunk(engine: AsyncEngine, trunk: Trunk, *, now: datetime | None = None) -> Trunk:
    """Replace the stored trunk ``trunk.id`` (its ``created_at`` stays); :class:`NotFound` if there is none."""
    now = _now(now)
    row = _row(trunk)
    del row["id"]
    try:
        async with engine.begin() as connection:
            await bump_version(connection, trunks_version_table)
            created = (await connection.execute(
                select(trunks.c.created_at).where(trunks.c.id == trunk.id))).scalar_one_or_none()
            if created is None:
                raise NotFound("trunk", trunk.id)
            await _check(connection, trunk)
            await connection.execute(update(trunks).where(trunks.c.id == trunk.id).values(**row, updated_at=now))
    except IntegrityError as exc:
        raise Conflict(f"trunk {trunk.id!r} ({trunk.name!r}): {exc.orig}") from exc
    return replace(trunk, created_at=created, updated_at=now)


async def delete_trunk(engine: AsyncEngine, key: str) -> None:
    """Delete trunk ``key`` (its id); :class:`NotFound` if there is none. CDRs keep its name."""
    async with engine.begin() as connection:
        await bump_version(connection, trunks_version_table)
        result = await connection.execute(delete(trunks).where(trunks.c.id == key))
        if result.rowcount == 0:
            raise NotFound("trunk", key)


# ---------------------------------------------------------------------------------------------------- reads


async def get_trunk(engine: AsyncEngine, key: str) -> Trunk:
    """The trunk with id ``key``; :class:`NotFound` if there is none."""
    row = await find(engine, trunks.c.id, key)
    if row is None:
        raise NotFound("trunk", key)
    return _trunk(row)


async def find_trunk(engine: AsyncEngine, id_or_name: str) -> Trunk:
    """The trunk whose id or name is ``id_or_name`` (the id wins); :class:`NotFound` if none."""
    async with engine.connect() as connection:
        rows = (await connection.execute(
            select(trunks).where(or_(trunks.c.id == id_or_name, trunks.c.name == id_or_name)))).all()
    if not rows:
        raise NotFound("trunk", id_or_name)
    return _trunk(next((r for r in rows if r.id == id_or_name), rows[0]))


async def list_trunks(engine: AsyncEngine, limit: int = 50, offset: int = 0) -> tuple[list[Trunk], int]:
    """A page of trunks ordered by name, and how many there are."""
    rows, total = await page(engine, trunks, order_by=[trunks.c.name], limit=limit, offset=offset)
    return [_trunk(row) for row in rows], total


async def trunks_version(engine: AsyncEngine) -> int:
    """The change counter: it grows with every trunk write (cheap to poll)."""
    return await version_of(engine, trunks_version_table)


async def load_trunk_rules(engine: AsyncEngine) -> tuple[TrunkRule, ...]:
    """Every enabled trunk as a :class:`TrunkRule`, ordered by name."""
    async with engine.connect() as connection:
        rows = (await connection.execute(
            select(trunks).where(trunks.c.enabled.is_(True)).order_by(trunks.c.name))).all()
    return tuple(_trunk(row).rule() for row in rows)
