"""A server span per side-API request (OpenTelemetry), continuing the caller's W3C ``traceparent``.

The span is named by the matched route's template (``GET /api/v1/campaigns/{campaign_id}``; just the method when
no route matched), carries the stable HTTP semantic-convention attributes and the response status, and is an
error only on a 5xx (a 4xx is the client's problem, not the server's). It is the current span while the handler
runs, so log lines written there carry its trace id. ``/metrics`` scrapes are not traced.

Put the middleware first (outermost) so the span covers auth, rate limits and problem+json translation::

    web.Application(middlewares=[tracing_middleware(tracer), http_metrics_middleware(metrics), ...])
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from dce.http_api.http_metrics import SKIPPED_ROUTES, UNMATCHED, route_template

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_EMPTY = Context()


def tracing_middleware(tracer: Tracer) -> Middleware:
    """An aiohttp middleware opening a server span from ``tracer`` around every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_template(request)
        if route in SKIPPED_ROUTES:
            return await handler(request)
        method = request.method if request.method in _METHODS else "_OTHER"
        name = method if route == UNMATCHED else f"{method} {route}"
        parent = propagate.extract(request.headers, context=_EMPTY)  # never the connection's previous request
        with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER,
                                          attributes=_request_attributes(request, method, route),
                                          record_exception=False, set_status_on_exception=False) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # a response raised as an exception
                _finish(span, exc.status)
                raise
            except asyncio.CancelledError:  # the client went away first
                span.set_attribute("error.type", "cancelled")
                raise
            except Exception as exc:
                span.record_exception(exc)
                _finish(span, 500, type(exc).__qualname__)
                raise
            _finish(span, response.status)
            return response

    return middleware


def _request_attributes(request: web.Request, method: str, route: str) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.scheme": request.scheme,
        "url.path": request.path,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if route != UNMATCHED:
        attributes["http.route"] = route
    host, _, port = (request.host or "").rpartition(":")
    if host and port.isdigit():
        attributes["server.address"], attributes["server.port"] = host, int(port)
    elif request.host:
        attributes["server.address"] = request.host
    if request.remote:
        attributes["client.address"] = request.remote
    agent = request.headers.get("User-Agent")
    if agent:
        attributes["user_agent.original"] = agent
    return attributes


def _finish(span: Span, status: int, error_type: str | None = None) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", error_type or str(status))
        span.set_status(Status(StatusCode.ERROR))
