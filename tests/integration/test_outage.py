"""PostgreSQL going away mid-test: calls keep routing on the in-memory snapshot, CDRs queue, and every one of them
is written once the database is back. The exchange reaches PostgreSQL through a TCP proxy this test can cut."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.externals import require
from tests.integration.sipp import HOST, fetch_cdrs, free_port, http_get, run_sipp_uac
from tests.integration.test_marketplace_calls import configure
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class CuttableProxy:
    """A TCP proxy on loopback, in its own thread: ``cut()`` closes the port and every connection through it,
    ``restore()`` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port("tcp")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers.difference_update((writer, up_writer))

    def restore(self) -> None:
        async def listen() -> None:
            self.server = await asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)
        self._call(listen())

    def cut(self) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()
        self._call(close())

    def close(self) -> None:
        self.cut()

        async def finish_pipes() -> None:  # connections still being piped end here, not at the loop's garbage
            pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

        self._call(finish_pipes())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def health(base: str) -> dict[str, Any]:
    """``/health`` with its details (read as the exchange's admin)."""
    status, body = http_get(f"{base}/health")
    assert status == 200, status
    return json.loads(body)


def test_calls_route_while_postgresql_is_away_and_every_cdr_is_written_after(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, migrated_database_url: str) -> None:  # noqa: F811
    url = make_url(migrated_database_url)
    require(url.get_backend_name() == "postgresql", "PostgreSQL (DCE_TEST_DATABASE_URL) for the outage test")
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        proxied = url.set(host=HOST, port=proxy.port).render_as_string(hide_password=False)
        callee = uas_factory("uas_answer")
        exchange = exchange_factory({}, database_url=proxied)
        configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}])
        first = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=200, timeout=30, name="before")
        assert_ok(first, exchange=exchange)

        proxy.cut()
        during = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, calls=3, rate=3, hold_ms=200,
                              timeout=30, name="during")
        assert_ok(during, calls=3, exchange=exchange)  # routed from memory: the database is not on the call path
        status = health(exchange.http_base)
        assert status["status"] == "degraded" and status["checks"]["database"] != "ok"

        proxy.restore()
        deadline = time.monotonic() + 30
        while health(exchange.http_base)["cdr_queue"] and time.monotonic() < deadline:
            time.sleep(0.5)
        cdrs = fetch_cdrs(exchange.http_base, 4)
        assert len(cdrs) == 4 and {c["disposition"] for c in cdrs} == {"answered"}
    finally:
        proxy.close()
