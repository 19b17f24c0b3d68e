"""``/api/v1/trunks``: the inbound trunks, who may send the exchange calls (admin only).

::

    GET    /trunks?limit=50&offset=0 -> 200 {"items", "total", "limit", "offset"} (ordered by name)
    POST   /trunks        {id?, name, publisher_id?, networks, username?, realm?, password?, transport?,
                           max_cps?, max_concurrent?, enabled?}  -> 201 (Location); id generated when omitted
    GET    /trunks/{id}   -> 200
    PATCH  /trunks/{id}   {any of the fields but id} -> 200 the merged trunk
    DELETE /trunks/{id}   -> 204 (CDRs keep the trunk's name)

``networks``: a non-empty list of source networks, IPv4 or IPv6 CIDRs (a bare address is a /32 or /128; host bits
set are refused, naming the network meant). ``transport``: udp, tcp or tls (null: any). ``max_cps`` (calls per
second, fractions allowed) and ``max_concurrent``: 0 means unlimited. Digest credentials: ``username`` and
``password`` together (``realm`` defaults to :data:`DEFAULT_REALM`); only the HA1s
(SHA-256 and MD5) are stored and the password is write-only: answers carry ``has_credentials``, ``username`` and
``realm``, never a password or hash. A PATCH that changes ``username`` or ``realm`` of a trunk with credentials
must give the ``password`` again (the HA1s depend on all three); ``"username": null`` removes the credentials.

Bad input -> 422 problem+json naming the field (``networks[1]``); a taken id or name -> 409; an unknown
``publisher_id`` -> 422. After every write the app's :class:`~dce.http_api.changes.Changes` hears of it
(``trunks``), so the INVITE path's copy reloads at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from dce.db import trunk_repository as repo
from dce.db.trunk_repository import Transport, Trunk
from dce.http_api.changes import Change
from dce.http_api.inputs import documented, invalid_value, shown
from dce.http_api.problems import invalid_parameter
from dce.http_api.resource import Resource, Summaries
from dce.sip.digest import ha1

READ = "trunks:read"  # no role but admin grants these
WRITE = "trunks:write"
MAX_NETWORKS = 256
DEFAULT_REALM = "dce"  # the digest realm of credentials given without one


def hashed(username: str, realm: str, password: str) -> tuple[str, str]:
    """The HA1s kept instead of the password: ``(sha256, md5)``."""
    return ha1(username, realm, password, "SHA-256"), ha1(username, realm, password, "MD5")


def with_password(trunk: Trunk, username: str, realm: str | None, password: str) -> Trunk:
    """``trunk`` with digest credentials (``realm`` None: :data:`DEFAULT_REALM`), kept as HA1s only."""
    realm = realm or DEFAULT_REALM
    sha256, md5 = hashed(username, realm, password)
    return replace(trunk, username=username, realm=realm, ha1_sha256=sha256, ha1_md5=md5)


@documented({"type": "string", "description": "an IPv4 or IPv6 network in CIDR form (192.0.2.0/24, "
                                              "2001:db8::/32) or a single address", "maxLength": 64})
def _network(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise invalid_value("cidr", f"expected a CIDR string like 192.0.2.0/24 or 2001:db8::/32, got {shown(value)}")
    try:
        return str(repo.network(value))
    except ValueError as exc:
        raise invalid_value("cidr", f"{exc}: {shown(value)}") from None


def _transport(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                            description="letters, digits, _ . -; shown on CDRs, reports and metrics")]
Network = Annotated[str, BeforeValidator(_network)]
Networks = Annotated[list[Network], Field(min_length=1, max_length=MAX_NETWORKS)]
DigestText = Annotated[str, Field(pattern=r'^[^\s"\\:\x00-\x1f\x7f]{1,128}$')]  # no ':' (HA1 joins with it)
Password = Annotated[SecretStr, Field(min_length=8, max_length=255, description="write-only: stored as HA1s")]
TransportIn = Annotated[Transport, BeforeValidator(_transport)]
MaxCps = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False, description="calls per second; 0: unlimited")]
MaxConcurrent = Annotated[int, Field(ge=0, le=1_000_000, description="calls at once; 0: unlimited")]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TrunkIn(_Input):
    """A new trunk."""

    id: Id | None = None
    name: Name
    publisher_id: Id | None = None
    networks: Networks
    username: DigestText | None = None
    realm: DigestText | None = None
    password: Password | None = None
    transport: TransportIn | None = None
    max_cps: MaxCps = 0
    max_concurrent: MaxConcurrent = 0
    enabled: bool = True

    def to_trunk(self, key: str) -> Trunk:
        """The trunk to store; 422 naming ``username`` or ``password`` when only part of the credentials is given."""
        if self.password is not None and self.username is None:
            raise invalid_parameter("username", "required with a password")
        if self.username is not None and self.password is None:
            raise invalid_parameter("password", "required with a username")
        if self.realm is not None and self.username is None:
            raise invalid_parameter("username", "required with a realm (and a password)")
        trunk = Trunk(id=key, name=self.name, networks=tuple(self.networks), publisher_id=self.publisher_id,
                      transport=self.transport, max_cps=self.max_cps, max_concurrent=self.max_concurrent,
                      enabled=self.enabled)
        if self.username is not None and self.password is not None:
            trunk = with_password(trunk, self.username, self.realm, self.password.get_secret_value())
        return trunk


NOT_NULL = ("name", "networks", "max_cps", "max_concurrent", "enabled")


class TrunkPatch(_Input):
    """Fields to change on a stored trunk (those left out stay as they are)."""

    name: Name | None = None
    publisher_id: Id | None = None
    networks: Networks | None = None
    username: DigestText | None = None
    realm: DigestText | None = None
    password: Password | None = None
    transport: TransportIn | None = None
    max_cps: MaxCps | None = None
    max_concurrent: MaxConcurrent | None = None
    enabled: bool | None = None

    @field_validator(*NOT_NULL)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise invalid_value("not_null", "may not be null")
        return value

    def apply(self, request: web.Request, current: Trunk) -> Trunk:
        """``current`` with this patch merged in; 422 naming ``password`` when the credentials would not hold."""
        given = self.model_fields_set
        changes = {name: getattr(self, name) for name in given
                   if name in ("name", "publisher_id", "transport", "max_cps", "max_concurrent", "enabled")}
        if "networks" in given:
            changes["networks"] = tuple(self.networks or ())
        trunk = Trunk(**{**_fields(current), **changes})
        return self._credentials(trunk, given)

    def _credentials(self, trunk: Trunk, given: set[str]) -> Trunk:
        if "username" in given and self.username is None:
            if self.password is not None or self.realm is not None:
                raise invalid_parameter("username", "null removes the credentials: give no password or realm")
            return trunk.without_credentials()
        username = self.username if "username" in given else trunk.username
        realm = self.realm if "realm" in given else trunk.realm
        if self.password is not None:
            if username is None:
                raise invalid_parameter("username", "required to set a password")
            return with_password(trunk, username, realm, self.password.get_secret_value())
        if not given & {"username", "realm"}:
            return trunk
        if username is None:
            raise invalid_parameter("username", "required to set a realm")
        if username != trunk.username or (realm or DEFAULT_REALM) != trunk.realm:
            raise invalid_parameter("password", "required when the username or realm changes "
                                                "(only hashes of username, realm and password are stored)")
        return trunk


def _fields(trunk: Trunk) -> dict[str, Any]:
    return {name: getattr(trunk, name) for name in Trunk.__dataclass_fields__}


def trunk_json(t: Trunk) -> dict[str, Any]:
    """A trunk as the API shows it: never a password or an HA1."""
    return {
        "id": t.id, "name": t.name, "publisher_id": t.publisher_id, "networks": list(t.networks),
        "transport": t.transport, "max_cps": t.max_cps, "max_concurrent": t.max_concurrent, "enabled": t.enabled,
        "has_credentials": t.has_credentials, "username": t.username, "realm": t.realm,
        "created_at": t.created_at.isoformat() if t.created_at else None,
        "updated_at": t.updated_at.isoformat() if t.updated_at else None,
    }  # fmt: skip


TRUNKS = Resource(
    "trunks", TrunkIn, trunk_json, repo.create_trunk, repo.get_trunk, repo.list_trunks, repo.update_trunk,
    repo.delete_trunk, READ, WRITE, Change.TRUNKS,
    Summaries(list="List trunks (ordered by name)", create="Create a trunk", get="A trunk",
              patch="Change fields of a trunk (a new username or realm needs the password again)",
              delete="Delete a trunk"),
    names=("trunks", "trunk"), build=lambda request, data, key: data.to_trunk(key), patch=TrunkPatch, stamped=True)


def trunk_routes() -> list[web.RouteDef]:
    """The routes, for the ``/api/v1`` sub-app."""
    return TRUNKS.routes()
