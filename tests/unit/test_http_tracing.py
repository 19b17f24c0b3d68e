"""The HTTP tracing middleware on a small real aiohttp app with a sub-app, through aiohttp's test server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dce.http_api.tracing import tracing_middleware

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
log = logging.getLogger("dce.test.http")


async def campaign(request: web.Request) -> web.Response:
    log.info("reading campaign %s", request.match_info["campaign_id"])
    return web.json_response({"id": request.match_info["campaign_id"]})


async def missing(_request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


async def broken(_request: web.Request) -> web.Response:
    raise RuntimeError("disk on fire")


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(text="# nothing")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def client(exporter: InMemorySpanExporter) -> AsyncIterator[TestClient[Any, Any]]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = web.Application(middlewares=[tracing_middleware(provider.get_tracer("test"))])
    app.router.add_get("/metrics", metrics)
    api = web.Application()
    api.router.add_get("/campaigns/{campaign_id}", campaign)
    api.router.add_get("/missing", missing)
    api.router.add_post("/broken", broken)
    app.add_subapp("/api/v1", api)
    async with TestClient(TestServer(app)) as client:
        yield client


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = exporter.get_finished_spans()
    exporter.clear()
    return span


async def test_a_request_span_is_named_by_route_template_and_continues_the_traceparent(client, exporter, json_log):
    response = await client.get("/api/v1/campaigns/c-42?x=1", headers={
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "User-Agent": "probe/1"})
    assert response.status == 200
    span = only(exporter)
    assert span.name == "GET /api/v1/campaigns/{campaign_id}"
    assert span.kind is SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and span.parent.is_remote and f"{span.parent.span_id:016x}" == PARENT_ID
    attributes = dict(span.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/api/v1/campaigns/{campaign_id}"
    assert attributes["url.path"] == "/api/v1/campaigns/c-42"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.response.status_code"] == 200
    assert attributes["user_agent.original"] == "probe/1"
    assert attributes["server.port"] == client.port and attributes["client.address"] == "127.0.0.1"
    assert span.status.status_code is StatusCode.UNSET
    [line] = [json.loads(text) for text in json_log.getvalue().splitlines() if "reading campaign" in text]
    assert line["trace_id"] == TRACE_ID and line["span_id"] == f"{span.context.span_id:016x}"


async def test_without_traceparent_each_request_starts_its_own_trace(client, exporter):
    for _ in range(2):  # one keep-alive connection: the first request's span must not parent the second
        assert (await client.get("/api/v1/campaigns/a")).status == 200
    first, second = exporter.get_finished_spans()
    assert first.parent is None and second.parent is None
    assert first.context.trace_id != second.context.trace_id


async def test_a_4xx_is_not_an_error_and_unmatched_paths_are_named_by_method(client, exporter):
    assert (await client.get("/api/v1/missing")).status == 404
    span = only(exporter)
    assert (span.name, span.attributes["http.response.status_code"]) == ("GET /api/v1/missing", 404)
    assert span.status.status_code is StatusCode.UNSET
    assert (await client.delete("/no/such/path")).status in (404, 405)
    span = only(exporter)
    assert span.name == "DELETE" and "http.route" not in span.attributes


async def test_a_handler_exception_is_an_error_span_with_the_exception(client, exporter):
    assert (await client.post("/api/v1/broken")).status == 500
    span = only(exporter)
    assert span.name == "POST /api/v1/broken"
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


async def test_metrics_scrapes_are_not_traced(client, exporter):
    assert (await client.get("/metrics")).status == 200
    assert exporter.get_finished_spans() == ()
