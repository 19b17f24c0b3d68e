"""The ``/auth`` routes of the side API: log in and refresh (public), and the admin's users and API keys.

    POST   /auth/login                  {username, password} -> access + refresh token
    POST   /auth/refresh                {refresh_token} -> new tokens (re-reads the user: disabled -> 401)
    POST   /auth/users                  create a user (auth:write)
    GET    /auth/users                  ?role=&buyer_id=&publisher_id=&limit=&offset= (auth:read)
    GET    /auth/users/{username}       one user (auth:read)
    PATCH  /auth/users/{username}       {enabled?, password?} (auth:write)
    POST   /auth/api-keys               create a key; its secret is in this answer only (auth:write)
    GET    /auth/api-keys               ?role=&buyer_id=&publisher_id=&revoked=&limit=&offset=, newest first
    GET    /auth/api-keys/{id}          one key (never its secret or hash) (auth:read)
    DELETE /auth/api-keys/{id}          revoke (auth:write)

The routes read the :class:`~dce.http_api.auth.Authenticator` from the root app (``AUTHENTICATOR``): 503 without.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dce.db import auth_repository as repo
from dce.http_api.auth import (
    AUTH_READ,
    AUTH_WRITE,
    AUTHENTICATOR,
    MIN_PASSWORD,
    TENANT_FIELD,
    Authenticator,
    AuthError,
    unauthorized,
    utc_now,
)
from dce.http_api.describe import PAGE_SCHEMA, Param, describe
from dce.http_api.inputs import read_model
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import principal, require
from dce.http_api.problems import ProblemError, invalid_parameter


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_In):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(_In):
    refresh_token: str = Field(min_length=1, max_length=8192)


class _Tenanted(_In):
    role: str = Field(min_length=1, max_length=32)
    buyer_id: str | None = Field(default=None, min_length=1, max_length=64)
    publisher_id: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_tenant(self) -> _Tenanted:
        if self.buyer_id is not None and self.publisher_id is not None:
            raise ValueError("give buyer_id or publisher_id, not both")
        return self


class UserIn(_Tenanted):
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@+-]+$")
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)
    enabled: bool = True


class ApiKeyIn(_Tenanted):
    name: str | None = Field(default=None, min_length=1, max_length=255)


def _check_role(auth: Authenticator, body: _Tenanted) -> None:
    if body.role not in auth.roles:
        raise ProblemError(422, f"unknown role {body.role!r}", invalid_params=[{"name": "role", "reason": "unknown"}])
    needed = TENANT_FIELD.get(body.role)
    for tenant_field in ("buyer_id", "publisher_id"):
        given = getattr(body, tenant_field) is not None
        if given != (tenant_field == needed):
            reason = f"required for role {body.role}" if tenant_field == needed else f"not allowed for role {body.role}"
            raise ProblemError(422, f"invalid parameter {tenant_field!r}: {reason}",
                               invalid_params=[{"name": tenant_field, "reason": reason}])


def _authenticator(request: web.Request) -> Authenticator:
    auth = request.config_dict.get(AUTHENTICATOR)
    if auth is None:
        raise ProblemError(503, "authentication is not configured")
    return auth


@describe(summary="Log in with a username and password", body=LoginIn, problems=(401, 422, 503))
async def login(request: web.Request) -> web.Response:
    """Trade a username and password for an access and a refresh token."""
    auth = _authenticator(request)
    body = await read_model(request, LoginIn)
    try:
        tokens = await auth.login(body.username, body.password)
    except AuthError as exc:
        return unauthorized(str(exc), invalid=False)
    return web.json_response(tokens.to_json(), headers={"Cache-Control": "no-store"})


@describe(summary="Trade a refresh token for new tokens", body=RefreshIn, problems=(401, 422, 503))
async def refresh(request: web.Request) -> web.Response:
    """Trade a valid refresh token for a new access and refresh token."""
    auth = _authenticator(request)
    body = await read_model(request, RefreshIn)
    try:
        tokens = await auth.refresh(body.refresh_token)
    except AuthError as exc:
        return unauthorized(str(exc), invalid=True)
    return web.json_response(tokens.to_json(), headers={"Cache-Control": "no-store"})


@require(AUTH_WRITE)
@describe(summary="Create a user", body=UserIn, status=201, problems=(409, 422, 503), created_key="username")
async def create_user(request: web.Request) -> web.Response:
    """Create a user who logs in with a password (admin)."""
    auth = _authenticator(request)
    body = await read_model(request, UserIn)
    _check_role(auth, body)
    try:
        user = await auth.create_user(body.username, body.password, body.role, buyer_id=body.buyer_id,
                                      publisher_id=body.publisher_id, enabled=body.enabled)
    except repo.Taken as exc:
        raise ProblemError(409, str(exc)) from None
    except repo.UnknownTenant as exc:
        raise ProblemError(422, str(exc), invalid_params=[{"name": exc.field, "reason": "unknown"}]) from None
    return web.json_response(user.to_json(), status=201)


@require(AUTH_WRITE)
@describe(summary="Create an API key (its secret is returned once)", body=ApiKeyIn, status=201, problems=(422, 503),
          created_key="id")
async def create_api_key(request: web.Request) -> web.Response:
    """Create an API key for a machine (admin); the response's ``key`` is shown this once."""
    auth = _authenticator(request)
    body = await read_model(request, ApiKeyIn)
    _check_role(auth, body)
    who = principal(request)
    try:
        record, key = await auth.create_api_key(body.role, buyer_id=body.buyer_id, publisher_id=body.publisher_id,
                                                name=body.name, created_by=who.subject if who else None)
    except repo.UnknownTenant as exc:
        raise ProblemError(422, str(exc), invalid_params=[{"name": exc.field, "reason": "unknown"}]) from None
    return web.json_response({**record.to_json(), "key": key}, status=201,
                             headers={"Cache-Control": "no-store", "Location": f"/api/v1/auth/api-keys/{record.id}"})


@require(AUTH_WRITE)
@describe(summary="Revoke an API key", status=204, content_type=None, problems=(404, 503))
async def revoke_api_key(request: web.Request) -> web.Response:
    """Revoke an API key (admin); it stops working on this node at once, on others within the key cache time."""
    auth = _authenticator(request)
    key_id = request.match_info["id"]
    if not await repo.revoke_api_key(auth.store(), key_id, utc_now(auth.clock)):
        raise ProblemError(404, f"no API key {key_id!r}")
    auth.forget_api_key(key_id)
    return web.Response(status=204)


class UserPatch(_In):
    enabled: bool | None = None
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=1024)

    @model_validator(mode="after")
    def _something(self) -> UserPatch:
        if self.enabled is None and self.password is None:
            raise ValueError("give enabled or password")
        return self


_FILTERS = (Param("role", "only this role"), Param("buyer_id", "only this buyer's"),
            Param("publisher_id", "only this publisher's"))


def _filter(request: web.Request, auth: Authenticator, *, keys: bool = False) -> repo.Filter:
    query = request.query
    role = query.get("role") or None
    if role is not None and role not in auth.roles:
        raise invalid_parameter("role", "one of " + ", ".join(sorted(auth.roles)))
    revoked = None
    if keys and query.get("revoked", "") != "":
        if query["revoked"] not in ("true", "false"):
            raise invalid_parameter("revoked", "true or false")
        revoked = query["revoked"] == "true"
    return repo.Filter(role, query.get("buyer_id") or None, query.get("publisher_id") or None, revoked)


def _page_answer(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> web.Response:
    return web.json_response({"items": items, "total": total, "limit": limit, "offset": offset})


@require(AUTH_READ)
@describe(summary="Users (never their password hashes)", query=page_params(*_FILTERS), response_schema=PAGE_SCHEMA,
          problems=(422, 503))
async def list_users(request: web.Request) -> web.Response:
    """A page of users by username (admin)."""
    auth = _authenticator(request)
    limit, offset = page(request)
    users, total = await repo.list_users(auth.store(), _filter(request, auth), limit, offset)
    return _page_answer([user.to_json() for user in users], total, limit, offset)


@require(AUTH_READ)
@describe(summary="A user", problems=(404, 503))
async def get_user(request: web.Request) -> web.Response:
    """One user (admin)."""
    auth = _authenticator(request)
    username = request.match_info["username"]
    user = await repo.get_user(auth.store(), username)
    if user is None:
        raise ProblemError(404, f"no user {username!r}")
    return web.json_response(user.to_json())


@require(AUTH_WRITE)
@describe(summary="Enable or disable a user, or set a new password", body=UserPatch, problems=(404, 422, 503))
async def patch_user(request: web.Request) -> web.Response:
    """Change a user (admin): a disabled user cannot log in or refresh; its access token lives out its time."""
    auth = _authenticator(request)
    body = await read_model(request, UserPatch)
    username = request.match_info["username"]
    user = await auth.update_user(username, enabled=body.enabled, password=body.password)
    if user is None:
        raise ProblemError(404, f"no user {username!r}")
    return web.json_response(user.to_json())


@require(AUTH_READ)
@describe(summary="API keys, newest first (never their secrets)",
          query=page_params(*_FILTERS, Param("revoked", "only revoked (true) or live (false) keys",
                                             {"type": "string", "enum": ["true", "false"]})),
          response_schema=PAGE_SCHEMA, problems=(422, 503))
async def list_api_keys(request: web.Request) -> web.Response:
    """A page of API keys (admin), newest first."""
    auth = _authenticator(request)
    limit, offset = page(request)
    keys, total = await repo.list_api_keys(auth.store(), _filter(request, auth, keys=True), limit, offset)
    return _page_answer([key.to_json() for key in keys], total, limit, offset)


@require(AUTH_READ)
@describe(summary="An API key (never its secret)", problems=(404, 503))
async def get_api_key(request: web.Request) -> web.Response:
    """One API key (admin)."""
    auth = _authenticator(request)
    key_id = request.match_info["id"]
    record = await repo.get_api_key(auth.store(), key_id)
    if record is None:
        raise ProblemError(404, f"no API key {key_id!r}")
    return web.json_response(record.to_json())


def auth_routes() -> list[web.RouteDef]:
    """The ``/auth`` routes, for the ``/api/v1`` sub-app (they read ``AUTHENTICATOR`` from the root app)."""
    return [
        web.post("/auth/login", login),
        web.post("/auth/refresh", refresh),
        web.post("/auth/users", create_user),
        web.get("/auth/users", list_users, allow_head=False),
        web.get("/auth/users/{username}", get_user, allow_head=False),
        web.patch("/auth/users/{username}", patch_user),
        web.post("/auth/api-keys", create_api_key),
        web.get("/auth/api-keys", list_api_keys, allow_head=False),
        web.get("/auth/api-keys/{id}", get_api_key, allow_head=False),
        web.delete("/auth/api-keys/{id}", revoke_api_key),
    ]
