"""Mixed read load on the side API of a real ``dce serve``, open loop at a fixed rate, latency from the scheduled
send time (so a stall counts against every request it delays, no coordinated omission).

The exchange runs as its own process on a migrated database (SQLite by default, ``--database-url`` for
PostgreSQL) holding the demo marketplace and ``--cdrs`` call records spread over the last day, settled by the
exchange before the load starts (steady state: no settlement backlog competing with the API). Client processes
(``--clients``) share the rate and cycle through: campaigns, targets, one campaign, numbers, calls (page of 50),
the day's summary report by campaign, bids, health.

Auth and rate limits are on, as by default: the load comes from ``--callers`` API keys (admin role, stored in the
database like any machine's key, created through ``POST /api/v1/auth/api-keys`` before the run), each request
carrying one of them in ``X-API-Key``; every caller stays under the seed's per-caller token buckets at 2k/s.

The client is deliberately cheap, so the 2 cores go to the server: raw asyncio protocols on keep-alive HTTP/1.1
connections, requests encoded once, one request in flight per connection (no pipelining). A request due while
every connection is busy opens another one (up to ``--connections``), else waits for the first free one; its
latency still counts from the time it was due. A response other than 200, a broken connection, or no answer
within ``--timeout`` after the run counts as an error.

    .venv/bin/python bench/api_load.py [--rate 2000 | --rates 500,1000,2000] [--seconds 20] [--clients 1]
                                       [--database-url URL]

One line per rate: ``rate=... achieved_rps=... p50_ms=... p99_ms=... errors=... requests=...``; with several rates,
the last line is ``max_rate_p99_le_50ms=...``. Target (issue 6): p99 <= 50 ms at 2k requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.sipp import ExchangeProcess  # the same harness the integration tests use

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

TARGET_P99_MS = 50.0


def paths() -> list[str]:
    today = datetime.now(UTC).date()
    span = f"from={today - timedelta(days=1)}&to={today + timedelta(days=1)}"
    return [
        "/api/v1/campaigns", "/api/v1/targets", "/api/v1/campaigns/auto-insurance", "/api/v1/numbers",
        "/api/v1/calls?limit=50", f"/api/v1/reports/summary?{span}&group_by=campaign", "/api/v1/bids?limit=20",
        "/health/live",
    ]


async def seed(database_url: str, cdrs: int) -> None:
    from dataclasses import replace

    from dce.billing.cdr import SaleTerms
    from dce.db.cdr_repository import insert_cdrs
    from dce.db.engine import create_engine
    from dce.exchange.demo import seed_demo
    from tests.cdr_factory import make_cdr

    engine = create_engine(database_url)
    try:
        await seed_demo(engine)
        start = datetime.now(UTC) - timedelta(hours=20)
        terms = SaleTerms("auto-insurance", "pub-leadsrus", "buyer-acme", "t-acme-auto", 12_000_000, 60)
        batch = [replace(make_cdr(n, start=start), call_id=f"bench-{n:07d}", terms=terms) for n in range(cdrs)]
        for i in range(0, len(batch), 5000):
            await insert_cdrs(engine, batch[i:i + 5000])
    finally:
        await engine.dispose()


async def wait_settled(database_url: str, timeout: float = 300.0) -> None:
    """Wait until the exchange has settled the seeded calls (its settler would otherwise compete with the load)."""
    from sqlalchemy import func, select

    from dce.db.engine import create_engine
    from dce.db.report_repository import calls

    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with engine.connect() as connection:
                pending = (await connection.execute(
                    select(func.count()).select_from(calls).where(calls.c.settled_at.is_(None)))).scalar_one()
            if pending == 0:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{pending} seeded calls still unsettled after {timeout:.0f} s")
    finally:
        await engine.dispose()


class Results:
    """Latencies (seconds from the due time) and errors of one run."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.outstanding = 0


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight; parses just enough of a response
    (status, Content-Length or chunked body, Connection: close)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None and self.due is None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        status = int(head[9:12])
        start = end + 4
        length_at = head.find(b"\r\ncontent-length:")
        if length_at >= 0:
            line_end = head.find(b"\r\n", length_at + 2)
            length = int(head[length_at + 17:line_end if line_end >= 0 else None])
            if len(self.buffer) < start + length:
                return
            del self.buffer[:start + length]
        elif b"\r\ntransfer-encoding: chunked" in head:
            if not self.buffer.endswith(b"0\r\n\r\n"):  # good enough for a server that ends bodies cleanly
                return
            self.buffer.clear()
        else:
            self.buffer.clear()
        due, self.due = self.due, None
        keep = b"\r\nconnection: close" not in head
        self.pool.finished(self, due, status == 200, keep)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.due is not None:
            self.due = None
            self.pool.finished(self, None, False, False)
        else:
            self.pool.forget(self)


class Pool:
    """Idle connections, a backlog of requests due while all connections were busy, and the results."""

    def __init__(self, host: str, port: int, limit: int, results: Results) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.results = results
        self.idle: list[Connection] = []
        self.open = 0
        self.backlog: deque[tuple[bytes, float]] = deque()
        self.loop = asyncio.get_running_loop()

    def submit(self, request: bytes, due: float) -> None:
        self.results.outstanding += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.send(request, due)
                return
        if self.open < self.limit:
            self.open += 1
            self.loop.create_task(self._connect(request, due))
        else:
            self.backlog.append((request, due))

    async def _connect(self, request: bytes, due: float) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.open -= 1
            self._done(None, False)
            return
        conn.send(request, due)

    def _done(self, due: float | None, ok: bool) -> None:
        self.results.outstanding -= 1
        if due is not None:
            self.results.latencies.append(time.perf_counter() - due)
        if not ok:
            self.results.errors += 1

    def finished(self, conn: Connection, due: float | None, ok: bool, keep: bool) -> None:
        self._done(due, ok)
        if not keep or conn.closed:
            self.forget(conn)
            if conn.transport is not None and not conn.closed:
                conn.transport.close()
            if self.backlog and self.open < self.limit:
                self.open += 1
                request, due = self.backlog.popleft()
                self.loop.create_task(self._connect(request, due))
            return
        if self.backlog:
            request, due = self.backlog.popleft()
            conn.send(request, due)
        else:
            self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if not getattr(conn, "forgotten", False):
            conn.forgotten = True  # type: ignore[attr-defined]
            self.open -= 1

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()


async def drive(base: str, rate: float, seconds: float, offset: int, connections: int, timeout: float,
                keys: Sequence[str]) -> Results:
    """Send ``rate`` requests/s for ``seconds`` on a fixed schedule; latency from each scheduled time."""
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\nX-API-Key: {key}\r\n\r\n"
                .encode("ascii") for key in keys for path in paths()]
    results = Results()
    pool = Pool(host, port, connections, results)
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    index = 0
    while index < total:
        now = time.perf_counter()
        while index < total and (due := start + index / rate) <= now:
            pool.submit(requests[(index + offset) % len(requests)], due)
            index += 1
        if index < total:
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
    deadline = time.perf_counter() + timeout
    while results.outstanding > 0 and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    results.errors += results.outstanding  # never answered
    pool.close()
    return results


async def api_keys(base: str, admin_key: str, count: int) -> list[str]:
    """``count`` new admin API keys, created through the API with the bootstrap key."""
    keys = []
    async with aiohttp.ClientSession(headers={"X-API-Key": admin_key}) as session:
        for n in range(count):
            async with session.post(f"{base}/api/v1/auth/api-keys", json={"role": "admin", "name": f"load-{n}"}) as r:
                assert r.status == 201, await r.text()
                keys.append((await r.json())["key"])
    return keys


def client(base: str, rates: Sequence[float], seconds: float, offset: int, connections: int, timeout: float,
           keys: Sequence[str], go: object, out: object) -> None:
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(drive(base, min(rates), 1.0, offset, connections, timeout, keys))  # warm up connections and caches
    for rate in rates:
        go.wait()  # type: ignore[attr-defined]
        began = time.perf_counter()
        results = runner(drive(base, rate, seconds, offset, connections, timeout, keys))
        out.put((results.latencies, results.errors, time.perf_counter() - began))  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--rates", help="comma-separated rates to run in turn (overrides --rate)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--connections", type=int, default=256, help="per client")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the last answers")
    parser.add_argument("--cdrs", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=16, help="API keys the load is spread over")
    parser.add_argument("--database-url")
    parser.add_argument("--profile", metavar="FILE", help="run the server under cProfile, stats to FILE")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")] if args.rates else [args.rate]
    lines: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/api_load.db"
        from dce.db.migrate import upgrade

        upgrade(url)
        asyncio.run(seed(url, args.cdrs))
        profiled = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve()), "-m",
                    "dce.exchange.cli"] if args.profile else None
        exchange = ExchangeProcess(Path(tmp) / "dce", url, log_level="WARNING", command=profiled,
                                   extra_config={"compliance": {"fraud": {"enabled": False}}})
        exchange.start()
        try:
            asyncio.run(wait_settled(url))
            keys = asyncio.run(api_keys(exchange.http_base, exchange.admin_key, args.callers))
            context = multiprocessing.get_context("spawn")
            go, out = context.Barrier(args.clients + 1), context.Queue()
            procs = [context.Process(target=client, args=(exchange.http_base, [r / args.clients for r in rates],
                                                          args.seconds, n, args.connections, args.timeout, keys,
                                                          go, out))
                     for n in range(args.clients)]
            for proc in procs:
                proc.start()
            for rate in rates:
                go.wait(timeout=120)  # every client warmed up / done with the previous rate
                results = [out.get(timeout=args.seconds * 4 + 60) for _ in procs]
                latencies = sorted(x for lat, _, _ in results for x in lat)
                errors = sum(e for _, e, _ in results)
                elapsed = max(t for _, _, t in results)
                p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
                p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
                print(f"{len(latencies)} requests in {elapsed:.1f} s on "
                      f"{'PostgreSQL' if args.database_url else 'SQLite'}", flush=True)
                print(f"rate={rate:.0f} achieved_rps={len(latencies) / elapsed:.0f} p50_ms={p50:.2f} "
                      f"p99_ms={p99:.2f} errors={errors} requests={len(latencies)}", flush=True)
                lines.append((rate, p99 if errors == 0 else float("inf")))
            for proc in procs:
                proc.join()
        finally:
            exchange.stop()
    if len(rates) > 1:
        passing = [rate for rate, p99 in lines if p99 <= TARGET_P99_MS]
        print(f"max_rate_p99_le_50ms={max(passing) if passing else 0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
