"""``/api/v1/reports``: the summary report (JSON and CSV) and the call detail list with the sale-term filters.

``GET /reports/summary?from=&to=&group_by=campaign|publisher|buyer|target|trunk|hour|day[&campaign_id=&publisher_id=
&buyer_id=&target_id=&trunk=]`` (``trunk``: the inbound trunk's name): ``from``/``to`` are ISO 8601 times with a zone
or dates (``YYYY-MM-DD`` = UTC midnight), ``to`` exclusive, ``from < to``, at most 366 days apart; without either the
report covers today (UTC), with one of them the day from ``from`` (or up to ``to``). ``GET /reports/summary.csv``:
the same rows as CSV.
``GET /reports/calls?since=&until=&campaign_id=&publisher_id=&buyer_id=&target_id=&trunk=&caller=&converted=&limit=
&offset=``: a page of calls, newest first. Money is a decimal string of currency units everywhere.

A buyer or seller (a principal with a tenant, see ``permissions.tenant_filter``) sees only its own calls in every
report: its figures count only calls of its buyer id or publisher id, whatever filters it sends; an admin (or
anyone when auth is off) sees all. Answers come from the app's ``REPORTS_CACHE`` (summary, 5 s by default) and
``CALLS_CACHE`` (call list, 1 s), keyed by the whole query and the caller's tenant: a report may be that many
seconds old, and says so with ``Cache-Control: private, max-age=<ttl>``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import phonenumbers
from aiohttp import web

from dce.db import report_repository as repo
from dce.db.report_repository import SummaryRow
from dce.http_api.calls import CDR_PAGE, DISPOSITION_PARAM, disposition_param, json_row
from dce.http_api.describe import TIME, Param, describe, enum_schema, id_params
from dce.http_api.keys import ENGINE, wall_now
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import invalid_parameter
from dce.http_api.read_cache import CALLS_CACHE, REPORTS_CACHE, cached, request_key
from dce.routing.model import format_money

READ = "analytics:read"
MAX_SPAN = timedelta(days=366)
ONE_DAY = timedelta(days=1)  # the summary's range when from or to is left out
MAX_ID_LENGTH = 64
KEY_NAMES = {"campaign": "campaign_id", "publisher": "publisher_id", "buyer": "buyer_id", "target": "target_id",
             "trunk": "trunk", "hour": "hour", "day": "day"}
SUMMARY_FIELDS = ("incoming", "connected", "converted", "blocked", "duplicates", "revenue", "payout", "profit",
                  "average_duration_s", "conversion_rate")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# ------------------------------------------------------------------------------------------------ parameters


def time_param(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time with a zone, or a date (UTC midnight); None when absent; 422 naming ``name`` otherwise."""
    raw = request.query.get(name, "").strip()
    if raw == "":
        return None
    if _DATE.fullmatch(raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise invalid_parameter(name, f"not a valid date: {raw!r}") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    # an unencoded '+' of a zone offset arrives as a space: "...T00:00:00 02:00"
    text = raw[:-6] + "+" + raw[-5:] if re.search(r" \d{2}:\d{2}$", raw) else raw
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise invalid_parameter(name, f"expected an ISO 8601 time with a zone or a date, got {raw!r}") from None
    if value.tzinfo is None:
        raise invalid_parameter(name, f"needs a time zone (like Z or +02:00), got {raw!r}")
    return value.astimezone(UTC)


def _range(request: web.Request, low: str, high: str, *, one_day: bool) -> tuple[datetime | None, datetime | None]:
    """The ``[low, high)`` range of the query. ``one_day``: a missing end makes the range one day long, both
    missing make it today (UTC midnight to midnight); otherwise a missing end is open."""
    since = time_param(request, low)
    until = time_param(request, high)
    if one_day:
        if since is None and until is None:
            since = datetime.combine(wall_now(request).date(), datetime.min.time(), UTC)
        if since is None:
            assert until is not None
            since = until - ONE_DAY
        if until is None:
            until = since + ONE_DAY
    if since is not None and until is not None:
        if since >= until:
            raise invalid_parameter(high, f"must be after {low!r} ({high!r} is exclusive)")
        if until - since > MAX_SPAN:
            raise invalid_parameter(high, f"the range may span at most {MAX_SPAN.days} days")
    return since, until


def _id_param(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name, "")
    if raw == "":
        return None
    if len(raw) > MAX_ID_LENGTH or raw.strip() != raw:
        raise invalid_parameter(name, f"expected an id of at most {MAX_ID_LENGTH} characters, got {raw!r}")
    return raw


_TERM_FILTERS = id_params(*repo.FILTERS)
_SUMMARY_QUERY = (
    Param("from", "inclusive; default: today 00:00 UTC, or one day before `to`", TIME),
    Param("to", "exclusive; default: one day after `from`", TIME),
    Param("group_by", "", enum_schema(repo.GROUP_BYS), required=True),
    *_TERM_FILTERS,
)


def _term_filters(request: web.Request) -> dict[str, str | None]:
    return {name: _id_param(request, name) for name in repo.FILTERS}


def _group_by(request: web.Request) -> str:
    raw = request.query.get("group_by", "")
    if raw not in repo.GROUP_BYS:
        allowed = "|".join(repo.GROUP_BYS)
        reason = f"expected one of {allowed}, got {raw!r}" if raw else f"required: one of {allowed}"
        raise invalid_parameter("group_by", reason)
    return raw


def _caller_param(request: web.Request) -> str | None:
    """E.164 when it parses as a number (as CDRs store callers), else the raw value."""
    raw = request.query.get("caller", "")
    if raw.strip() == "":
        return None
    text = "+" + raw.lstrip() if raw.startswith(" ") else raw  # an unencoded '+' arrives as a space
    if len(text) > 255:
        raise invalid_parameter("caller", "too long")
    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(number):
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name, "").lower()
    if raw == "":
        return None
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise invalid_parameter(name, f"expected true or false, got {raw!r}")


# --------------------------------------------------------------------------------------------------- summary


def _key_json(key: str | datetime | None) -> str | None:
    return key.isoformat() if isinstance(key, datetime) else key


def summary_json(row: SummaryRow) -> dict[str, Any]:
    """One group (or the totals) as JSON: counts, money as decimal strings, duration and rate (None if unknown)."""
    average = row.average_duration_s
    rate = row.conversion_rate
    return {
        "incoming": row.incoming,
        "connected": row.connected,
        "converted": row.converted,
        "blocked": row.blocked,
        "duplicates": row.duplicates,
        "revenue": format_money(row.revenue),
        "payout": format_money(row.payout),
        "profit": format_money(row.profit),
        "average_duration_s": round(average, 2) if average is not None else None,
        "conversion_rate": round(rate, 4) if rate is not None else None,
    }


@dataclass(frozen=True, slots=True)
class _SummaryQuery:
    since: datetime
    until: datetime
    group_by: str
    filters: dict[str, str | None]
    tenant: dict[str, str]

    async def rows(self, request: web.Request) -> list[SummaryRow]:
        return await repo.summary(request.config_dict[ENGINE], since=self.since, until=self.until,
                                  group_by=self.group_by, filters=self.filters, tenant=self.tenant)


def _summary_query(request: web.Request) -> _SummaryQuery:
    since, until = _range(request, "from", "to", one_day=True)
    assert since is not None and until is not None
    return _SummaryQuery(since, until, _group_by(request), _term_filters(request), tenant_filter(request))


@describe("The summary report", query=_SUMMARY_QUERY)
@require(READ)
async def get_summary(request: web.Request) -> web.Response:
    """``{"from", "to", "group_by", "filters", "groups": [{"key", ...}], "totals": {...}}``."""
    query = _summary_query(request)

    async def compute() -> web.Response:
        rows = await query.rows(request)
        return web.json_response({
            "from": query.since.isoformat(),
            "to": query.until.isoformat(),
            "group_by": query.group_by,
            "filters": {name: value for name, value in query.filters.items() if value is not None},
            "groups": [{"key": _key_json(row.key), **summary_json(row)} for row in rows[:-1]],
            "totals": summary_json(rows[-1]),
        })

    return await cached(request, REPORTS_CACHE, request_key(request, query.tenant), compute)


def _csv_cell(value: Any) -> Any:
    return "" if value is None else value


@describe("The summary report as CSV", query=_SUMMARY_QUERY, content_type="text/csv")
@require(READ)
async def get_summary_csv(request: web.Request) -> web.Response:
    """The summary as RFC 4180 CSV: a header row, one row per group (``row`` = group), then ``row`` = total."""
    query = _summary_query(request)
    return await cached(request, REPORTS_CACHE, request_key(request, query.tenant),
                        lambda: _summary_csv(request, query))


async def _summary_csv(request: web.Request, query: _SummaryQuery) -> web.Response:
    rows = await query.rows(request)
    since, until, group_by = query.since, query.until, query.group_by
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # minimal quoting, CRLF: RFC 4180
    writer.writerow(["row", KEY_NAMES[group_by], *SUMMARY_FIELDS])
    for row in rows:
        values = summary_json(row)
        writer.writerow([
            "total" if row.is_total else "group",
            "" if row.is_total else _csv_cell(_key_json(row.key)),
            *(_csv_cell(values[name]) for name in SUMMARY_FIELDS),
        ])
    stamp = f"{since:%Y%m%dT%H%M%SZ}-{until:%Y%m%dT%H%M%SZ}"
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="summary-{group_by}-{stamp}.csv"'},
    )


# ------------------------------------------------------------------------------------------ call detail list


@describe("A page of calls with the sale-term filters", query=page_params(
    Param("since", "", TIME), Param("until", "", TIME), *_TERM_FILTERS, Param("caller"),
    Param("converted", "", {"type": "boolean"}), DISPOSITION_PARAM,
), response_schema=CDR_PAGE)
@require(READ)
async def get_calls(request: web.Request) -> web.Response:
    """A page of calls, newest first, with the sale-term filters: ``{"items", "total", "limit", "offset"}``."""
    limit, offset = page(request)
    since, until = _range(request, "since", "until", one_day=False)
    filters = {**_term_filters(request), "caller": _caller_param(request),
               "disposition": disposition_param(request)}
    converted = _bool_param(request, "converted")
    tenant = tenant_filter(request)

    async def compute() -> web.Response:
        rows, total = await repo.list_calls(request.config_dict[ENGINE], limit=limit, offset=offset, since=since,
                                            until=until, converted=converted, filters=filters, tenant=tenant)
        return web.json_response(
            {"items": [json_row(row) for row in rows], "total": total, "limit": limit, "offset": offset}
        )

    return await cached(request, CALLS_CACHE, request_key(request, tenant), compute)


def report_routes() -> list[web.RouteDef]:
    """The report routes for the ``/api/v1`` sub-app."""
    return [
        web.get("/reports/summary", get_summary),
        web.get("/reports/summary.csv", get_summary_csv),
        web.get("/reports/calls", get_calls),
    ]
