"""Reports: the summary per group (repository and HTTP, JSON and CSV) and the call detail list, over a known set of
CDRs (SQLite; PostgreSQL with DCE_TEST_DATABASE_URL)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import CallDetailRecord, Disposition, SaleTerms
from dce.db import report_repository as repo
from dce.db.cdr_repository import insert_cdrs
from dce.db.engine import create_engine
from dce.db.report_repository import calls
from dce.http_api.keys import ENGINE
from dce.http_api.permissions import required_permission
from dce.http_api.problems import problem_middleware
from dce.http_api.reports import report_routes
from tests.cdr_factory import T0, make_cdr

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]

A = Disposition.ANSWERED
M = 1_000_000


def _cdr(n: int, disposition: Disposition, at: datetime, terms: SaleTerms | None, *,
         talk_s: int | None = None, caller: str | None = None) -> CallDetailRecord:
    cdr = make_cdr(n, disposition=disposition, start=at - timedelta(seconds=n))  # INVITE exactly at `at`
    cdr = replace(cdr, call_id=f"call-{n:02d}", terms=terms)
    if talk_s is not None:
        assert cdr.answer_at is not None
        cdr = replace(cdr, end_at=cdr.answer_at + timedelta(seconds=talk_s))
    return replace(cdr, caller=caller) if caller else cdr


def _terms(campaign: str, publisher: str, buyer: str | None, target: str | None) -> SaleTerms:
    return SaleTerms(campaign_id=campaign, publisher_id=publisher, buyer_id=buyer, target_id=target,
                     revenue=20 * M)


A1 = _terms("cmp-a", "pub-1", "buy-1", "tgt-1")
A2 = _terms("cmp-a", "pub-2", "buy-2", "tgt-3")
A_BLOCKED = _terms("cmp-a", "pub-1", None, None)
B1 = _terms("cmp-b", "pub-2", "buy-1", "tgt-2")
H13 = T0 + timedelta(minutes=90)  # 13:30 on 2025-03-01
D2 = T0 + timedelta(days=1)  # 12:00 on 2025-03-02

# n: (CDR, (converted, duplicate, settled_revenue, settled_payout)); answered calls talk 65 s unless said
CDRS: dict[int, tuple[CallDetailRecord, tuple[bool, bool, int, int]]] = {
    1: (_cdr(1, A, T0, A1), (True, False, 20 * M, 12 * M)),
    2: (_cdr(2, A, T0 + timedelta(seconds=2), A1, talk_s=35, caller="+14155550123"), (True, False, 20 * M, 12 * M)),
    3: (_cdr(3, A, T0 + timedelta(seconds=3), A1), (False, True, 0, 0)),
    4: (_cdr(4, Disposition.BUSY, T0 + timedelta(seconds=4), A1), (False, False, 0, 0)),
    5: (_cdr(5, Disposition.BLOCKED, T0 + timedelta(seconds=5), A_BLOCKED), (False, False, 0, 0)),
    6: (_cdr(6, A, H13, B1), (True, False, 35_500_000, 10_000_001)),
    7: (_cdr(7, Disposition.NO_ANSWER, H13 + timedelta(seconds=1), B1), (False, False, 0, 0)),
    8: (_cdr(8, Disposition.NO_ROUTE, D2, None), (False, False, 0, 0)),  # not a marketplace sale
    9: (_cdr(9, A, T0 - timedelta(days=2), A1), (True, False, 99 * M, 1 * M)),  # before the range
    10: (_cdr(10, A, D2 + timedelta(seconds=1), A2), (True, False, 5 * M, 2_500_000)),
}
SINCE = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = datetime(2025, 3, 3, tzinfo=UTC)
FIELDS = ("incoming", "connected", "converted", "blocked", "duplicates", "revenue", "payout",
          "connected_billable_s")

# key -> incoming, connected, converted, blocked, duplicates, revenue, payout, connected billable seconds
BY_CAMPAIGN = {
    "cmp-a": (6, 4, 3, 1, 1, 45 * M, 26_500_000, 65 + 35 + 65 + 65),
    "cmp-b": (2, 1, 1, 0, 0, 35_500_000, 10_000_001, 65),
    None: (1, 0, 0, 0, 0, 0, 0, 0),
}
TOTALS = (9, 5, 4, 1, 1, 80_500_000, 36_500_001, 295)
BY_PUBLISHER = {
    "pub-1": (5, 3, 2, 1, 1, 40 * M, 24 * M, 165),
    "pub-2": (3, 2, 2, 0, 0, 40_500_000, 12_500_001, 130),
    None: (1, 0, 0, 0, 0, 0, 0, 0),
}
BY_BUYER = {
    "buy-1": (6, 4, 3, 0, 1, 75_500_000, 34_000_001, 230),
    "buy-2": (1, 1, 1, 0, 0, 5 * M, 2_500_000, 65),
    None: (2, 0, 0, 1, 0, 0, 0, 0),  # the blocked call and the non-marketplace one
}
BY_TARGET = {
    "tgt-1": (4, 3, 2, 0, 1, 40 * M, 24 * M, 165),
    "tgt-2": (2, 1, 1, 0, 0, 35_500_000, 10_000_001, 65),
    "tgt-3": (1, 1, 1, 0, 0, 5 * M, 2_500_000, 65),
    None: (2, 0, 0, 1, 0, 0, 0, 0),
}
BY_HOUR = {
    datetime(2025, 3, 1, 12, tzinfo=UTC): (5, 3, 2, 1, 1, 40 * M, 24 * M, 165),
    datetime(2025, 3, 1, 13, tzinfo=UTC): (2, 1, 1, 0, 0, 35_500_000, 10_000_001, 65),
    datetime(2025, 3, 2, 12, tzinfo=UTC): (2, 1, 1, 0, 0, 5 * M, 2_500_000, 65),
}
BY_DAY = {
    datetime(2025, 3, 1, tzinfo=UTC): (7, 4, 3, 1, 1, 75_500_000, 34_000_001, 230),
    datetime(2025, 3, 2, tzinfo=UTC): (2, 1, 1, 0, 0, 5 * M, 2_500_000, 65),
}
EXPECTED = {"campaign": BY_CAMPAIGN, "publisher": BY_PUBLISHER, "buyer": BY_BUYER, "target": BY_TARGET,
            "hour": BY_HOUR, "day": BY_DAY}


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    await insert_cdrs(engine, [cdr for cdr, _ in CDRS.values()])
    async with engine.begin() as connection:  # what settlement writes
        for cdr, (converted, duplicate, revenue, payout) in CDRS.values():
            await connection.execute(
                update(calls)
                .where(calls.c.call_id == cdr.call_id)
                .values(converted=converted, duplicate=duplicate, settled_revenue=revenue, settled_payout=payout,
                        settled_at=cdr.end_at + timedelta(seconds=1))
            )
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[Client]:
    api = web.Application(middlewares=[problem_middleware])
    api[ENGINE] = engine
    api.add_routes(report_routes())
    app = web.Application()
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as c:
        yield c


def _figures(row: repo.SummaryRow) -> tuple[int, ...]:
    return tuple(getattr(row, name) for name in FIELDS)


@pytest.mark.parametrize("group_by", list(EXPECTED))
async def test_summary_counts_and_sums_per_group_and_totals(engine: AsyncEngine, group_by: str) -> None:
    rows = await repo.summary(engine, since=SINCE, until=UNTIL, group_by=group_by)
    groups, totals = rows[:-1], rows[-1]
    assert totals.is_total and not any(row.is_total for row in groups)
    assert {row.key: _figures(row) for row in groups} == EXPECTED[group_by]
    assert [row.key for row in groups] == list(EXPECTED[group_by])  # ordered by key, None last
    assert _figures(totals) == TOTALS
    assert totals.profit == 43_999_999
    assert totals.average_duration_s == 59.0 and totals.conversion_rate == 0.8


async def test_summary_derived_figures_filters_and_empty_ranges(engine: AsyncEngine) -> None:
    rows = await repo.summary(engine, since=SINCE, until=UNTIL, group_by="campaign")
    by_key = {row.key: row for row in rows[:-1]}
    assert by_key["cmp-a"].average_duration_s == 57.5 and by_key["cmp-a"].conversion_rate == 0.75
    assert by_key["cmp-b"].profit == 25_499_999
    assert by_key[None].average_duration_s is None and by_key[None].conversion_rate is None

    filtered = await repo.summary(engine, since=SINCE, until=UNTIL, group_by="target",
                                  filters={"campaign_id": "cmp-a", "publisher_id": "pub-1"})
    assert {row.key: row.incoming for row in filtered[:-1]} == {"tgt-1": 4, None: 1}
    assert filtered[-1].incoming == 5 and filtered[-1].revenue == 40 * M

    # `until` is exclusive; the call 2 days before is in its own range
    edge = await repo.summary(engine, since=SINCE, until=T0 + timedelta(seconds=2), group_by="day")
    assert [(row.key, row.incoming) for row in edge] == [(SINCE, 1), (None, 1)]
    earlier = await repo.summary(engine, since=SINCE - timedelta(days=3), until=SINCE, group_by="campaign")
    assert [(row.key, row.revenue) for row in earlier] == [("cmp-a", 99 * M), (None, 99 * M)]

    empty = await repo.summary(engine, since=UNTIL, until=UNTIL + timedelta(days=1), group_by="hour")
    assert len(empty) == 1 and empty[0].is_total and empty[0].incoming == 0 and empty[0].conversion_rate is None

    with pytest.raises(ValueError, match="group_by"):
        await repo.summary(engine, since=SINCE, until=UNTIL, group_by="caller")
    with pytest.raises(ValueError, match="filter"):
        await repo.summary(engine, since=SINCE, until=UNTIL, group_by="day", filters={"caller": "x"})


def _money(micros: int) -> str:
    whole, frac = divmod(micros, M)
    text = f"{whole}.{frac:06d}".rstrip("0")
    return text + "0" * (2 - len(text.split(".")[1]))


def _expected_json(figures: tuple[int, ...]) -> dict[str, Any]:
    incoming, connected, converted, blocked, duplicates, revenue, payout, billable = figures
    return {
        "incoming": incoming, "connected": connected, "converted": converted, "blocked": blocked,
        "duplicates": duplicates, "revenue": _money(revenue), "payout": _money(payout),
        "profit": _money(revenue - payout),
        "average_duration_s": round(billable / connected, 2) if connected else None,
        "conversion_rate": round(converted / connected, 4) if connected else None,
    }


@pytest.mark.parametrize("group_by", list(EXPECTED))
async def test_summary_json_and_csv_agree(client: Client, group_by: str) -> None:
    query = {"from": "2025-03-01", "to": "2025-03-03T00:00:00Z", "group_by": group_by}
    response = await client.get("/api/v1/reports/summary", params=query)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["from"], body["to"], body["group_by"]) == (SINCE.isoformat(), UNTIL.isoformat(), group_by)
    expected = [
        {"key": key.isoformat() if isinstance(key, datetime) else key, **_expected_json(figures)}
        for key, figures in EXPECTED[group_by].items()
    ]
    assert body["groups"] == expected
    assert body["totals"] == _expected_json(TOTALS)
    assert body["totals"]["profit"] == "43.999999" and body["totals"]["revenue"] == "80.50"

    response = await client.get("/api/v1/reports/summary.csv", params=query)
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="summary-')
    raw = await response.text()
    assert raw.endswith("\r\n")
    table = list(csv.reader(io.StringIO(raw, newline="")))
    key_name = {"hour": "hour", "day": "day"}.get(group_by, f"{group_by}_id")
    fields = list(body["totals"])
    assert table[0] == ["row", key_name, *fields]

    def cells(kind: str, key: str | None, values: dict[str, Any]) -> list[str]:
        return [kind, key or "", *("" if values[f] is None else str(values[f]) for f in fields)]

    assert table[1:] == [
        *(cells("group", group["key"], group) for group in body["groups"]),
        cells("total", None, body["totals"]),
    ]


async def test_summary_filters_over_http_and_csv_quoting(client: Client, engine: AsyncEngine) -> None:
    odd = _terms('cmp "x", y', "pub-9", None, None)
    await insert_cdrs(engine, [_cdr(11, Disposition.BLOCKED, T0, odd)])
    query = {"from": "2025-03-01T00:00:00+00:00", "to": "2025-03-02T00:00:00+00:00", "group_by": "campaign",
             "publisher_id": "pub-9"}
    body = await (await client.get("/api/v1/reports/summary", params=query)).json()
    assert body["filters"] == {"publisher_id": "pub-9"}
    assert [(g["key"], g["blocked"]) for g in body["groups"]] == [('cmp "x", y', 1)]
    raw = await (await client.get("/api/v1/reports/summary.csv", params=query)).text()
    assert raw.splitlines()[1].startswith('group,"cmp ""x"", y",1,0,0,1,')

    # an offset zone, its '+' unencoded (a space by the time it is parsed): 13:00+01:00 is 12:00 UTC
    response = await client.get(
        "/api/v1/reports/summary?from=2025-03-01T13:00:00+01:00&to=2025-03-01T13:00:00Z&group_by=hour"
    )
    body = await response.json()
    assert body["from"] == "2025-03-01T12:00:00+00:00"
    assert [g["incoming"] for g in body["groups"]] == [6]


async def test_summary_range_defaults_to_today_or_one_day(client: Client) -> None:
    today = datetime.now(UTC).date()
    for query, start, end in [
        ("group_by=day", today, today + timedelta(days=1)),
        ("from=2025-03-01&group_by=day", date(2025, 3, 1), date(2025, 3, 2)),
        ("to=2025-03-02&group_by=day", date(2025, 3, 1), date(2025, 3, 2)),
    ]:
        response = await client.get(f"/api/v1/reports/summary?{query}")
        assert response.status == 200, (query, await response.text())
        body = await response.json()
        assert (body["from"], body["to"]) == (f"{start}T00:00:00+00:00", f"{end}T00:00:00+00:00"), query
        assert (await client.get(f"/api/v1/reports/summary.csv?{query}")).status == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday&to=2025-03-02&group_by=day", "from"),
        ("from=2025-02-30&to=2025-03-02&group_by=day", "from"),
        ("from=2025-03-01T00:00:00&to=2025-03-02&group_by=day", "from"),  # no zone
        ("from=2025-03-01&to=2025-03-01&group_by=day", "to"),
        ("from=2025-03-02&to=2025-03-01&group_by=day", "to"),
        ("from=2024-01-01&to=2025-01-02&group_by=day", "to"),  # 367 days
        ("from=2025-03-01&to=2025-03-02", "group_by"),
        ("from=2025-03-01&to=2025-03-02&group_by=week", "group_by"),
        ("from=2025-03-01&to=2025-03-02&group_by=day&campaign_id=" + "x" * 65, "campaign_id"),
    ],
)
async def test_bad_summary_parameters_are_422_naming_the_field(client: Client, query: str, field: str) -> None:
    for path in ("/api/v1/reports/summary", "/api/v1/reports/summary.csv"):
        response = await client.get(f"{path}?{query}")
        assert response.status == 422, (path, query)
        assert response.content_type == "application/problem+json"
        assert (await response.json())["invalid_params"][0]["name"] == field


async def test_a_full_366_day_range_is_accepted(client: Client) -> None:
    response = await client.get("/api/v1/reports/summary?from=2024-03-01&to=2025-03-02&group_by=campaign")
    assert response.status == 200
    assert (await response.json())["totals"]["incoming"] == 8  # all but the two of 2025-03-02


async def test_call_detail_list_filters(client: Client) -> None:
    async def ids(query: str) -> list[str]:
        response = await client.get(f"/api/v1/reports/calls?{query}")
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["total"] == len(body["items"]) or "limit" in query
        return [item["call_id"].removeprefix("call-") for item in body["items"]]

    assert await ids("") == ["10", "08", "07", "06", "05", "04", "03", "02", "01", "09"]  # newest first
    assert await ids("campaign_id=cmp-b") == ["07", "06"]
    assert await ids("publisher_id=pub-2") == ["10", "07", "06"]
    assert await ids("buyer_id=buy-1&converted=true") == ["06", "02", "01", "09"]
    assert await ids("target_id=tgt-1&converted=false") == ["04", "03"]
    assert await ids("converted=false&since=2025-03-01&until=2025-03-02") == ["07", "05", "04", "03"]
    assert await ids("caller=%2B14155550123") == ["02"]
    assert await ids("caller=+14155550123") == ["02"]  # unencoded '+'
    assert await ids("caller=(415) 555-0123") == ["02"]
    assert await ids("disposition=blocked") == ["05"]
    assert await ids("since=2025-03-01T13:00:00Z&until=2025-03-02") == ["07", "06"]

    response = await client.get("/api/v1/reports/calls?limit=2&offset=1&campaign_id=cmp-a")
    body = await response.json()
    assert (body["total"], body["limit"], body["offset"]) == (7, 2, 1)
    first = body["items"][0]
    assert first["call_id"] == "call-05"
    full = (await (await client.get("/api/v1/reports/calls?converted=true&campaign_id=cmp-b")).json())["items"][0]
    assert (full["revenue"], full["settled_revenue"], full["settled_payout"]) == ("20.00", "35.50", "10.000001")
    assert full["converted"] is True and full["duplicate"] is False
    assert full["invite_at"] == H13.isoformat() and full["billable_s"] == 65


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("converted=maybe", "converted"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("offset=-1", "offset"),
        ("since=noon", "since"),
        ("since=2025-03-02&until=2025-03-01", "until"),
        ("disposition=lost", "disposition"),
        ("buyer_id=" + "b" * 65, "buyer_id"),
    ],
)
async def test_bad_call_list_parameters_are_422_naming_the_field(client: Client, query: str, field: str) -> None:
    response = await client.get(f"/api/v1/reports/calls?{query}")
    assert response.status == 422
    assert (await response.json())["invalid_params"][0]["name"] == field


def test_routes_need_analytics_read() -> None:
    routes = report_routes()
    assert {route.path for route in routes} == {"/reports/summary", "/reports/summary.csv", "/reports/calls"}
    assert all(required_permission(route.handler) == "analytics:read" for route in routes)
