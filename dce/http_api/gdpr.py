"""``/api/v1`` GDPR and audit endpoints: erasure, export, the audit log and its verification.

- ``POST /gdpr/erasures`` ``{"number": "+13125550199"}`` -> 200 the :class:`~dce.db.gdpr.ErasureReport`
- ``GET /gdpr/export/{number}`` -> 200 everything held about the number
- ``GET /audit?limit=50&offset=0`` -> a page of audit entries, newest first
- ``GET /audit/verify`` -> 200 ``{"ok", "checked", "first_bad_seq", "detail"}`` (ok false when the chain breaks)

The erasers/exporters of tables other than ``calls`` come from the :data:`ERASERS`/:data:`EXPORTERS` app keys,
the key hashing audit subjects from :data:`PSEUDONYM_KEY` (all optional).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, ConfigDict, Field

from dce.db.audit_repository import list_entries, verify
from dce.db.gdpr import Eraser, Exporter, erase_number, export_number, normalise_number
from dce.http_api.describe import PAGE_SCHEMA, describe
from dce.http_api.inputs import ParameterBody, invalid_value, read_model
from dce.http_api.keys import ENGINE
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require
from dce.http_api.problems import invalid_parameter

ERASERS = web.AppKey("gdpr_erasers", Mapping[str, Eraser])
EXPORTERS = web.AppKey("gdpr_exporters", Mapping[str, Exporter])
PSEUDONYM_KEY = web.AppKey("gdpr_pseudonym_key", bytes)

ACTOR = "api"


def _normalised(raw: Any) -> str:
    """``raw`` as the number the tables hold; ValueError saying why it is not one."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("expected a phone number string")
    # an unencoded '+' in a query string arrives as a space
    return normalise_number("+" + raw.lstrip() if raw.startswith(" ") else raw)


def _read_number(raw: Any) -> str:
    try:
        return _normalised(raw)
    except ValueError as exc:
        raise invalid_value("phone_number", str(exc)) from None


class ErasureIn(ParameterBody):
    model_config = ConfigDict(extra="ignore")
    ABSENT_IS_NULL = True

    number: Annotated[str, BeforeValidator(_read_number), Field(description="a phone number, E.164 preferred")]


@describe(body=ErasureIn)
@require("gdpr:write")
async def post_erasure(request: web.Request) -> web.Response:
    """Erase a number from every table holding it; 200 with rows changed per table and the audit entry's seq."""
    number = (await read_model(request, ErasureIn)).number
    app = request.config_dict
    report = await erase_number(
        app[ENGINE], number, app.get(ERASERS) or {}, actor=ACTOR, key=app.get(PSEUDONYM_KEY)
    )
    return web.json_response(report.to_json())


@require("gdpr:read")
async def get_export(request: web.Request) -> web.Response:
    """Everything held about the number (audited)."""
    try:
        number = _normalised(request.match_info["number"])
    except ValueError as exc:
        raise invalid_parameter("number", str(exc)) from None
    app = request.config_dict
    document = await export_number(
        app[ENGINE], number, app.get(EXPORTERS) or {}, actor=ACTOR, key=app.get(PSEUDONYM_KEY)
    )
    return web.json_response(document, dumps=lambda value: json.dumps(value, ensure_ascii=False, default=str))


@describe(query=page_params(), response_schema=PAGE_SCHEMA)
@require("audit:read")
async def get_audit(request: web.Request) -> web.Response:
    """A page of the audit log, newest first."""
    limit, offset = page(request)
    entries, total = await list_entries(request.config_dict[ENGINE], limit, offset)
    return web.json_response(
        {"items": [entry.to_json() for entry in entries], "total": total, "limit": limit, "offset": offset}
    )


@require("audit:read")
async def get_audit_verify(request: web.Request) -> web.Response:
    """Verify the whole chain."""
    result = await verify(request.config_dict[ENGINE])
    return web.json_response(result.to_json())


def gdpr_routes() -> list[web.RouteDef]:
    """The routes, relative to ``/api/v1``."""
    return [
        web.post("/gdpr/erasures", post_erasure),
        web.get("/gdpr/export/{number}", get_export),
        web.get("/audit", get_audit),
        web.get("/audit/verify", get_audit_verify),
    ]
