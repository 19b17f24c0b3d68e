"""Storing and reading the marketplace: the value objects of :mod:`dce.routing.model` in and out.

Every write runs in one transaction that also bumps ``marketplace_version``, so :func:`load_marketplace` callers
(see :class:`dce.db.marketplace_watcher.MarketplaceWatcher`) can tell cheaply whether anything changed.

Errors are typed: :class:`NotFound` (the entity addressed does not exist), :class:`Conflict` (duplicate id, DID or
campaign key; deleting something still referenced) and :class:`UnknownReference` (the entity refers to an id that
does not exist; ``field`` names where, e.g. ``target_ids[1]``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import time
from typing import Any, Generic, TypeVar

from sqlalchemy import Column, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.db.agent_models import AgentGroupRow, AgentRow
from dce.db.errors import Conflict, NotFound, RepositoryError, UnknownReference
from dce.db.marketplace_models import (
    BuyerRow,
    CampaignPublisherRow,
    CampaignRow,
    CampaignTargetRow,
    MarketplaceVersionRow,
    PublisherRow,
    TargetRow,
    TrackingNumberRow,
)
from dce.db.queries import bump_version, exists, find, load_consistent, page, record, table_of, values, version_of
from dce.routing.agents import agent_reference
from dce.routing.model import (
    ANY_PUBLISHER,
    Buyer,
    Campaign,
    CapCounts,
    Caps,
    Criterion,
    CriterionOp,
    DuplicateAfter,
    DuplicateRule,
    DuplicateScope,
    HoursWindow,
    PayoutRule,
    Publisher,
    RoutingStrategy,
    StirAction,
    Target,
    TargetAuth,
    TrackingNumber,
    UnmatchedCaller,
)

publishers = table_of(PublisherRow)
buyers = table_of(BuyerRow)
campaigns = table_of(CampaignRow)
campaign_publishers = table_of(CampaignPublisherRow)
campaign_targets = table_of(CampaignTargetRow)
targets = table_of(TargetRow)
agent_table = table_of(AgentRow)
group_table = table_of(AgentGroupRow)
tracking_numbers = table_of(TrackingNumberRow)
marketplace_version = table_of(MarketplaceVersionRow)


MarketplaceError = RepositoryError  # the marketplace's errors: NotFound, Conflict, UnknownReference


@dataclass(frozen=True, slots=True)
class MarketplaceData:
    """Everything the routing snapshot is built from, read in one transaction at ``version``."""

    publishers: tuple[Publisher, ...] = ()
    buyers: tuple[Buyer, ...] = ()
    campaigns: tuple[Campaign, ...] = ()
    targets: tuple[Target, ...] = ()
    tracking_numbers: tuple[TrackingNumber, ...] = ()
    version: int = 0


# ---------------------------------------------------------------------------------------------------------- codecs


def _publisher_row(p: Publisher) -> dict[str, Any]:
    return values(p)


def _publisher(row: Any) -> Publisher:
    return record(Publisher, row)


def _buyer_row(b: Buyer) -> dict[str, Any]:
    return values(b)


def _buyer(row: Any) -> Buyer:
    return record(Buyer, row)


def _auth_columns(auth: TargetAuth | None) -> dict[str, Any]:
    """The credentials' columns; a plain password is never stored (the API seals it first)."""
    if auth is None:
        return {"auth_username": None, "auth_realm": None, "auth_secret": None, "auth_ha1": None}
    if auth.password is not None:
        raise ValueError("a target's password must be sealed before it is stored")
    return {"auth_username": auth.username, "auth_realm": auth.realm, "auth_secret": auth.sealed_password,
            "auth_ha1": " ".join(f"{algorithm}:{value}" for algorithm, value in auth.ha1) or None}


def _auth(row: Any) -> TargetAuth | None:
    if row.auth_username is None:
        return None
    ha1 = tuple(tuple(item.split(":", 1)) for item in (row.auth_ha1 or "").split() if ":" in item)
    return TargetAuth(row.auth_username, row.auth_realm, row.auth_secret, ha1)  # type: ignore[arg-type]


def _target_row(t: Target) -> dict[str, Any]:
    return values(
        t,
        omit=("caps", "auth"),
        **_auth_columns(t.auth),
        ring_timeout_s=float(t.ring_timeout_s),
        hours=[{"weekday": h.weekday, "start": h.start.isoformat(), "end": h.end.isoformat()} for h in t.hours],
        criteria=[
            {"field": c.field, "op": str(c.op), "values": list(c.values), "negate": c.negate} for c in t.criteria
        ],
        skills=list(t.skills),
        cap_concurrency=t.caps.concurrency,
        cap_hourly=t.caps.hourly,
        cap_daily=t.caps.daily,
        cap_monthly=t.caps.monthly,
        cap_counts=str(t.caps.counts),
    )


def _target(row: Any) -> Target:
    caps = Caps(
        concurrency=row.cap_concurrency,
        hourly=row.cap_hourly,
        daily=row.cap_daily,
        monthly=row.cap_monthly,
        counts=CapCounts(row.cap_counts),
    )
    hours = tuple(
        HoursWindow(weekday=h["weekday"], start=time.fromisoformat(h["start"]), end=time.fromisoformat(h["end"]))
        for h in row.hours
    )
    criteria = tuple(
        Criterion(field=c["field"], op=CriterionOp(c["op"]), values=tuple(c.get("values", ())), negate=c["negate"])
        for c in row.criteria
    )
    return record(Target, row, caps=caps, hours=hours, criteria=criteria, skills=tuple(row.skills), auth=_auth(row))


def _campaign_rows(c: Campaign) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``campaigns`` row, its ``campaign_publishers`` rows and its ``campaign_targets`` rows."""
    payouts = dict(c.payouts)
    if len(payouts) != len(c.payouts):
        raise Conflict(f"campaign {c.id!r}: more than one payout rule for the same publisher")
    if len(set(c.publisher_ids)) != len(c.publisher_ids):
        raise Conflict(f"campaign {c.id!r}: a publisher is listed twice")
    if len(set(c.target_ids)) != len(c.target_ids):
        raise Conflict(f"campaign {c.id!r}: a target is listed twice")
    allowed = set(c.publisher_ids)
    for index, (publisher_id, _rule) in enumerate(c.payouts):
        if publisher_id != ANY_PUBLISHER and publisher_id not in allowed:
            raise UnknownReference(f"payouts[{index}].publisher_id", "publisher in publisher_ids", publisher_id)
    default = payouts.get(ANY_PUBLISHER)
    rule = c.duplicate_rule
    row = values(
        c,
        omit=("publisher_ids", "target_ids", "payouts"),
        strategy=str(c.strategy),
        default_payout_fixed=default.fixed if default else None,
        default_payout_revenue_share_bp=default.revenue_share_bp if default else None,
        duplicate_rule=(
            {"after": str(rule.after), "days": rule.days, "scope": str(rule.scope)} if rule is not None else None
        ),
        unmatched_caller=str(c.unmatched_caller),
        stir_action=str(c.stir_action),
        stir_unsigned=str(c.stir_unsigned),
    )
    publisher_rows = []
    for position, publisher_id in enumerate(c.publisher_ids):
        payout = payouts.get(publisher_id)
        publisher_rows.append(
            {
                "campaign_id": c.id,
                "publisher_id": publisher_id,
                "position": position,
                "payout_fixed": payout.fixed if payout else None,
                "payout_revenue_share_bp": payout.revenue_share_bp if payout else None,
            }
        )
    target_rows = [
        {"campaign_id": c.id, "target_id": target_id, "position": position}
        for position, target_id in enumerate(c.target_ids)
    ]
    return row, publisher_rows, target_rows


def _has_rule(fixed: int | None, share: int | None) -> bool:
    return fixed is not None or share is not None


def _campaign(row: Any, publisher_rows: Sequence[Any], target_rows: Sequence[Any]) -> Campaign:
    """``publisher_rows``/``target_rows``: this campaign's join rows, in position order."""
    payouts: list[tuple[str, PayoutRule]] = [
        (p.publisher_id, PayoutRule(fixed=p.payout_fixed, revenue_share_bp=p.payout_revenue_share_bp))
        for p in publisher_rows
        if _has_rule(p.payout_fixed, p.payout_revenue_share_bp)
    ]
    if _has_rule(row.default_payout_fixed, row.default_payout_revenue_share_bp):
        payouts.append(
            (
                ANY_PUBLISHER,
                PayoutRule(fixed=row.default_payout_fixed, revenue_share_bp=row.default_payout_revenue_share_bp),
            )
        )
    rule = row.duplicate_rule
    duplicate_rule = (
        DuplicateRule(after=DuplicateAfter(rule["after"]), days=rule["days"], scope=DuplicateScope(rule["scope"]))
        if rule is not None
        else None
    )
    return record(
        Campaign,
        row,
        publisher_ids=tuple(p.publisher_id for p in publisher_rows),
        target_ids=tuple(t.target_id for t in target_rows),
        strategy=RoutingStrategy(row.strategy),
        payouts=tuple(payouts),
        duplicate_rule=duplicate_rule,
        unmatched_caller=UnmatchedCaller(row.unmatched_caller),
        stir_action=StirAction(row.stir_action),
        stir_unsigned=StirAction(row.stir_unsigned),
    )


def _number_row(n: TrackingNumber) -> dict[str, Any]:
    return values(n)


def _number(row: Any) -> TrackingNumber:
    return record(TrackingNumber, row)


# --------------------------------------------------------------------------------------------------------- helpers


async def _exists(connection: AsyncConnection, table: Table, key: str) -> bool:
    return await exists(connection, next(iter(table.primary_key.columns)), key)


async def _require(connection: AsyncConnection, field: str, table: Table, entity: str, key: str) -> None:
    if not await _exists(connection, table, key):
        raise UnknownReference(field, entity, key)


async def _require_all(connection: AsyncConnection, field: str, table: Table, entity: str, keys: Sequence[str]) -> None:
    if not keys:
        return
    column = next(iter(table.primary_key.columns))
    found = set((await connection.execute(select(column).where(column.in_(list(keys))))).scalars())
    for index, key in enumerate(keys):
        if key not in found:
            raise UnknownReference(f"{field}[{index}]", entity, key)


async def _users(connection: AsyncConnection, table: Table, column_name: str, key: str) -> list[str]:
    """Primary keys (the first column) of ``table`` rows whose ``column_name`` is ``key``."""
    first = next(iter(table.primary_key.columns)) if len(table.primary_key.columns) == 1 else table.c.campaign_id
    result = await connection.execute(select(first).where(table.c[column_name] == key).limit(5))
    return [str(value) for value in result.scalars()]


async def _refuse_if_used(
    connection: AsyncConnection, entity: str, key: str, uses: Sequence[tuple[Table, str, str]]
) -> None:
    for table, column_name, user in uses:
        found = await _users(connection, table, column_name, key)
        if found:
            raise Conflict(f"{entity} {key!r} is still used by {user} {', '.join(map(repr, found))}")


def _integrity(exc: IntegrityError, what: str) -> Conflict:
    return Conflict(f"{what}: {exc.orig}")


# --------------------------------------------------------------------------------------------- the simple entities

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Entity(Generic[_T]):
    """One single-table entity, for the generic create/get/list/update/delete below.

    ``name`` is the word in the error messages (keys are shown quoted unless ``quote_key`` is false); ``check`` (run
    after the existence check on create/update) raises :class:`UnknownReference`; ``uses`` are the
    ``(table, column, user)`` references that make a delete a :class:`Conflict`.
    """

    table: Table
    name: str
    to_row: Callable[[_T], dict[str, Any]]
    from_row: Callable[[Any], _T]
    check: Callable[[AsyncConnection, _T], Awaitable[None]] | None = None
    uses: tuple[tuple[Table, str, str], ...] = ()
    quote_key: bool = True

    @property
    def key(self) -> Column[Any]:
        return next(iter(self.table.primary_key.columns))

    def label(self, key: str) -> str:
        return f"{self.name} {key!r}" if self.quote_key else f"{self.name} {key}"


async def _create(engine: AsyncEngine, entity: _Entity[_T], obj: _T) -> _T:
    row = entity.to_row(obj)
    key = row[entity.key.name]
    try:
        async with engine.begin() as connection:
            if await _exists(connection, entity.table, key):
                raise Conflict(f"{entity.label(key)} already exists")
            if entity.check is not None:
                await entity.check(connection, obj)
            await connection.execute(insert(entity.table).values(row))
            await bump_version(connection, marketplace_version)
    except IntegrityError as exc:
        raise _integrity(exc, entity.label(key)) from exc
    return obj


async def _get(engine: AsyncEngine, entity: _Entity[_T], key: str) -> _T:
    row = await find(engine, entity.key, key)
    if row is None:
        raise NotFound(entity.name, key)
    return entity.from_row(row)


async def _list(engine: AsyncEngine, entity: _Entity[_T], limit: int, offset: int) -> tuple[list[_T], int]:
    rows, total = await page(engine, entity.table, order_by=[entity.key], limit=limit, offset=offset)
    return [entity.from_row(row) for row in rows], total


async def _all(connection: AsyncConnection, entity: _Entity[_T]) -> tuple[_T, ...]:
    rows = (await connection.execute(select(entity.table).order_by(entity.key))).all()
    return tuple(entity.from_row(row) for row in rows)


async def _update(engine: AsyncEngine, entity: _Entity[_T], obj: _T) -> _T:
    row = entity.to_row(obj)
    key = row[entity.key.name]
    try:
        async with engine.begin() as connection:
            if entity.check is not None:
                # NotFound comes before UnknownReference
                if not await _exists(connection, entity.table, key):
                    raise NotFound(entity.name, key)
                await entity.check(connection, obj)
            result = await connection.execute(update(entity.table).where(entity.key == key).values(row))
            if result.rowcount == 0:
                raise NotFound(entity.name, key)
            await bump_version(connection, marketplace_version)
    except IntegrityError as exc:
        raise _integrity(exc, entity.label(key)) from exc
    return obj


async def _delete(engine: AsyncEngine, entity: _Entity[Any], key: str) -> None:
    try:
        async with engine.begin() as connection:
            if entity.uses:
                # NotFound comes before Conflict
                if not await _exists(connection, entity.table, key):
                    raise NotFound(entity.name, key)
                await _refuse_if_used(connection, entity.name, key, entity.uses)
            result = await connection.execute(delete(entity.table).where(entity.key == key))
            if result.rowcount == 0:
                raise NotFound(entity.name, key)
            await bump_version(connection, marketplace_version)
    except IntegrityError as exc:
        raise _integrity(exc, f"{entity.label(key)} is in use") from exc


async def _check_target(connection: AsyncConnection, target: Target) -> None:
    await _require(connection, "buyer_id", buyers, "buyer", target.buyer_id)
    ref = agent_reference(target.destination)
    if ref is not None:  # the agent or group must be the target's buyer's (another buyer's reads as none)
        kind, key = ref
        table = agent_table if kind == "agent" else group_table
        owner = (await connection.execute(select(table.c.buyer_id).where(table.c.id == key))).scalar()
        if owner != target.buyer_id:
            entity = "agent" if kind == "agent" else "agent group"
            raise UnknownReference("destination", f"{entity} of buyer {target.buyer_id!r}", key)


async def _check_number(connection: AsyncConnection, number: TrackingNumber) -> None:
    await _require(connection, "campaign_id", campaigns, "campaign", number.campaign_id)
    await _require(connection, "publisher_id", publishers, "publisher", number.publisher_id)


_PUBLISHER = _Entity(
    publishers,
    "publisher",
    _publisher_row,
    _publisher,
    uses=((campaign_publishers, "publisher_id", "campaign"), (tracking_numbers, "publisher_id", "number")),
)
_BUYER = _Entity(buyers, "buyer", _buyer_row, _buyer, uses=((targets, "buyer_id", "target"),))
_TARGET = _Entity(
    targets, "target", _target_row, _target, _check_target, uses=((campaign_targets, "target_id", "campaign"),)
)
_NUMBER = _Entity(tracking_numbers, "number", _number_row, _number, _check_number, quote_key=False)


# ------------------------------------------------------------------------------------------------------ publishers


async def create_publisher(engine: AsyncEngine, publisher: Publisher) -> Publisher:
    """Store a new publisher; :class:`Conflict` when the id is taken."""
    return await _create(engine, _PUBLISHER, publisher)


async def get_publisher(engine: AsyncEngine, publisher_id: str) -> Publisher:
    return await _get(engine, _PUBLISHER, publisher_id)


async def list_publishers(engine: AsyncEngine, limit: int = 50, offset: int = 0) -> tuple[list[Publisher], int]:
    """A page of publishers ordered by id, and the total count."""
    return await _list(engine, _PUBLISHER, limit, offset)


async def update_publisher(engine: AsyncEngine, publisher: Publisher) -> Publisher:
    """Replace the stored publisher ``publisher.id``; :class:`NotFound` if there is none."""
    return await _update(engine, _PUBLISHER, publisher)


async def delete_publisher(engine: AsyncEngine, publisher_id: str) -> None:
    """:class:`Conflict` while a campaign or tracking number refers to it."""
    await _delete(engine, _PUBLISHER, publisher_id)


# ---------------------------------------------------------------------------------------------------------- buyers


async def create_buyer(engine: AsyncEngine, buyer: Buyer) -> Buyer:
    return await _create(engine, _BUYER, buyer)


async def get_buyer(engine: AsyncEngine, buyer_id: str) -> Buyer:
    return await _get(engine, _BUYER, buyer_id)


async def list_buyers(engine: AsyncEngine, limit: int = 50, offset: int = 0) -> tuple[list[Buyer], int]:
    return await _list(engine, _BUYER, limit, offset)


async def update_buyer(engine: AsyncEngine, buyer: Buyer) -> Buyer:
    return await _update(engine, _BUYER, buyer)


async def delete_buyer(engine: AsyncEngine, buyer_id: str) -> None:
    """:class:`Conflict` while it owns targets."""
    await _delete(engine, _BUYER, buyer_id)


# --------------------------------------------------------------------------------------------------------- targets


async def create_target(engine: AsyncEngine, target: Target) -> Target:
    """:class:`UnknownReference` (``buyer_id``) for an unknown buyer."""
    return await _create(engine, _TARGET, target)


async def get_target(engine: AsyncEngine, target_id: str) -> Target:
    return await _get(engine, _TARGET, target_id)


async def list_targets(engine: AsyncEngine, limit: int = 50, offset: int = 0) -> tuple[list[Target], int]:
    return await _list(engine, _TARGET, limit, offset)


async def update_target(engine: AsyncEngine, target: Target) -> Target:
    return await _update(engine, _TARGET, target)


async def delete_target(engine: AsyncEngine, target_id: str) -> None:
    """:class:`Conflict` while a campaign lists it (remove it from the campaign first)."""
    await _delete(engine, _TARGET, target_id)


# ------------------------------------------------------------------------------------------------------- campaigns


async def _read_campaigns(connection: AsyncConnection, campaign_ids: Sequence[str] | None) -> list[Campaign]:
    """The campaigns with ``campaign_ids`` (all when None), in that order (by id when None)."""
    query = select(campaigns)
    pubs = select(campaign_publishers).order_by(campaign_publishers.c.campaign_id, campaign_publishers.c.position)
    tgts = select(campaign_targets).order_by(campaign_targets.c.campaign_id, campaign_targets.c.position)
    if campaign_ids is not None:
        ids = list(campaign_ids)
        if not ids:
            return []
        query = query.where(campaigns.c.id.in_(ids))
        pubs = pubs.where(campaign_publishers.c.campaign_id.in_(ids))
        tgts = tgts.where(campaign_targets.c.campaign_id.in_(ids))
    rows = {row.id: row for row in (await connection.execute(query)).all()}
    by_campaign_pubs: dict[str, list[Any]] = {}
    for row in (await connection.execute(pubs)).all():
        by_campaign_pubs.setdefault(row.campaign_id, []).append(row)
    by_campaign_tgts: dict[str, list[Any]] = {}
    for row in (await connection.execute(tgts)).all():
        by_campaign_tgts.setdefault(row.campaign_id, []).append(row)
    order = list(campaign_ids) if campaign_ids is not None else sorted(rows)
    return [
        _campaign(rows[cid], by_campaign_pubs.get(cid, []), by_campaign_tgts.get(cid, []))
        for cid in order
        if cid in rows
    ]


async def _check_campaign(connection: AsyncConnection, campaign: Campaign) -> None:
    await _require_all(connection, "publisher_ids", publishers, "publisher", campaign.publisher_ids)
    await _require_all(connection, "target_ids", targets, "target", campaign.target_ids)
    if campaign.key is not None:
        taken = await connection.execute(
            select(campaigns.c.id).where(campaigns.c.key == campaign.key, campaigns.c.id != campaign.id)
        )
        other = taken.scalar()
        if other is not None:
            raise Conflict(f"campaign key {campaign.key!r} is taken by campaign {other!r}")


async def _write_joins(
    connection: AsyncConnection, publisher_rows: list[dict[str, Any]], target_rows: list[dict[str, Any]]
) -> None:
    if publisher_rows:
        await connection.execute(insert(campaign_publishers), publisher_rows)
    if target_rows:
        await connection.execute(insert(campaign_targets), target_rows)


async def create_campaign(engine: AsyncEngine, campaign: Campaign) -> Campaign:
    """:class:`UnknownReference` for unknown publisher/target ids; :class:`Conflict` for a taken id or key."""
    row, publisher_rows, target_rows = _campaign_rows(campaign)
    try:
        async with engine.begin() as connection:
            if await _exists(connection, campaigns, campaign.id):
                raise Conflict(f"campaign {campaign.id!r} already exists")
            await _check_campaign(connection, campaign)
            await connection.execute(insert(campaigns).values(row))
            await _write_joins(connection, publisher_rows, target_rows)
            await bump_version(connection, marketplace_version)
    except IntegrityError as exc:
        raise _integrity(exc, f"campaign {campaign.id!r}") from exc
    return campaign


async def get_campaign(engine: AsyncEngine, campaign_id: str) -> Campaign:
    async with engine.connect() as connection:
        found = await _read_campaigns(connection, [campaign_id])
    if not found:
        raise NotFound("campaign", campaign_id)
    return found[0]


async def list_campaigns(engine: AsyncEngine, limit: int = 50, offset: int = 0) -> tuple[list[Campaign], int]:
    async with engine.connect() as connection:
        ids, total = await page(connection, campaigns, columns=[campaigns.c.id], order_by=[campaigns.c.id],
                                limit=limit, offset=offset)
        return await _read_campaigns(connection, [row.id for row in ids]), total


async def update_campaign(engine: AsyncEngine, campaign: Campaign) -> Campaign:
    """Replace the campaign, its allowed publishers (with payouts) and its targets."""
    row, publisher_rows, target_rows = _campaign_rows(campaign)
    try:
        async with engine.begin() as connection:
            if not await _exists(connection, campaigns, campaign.id):
                raise NotFound("campaign", campaign.id)
            await _check_campaign(connection, campaign)
            await connection.execute(update(campaigns).where(campaigns.c.id == campaign.id).values(row))
            await connection.execute(
                delete(campaign_publishers).where(campaign_publishers.c.campaign_id == campaign.id)
            )
            await connection.execute(delete(campaign_targets).where(campaign_targets.c.campaign_id == campaign.id))
            await _write_joins(connection, publisher_rows, target_rows)
            await bump_version(connection, marketplace_version)
    except IntegrityError as exc:
        raise _integrity(exc, f"campaign {campaign.id!r}") from exc
    return campaign


async def delete_campaign(engine: AsyncEngine, campaign_id: str) -> None:
    """Its publisher and target lists go with it; :class:`Conflict` while tracking numbers point at it."""
    try:
        async with engine.begin() as connection:
            if not await _exists(connection, campaigns, campaign_id):
                raise NotFound("campaign", campaign_id)
            await _refuse_if_used(connection, "campaign", campaign_id, [(tracking_numbers, "campaign_id", "number")])
            await connection.execute(
                delete(campaign_publishers).where(campaign_publishers.c.campaign_id == campaign_id)
            )
            await connection.execute(delete(campaign_targets).where(campaign_targets.c.campaign_id == campaign_id))
            await connection.execute(delete(campaigns).where(campaigns.c.id == campaign_id))
            await bump_version(connection, marketplace_version)
    except IntegrityError as exc:
        raise _integrity(exc, f"campaign {campaign_id!r} is in use") from exc


# ------------------------------------------------------------------------------------------------ tracking numbers


async def create_tracking_number(engine: AsyncEngine, number: TrackingNumber) -> TrackingNumber:
    """``number.did`` must already be E.164; :class:`Conflict` when the DID is taken."""
    return await _create(engine, _NUMBER, number)


async def get_tracking_number(engine: AsyncEngine, did: str) -> TrackingNumber:
    return await _get(engine, _NUMBER, did)


async def list_tracking_numbers(
    engine: AsyncEngine, limit: int = 50, offset: int = 0
) -> tuple[list[TrackingNumber], int]:
    return await _list(engine, _NUMBER, limit, offset)


async def update_tracking_number(engine: AsyncEngine, number: TrackingNumber) -> TrackingNumber:
    return await _update(engine, _NUMBER, number)


async def delete_tracking_number(engine: AsyncEngine, did: str) -> None:
    await _delete(engine, _NUMBER, did)


# ---------------------------------------------------------------------------------------------------- whole reads


async def marketplace_version_of(engine: AsyncEngine) -> int:
    """The change counter: it grows with every marketplace write (cheap to poll)."""
    return await version_of(engine, marketplace_version)


async def load_marketplace(engine: AsyncEngine, *, attempts: int = 5) -> MarketplaceData:
    """Everything, as :mod:`dce.routing.model` value objects, with the version it reflects (consistent across
    tables: :func:`dce.db.queries.load_consistent`)."""
    data, version = await load_consistent(engine, marketplace_version, _read_all, attempts=attempts)
    return replace(data, version=version)


async def _read_all(connection: AsyncConnection) -> MarketplaceData:
    return MarketplaceData(
        publishers=await _all(connection, _PUBLISHER),
        buyers=await _all(connection, _BUYER),
        targets=await _all(connection, _TARGET),
        tracking_numbers=await _all(connection, _NUMBER),
        campaigns=tuple(await _read_campaigns(connection, None)),
    )
