"""A WebSocket's bounded outbox: producers (event publishers, on the event loop) never wait for a slow reader.

Messages are queued up to ``limit`` and written by one task; beyond that they are dropped and counted, so one
stalled client can neither block the exchange nor grow its memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

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
