"""Typed application state keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.clock import Clock, SystemClock
from dce.http_api.metrics import ExchangeMetrics

ENGINE = web.AppKey("engine", AsyncEngine)
METRICS = web.AppKey("metrics", ExchangeMetrics)
STATUS = web.AppKey("status", Callable[[], dict[str, Any]])
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() when the app was built
CLOCK = web.AppKey("clock", Clock)  # the exchange's one clock: handlers read the time from it, never on their own


_SYSTEM_CLOCK = SystemClock()


def clock_of(request: web.Request) -> Clock:
    """The clock of the request's application (the system's when the application was given none)."""
    return request.config_dict.get(CLOCK, _SYSTEM_CLOCK)


def wall_now(request: web.Request) -> datetime:
    """The wall-clock time of the application's clock (aware UTC)."""
    return clock_of(request).now()
