"""On-change hooks: after a write through the API, tell the exchange so its in-memory copy reloads at once."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

OnChange = Callable[[], Awaitable[None] | None]


async def notify_change(request: web.Request, key: web.AppKey[OnChange]) -> None:
    """Call the hook stored under ``key`` (sync or async), if any; a failing hook is logged, never raised (the
    write is done; the poller reloads anyway)."""
    hook = request.config_dict.get(key)
    if hook is None:
        return
    try:
        result = hook()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("%s hook failed", key)
