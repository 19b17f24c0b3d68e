"""``/api/v1/calls``: the stored call detail records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import phonenumbers
from aiohttp import web

from dce.billing.cdr import Disposition
from dce.db.cdr_repository import list_cdrs
from dce.http_api.describe import TIME, Param, describe, enum_schema, money_out, page_of
from dce.http_api.keys import ENGINE
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import invalid_parameter
from dce.http_api.read_cache import CALLS_CACHE, cached, request_key
from dce.routing.model import format_money

routes = web.RouteTableDef()

CDR_PAGE = page_of({  # the CDR's money columns (integer micros in the table) as the API writes every amount
    "revenue": money_out("what the buyer pays: the target's revenue or the winning bid", nullable=True),
    "payout_fixed": money_out("the publisher's fixed payout rule", nullable=True),
    "settled_revenue": money_out("charged to the buyer at settlement", nullable=True),
    "settled_payout": money_out("owed to the publisher at settlement", nullable=True),
})


DISPOSITION_PARAM = Param("disposition", "", enum_schema(Disposition))


def disposition_param(request: web.Request) -> str | None:
    """``?disposition=``: one of the CDR dispositions (None when absent); 422 naming it otherwise."""
    raw = request.query.get("disposition", "")
    if raw == "":
        return None
    try:
        return Disposition(raw).value
    except ValueError:
        allowed = ", ".join(d.value for d in Disposition)
        raise invalid_parameter("disposition", f"expected one of {allowed}, got {raw!r}") from None


def _did_param(request: web.Request) -> str | None:
    raw = request.query.get("did", "")
    if raw.strip() == "":
        return None
    # an unencoded '+' arrives as a space: "did=+12125550100" -> " 12125550100"
    text = "+" + raw.lstrip() if raw.startswith(" ") else raw
    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        raise invalid_parameter("did", f"not a phone number: {raw!r}") from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name, "")
    if raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise invalid_parameter(name, f"expected an ISO 8601 time, got {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


CDR_MONEY = frozenset({"revenue", "payout_fixed", "settled_revenue", "settled_payout"})  # micros in the table
BID_MONEY = frozenset({"amount"})


def json_row(row: dict[str, Any], money: frozenset[str] = CDR_MONEY) -> dict[str, Any]:
    """A stored row as JSON: times ISO 8601, the ``money`` columns (integer micros) as decimal strings of currency
    units like every other amount of the API (``12500000`` -> ``"12.50"``)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif key in money and value is not None:
            out[key] = format_money(value)
        else:
            out[key] = value
    return out


@describe("A page of calls, newest first", query=page_params(
    DISPOSITION_PARAM, Param("did", "tracking number"),
    Param("since", "", TIME), Param("until", "", TIME),
), response_schema=CDR_PAGE)
@routes.get("/calls")
@require("calls:read")
async def list_calls(request: web.Request) -> web.Response:
    """A page of calls, newest first: ``?limit=50&offset=0&disposition=&did=&since=&until=`` (a buyer or seller
    sees only its own calls). Money (``revenue``, ``payout_fixed``, ``settled_revenue``, ``settled_payout``) is a
    decimal string of currency units. Served from the app's ``CALLS_CACHE``: a page may be up to its ttl (1 s) old."""
    limit, offset = page(request)
    filters = {"disposition": disposition_param(request), "did": _did_param(request),
               "since": _time_param(request, "since"), "until": _time_param(request, "until")}
    tenant = tenant_filter(request)

    async def compute() -> web.Response:
        rows, total = await list_cdrs(request.config_dict[ENGINE], limit, offset, **filters, tenant=tenant)
        return web.json_response(
            {"items": [json_row(row) for row in rows], "total": total, "limit": limit, "offset": offset}
        )

    return await cached(request, CALLS_CACHE, request_key(request, tenant), compute)


def build_api_app() -> web.Application:
    """The ``/api/v1`` sub-application (engine and metrics come from the parent app's state)."""
    api = web.Application()
    api.add_routes(routes)
    return api
