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

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from dce.db import agent_repository as repo
from dce.db.agent_repository import Agent, AgentGroup, Strategy
from dce.http_api.changes import Change
from dce.http_api.describe import describe
from dce.http_api.inputs import invalid_value
from dce.http_api.keys import ENGINE
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import invalid_parameter, repository_call
from dce.http_api.resource import Resource, Summaries
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

    def to_model(self, key: str, buyer_id: str) -> Agent:
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

    def to_model(self, key: str, buyer_id: str) -> AgentGroup:
        return AgentGroup(id=key, buyer_id=buyer_id, name=self.name, strategy=self.strategy,
                          members=tuple(self.members))


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


def _owned(request: web.Request, data: AgentIn | GroupIn, key: str) -> Agent | AgentGroup:
    return data.to_model(key, _buyer(request, data.buyer_id))


def _scope(request: web.Request) -> dict[str, Any]:
    return {"buyer_id": _tenant(request)}


AGENTS = Resource(
    "agents", AgentIn, agent_json, repo.create_agent, repo.get_agent, repo.list_agents, repo.update_agent,
    repo.delete_agent, READ, WRITE, Change.AGENTS,
    Summaries(list="List agents (ordered by username; a buyer sees its own)", create="Create an agent",
              get="An agent", patch="Change fields of an agent (a new username or realm needs the password again)",
              delete="Delete an agent (it leaves its groups)"),
    names=("agents", "agent"), build=_owned, patch=AgentPatch, scope=_scope, stamped=True)
GROUPS = Resource(
    "agent_groups", GroupIn, group_json, repo.create_group, repo.get_group, repo.list_groups, repo.update_group,
    repo.delete_group, READ, WRITE, Change.AGENTS,
    Summaries(list="List agent groups (ordered by name; a buyer sees its own)", create="Create an agent group",
              get="An agent group", patch="Change fields of an agent group (members replace the list)",
              delete="Delete an agent group"),
    names=("groups", "group"), build=_owned, patch=GroupPatch, scope=_scope, stamped=True)


def agent_routes() -> list[web.RouteDef]:
    """The routes, for the ``/api/v1`` sub-app."""
    return [*AGENTS.routes(), web.get("/agents/{key}/registrations", agent_registrations, allow_head=False),
            *GROUPS.routes()]
