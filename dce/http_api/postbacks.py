"""``/api/v1`` postback configs and their delivery log.

::

    GET    /postbacks?owner_kind=&owner_id=&limit=50&offset=0 -> 200 {"items", "total", "limit", "offset"}
    POST   /postbacks              {id?, owner_kind, owner_id, events, method?, url, body?, secret?, enabled?,
                                    max_attempts?}  -> 201 (Location); id generated when omitted
    GET    /postbacks/{id}         -> 200
    PUT    /postbacks/{id}         -> 200 replaced (omitted fields take their defaults, except ``secret``)
    PATCH  /postbacks/{id}         -> 200 merged into the stored config
    DELETE /postbacks/{id}         -> 204; its pending deliveries become failed (the log stays)
    GET    /postbacks/deliveries?call_id=&status=&postback_id=&limit=50&offset=0
                                   -> 200 {"items": [delivery with "attempt_log"], "total", "limit", "offset"}

``owner_kind`` is campaign, publisher or buyer, and the owner must exist (422 otherwise). ``events``: a non-empty
list of incoming, connected, converted, completed, blocked. ``method`` GET (default) or POST; ``url`` an http(s)
template and ``body`` a POST body template using ``[call_id]``, ``[caller]``, ``[revenue]``, ... (see
:mod:`dce.billing.postback`). The secret is never echoed: responses carry ``secret_set`` only; PUT and PATCH keep
the stored secret unless the body has ``secret`` (``null`` clears it). Bad input -> 422 problem+json naming the field.

After every write the app's :class:`~dce.http_api.changes.Changes` hears of it (``postbacks``) so the dispatcher can
reload its configs (:meth:`~dce.db.postback_dispatcher.PostbackDispatcher.notify_configs_changed`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dce.billing.postback import DEFAULT_MAX_ATTEMPTS, EventName, Method, OwnerKind, PostbackConfig
from dce.db import marketplace_repository as marketplace
from dce.db import postback_repository as repo
from dce.http_api.changes import Change, notify
from dce.http_api.describe import FREE_JSON, PAGE_SCHEMA, Param, describe, enum_schema
from dce.http_api.inputs import read_json_object, validated
from dce.http_api.keys import ENGINE
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require
from dce.http_api.problems import ProblemError, invalid_parameter

log = logging.getLogger(__name__)

READ = "postbacks:read"
WRITE = "postbacks:write"

RESERVED_IDS = frozenset({"deliveries"})
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]


class PostbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: Id | None = None
    owner_kind: OwnerKind
    owner_id: Id
    events: Annotated[list[EventName], Field(min_length=1)]
    method: Method = Method.GET
    url: Annotated[str, Field(min_length=8, max_length=4096, pattern=r"^https?://[^\s]+$")]
    body: Annotated[str, Field(max_length=65536)] | None = None
    secret: Annotated[str, Field(min_length=8, max_length=255)] | None = None
    enabled: bool = True
    max_attempts: Annotated[int, Field(ge=1, le=50)] = DEFAULT_MAX_ATTEMPTS

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved")
        return value

    def to_config(self, key: str) -> PostbackConfig:
        if self.body is not None and self.method is Method.GET:
            raise invalid_parameter("body", "a GET postback has no body (use method POST)")
        return PostbackConfig(
            id=key, owner_kind=self.owner_kind, owner_id=self.owner_id, events=frozenset(self.events),
            method=self.method, url=self.url, body=self.body, secret=self.secret, enabled=self.enabled,
            max_attempts=self.max_attempts,
        )  # fmt: skip


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def postback_json(c: PostbackConfig) -> dict[str, Any]:
    return {
        "id": c.id, "owner_kind": str(c.owner_kind), "owner_id": c.owner_id,
        "events": sorted(str(e) for e in c.events), "method": str(c.method), "url": c.url, "body": c.body,
        "secret_set": bool(c.secret), "enabled": c.enabled, "max_attempts": c.max_attempts,
    }  # fmt: skip


def delivery_json(d: repo.Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "postback_id": d.config_id, "event": d.event, "call_id": d.call_id, "method": d.method,
        "url": d.url, "headers": d.headers, "body": d.body, "status": d.status, "attempts": d.attempts,
        "max_attempts": d.max_attempts, "next_attempt_at": _time(d.next_attempt_at),
        "last_status_code": d.last_status_code, "last_error": d.last_error, "created_at": _time(d.created_at),
        "updated_at": _time(d.updated_at), "delivered_at": _time(d.delivered_at),
        "attempt_log": [
            {"attempt": a.attempt, "at": _time(a.at), "status_code": a.status_code, "error": a.error,
             "elapsed_ms": a.elapsed_ms}
            for a in d.attempt_log
        ],
    }  # fmt: skip


# -------------------------------------------------------------------------------------------------- plumbing


_OWNER_LOOKUP = {
    OwnerKind.CAMPAIGN: marketplace.get_campaign,
    OwnerKind.PUBLISHER: marketplace.get_publisher,
    OwnerKind.BUYER: marketplace.get_buyer,
}


async def _check_owner(request: web.Request, config: PostbackConfig) -> None:
    try:
        await _OWNER_LOOKUP[config.owner_kind](request.config_dict[ENGINE], config.owner_id)
    except marketplace.NotFound:
        raise invalid_parameter("owner_id", f"no {config.owner_kind} {config.owner_id!r}") from None




async def _stored(request: web.Request) -> PostbackConfig:
    try:
        return await repo.get_config(request.config_dict[ENGINE], request.match_info["key"])
    except repo.NotFound as exc:
        raise ProblemError(404, str(exc)) from None


# -------------------------------------------------------------------------------------------------- handlers


@describe(
    "Postback configs",
    query=page_params(Param("owner_kind", "", enum_schema(("campaign", "publisher", "buyer"))), Param("owner_id")),
    response_schema=PAGE_SCHEMA,
)
@require(READ)
async def list_postbacks(request: web.Request) -> web.Response:
    limit, offset = page(request)
    owner_kind = request.query.get("owner_kind") or None
    if owner_kind is not None and owner_kind not in {str(k) for k in OwnerKind}:
        raise invalid_parameter("owner_kind", "one of campaign, publisher, buyer")
    items, total = await repo.list_configs(request.config_dict[ENGINE], limit, offset, owner_kind=owner_kind,
                                           owner_id=request.query.get("owner_id") or None)
    return web.json_response(
        {"items": [postback_json(c) for c in items], "total": total, "limit": limit, "offset": offset}
    )


@describe("Create a postback config", body=PostbackIn, status=201, problems=(409,), created_key="id")
@require(WRITE)
async def create_postback(request: web.Request) -> web.Response:
    data = validated(PostbackIn, await read_json_object(request))
    key = data.id or uuid.uuid4().hex
    config = data.to_config(key)
    await _check_owner(request, config)
    try:
        await repo.create_config(request.config_dict[ENGINE], config)
    except repo.Conflict as exc:
        raise ProblemError(409, str(exc)) from None
    await notify(request, Change.POSTBACKS)
    return web.json_response(postback_json(config), status=201, headers={"Location": f"{request.path}/{key}"})


@describe("A postback config", problems=(404,))
@require(READ)
async def get_postback(request: web.Request) -> web.Response:
    return web.json_response(postback_json(await _stored(request)))


async def _replace(request: web.Request, body: dict[str, Any], current: PostbackConfig) -> web.Response:
    key = current.id
    if body.get("id") not in (None, key):
        raise invalid_parameter("id", f"does not match the path ({key!r}); ids cannot change")
    keep_secret = "secret" not in body
    data = validated(PostbackIn, {k: v for k, v in body.items() if k != "secret"} if keep_secret else body)
    config = data.to_config(key)
    if keep_secret:
        config = PostbackConfig(**{**postback_fields(config), "secret": current.secret})
    await _check_owner(request, config)
    try:
        await repo.update_config(request.config_dict[ENGINE], config)
    except repo.NotFound as exc:
        raise ProblemError(404, str(exc)) from None
    await notify(request, Change.POSTBACKS)
    return web.json_response(postback_json(config))


def postback_fields(c: PostbackConfig) -> dict[str, Any]:
    return {
        "id": c.id, "owner_kind": c.owner_kind, "owner_id": c.owner_id, "events": c.events, "method": c.method,
        "url": c.url, "body": c.body, "secret": c.secret, "enabled": c.enabled, "max_attempts": c.max_attempts,
    }  # fmt: skip


@describe("Replace a postback config (the secret is kept unless given)", body=PostbackIn, problems=(404,))
@require(WRITE)
async def put_postback(request: web.Request) -> web.Response:
    current = await _stored(request)
    return await _replace(request, await read_json_object(request), current)


@describe("Merge fields into a postback config", body_content=FREE_JSON, problems=(404,))
@require(WRITE)
async def patch_postback(request: web.Request) -> web.Response:
    patch = await read_json_object(request)
    current = await _stored(request)
    merged = {k: v for k, v in postback_json(current).items() if k != "secret_set"}
    merged.update(patch)
    method = merged.get("method")
    if isinstance(method, str) and method.upper() == "GET" and "body" not in patch:
        merged["body"] = None  # switching a POST to GET drops its body template
    return await _replace(request, merged, current)


@describe("Delete a postback config", status=204, content_type=None, problems=(404,))
@require(WRITE)
async def delete_postback(request: web.Request) -> web.Response:
    try:
        await repo.delete_config(request.config_dict[ENGINE], request.match_info["key"])
    except repo.NotFound as exc:
        raise ProblemError(404, str(exc)) from None
    await notify(request, Change.POSTBACKS)
    return web.Response(status=204)


@describe(
    "The postback delivery log",
    query=page_params(Param("call_id"), Param("status", "", enum_schema(repo.STATUSES)), Param("postback_id")),
    response_schema=PAGE_SCHEMA,
)
@require(READ)
async def list_deliveries(request: web.Request) -> web.Response:
    limit, offset = page(request)
    status = request.query.get("status") or None
    if status is not None and status not in repo.STATUSES:
        raise invalid_parameter("status", "one of " + ", ".join(repo.STATUSES))
    items, total = await repo.deliveries(
        request.config_dict[ENGINE], call_id=request.query.get("call_id") or None, status=status,
        config_id=request.query.get("postback_id") or None, limit=limit, offset=offset,
    )  # fmt: skip
    return web.json_response(
        {"items": [delivery_json(d) for d in items], "total": total, "limit": limit, "offset": offset}
    )


def postback_routes() -> list[web.RouteDef]:
    """The routes, for the ``/api/v1`` sub-app (the delivery log before ``/postbacks/{key}``)."""
    return [
        web.get("/postbacks/deliveries", list_deliveries, allow_head=False),
        web.get("/postbacks", list_postbacks, allow_head=False),
        web.post("/postbacks", create_postback),
        web.get("/postbacks/{key}", get_postback, allow_head=False),
        web.put("/postbacks/{key}", put_postback),
        web.patch("/postbacks/{key}", patch_postback),
        web.delete("/postbacks/{key}", delete_postback),
    ]
