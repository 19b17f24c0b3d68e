"""What the exchange shows to anyone who can reach it: metric series a caller cannot multiply, a cheap and
optionally authenticated ``/metrics``, no software versions in headers, and the newcomer's first requests."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.http_api.app import build_app
from dce.http_api.http_metrics import UNMATCHED
from dce.http_api.metrics import MAX_BUYER_SERIES, SIP_METHODS, ExchangeMetrics, label_violations
from tests.integration.sipp import HOST, ExchangeProcess

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


@pytest.fixture
def exchange(tmp_path: Path, migrated_database_url: str) -> Iterator[ExchangeProcess]:
    process = ExchangeProcess(tmp_path / "dce", migrated_database_url, {"+18005550100": ["sip:127.0.0.1:9"]})
    process.start()
    try:
        yield process
    finally:
        alive = process.alive()
        process.stop()
        assert alive, f"the exchange died during the test:\n{process.log()}"


def _flood(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            method = f"X{i:05d}FLOOD"
            data = (
                f"{method} sip:bob@{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:9;branch=z9hG4bK-flood-{i}\r\n"
                f"From: <sip:flood@{HOST}>;tag=f{i}\r\nTo: <sip:bob@{HOST}>\r\n"
                f"Call-ID: flood-{i}@{HOST}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            sock.sendto(data.encode(), (HOST, port))
            if i % 100 == 99:
                time.sleep(0.01)  # a flood, not a buffer overflow of the test's own socket


def test_unknown_sip_methods_over_udp_make_no_new_series(exchange: ExchangeProcess) -> None:
    """1000 distinct unknown methods over real UDP: /metrics keeps a fixed label set and about its size."""
    before = exchange.metrics()
    _flood(exchange.sip_port, 1000)
    deadline = time.monotonic() + 15
    text = before
    while time.monotonic() < deadline:
        time.sleep(1.1)  # past the scrape cache
        text = exchange.metrics()
        found = re.search(r'^dce_sip_messages_total\{direction="in",method="other"\} (\d+)', text, re.M)
        if found and int(found.group(1)) >= 900:  # UDP on loopback may drop a few
            break
    else:
        raise AssertionError(f"the flood was not counted as method=other:\n{text[-3000:]}")
    methods = set(re.findall(r'^dce_sip_messages_total\{direction="\w+",method="([^"]*)"\}', text, re.M))
    assert methods <= SIP_METHODS | {"other"}, methods
    assert "FLOOD" not in text
    print(f"/metrics bytes before={len(before)} after={len(text)}")
    assert len(text) < len(before) + 4000


# ------------------------------------------------------------------------------------------------- side API


@pytest.fixture
def metrics() -> ExchangeMetrics:
    return ExchangeMetrics()


@pytest.fixture
async def client(engine: AsyncEngine, metrics: ExchangeMetrics) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(engine=engine, metrics=metrics))) as client:
        yield client


async def test_http_labels_stay_closed_whatever_clients_send(client: Client, metrics: ExchangeMetrics) -> None:
    """Unknown methods and raw paths: only route templates and known methods become label values."""
    for i in range(60):
        await client.request(f"FOO{i}", f"/api/v1/campaigns/c-{i}")
        await client.get(f"/no/such/path/{i}")
        await client.get(f"/api/v1/campaigns/c-{i}")
    routes = set((await (await client.get("/api/openapi.json")).json())["paths"])
    assert label_violations(metrics, routes | {UNMATCHED}) == []
    text = (await (await client.get("/metrics")).read()).decode()
    assert "FOO" not in text and "/no/such" not in text and "c-1" not in text


async def test_metrics_token(engine: AsyncEngine, metrics: ExchangeMetrics) -> None:
    app = build_app(engine=engine, metrics=metrics, metrics_token="scrape-s3cret")
    async with TestClient(TestServer(app)) as client:
        refused = await client.get("/metrics")
        assert refused.status == 401
        assert refused.content_type == "application/problem+json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "dce_" not in await refused.text()
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-s3cret"})
        assert ok.status == 200 and "dce_active_calls" in await ok.text()


async def test_scrape_flood_renders_once_a_second(client: Client, metrics: ExchangeMetrics) -> None:
    for i in range(MAX_BUYER_SERIES):  # a big registry: rendering it is the cost
        metrics.call_finished("answered", f"b{i}")
    real, renders = metrics.render, 0

    def counting() -> tuple[bytes, str]:
        nonlocal renders
        renders += 1
        return real()

    metrics.render = counting  # type: ignore[method-assign]
    started = time.monotonic()
    answers = await asyncio.gather(*(client.get("/metrics") for _ in range(200)))
    elapsed = time.monotonic() - started
    assert all(a.status == 200 for a in answers)
    assert renders <= 1 + int(elapsed)


async def test_no_software_versions_in_http_answers(client: Client) -> None:
    """Normal answers, 404s, problems and answers to bytes that are not HTTP name no software and no version."""
    for path in ("/health/live", "/no/such/path", "/api/v1/campaigns", "/metrics"):
        server = (await client.get(path)).headers.get("Server", "")
        assert server == "dce", (path, server)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n")
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(4096), 5)).decode(errors="replace")
    writer.close()
    assert " 400 " in head.split("\r\n", 1)[0] and "Server: dce\r\n" in head, head
    assert "Python" not in head and "aiohttp" not in head, head


def test_sip_server_header_names_no_version() -> None:
    from dce.exchange.config import Settings

    assert Settings().sip.user_agent == "dce"


async def test_cdrs_show_money_as_decimal_strings_like_the_rest_of_the_api(client: Client,
                                                                           engine: AsyncEngine) -> None:
    from dataclasses import replace

    from dce.billing.cdr import SaleTerms
    from dce.db.cdr_repository import insert_cdrs
    from tests.cdr_factory import make_cdr

    terms = SaleTerms(campaign_id="c1", buyer_id="b1", revenue=12_500_000, payout_fixed=4_000_000)
    await insert_cdrs(engine, [replace(make_cdr(1), terms=terms), make_cdr(2)])
    for path in ("/api/v1/calls", "/api/v1/reports/calls"):
        items = {i["call_id"]: i for i in (await (await client.get(path)).json())["items"]}
        sold = items["call-00001"]
        assert (sold["revenue"], sold["payout_fixed"]) == ("12.50", "4.00"), (path, sold)
        assert items["call-00002"]["revenue"] is None


async def test_the_root_leads_to_the_api_docs(client: Client) -> None:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/swagger"
    assert (await client.get("/")).status == 200  # followed: Swagger UI
    document = await (await client.get("/api/openapi.json")).json()
    assert document["paths"]["/"]["get"]["security"] == []


PHONE_INPUTS = ["+12125550123", "2125550123", "(212) 555-0123", "1-212-555-0123", "+442079460958", "12", "hello"]


@pytest.mark.parametrize("raw", PHONE_INPUTS)
async def test_the_phone_inspector_accepts_what_the_cli_accepts(client: Client, raw: str) -> None:
    """``/debug/validate/phone`` and the CLI (``dce gdpr erase NUMBER``) read numbers by one rule."""
    from urllib.parse import quote

    from dce.db.gdpr import normalise_number

    try:
        cli: str | None = normalise_number(raw)
    except ValueError:
        cli = None
    response = await client.get(f"/debug/validate/phone/{quote(raw, safe='')}")
    if cli is None:
        assert response.status == 422, await response.text()
        assert repr(raw) in (await response.json(content_type=None))["detail"]
    else:
        assert response.status == 200, await response.text()
        assert (await response.json())["e164"] == cli
    tcpa = await client.get("/api/v1/debug/compliance/tcpa", params={"number": raw})
    assert tcpa.status == (422 if cli is None else 200), await tcpa.text()
