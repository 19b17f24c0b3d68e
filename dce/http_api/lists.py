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
the app's :class:`~dce.http_api.changes.Changes` hears of it (``lists``) so the in-memory book reloads. The check reads
the database (so it sees a write at once), not the in-memory book.

Handlers carry the permission they need (``lists:read`` / ``lists:write``) for the auth layer to come.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Annotated, Any
from urllib.parse import quote

from aiohttp import web
from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from dce.compliance.importer import Format, ParseResult, normalise, parse_stream
from dce.compliance.lists import ListKind, check_scope
from dce.db import list_repository as repo
from dce.http_api.changes import Change, notify
from dce.http_api.describe import Param, describe, enum_schema
from dce.http_api.inputs import ParameterBody, documented, invalid_value, read_model
from dce.http_api.keys import ENGINE
from dce.http_api.permissions import require
from dce.http_api.problems import ProblemError, invalid_parameter

READ = "lists:read"
WRITE = "lists:write"

MAX_IMPORT_BYTES = 1 << 30  # 1 GiB of text: ~80M numbers
MAX_REPORTED = 1000  # invalid/blank line numbers listed in an import answer (the counts are always complete)
_SPOOL_BYTES = 8 << 20


def _engine(request: web.Request) -> Any:
    return request.config_dict[ENGINE]




async def _list(request: web.Request) -> repo.ListInfo:
    try:
        return await repo.get_list(_engine(request), request.match_info["id"])
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None


def _parse_kind(raw: Any) -> ListKind:
    """``raw`` as a list kind; ValueError saying which kinds there are."""
    try:
        return ListKind(raw)
    except ValueError:
        allowed = ", ".join(k.value for k in ListKind)
        raise ValueError(f"expected one of {allowed}, got {raw!r}") from None


def _read_kind(raw: Any) -> ListKind:
    try:
        return _parse_kind(raw)
    except ValueError as exc:
        raise invalid_value("list_kind", str(exc)) from None


@documented({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": repo.MAX_ADD})
def _read_numbers(raw: Any) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise invalid_value("numbers", "expected a non-empty array of phone numbers")
    if len(raw) > repo.MAX_ADD:
        raise invalid_value("numbers", f"at most {repo.MAX_ADD} per request; use /import for more")
    return raw


class ListIn(ParameterBody):
    model_config = ConfigDict(extra="ignore")
    ABSENT_IS_NULL = True

    kind: Annotated[ListKind, BeforeValidator(_read_kind)]
    scope: Annotated[str | None, Field(validate_default=True,  # checked against the kind when left out too
                                       description="state (dnc_state) or buyer id (suppression)")] = None
    name: Annotated[str, Field(max_length=255)] = ""
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/]+$")] | None = None

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is not None and not isinstance(value, str):
            raise invalid_value("scope", "expected a string")
        kind = info.data.get("kind")
        if kind is None:
            return value
        try:
            return check_scope(kind, value)
        except ValueError as exc:
            raise invalid_value("scope", str(exc)) from None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or len(value) > 255:
            raise invalid_value("name", "expected a string of at most 255 characters")
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= 64 or "/" in value:
            raise invalid_value("list_id", "expected a string of 1-64 characters without '/'")
        return value


class NumbersIn(ParameterBody):
    model_config = ConfigDict(extra="ignore")
    ABSENT_IS_NULL = True

    numbers: Annotated[list[Any], BeforeValidator(_read_numbers)]


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


@describe("Number lists", query=(Param("kind", "", enum_schema(ListKind)), Param("scope")))
@require(READ)
async def list_lists(request: web.Request) -> web.Response:
    try:
        kind = _parse_kind(request.query["kind"]) if request.query.get("kind") else None
    except ValueError as exc:
        raise invalid_parameter("kind", str(exc)) from None
    scope = request.query.get("scope") or None
    items = await repo.list_lists(_engine(request), kind, scope)
    return web.json_response({"items": [i.to_json() for i in items], "total": len(items)})


@describe("Create a number list", body=ListIn, status=201, problems=(409,), created_key="id")
@require(WRITE)
async def create_list(request: web.Request) -> web.Response:
    body = await read_model(request, ListIn)
    try:
        info = await repo.create_list(_engine(request), body.kind, body.scope, body.name, body.id)
    except repo.ListConflict as exc:
        raise ProblemError(409, str(exc)) from None
    await notify(request, Change.LISTS)
    location = f"{request.path}/{quote(info.id, safe='')}"  # an id may hold any character but '/'
    return web.json_response(info.to_json(), status=201, headers={"Location": location})


@describe("A number list", problems=(404,))
@require(READ)
async def get_list(request: web.Request) -> web.Response:
    return web.json_response((await _list(request)).to_json())


@describe("Delete a number list", status=204, content_type=None, problems=(404,))
@require(WRITE)
async def delete_list(request: web.Request) -> web.Response:
    try:
        await repo.delete_list(_engine(request), request.match_info["id"])
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    await notify(request, Change.LISTS)
    return web.Response(status=204)


@describe("Add numbers to a list", body=NumbersIn, problems=(404,))
@require(WRITE)
async def add_numbers(request: web.Request) -> web.Response:
    numbers = (await read_model(request, NumbersIn)).numbers
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
        await notify(request, Change.LISTS)
    return web.json_response({
        "added": summary.added,
        "duplicates": summary.duplicates,
        "invalid": invalid,
        "total": summary.total,
    })


@describe("Remove a number from a list", status=204, content_type=None, problems=(404,))
@require(WRITE)
async def remove_number(request: web.Request) -> web.Response:
    value = _number(request.match_info["number"])
    try:
        removed = await repo.remove_number(_engine(request), request.match_info["id"], value)
    except repo.ListNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    if not removed:
        raise ProblemError(404, f"+{value} is not on list {request.match_info['id']!r}")
    await notify(request, Change.LISTS)
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


@describe(
    "Import numbers (one a line, or CSV)",
    query=(Param("column", "CSV column (index or header name)"),
           Param("replace", "replace the list's numbers", {"type": "boolean", "default": False})),
    body_content={"text/plain": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
    problems=(404, 413),
)
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
    await notify(request, Change.LISTS)
    return web.json_response(import_json(parsed, summary))


@describe("The lists holding a number")
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
