"""Paged listings: ``?limit=&offset=`` read (:func:`int_param`) and documented (:func:`page_params`) in one place."""

from __future__ import annotations

from aiohttp import web

from dce.http_api.describe import Param
from dce.http_api.problems import invalid_parameter

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_INT = 2**63 - 1  # a SQL BIGINT: the ceiling of an integer parameter that has no bound of its own


def int_param(request: web.Request, name: str, default: int, low: int, high: int = MAX_INT) -> int:
    """The integer query parameter ``name`` (``default`` when absent); 422 naming it outside ``low..high``."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_parameter(name, f"expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise invalid_parameter(name, f"must be between {low} and {high}, got {value}")
    return value


def page_params(*extra: Param) -> tuple[Param, ...]:
    """``limit`` and ``offset`` of a paged listing, then ``extra``."""
    return (
        Param("limit", "page size", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
        Param("offset", "items to skip", {"type": "integer", "minimum": 0, "maximum": MAX_INT, "default": 0}),
        *extra,
    )


def page(request: web.Request) -> tuple[int, int]:
    """``(limit, offset)`` of a paged listing: 422 naming either when it is not an integer in range."""
    return int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT), int_param(request, "offset", 0, 0)
