"""``http_requests_total{method,route,status}`` and ``http_request_duration_seconds`` for the side API.

Requests are labelled by the matched route's template (``/api/v1/campaigns/{key}``), never by the raw path, so
the series stay bounded whatever clients send; a request that matches no route is labelled ``<unmatched>``, a
method outside :data:`~dce.http_api.metrics.HTTP_METHODS` ``other`` (the metrics close every label).
``/metrics`` itself is not counted (scrapes would dominate).

Put the middleware first (outermost) so it sees the status the client gets after problem+json translation::

    web.Application(middlewares=[http_metrics_middleware(metrics), problem_middleware])
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dce.http_api.metrics import ExchangeMetrics

UNMATCHED = "<unmatched>"
SKIPPED_ROUTES = frozenset({"/metrics"})


def route_template(request: web.Request) -> str:
    """The canonical path of the route ``request`` matched (sub-app prefix included), or ``<unmatched>``."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    return resource.canonical


def http_metrics_middleware(metrics: ExchangeMetrics) -> Middleware:
    """An aiohttp middleware counting and timing every request in ``metrics``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_template(request)
        if route in SKIPPED_ROUTES:
            return await handler(request)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's convention)
            raise
        finally:
            metrics.http_request(request.method, route, status, time.perf_counter() - started)

    return middleware
