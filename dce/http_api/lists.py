"""``/api/v1`` number lists: DNC (national, state, internal), suppression, litigators, blocked ANI/DID.

::

    GET    /lists?kind=&scope=           -> 200 {"items": [list...], "total"}
    POST   /lists                        -> 201 list   body {"kind", "scope"?, "name"?, "id"?}
    GET    /lists/{id}                   -> 200 list   {"id", "kind", "scope", "name", "count", "created_at", ...}
    DELETE /lists/{id}                   -> 204
    POST   /lists/{id}/numbers           -> 200 {"added", "duplicates", "invalid": [{"index", "value", "reason"}],
                                                 "total"}   body {"numbers": ["+12125550100", "(310) 555-0100"]}
    DELETE /lists/{id}/numbers/{number}  -> 204 (404 when the list does not hold it)
    POST   /lists/{id}/import?column=&replace=false   body: text/plain (one number a line) or text/csv
                                         -> 200 {"lines", "valid", "imported", "duplicates_in_file",
                                                 "duplicates_on_list", "blank", "invalid_count",
                                                 "invalid": [{"line", "text", "reason"}] (first 1000), ...}
    GET    /lists/check/{number}         -> 200 {"number", "hits": [{"kind", "scope", "list_id"}]}

Numbers are normalised to E.164 (default region US; a ``+`` in a path may be sent as is or as ``%2B``).
Errors are problem+json: unknown list 404, taken id 409, a bad field 422 naming it. After every successful write
the app's ``ON_LISTS_CHANGE`` hook (if any) is called so the in-memory book can be reloaded. The check reads
the database (so it sees a write at once), not the in-memory book.

Handlers carry the permission they need (``lists:read`` / ``lists:write``) for the auth layer to come.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any
from urllib.parse import quote

from aiohttp import web

from dce.compliance.importer import Format, ParseResult, normalise, parse_stream
from dce.compliance.lists import ListKind, check_scope
from dce.db import list_repository as repo
from dce.http_api.hooks import OnChange, notify_change
from dce.http_api.inputs import read_json_object
from dce.http_api.keys import ENGINE
from dce.http_api.permissions import require
from dce.http_api.problems import ProblemError, invalid_parameter

ON_LISTS_CHANGE = web.AppKey("on_lists_change", OnChange)

READ = "lists:read"
WRITE = "lists:write"

MAX_IMPORT_BYTES = 1 << 30  # 1 GiB of text: ~80M numbers
MAX_REPORTED = 1000  # invalid/blank line numbers listed in an import answer (the counts are always complete)
_SPOOL_BYTES = 8 << 20


def _engine(request: web.Request) -> Any:
    return request.config_dict[ENGINE]




async def _json_object(request: web.Request) -> dict[str, Any]:
    return await read_json_object(request)


async def _list(request: web.Request) -> repo.ListInfo:
    try:
        return await repo.get_list(_engine(request), request.match_info["id"])
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None


def _kind(raw: Any, name: str = "kind") -> ListKind:
    try:
        return ListKind(raw)
    except ValueError:
        allowed = ", ".join(k.value for k in ListKind)
        raise invalid_parameter(name, f"expected one of {allowed}, got {raw!r}") from None


def _number(raw: str, name: str = "number") -> int:
    value, reason = normalise(raw)
    if value is None:
        raise invalid_parameter(name, f"{reason}: {raw!r}")
    return value


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise invalid_parameter(name, f"expected true or false, got {raw!r}")


# ---------------------------------------------------------------------------------------------- handlers


@require(READ)
async def list_lists(request: web.Request) -> web.Response:
    kind = _kind(request.query["kind"]) if request.query.get("kind") else None
    scope = request.query.get("scope") or None
    items = await repo.list_lists(_engine(request), kind, scope)
    return web.json_response({"items": [i.to_json() for i in items], "total": len(items)})


@require(WRITE)
async def create_list(request: web.Request) -> web.Response:
    body = await _json_object(request)
    kind = _kind(body.get("kind"))
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise invalid_parameter("scope", "expected a string")
    try:
        scope = check_scope(kind, scope)
    except ValueError as exc:
        raise invalid_parameter("scope", str(exc)) from None
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 255:
        raise invalid_parameter("name", "expected a string of at most 255 characters")
    list_id = body.get("id")
    if list_id is not None and (not isinstance(list_id, str) or not 1 <= len(list_id) <= 64 or "/" in list_id):
        raise invalid_parameter("id", "expected a string of 1-64 characters without '/'")
    try:
        info = await repo.create_list(_engine(request), kind, scope, name, list_id)
    except repo.ListConflict as exc:
        raise ProblemError(409, str(exc)) from None
    await notify_change(request, ON_LISTS_CHANGE)
    location = f"{request.path}/{quote(info.id, safe='')}"  # an id may hold any character but '/'
    return web.json_response(info.to_json(), status=201, headers={"Location": location})


@require(READ)
async def get_list(request: web.Request) -> web.Response:
    return web.json_response((await _list(request)).to_json())


@require(WRITE)
async def delete_list(request: web.Request) -> web.Response:
    try:
        await repo.delete_list(_engine(request), request.match_info["id"])
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    await notify_change(request, ON_LISTS_CHANGE)
    return web.Response(status=204)


@require(WRITE)
async def add_numbers(request: web.Request) -> web.Response:
    body = await _json_object(request)
    numbers = body.get("numbers")
    if not isinstance(numbers, list) or not numbers:
        raise invalid_parameter("numbers", "expected a non-empty array of phone numbers")
    if len(numbers) > repo.MAX_ADD:
        raise invalid_parameter("numbers", f"at most {repo.MAX_ADD} per request; use /import for more")
    values: list[int] = []
    invalid: list[dict[str, Any]] = []
    for index, raw in enumerate(numbers):
        if not isinstance(raw, str):
            invalid.append({"index": index, "value": raw, "reason": "expected a string"})
            continue
        value, reason = normalise(raw)
        if value is None:
            invalid.append({"index": index, "value": raw, "reason": reason})
        else:
            values.append(value)
    list_id = request.match_info["id"]
    try:
        summary = await repo.add_numbers(_engine(request), list_id, values)
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    if summary.added:
        await notify_change(request, ON_LISTS_CHANGE)
    return web.json_response({
        "added": summary.added,
        "duplicates": summary.duplicates,
        "invalid": invalid,
        "total": summary.total,
    })


@require(WRITE)
async def remove_number(request: web.Request) -> web.Response:
    value = _number(request.match_info["number"])
    try:
        removed = await repo.remove_number(_engine(request), request.match_info["id"], value)
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    if not removed:
        raise ProblemError(404, f"+{value} is not on list {request.match_info['id']!r}")
    await notify_change(request, ON_LISTS_CHANGE)
    return web.Response(status=204)


def _column(request: web.Request) -> int | str | None:
    raw = request.query.get("column", "")
    if raw == "":
        return None
    if raw.isdigit():
        return int(raw)
    return raw


def _format(request: web.Request) -> Format:
    content_type = request.content_type
    if content_type in ("text/csv", "application/csv", "text/tab-separated-values"):
        return "csv"
    if content_type == "text/plain":
        return "text"
    return "auto"


def import_json(parsed: ParseResult, summary: repo.ImportSummary) -> dict[str, Any]:
    """The import answer (the CLI prints the same fields)."""
    return {
        "lines": parsed.lines,
        "valid": parsed.valid,
        "imported": summary.imported,
        "duplicates_in_file": parsed.duplicates,
        "duplicates_on_list": summary.duplicates,
        "removed": summary.removed,
        "total": summary.total,
        "header": parsed.header,
        "blank": len(parsed.blank),
        "blank_lines": parsed.blank[:MAX_REPORTED],
        "invalid_count": len(parsed.invalid),
        "invalid": [{"line": i.line, "text": i.text, "reason": i.reason} for i in parsed.invalid[:MAX_REPORTED]],
        "invalid_truncated": len(parsed.invalid) > MAX_REPORTED,
    }


@require(WRITE)
async def import_numbers(request: web.Request) -> web.Response:
    info = await _list(request)
    column = _column(request)
    replace = _flag(request, "replace")
    fmt = _format(request)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        size = 0
        async for block in request.content.iter_chunked(1 << 20):
            size += len(block)
            if size > MAX_IMPORT_BYTES:
                raise ProblemError(413, f"the body is larger than {MAX_IMPORT_BYTES} bytes; import with the CLI")
            spool.write(block)
        spool.seek(0)
        try:
            parsed = await asyncio.to_thread(parse_stream, spool, fmt=fmt, column=column)  # type: ignore[arg-type]
        except ValueError as exc:
            raise invalid_parameter("column", str(exc)) from None
    try:
        summary = await repo.import_numbers(_engine(request), info.id, parsed.numbers, replace=replace)
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    await notify_change(request, ON_LISTS_CHANGE)
    return web.json_response(import_json(parsed, summary))


@require(READ)
async def check_number(request: web.Request) -> web.Response:
    value = _number(request.match_info["number"])
    hits = await repo.lists_holding(_engine(request), value)
    return web.json_response({
        "number": f"+{value}",
        "hits": [{"kind": str(h.kind), "scope": h.scope, "list_id": h.id} for h in hits],
    })


def list_routes() -> list[web.RouteDef]:
    """Every number-list route, relative to ``/api/v1``."""
    return [
        web.get("/lists", list_lists, allow_head=False),
        web.post("/lists", create_list),
        web.get("/lists/check/{number}", check_number, allow_head=False),
        web.get("/lists/{id}", get_list, allow_head=False),
        web.delete("/lists/{id}", delete_list),
        web.post("/lists/{id}/numbers", add_numbers),
        web.delete("/lists/{id}/numbers/{number}", remove_number),
        web.post("/lists/{id}/import", import_numbers),
    ]
