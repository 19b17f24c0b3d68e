"""``/api/v1/agents`` and ``/api/v1/agent_groups``: buyers' call-centre agents, who register over SIP, and the
groups that ring them. A buyer's principal sees and writes its own only; admins see all.

::

    GET    /agents?limit=50&offset=0 -> 200 {"items", "total", "limit", "offset"} (ordered by username)
    POST   /agents        {id?, buyer_id?, username, password, realm?, display_name?, enabled?, max_concurrent?}
                          -> 201 (Location); id generated when omitted
    GET    /agents/{id}   -> 200
    PATCH  /agents/{id}   {any of the fields but id} -> 200 the merged agent
    DELETE /agents/{id}   -> 204 (it leaves its groups)
    GET    /agents/{id}/registrations -> 200 {"items": [{uri, source, transport, expires_in, expires_at, ...}]}

    GET    /agent_groups?limit=50&offset=0 -> 200 the page (ordered by name)
    POST   /agent_groups  {id?, buyer_id?, name, strategy?, members?} -> 201
    GET    /agent_groups/{id}, PATCH /agent_groups/{id}, DELETE /agent_groups/{id}

``buyer_id``: required of admins; a buyer's principal may leave it out (its own) and may not name another.
``username`` is unique on the exchange (letters, digits, ``_ . - +``); the ``password`` is write-only and kept as
HA1s (SHA-256 and MD5) for ``realm`` (default ``dce``: keep it the exchange's ``sip.auth_realm``, so a stranger
cannot tell a username that exists by the realm it is challenged with). A PATCH changing ``username`` or
``realm`` must give the ``password`` again. ``max_concurrent``: calls at once (default 1). ``strategy``:
``ring_all`` (default), ``round_robin`` or ``longest_idle``; ``members``: agent ids of the group's buyer, in ring
order (another buyer's agent is refused as unknown, 422 naming ``members[i]``).

Bad input -> 422 problem+json naming the field; a taken id or username -> 409; another buyer's agent or group -> 404.
After every write the app's :class:`~dce.http_api.changes.Changes` hears of it (``agents``), so the registrar's
copy reloads at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from dce.db import agent_repository as repo
from dce.db.agent_repository import Agent, AgentGroup, Strategy
from dce.http_api.changes import Change, notify
from dce.http_api.describe import PAGE_SCHEMA, describe
from dce.http_api.inputs import invalid_value, read_json_object, validated
from dce.http_api.keys import ENGINE, wall_now
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import invalid_parameter, repository_call
from dce.http_api.trunks import DEFAULT_REALM, hashed

READ = "agents:read"  # buyers hold both, for their own agents
WRITE = "agents:write"
MAX_MEMBERS = 500

# agent id -> its current bindings as JSON (set by the exchange; absent: no registrar, no registrations)
REGISTRATIONS = web.AppKey("agent_registrations", Callable[[str], list[dict[str, Any]]])

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Username = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$",
                                description="the SIP user agents register as; unique on the exchange")]
Realm = Annotated[str, Field(pattern=r'^[^\s"\\:\x00-\x1f\x7f]{1,128}$')]
Password = Annotated[SecretStr, Field(min_length=8, max_length=255, description="write-only: stored as HA1s")]
DisplayName = Annotated[str, Field(min_length=1, max_length=128)]
MaxConcurrent = Annotated[int, Field(ge=1, le=100, description="calls at once")]
GroupName = Annotated[str, Field(min_length=1, max_length=64)]
Members = Annotated[list[Id], Field(max_length=MAX_MEMBERS,
                                    description="agent ids of the group's buyer, in ring order")]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _not_null(value: Any) -> Any:
    if value is None:
        raise invalid_value("not_null", "may not be null")
    return value


def _unique(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise invalid_value("unique", "an agent is listed twice")
    return value


def _buyer(request: web.Request, given: str | None) -> str:
    """The buyer a write is for: a tenant's own (naming another is refused), an admin's ``buyer_id``."""
    own = tenant_filter(request).get("buyer_id")
    if own is not None:
        if given not in (None, own):
            raise invalid_parameter("buyer_id", "a buyer may only write its own agents and groups")
        return own
    if given is None:
        raise invalid_parameter("buyer_id", "required")
    return given


def _tenant(request: web.Request) -> str | None:
    return tenant_filter(request).get("buyer_id")


def with_password(agent: Agent, password: str) -> Agent:
    """``agent`` with the HA1s of ``password`` for its username and realm (the password is not kept)."""
    sha256, md5 = hashed(agent.username, agent.realm, password)
    return replace(agent, ha1_sha256=sha256, ha1_md5=md5)


# ---------------------------------------------------------------------------------------------------- agents


class AgentIn(_Input):
    """A new agent."""

    id: Id | None = None
    buyer_id: Id | None = None
    username: Username
    password: Password
    realm: Realm = DEFAULT_REALM
    display_name: DisplayName | None = None
    enabled: bool = True
    max_concurrent: MaxConcurrent = 1

    def to_agent(self, key: str, buyer_id: str) -> Agent:
        agent = Agent(id=key, buyer_id=buyer_id, username=self.username, realm=self.realm, ha1_sha256="",
                      ha1_md5="", display_name=self.display_name, enabled=self.enabled,
                      max_concurrent=self.max_concurrent)
        return with_password(agent, self.password.get_secret_value())


class AgentPatch(_Input):
    """Fields to change on a stored agent (a new username or realm needs the password again)."""

    buyer_id: Id | None = None
    username: Username | None = None
    password: Password | None = None
    realm: Realm | None = None
    display_name: DisplayName | None = None
    enabled: bool | None = None
    max_concurrent: MaxConcurrent | None = None

    _checked = field_validator("buyer_id", "username", "realm", "enabled", "max_concurrent")(_not_null)

    def apply(self, request: web.Request, current: Agent) -> Agent:
        given = self.model_fields_set
        changes = {name: getattr(self, name) for name in given
                   if name in ("username", "realm", "display_name", "enabled", "max_concurrent")}
        if "buyer_id" in given:
            changes["buyer_id"] = _buyer(request, self.buyer_id)
        agent = replace(current, **changes)
        if self.password is not None:
            return with_password(agent, self.password.get_secret_value())
        if (agent.username, agent.realm) != (current.username, current.realm):
            raise invalid_parameter("password", "required when the username or realm changes "
                                                "(only hashes of username, realm and password are stored)")
        return agent


def agent_json(a: Agent) -> dict[str, Any]:
    """An agent as the API shows it: never a password or an HA1."""
    return {
        "id": a.id, "buyer_id": a.buyer_id, "username": a.username, "realm": a.realm,
        "display_name": a.display_name, "enabled": a.enabled, "max_concurrent": a.max_concurrent,
        "created_at": a.created_at.isoformat() if a.created_at else None,
        "updated_at": a.updated_at.isoformat() if a.updated_at else None,
    }  # fmt: skip


@describe("List agents (ordered by username; a buyer sees its own)", query=page_params(),
          response_schema=PAGE_SCHEMA)
@require(READ)
async def list_agents(request: web.Request) -> web.Response:
    limit, offset = page(request)
    items, total = await repo.list_agents(request.config_dict[ENGINE], limit, offset, buyer_id=_tenant(request))
    return web.json_response({"items": [agent_json(a) for a in items], "total": total, "limit": limit,
                              "offset": offset})


@describe("Create an agent", body=AgentIn, status=201, problems=(409,), created_key="id")
@require(WRITE)
async def create_agent(request: web.Request) -> web.Response:
    data = validated(AgentIn, await read_json_object(request))
    key = data.id or uuid.uuid4().hex
    agent = data.to_agent(key, _buyer(request, data.buyer_id))
    created = await repository_call(repo.create_agent(request.config_dict[ENGINE], agent, now=wall_now(request)))
    await notify(request, Change.AGENTS)
    return web.json_response(agent_json(created), status=201, headers={"Location": f"{request.path}/{key}"})


@describe("An agent", problems=(404,))
@require(READ)
async def get_agent(request: web.Request) -> web.Response:
    found = await repository_call(repo.get_agent(request.config_dict[ENGINE], request.match_info["key"],
                                                 buyer_id=_tenant(request)))
    return web.json_response(agent_json(found))


@describe("Change fields of an agent (a new username or realm needs the password again)", body=AgentPatch,
          problems=(404, 409))
@require(WRITE)
async def patch_agent(request: web.Request) -> web.Response:
    patch = validated(AgentPatch, await read_json_object(request))
    engine, tenant = request.config_dict[ENGINE], _tenant(request)
    current = await repository_call(repo.get_agent(engine, request.match_info["key"], buyer_id=tenant))
    updated = await repository_call(repo.update_agent(engine, patch.apply(request, current), now=wall_now(request),
                                                      buyer_id=tenant))
    await notify(request, Change.AGENTS)
    return web.json_response(agent_json(updated))


@describe("Delete an agent (it leaves its groups)", status=204, content_type=None, problems=(404,))
@require(WRITE)
async def delete_agent(request: web.Request) -> web.Response:
    await repository_call(repo.delete_agent(request.config_dict[ENGINE], request.match_info["key"],
                                            buyer_id=_tenant(request)))
    await notify(request, Change.AGENTS)
    return web.Response(status=204)


@describe("An agent's current registrations (its devices' bindings on this exchange)", problems=(404,))
@require(READ)
async def agent_registrations(request: web.Request) -> web.Response:
    found = await repository_call(repo.get_agent(request.config_dict[ENGINE], request.match_info["key"],
                                                 buyer_id=_tenant(request)))
    registrations = request.config_dict.get(REGISTRATIONS)
    return web.json_response({"agent_id": found.id,
                              "items": registrations(found.id) if registrations is not None else []})


# ---------------------------------------------------------------------------------------------------- groups


class GroupIn(_Input):
    """A new agent group."""

    id: Id | None = None
    buyer_id: Id | None = None
    name: GroupName
    strategy: Strategy = "ring_all"
    members: Members = []

    _unique_members = field_validator("members")(_unique)


class GroupPatch(_Input):
    """Fields to change on a stored group (``members`` replaces the list)."""

    buyer_id: Id | None = None
    name: GroupName | None = None
    strategy: Strategy | None = None
    members: Members | None = None

    _checked = field_validator("buyer_id", "name", "strategy", "members")(_not_null)
    _unique_members = field_validator("members")(_unique)

    def apply(self, request: web.Request, current: AgentGroup) -> AgentGroup:
        given = self.model_fields_set
        changes: dict[str, Any] = {name: getattr(self, name) for name in given if name in ("name", "strategy")}
        if "members" in given:
            changes["members"] = tuple(self.members or ())
        if "buyer_id" in given:
            changes["buyer_id"] = _buyer(request, self.buyer_id)
        return replace(current, **changes)


def group_json(g: AgentGroup) -> dict[str, Any]:
    return {
        "id": g.id, "buyer_id": g.buyer_id, "name": g.name, "strategy": g.strategy, "members": list(g.members),
        "created_at": g.created_at.isoformat() if g.created_at else None,
        "updated_at": g.updated_at.isoformat() if g.updated_at else None,
    }  # fmt: skip


@describe("List agent groups (ordered by name; a buyer sees its own)", query=page_params(),
          response_schema=PAGE_SCHEMA)
@require(READ)
async def list_groups(request: web.Request) -> web.Response:
    limit, offset = page(request)
    items, total = await repo.list_groups(request.config_dict[ENGINE], limit, offset, buyer_id=_tenant(request))
    return web.json_response({"items": [group_json(g) for g in items], "total": total, "limit": limit,
                              "offset": offset})


@describe("Create an agent group", body=GroupIn, status=201, problems=(409,), created_key="id")
@require(WRITE)
async def create_group(request: web.Request) -> web.Response:
    data = validated(GroupIn, await read_json_object(request))
    key = data.id or uuid.uuid4().hex
    group = AgentGroup(id=key, buyer_id=_buyer(request, data.buyer_id), name=data.name, strategy=data.strategy,
                       members=tuple(data.members))
    created = await repository_call(repo.create_group(request.config_dict[ENGINE], group, now=wall_now(request)))
    await notify(request, Change.AGENTS)
    return web.json_response(group_json(created), status=201, headers={"Location": f"{request.path}/{key}"})


@describe("An agent group", problems=(404,))
@require(READ)
async def get_group(request: web.Request) -> web.Response:
    found = await repository_call(repo.get_group(request.config_dict[ENGINE], request.match_info["key"],
                                                 buyer_id=_tenant(request)))
    return web.json_response(group_json(found))


@describe("Change fields of an agent group (members replace the list)", body=GroupPatch, problems=(404, 409))
@require(WRITE)
async def patch_group(request: web.Request) -> web.Response:
    patch = validated(GroupPatch, await read_json_object(request))
    engine, tenant = request.config_dict[ENGINE], _tenant(request)
    current = await repository_call(repo.get_group(engine, request.match_info["key"], buyer_id=tenant))
    updated = await repository_call(repo.update_group(engine, patch.apply(request, current), now=wall_now(request),
                                                      buyer_id=tenant))
    await notify(request, Change.AGENTS)
    return web.json_response(group_json(updated))


@describe("Delete an agent group", status=204, content_type=None, problems=(404,))
@require(WRITE)
async def delete_group(request: web.Request) -> web.Response:
    await repository_call(repo.delete_group(request.config_dict[ENGINE], request.match_info["key"],
                                            buyer_id=_tenant(request)))
    await notify(request, Change.AGENTS)
    return web.Response(status=204)


def agent_routes() -> list[web.RouteDef]:
    """The routes, for the ``/api/v1`` sub-app."""
    return [
        web.get("/agents", list_agents, allow_head=False),
        web.post("/agents", create_agent),
        web.get("/agents/{key}", get_agent, allow_head=False),
        web.patch("/agents/{key}", patch_agent),
        web.delete("/agents/{key}", delete_agent),
        web.get("/agents/{key}/registrations", agent_registrations, allow_head=False),
        web.get("/agent_groups", list_groups, allow_head=False),
        web.post("/agent_groups", create_group),
        web.get("/agent_groups/{key}", get_group, allow_head=False),
        web.patch("/agent_groups/{key}", patch_group),
        web.delete("/agent_groups/{key}", delete_group),
    ]

