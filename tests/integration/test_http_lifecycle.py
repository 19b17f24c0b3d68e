"""What the side API opens closes with it: the read caches' computations through its ``cleanup_ctx``, open
WebSockets (and the outbox writers their handlers run) when it shuts down, promptly rather than after the server's
shutdown timeout."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.http_api.app import build_app, run_http
from dce.http_api.events import EVENT_HUB, EventHub
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.read_cache import CALLS_CACHE

pytestmark = pytest.mark.integration


async def test_the_read_caches_close_with_the_app(engine: AsyncEngine) -> None:
    app = build_app(engine=engine, metrics=ExchangeMetrics())
    runner = await run_http(app, "127.0.0.1", 0)
    never = asyncio.get_running_loop().create_future()

    async def compute() -> web.Response:
        await never
        raise AssertionError("unreachable")

    waiting = asyncio.ensure_future(app[CALLS_CACHE].get("key", compute))
    await asyncio.sleep(0)
    await runner.cleanup()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(app[CALLS_CACHE]) == 0


async def test_open_websockets_close_when_the_app_shuts_down(engine: AsyncEngine) -> None:
    hub = EventHub()
    app = build_app(engine=engine, metrics=ExchangeMetrics(), state={EVENT_HUB: hub})
    runner = await run_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://{host}:{port}/ws/v1/events") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "subscribed"
        assert len(hub) == 1
        try:
            await asyncio.wait_for(runner.cleanup(), 10)  # not the server's 60 s shutdown timeout
        finally:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY, message
    assert len(hub) == 0  # the handler ended: it unsubscribed
