"""A WebSocket's bounded outbox: producers (event publishers, on the event loop) never wait for a slow reader.

Messages are queued up to ``limit`` and written by one task; beyond that they are dropped and counted, so one
stalled client can neither block the exchange nor grow its memory without bound.

:func:`install` keeps the app's open sockets (:data:`OPEN_SOCKETS`; a handler opens its socket with
:func:`open_socket`) and closes them when the app shuts down (going away), so their handlers, and the outbox
writers they run, end before the server stops instead of holding it for its shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web

Message = dict[str, Any]
DEFAULT_LIMIT = 1024


class Outbox:
    """Queue JSON messages for ``ws``; ``async with outbox.running():`` drains them while the socket is open."""

    def __init__(self, ws: web.WebSocketResponse, limit: int = DEFAULT_LIMIT) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[Message] = asyncio.Queue(limit)
        self.dropped = 0

    def send(self, message: Message) -> None:
        """Queue ``message`` (never waits); counted as dropped when the outbox is full."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _write(self) -> None:
        while True:
            message = await self.queue.get()
            await self.ws.send_str(json.dumps(message))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Outbox]:
        writer = asyncio.create_task(self._write())
        try:
            yield self
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer


OPEN_SOCKETS = web.AppKey("open_sockets", weakref.WeakSet[web.WebSocketResponse])


@contextlib.asynccontextmanager
async def open_socket(request: web.Request, *, heartbeat: float = 30.0,
                      ws: web.WebSocketResponse | None = None) -> AsyncIterator[web.WebSocketResponse]:
    """The request's WebSocket (``ws`` when given, else one with ``heartbeat``), prepared, counted among the app's
    open sockets while the block runs."""
    ws = ws if ws is not None else web.WebSocketResponse(heartbeat=heartbeat)
    await ws.prepare(request)
    sockets = request.config_dict.get(OPEN_SOCKETS)
    if sockets is not None:
        sockets.add(ws)
    try:
        yield ws
    finally:
        if sockets is not None:
            sockets.discard(ws)


def install(app: web.Application) -> None:
    """Keep ``app``'s open sockets and close them (1001 going away) when it shuts down."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[OPEN_SOCKETS] = sockets

    async def close_all(_app: web.Application) -> None:
        for ws in list(sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.on_shutdown.append(close_all)
