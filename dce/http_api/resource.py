"""One CRUD collection of ``/api/v1``, served one way: list, create, get, patch, delete (and put).

A :class:`Resource` names the collection, its input schemas, its JSON shape and its repository functions, and
:meth:`Resource.routes` gives the documented (:func:`describe`), permission-marked (:func:`require`) handlers::

    GET    /{collection}?limit=50&offset=0 -> 200 {"items", "total", "limit", "offset"}
    POST   /{collection}                   -> 201 the entity (Location header); key generated when omitted
    GET    /{collection}/{key}             -> 200 the entity
    PUT    /{collection}/{key}             -> 200 replaced (only without a typed ``patch`` schema)
    PATCH  /{collection}/{key}             -> 200 the merged entity
    DELETE /{collection}/{key}             -> 204

PATCH takes a typed ``patch`` schema whose ``apply(request, current)`` gives the entity to store; without one,
the body is merged into the stored entity's JSON (objects one level deep) and stored as a PUT would. ``scope``
gives the tenancy filter passed to every read, update and delete (another tenant's entity is a 404). After every
successful write the resource's cache (if any) is dropped and the app's :class:`~dce.http_api.changes.Changes`
hears of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from dce.http_api.changes import Change, notify
from dce.http_api.describe import FREE_JSON, PAGE_SCHEMA, describe
from dce.http_api.inputs import read_json_object, validated
from dce.http_api.keys import ENGINE, wall_now
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require
from dce.http_api.problems import invalid_parameter, repository_call
from dce.http_api.read_cache import ResponseCache, cached, invalidate

Repository = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Summaries:
    """The OpenAPI summary of each operation (``put`` only for resources without a typed patch)."""

    list: str
    create: str
    get: str
    patch: str
    delete: str
    put: str = ""


def _to_model(request: web.Request, data: Any, key: str) -> Any:
    return data.to_model(key)


def _unscoped(request: web.Request) -> dict[str, Any]:
    return {}


def _same(raw: str) -> str:
    return raw


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for name, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return merged


@dataclass(frozen=True)
class Resource:
    """One CRUD collection: its schemas, JSON shape, repository functions, permissions and change kind."""

    collection: str
    schema: type[BaseModel]  # the POST (and PUT) body
    to_json: Callable[[Any], dict[str, Any]]
    create: Repository  # (engine, model, **stamp)
    get: Repository  # (engine, key, **scope)
    list: Callable[..., Coroutine[Any, Any, tuple[list[Any], int]]]  # (engine, limit, offset, **scope)
    update: Repository  # (engine, model, **stamp, **scope)
    delete: Callable[..., Coroutine[Any, Any, None]]  # (engine, key, **scope)
    read: str  # permissions
    write: str
    change: Change
    summaries: Summaries
    key_field: str = "id"
    names: tuple[str, str] | None = None  # (plural, singular): handler names (operationIds) like list_agents
    # a validated POST/PUT body and its key -> the entity (default: ``data.to_model(key)``)
    build: Callable[[web.Request, Any, str], Any] = _to_model
    patch: type[BaseModel] | None = None  # typed PATCH body with ``apply(request, current)``; None: merge + PUT
    scope: Callable[[web.Request], dict[str, Any]] = _unscoped  # tenancy filter for reads, updates, deletes
    stamped: bool = False  # create and update take ``now`` (the app's wall clock)
    decimals: bool = False  # JSON numbers read as Decimal (money is never a float)
    cache: web.AppKey[ResponseCache] | None = None  # reads served through it; writes drop it
    generated_keys: bool = True
    path_key: Callable[[str], str] = _same  # the ``{key}`` of the path, normalised (422 when it cannot be)
    delete_problems: tuple[int, ...] = (404,)
    # turns a built entity into what is stored (e.g. sealing secrets), given the stored one on updates
    prepare: Callable[[web.Request, Any, Any], Coroutine[Any, Any, Any]] | None = None

    async def _body(self, request: web.Request) -> dict[str, Any]:
        return await read_json_object(request, decimals=self.decimals)

    def _stamp(self, request: web.Request) -> dict[str, Any]:
        return {"now": wall_now(request)} if self.stamped else {}

    async def _changed(self, request: web.Request) -> None:
        if self.cache is not None:
            invalidate(request, self.cache)
        await notify(request, self.change)

    async def _read(self, request: web.Request, key: Any, compute: Callable[[], Coroutine[Any, Any, web.Response]]
                    ) -> web.Response:
        if self.cache is None:
            return await compute()
        return await cached(request, self.cache, (self.collection, *key), compute)

    async def _prepared(self, request: web.Request, model: Any, key: str, *, updating: bool) -> Any:
        if self.prepare is None:
            return model
        existing = None
        if updating:
            existing = await repository_call(self.get(request.config_dict[ENGINE], key, **self.scope(request)))
        return await self.prepare(request, model, existing)

    def _key(self, request: web.Request) -> str:
        return self.path_key(request.match_info["key"])

    def _name(self, verb: str) -> str:
        if self.names is None:
            return f"{verb}_items" if verb == "list" else f"{verb}_item"
        plural, singular = self.names
        return f"{verb}_{plural}" if verb == "list" else f"{verb}_{singular}"

    def routes(self) -> list[web.RouteDef]:
        """The collection's routes, relative to ``/api/v1``."""
        base = f"/{self.collection}"
        item = f"{base}/{{key}}"
        text = self.summaries

        @describe(text.list, query=page_params(), response_schema=PAGE_SCHEMA)
        @require(self.read)
        async def list_items(request: web.Request) -> web.Response:
            limit, offset = page(request)
            scope = self.scope(request)

            async def compute() -> web.Response:
                items, total = await self.list(request.config_dict[ENGINE], limit, offset, **scope)
                return web.json_response(
                    {"items": [self.to_json(i) for i in items], "total": total, "limit": limit, "offset": offset}
                )

            return await self._read(request, (limit, offset), compute)

        @describe(text.get, problems=(404,))
        @require(self.read)
        async def get_item(request: web.Request) -> web.Response:
            key = self._key(request)

            async def compute() -> web.Response:
                found = await repository_call(self.get(request.config_dict[ENGINE], key, **self.scope(request)))
                return web.json_response(self.to_json(found))

            return await self._read(request, ("item", key), compute)

        @describe(text.create, body=self.schema, status=201, problems=(409,), created_key=self.key_field)
        @require(self.write)
        async def create_item(request: web.Request) -> web.Response:
            data = validated(self.schema, await self._body(request))
            key = getattr(data, self.key_field)
            if key is None:
                if not self.generated_keys:
                    raise invalid_parameter(self.key_field, "required")
                key = uuid.uuid4().hex
            model = await self._prepared(request, self.build(request, data, key), key, updating=False)
            created = await repository_call(self.create(request.config_dict[ENGINE], model, **self._stamp(request)))
            await self._changed(request)
            return web.json_response(self.to_json(created), status=201, headers={"Location": f"{request.path}/{key}"})

        async def store(request: web.Request, model: Any) -> web.Response:
            updated = await repository_call(self.update(request.config_dict[ENGINE], model, **self._stamp(request),
                                                        **self.scope(request)))
            await self._changed(request)
            return web.json_response(self.to_json(updated))

        async def replace(request: web.Request, body: dict[str, Any]) -> web.Response:
            key = self._key(request)
            data = validated(self.schema, body)
            if getattr(data, self.key_field) not in (None, key):
                raise invalid_parameter(self.key_field, f"does not match the path ({key!r}); keys cannot change")
            return await store(request, await self._prepared(request, self.build(request, data, key), key,
                                                             updating=True))

        @describe(text.put, body=self.schema, problems=(404, 409))
        @require(self.write)
        async def put_item(request: web.Request) -> web.Response:
            return await replace(request, await self._body(request))

        typed = self.patch

        @describe(text.patch, body=typed, body_content=None if typed else FREE_JSON, problems=(404, 409))
        @require(self.write)
        async def patch_item(request: web.Request) -> web.Response:
            if typed is None:
                body = await self._body(request)
                current = await repository_call(self.get(request.config_dict[ENGINE], self._key(request),
                                                         **self.scope(request)))
                return await replace(request, _merge(self.to_json(current), body))
            patch = validated(typed, await self._body(request))  # before the lookup: a bad body is a 422
            current = await repository_call(self.get(request.config_dict[ENGINE], self._key(request),
                                                     **self.scope(request)))
            return await store(request, patch.apply(request, current))  # type: ignore[attr-defined]

        @describe(text.delete, status=204, content_type=None, problems=self.delete_problems)
        @require(self.write)
        async def delete_item(request: web.Request) -> web.Response:
            await repository_call(self.delete(request.config_dict[ENGINE], self._key(request),
                                              **self.scope(request)))
            await self._changed(request)
            return web.Response(status=204)

        for verb, handler in (("list", list_items), ("get", get_item), ("create", create_item), ("put", put_item),
                              ("patch", patch_item), ("delete", delete_item)):
            handler.__name__ = handler.__qualname__ = self._name(verb)
        routes = [
            web.get(base, list_items, allow_head=False),
            web.post(base, create_item),
            web.get(item, get_item, allow_head=False),
            web.put(item, put_item),
            web.patch(item, patch_item),
            web.delete(item, delete_item),
        ]
        return routes if typed is None else [route for route in routes if route.method != "PUT"]
