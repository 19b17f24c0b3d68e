"""Storing and reading buyers' agents and agent groups (:mod:`dce.db.agent_models`), and the accounts the
registrar authenticates.

:class:`Agent` is a stored agent as the API sees it; its password is kept only as HA1s (SHA-256 and MD5, made by
:func:`dce.http_api.agents.with_password`). :class:`AgentGroup` lists its members in ring order; every member is
an agent of the group's buyer. :func:`load_book` reads what the exchange keeps in memory
(:class:`dce.db.agent_watcher.AgentWatcher`): the enabled agents as :class:`~dce.sip.registrar.Account` values for
the registrar, and every agent and group as routing sees them.

Reads and writes take an optional ``buyer_id`` (a tenant): with it, another buyer's agent or group is
:class:`NotFound`, as if it did not exist. Every write runs in one transaction that bumps ``agents_version``.
Errors are typed: :class:`NotFound`, :class:`Conflict` (a taken id or username; deleting a buyer still used is
refused by the foreign key) and :class:`UnknownReference` (no such buyer, or a member that is not an agent of the
group's buyer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy import Column, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dce.db.agent_models import AgentGroupMemberRow, AgentGroupRow, AgentRow, AgentsVersionRow
from dce.db.errors import Conflict, NotFound, RepositoryError, UnknownReference
from dce.db.marketplace_models import BuyerRow, TargetRow
from dce.db.queries import bump_version, exists, load_consistent, page, record, table_of, values, version_of
from dce.routing.agents import AgentInfo, GroupInfo
from dce.sip.registrar import Account

agents = table_of(AgentRow)
groups = table_of(AgentGroupRow)
members = table_of(AgentGroupMemberRow)
agents_version_table = table_of(AgentsVersionRow)
_buyers = table_of(BuyerRow)
_targets = table_of(TargetRow)

Strategy = Literal["ring_all", "round_robin", "longest_idle"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
AgentError = RepositoryError  # NotFound, Conflict, UnknownReference
_T = TypeVar("_T", "Agent", "AgentGroup")


@dataclass(frozen=True, slots=True)
class Agent:
    """A stored agent. ``created_at``/``updated_at`` are set by the repository."""

    id: str
    buyer_id: str
    username: str
    realm: str
    ha1_sha256: str
    ha1_md5: str
    display_name: str | None = None
    enabled: bool = True
    max_concurrent: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def account(self) -> Account:
        """What the registrar authenticates."""
        return Account(self.id, self.username, self.realm, self.ha1_sha256, self.ha1_md5, self.buyer_id,
                       self.max_concurrent)


@dataclass(frozen=True, slots=True)
class AgentGroup:
    """A stored group of a buyer's agents: ``members`` are agent ids in ring order."""

    id: str
    buyer_id: str
    name: str
    strategy: Strategy = "ring_all"
    members: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


async def _check_buyer(connection: AsyncConnection, buyer_id: str) -> None:
    if not await exists(connection, _buyers.c.id, buyer_id):
        raise UnknownReference("buyer_id", "buyer", buyer_id)


async def _write(engine: AsyncEngine, what: str, work: Callable[[AsyncConnection], Any]) -> Any:
    """Run ``work`` in a transaction that bumps ``agents_version`` first (serialising writers on PostgreSQL)."""
    try:
        async with engine.begin() as connection:
            await bump_version(connection, agents_version_table)
            return await work(connection)
    except IntegrityError as exc:  # a concurrent write of the same id or username, a buyer still referenced
        raise Conflict(f"{what}: {exc.orig}") from exc


@dataclass(frozen=True)
class _Kind:
    """Agents or groups, for the shared create/update/delete/get below."""

    table: Table
    name: str  # in messages: "agent", "agent group"
    reference: str  # in a target's destination (``agent:ID``, ``group:ID``)
    member_column: Column[Any]  # its rows in ``agent_group_members``
    to_row: Callable[[Any], dict[str, Any]]
    check: Callable[[AsyncConnection, Any], Awaitable[None]]  # before every write (UnknownReference, Conflict)
    moving: Callable[[AsyncConnection, Any, str], Awaitable[None]] | None = None  # before a move to another buyer
    after: Callable[[AsyncConnection, Any], Awaitable[None]] | None = None  # after every write (e.g. members)


async def _owned_row(connection: AsyncConnection, kind: _Kind, key: str, buyer_id: str | None) -> Any:
    """The stored row of ``key``; :class:`NotFound` if there is none (for this tenant)."""
    row = (await connection.execute(select(kind.table).where(kind.table.c.id == key))).first()
    if row is None or (buyer_id is not None and row.buyer_id != buyer_id):
        raise NotFound(kind.name, key)
    return row


async def _check_untargeted(connection: AsyncConnection, kind: _Kind, key: str, change: str) -> None:
    """:class:`Conflict` when a target's destination is this agent or group (``change`` would strand it)."""
    names = (await connection.execute(select(_targets.c.id).where(
        _targets.c.destination == f"{kind.reference}:{key}").order_by(_targets.c.id).limit(5))).scalars().all()
    if names:
        raise Conflict(f"{kind.name} {key!r} is the destination of target(s) {', '.join(names)}: "
                       f"point them elsewhere before {change}")


async def _create(engine: AsyncEngine, kind: _Kind, item: _T, now: datetime | None) -> _T:
    now = _now(now)

    async def work(connection: AsyncConnection) -> None:
        if await exists(connection, kind.table.c.id, item.id):
            raise Conflict(f"{kind.name} {item.id!r} already exists")
        await kind.check(connection, item)
        await connection.execute(insert(kind.table).values(**kind.to_row(item), created_at=now, updated_at=now))
        if kind.after is not None:
            await kind.after(connection, item)

    await _write(engine, f"{kind.name} {item.id!r}", work)
    return replace(item, created_at=now, updated_at=now)


async def _update(engine: AsyncEngine, kind: _Kind, item: _T, now: datetime | None, buyer_id: str | None) -> _T:
    now = _now(now)
    key: str = item.id

    async def work(connection: AsyncConnection) -> datetime:
        row = await _owned_row(connection, kind, key, buyer_id)
        if row.buyer_id != item.buyer_id:
            if kind.moving is not None:
                await kind.moving(connection, item, row.buyer_id)
            await _check_untargeted(connection, kind, key, "moving it to another buyer")
        await kind.check(connection, item)
        fields = kind.to_row(item)
        del fields["id"]
        await connection.execute(update(kind.table).where(kind.table.c.id == key).values(**fields, updated_at=now))
        if kind.after is not None:
            await kind.after(connection, item)
        return row.created_at  # type: ignore[no-any-return]

    created = await _write(engine, f"{kind.name} {key!r}", work)
    return replace(item, created_at=created, updated_at=now)


async def _delete(engine: AsyncEngine, kind: _Kind, key: str, buyer_id: str | None) -> None:
    async def work(connection: AsyncConnection) -> None:
        await _owned_row(connection, kind, key, buyer_id)
        await _check_untargeted(connection, kind, key, "deleting it")
        await connection.execute(delete(members).where(kind.member_column == key))
        await connection.execute(delete(kind.table).where(kind.table.c.id == key))

    await _write(engine, f"{kind.name} {key!r}", work)


# ---------------------------------------------------------------------------------------------------- agents


def _agent_row(agent: Agent) -> dict[str, Any]:
    return values(agent, omit=("created_at", "updated_at"))


async def _check_agent(connection: AsyncConnection, agent: Agent) -> None:
    await _check_buyer(connection, agent.buyer_id)
    taken = (await connection.execute(select(agents.c.id).where(
        agents.c.username == agent.username, agents.c.id != agent.id).limit(1))).first()
    if taken is not None:
        raise Conflict(f"username {agent.username!r} is taken")  # not by whom: it may be another buyer's


async def _not_in_groups(connection: AsyncConnection, agent: Agent, buyer_id: str) -> None:
    if await exists(connection, members.c.agent_id, agent.id):
        raise Conflict(f"agent {agent.id!r} is in groups of buyer {buyer_id!r}: remove it from them first")


_AGENT = _Kind(agents, "agent", "agent", members.c.agent_id, _agent_row, _check_agent, moving=_not_in_groups)


async def create_agent(engine: AsyncEngine, agent: Agent, *, now: datetime | None = None) -> Agent:
    """Store a new agent; :class:`Conflict` when its id or username is taken."""
    return await _create(engine, _AGENT, agent, now)


async def update_agent(engine: AsyncEngine, agent: Agent, *, now: datetime | None = None,
                       buyer_id: str | None = None) -> Agent:
    """Replace the stored agent ``agent.id`` (its ``created_at`` stays; a tenant's: of ``buyer_id``)."""
    return await _update(engine, _AGENT, agent, now, buyer_id)


async def delete_agent(engine: AsyncEngine, key: str, *, buyer_id: str | None = None) -> None:
    """Delete agent ``key`` (it leaves its groups); :class:`NotFound` if there is none (for this tenant)."""
    await _delete(engine, _AGENT, key, buyer_id)


async def get_agent(engine: AsyncEngine, key: str, *, buyer_id: str | None = None) -> Agent:
    """The agent with id ``key``; :class:`NotFound` if there is none (for this tenant)."""
    async with engine.connect() as connection:
        row = await _owned_row(connection, _AGENT, key, buyer_id)
    return record(Agent, row)


async def list_agents(engine: AsyncEngine, limit: int = 50, offset: int = 0, *,
                      buyer_id: str | None = None) -> tuple[list[Agent], int]:
    """A page of agents (a tenant's only, with ``buyer_id``) ordered by username, and how many there are."""
    where = [agents.c.buyer_id == buyer_id] if buyer_id is not None else []
    rows, total = await page(engine, agents, order_by=[agents.c.username], limit=limit, offset=offset, where=where)
    return [record(Agent, row) for row in rows], total


async def agents_version(engine: AsyncEngine) -> int:
    """The change counter: it grows with every agent or group write (cheap to poll)."""
    return await version_of(engine, agents_version_table)


@dataclass(frozen=True, slots=True)
class AgentBook:
    """What the exchange keeps in memory: ``accounts`` (enabled agents, by username) for the registrar, every agent
    and group for routing."""

    accounts: tuple[Account, ...]
    agents: tuple[AgentInfo, ...]
    groups: tuple[GroupInfo, ...]


async def load_book(engine: AsyncEngine) -> AgentBook:
    """Every agent and group, read in one snapshot (a group never names an agent the same read lacks)."""

    async def read(connection: AsyncConnection) -> tuple[Any, Any, dict[str, tuple[str, ...]]]:
        rows = (await connection.execute(select(agents).order_by(agents.c.username))).all()
        group_rows = (await connection.execute(select(groups).order_by(groups.c.id))).all()
        return rows, group_rows, await _members(connection, [row.id for row in group_rows])

    (rows, group_rows, found), _ = await load_consistent(engine, agents_version_table, read)
    stored = [record(Agent, row) for row in rows]
    return AgentBook(
        accounts=tuple(agent.account() for agent in stored if agent.enabled),
        agents=tuple(AgentInfo(a.id, a.buyer_id, a.enabled, a.max_concurrent) for a in stored),
        groups=tuple(GroupInfo(row.id, row.buyer_id, row.strategy, found.get(row.id, ())) for row in group_rows))


# ---------------------------------------------------------------------------------------------------- groups


async def _members(connection: AsyncConnection, group_ids: list[str]) -> dict[str, tuple[str, ...]]:
    if not group_ids:
        return {}
    rows = (await connection.execute(select(members).where(members.c.group_id.in_(group_ids))
                                     .order_by(members.c.group_id, members.c.position))).all()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.group_id, []).append(row.agent_id)
    return {key: tuple(value) for key, value in found.items()}


async def _check_group(connection: AsyncConnection, group: AgentGroup) -> None:
    await _check_buyer(connection, group.buyer_id)
    if len(set(group.members)) != len(group.members):
        raise Conflict("members: an agent is listed twice")
    if not group.members:
        return
    owned = set((await connection.execute(select(agents.c.id).where(
        agents.c.id.in_(group.members), agents.c.buyer_id == group.buyer_id))).scalars())
    for index, agent_id in enumerate(group.members):
        if agent_id not in owned:  # another buyer's agent reads as no agent at all
            raise UnknownReference(f"members[{index}]", f"agent of buyer {group.buyer_id!r}", agent_id)


async def _set_members(connection: AsyncConnection, group: AgentGroup) -> None:
    await connection.execute(delete(members).where(members.c.group_id == group.id))
    if group.members:
        await connection.execute(insert(members), [
            {"group_id": group.id, "agent_id": agent_id, "position": position}
            for position, agent_id in enumerate(group.members)])


def _group_row(group: AgentGroup) -> dict[str, Any]:
    return values(group, omit=("created_at", "updated_at", "members"))


_GROUP = _Kind(groups, "agent group", "group", members.c.group_id, _group_row, _check_group, after=_set_members)


async def create_group(engine: AsyncEngine, group: AgentGroup, *, now: datetime | None = None) -> AgentGroup:
    """Store a new group; :class:`Conflict` when its id is taken."""
    return await _create(engine, _GROUP, group, now)


async def update_group(engine: AsyncEngine, group: AgentGroup, *, now: datetime | None = None,
                       buyer_id: str | None = None) -> AgentGroup:
    """Replace the stored group ``group.id`` and its members (a tenant's: of ``buyer_id``)."""
    return await _update(engine, _GROUP, group, now, buyer_id)


async def delete_group(engine: AsyncEngine, key: str, *, buyer_id: str | None = None) -> None:
    """Delete group ``key``; :class:`NotFound` if there is none (for this tenant)."""
    await _delete(engine, _GROUP, key, buyer_id)


async def get_group(engine: AsyncEngine, key: str, *, buyer_id: str | None = None) -> AgentGroup:
    """The group with id ``key`` and its members; :class:`NotFound` if there is none (for this tenant)."""
    async with engine.connect() as connection:
        row = await _owned_row(connection, _GROUP, key, buyer_id)
        found = await _members(connection, [key])
    return record(AgentGroup, row, members=found.get(key, ()))


async def list_groups(engine: AsyncEngine, limit: int = 50, offset: int = 0, *,
                      buyer_id: str | None = None) -> tuple[list[AgentGroup], int]:
    """A page of groups (a tenant's only, with ``buyer_id``) ordered by name, and how many there are."""
    where = [groups.c.buyer_id == buyer_id] if buyer_id is not None else []
    rows, total = await page(engine, groups, order_by=[groups.c.name, groups.c.id], limit=limit, offset=offset,
                             where=where)
    async with engine.connect() as connection:
        found = await _members(connection, [row.id for row in rows])
    return [record(AgentGroup, row, members=found.get(row.id, ())) for row in rows], total
