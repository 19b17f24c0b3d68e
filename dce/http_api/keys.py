"""Typed application state keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.http_api.metrics import ExchangeMetrics

ENGINE = web.AppKey("engine", AsyncEngine)
METRICS = web.AppKey("metrics", ExchangeMetrics)
STATUS = web.AppKey("status", Callable[[], dict[str, Any]])
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() when the app was built
