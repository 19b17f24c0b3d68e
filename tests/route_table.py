"""The test suite's own walk of an aiohttp route table (independent of ``dce.http_api.openapi.iter_routes``, so
a route that walk misses still fails the tests built on this one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web


def route_table(app: web.Application, *, head: bool = False) -> Iterator[tuple[str, str, Any]]:
    """(METHOD, path template, handler) of every route of ``app`` and its sub-apps, static files aside; HEAD
    routes (aiohttp adds one per GET) only with ``head``."""
    for resource in app.router.resources():
        if isinstance(resource, web.StaticResource):
            continue
        if isinstance(resource, web.PrefixedSubAppResource):
            yield from route_table(resource.get_info()["app"], head=head)
            continue
        for route in resource:
            if head or route.method != "HEAD":
                yield route.method, resource.canonical, route.handler
