"""Tracing end to end: the real side API's request spans, and a real ``dce serve`` exporting OTLP/HTTP.

The collector here is a small aiohttp server that decodes the protobuf ``ExportTraceServiceRequest`` the OTLP
exporter posts (opentelemetry-proto), so the test sees exactly what a collector would.
"""

from __future__ import annotations

import asyncio
import gzip
import secrets
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dce.db.engine import create_engine
from dce.db.tracing import trace_statements
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics
from tests.externals import require_binary
from tests.integration.sipp import DID, HOST, ExchangeProcess, SippUas, admin_headers, free_port, run_sipp_uac

pytestmark = pytest.mark.integration


def traceparent() -> tuple[str, str, str]:
    """A fresh sampled W3C traceparent: (header, trace id, parent span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


# ------------------------------------------------------------------------------------------- the real app


async def test_the_real_api_traces_a_request_by_its_route_template(migrated_database_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = create_engine(migrated_database_url)
    app = build_app(engine=engine, metrics=ExchangeMetrics(), tracer=provider.get_tracer("test"))
    header, trace_id, parent_id = traceparent()
    try:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/api/v1/campaigns/no-such-campaign", headers={"traceparent": header})
            assert response.status == 404  # a problem+json from the inner middleware: the span still sees it
            assert (await client.get("/health/live")).status == 200
    finally:
        await engine.dispose()
    campaign, live = exporter.get_finished_spans()
    assert campaign.name == "GET /api/v1/campaigns/{key}"
    assert campaign.attributes["http.route"] == "/api/v1/campaigns/{key}"
    assert campaign.attributes["http.response.status_code"] == 404
    assert f"{campaign.context.trace_id:032x}" == trace_id and f"{campaign.parent.span_id:016x}" == parent_id
    assert live.name == "GET /health/live" and live.parent is None


async def test_sql_run_for_a_request_is_its_child_and_background_sql_makes_no_span(
        migrated_database_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = create_engine(migrated_database_url)
    trace_statements(engine, provider.get_tracer("dce.db"))
    app = build_app(engine=engine, metrics=ExchangeMetrics(), tracer=provider.get_tracer("test"))
    try:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/api/v1/publishers?limit=5", headers={"traceparent": traceparent()[0]})
            assert response.status == 200
        async with engine.connect() as connection:  # no span current: background work
            await connection.execute(text("SELECT 1"))
        with provider.get_tracer("test").start_as_current_span("bad"), pytest.raises(DBAPIError):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT * FROM no_such_table"))
    finally:
        await engine.dispose()
    spans = exporter.get_finished_spans()
    [request] = [span for span in spans if span.name == "GET /api/v1/publishers"]
    statements = [span for span in spans if span.parent is not None and span.parent.span_id == request.context.span_id]
    assert statements and {span.name for span in statements} == {"SELECT"}
    system = "postgresql" if migrated_database_url.startswith("postgresql") else "sqlite"
    assert all(span.kind is SpanKind.CLIENT and span.attributes["db.system.name"] == system for span in statements)
    assert any("publishers" in span.attributes["db.query.text"] for span in statements)
    assert not [span for span in spans if span.attributes and span.attributes.get("db.query.text") == "SELECT 1"]
    [failed] = [span for span in spans if "no_such_table" in (span.attributes or {}).get("db.query.text", "")]
    assert failed.status.status_code is StatusCode.ERROR and failed.events[0].name == "exception"


async def test_without_a_tracer_the_app_has_no_tracing_middleware(migrated_database_url: str) -> None:
    engine = create_engine(migrated_database_url)
    try:
        traced = build_app(engine=engine, metrics=ExchangeMetrics(), tracer=TracerProvider().get_tracer("t"))
        plain = build_app(engine=engine, metrics=ExchangeMetrics())
        assert len(traced.middlewares) == len(plain.middlewares) + 1
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------- dce serve


class Collector:
    """An OTLP/HTTP trace receiver on a free port: every span it was sent, with its resource attributes."""

    def __init__(self) -> None:
        self.port = free_port("tcp")
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, protobuf Span)
        self.requests = 0

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/v1/traces"

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(body)
        self.requests += 1
        for resource_spans in export.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope_spans.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str) -> list[Any]:
        return [span for _resource, span in self.spans if span.name == name]


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def attributes(span: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    receiver = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, HOST, receiver.port).start()
    yield receiver
    await runner.cleanup()


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers={**admin_headers(url), **headers})  # as the exchange's admin
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


@pytest.mark.timeout(120)
async def test_dce_serve_exports_call_and_request_spans_over_otlp_http(
        tmp_path: Path, migrated_database_url: str, collector: Collector) -> None:
    require_binary("sipp")
    callee = SippUas("uas_answer", tmp_path, calls=1)
    exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url, {DID: [callee.uri]},
                               extra_config={"tracing": {"enabled": True, "endpoint": collector.endpoint,
                                                         "service_name": "dce-it"}})
    sip_header, sip_trace, sip_parent = traceparent()
    http_header, http_trace, _ = traceparent()
    # Everything that blocks runs in a thread: the collector answers on this loop meanwhile.
    await asyncio.to_thread(callee.start)
    try:
        await asyncio.to_thread(exchange.start)
        caller = await asyncio.to_thread(run_sipp_uac, "uac_traceparent", exchange.sip_target, tmp_path,
                                         hold_ms=300, timeout=30, extra=("-key", "traceparent", sip_header))
        assert caller.returncode == 0 and caller.successful == 1, caller.describe() + exchange.log(8000)
        status = await asyncio.to_thread(_get, f"{exchange.http_base}/api/v1/campaigns",
                                         {"traceparent": http_header})
        assert status == 200
    finally:
        await asyncio.to_thread(exchange.stop)  # the exporter's last batch leaves on shutdown
        await asyncio.to_thread(callee.__exit__, None, None, None)
    assert exchange.proc is not None and exchange.proc.returncode == 0, exchange.log()

    [call] = collector.named("sip.call")
    assert call.trace_id.hex() == sip_trace and call.parent_span_id.hex() == sip_parent
    call_attributes = attributes(call)
    assert call_attributes["dce.did"] == DID
    assert (call_attributes["sip.status_code"], call_attributes["dce.disposition"]) == (200, "answered")
    resource = next(resource for resource, span in collector.spans if span is call)
    assert resource["service.name"] == "dce-it"
    [dial] = collector.named("sip.dial")
    assert dial.trace_id == call.trace_id and dial.parent_span_id == call.span_id
    assert (attributes(dial)["dce.destination"], attributes(dial)["sip.status_code"]) == (callee.uri, 200)
    assert {span.name for _r, span in collector.spans if span.parent_span_id == call.span_id} >= {
        "routing.plan", "media.allocate", "sip.dial"}

    [request] = collector.named("GET /api/v1/campaigns")
    assert request.trace_id.hex() == http_trace
    assert attributes(request)["http.response.status_code"] == 200
    assert any(span.name == "SELECT" and span.parent_span_id == request.span_id  # its SQL, as its children
               for _resource, span in collector.spans)
