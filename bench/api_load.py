"""Mixed read load on the side API of a real ``dce serve``, open loop at a fixed rate, latency from the scheduled
send time (so a stall counts against every request it delays, no coordinated omission).

The exchange runs as its own process on a migrated database (SQLite by default, ``--database-url`` for
PostgreSQL) holding the demo marketplace and ``--cdrs`` call records spread over the last day. Client processes
(``--clients``) share the rate and cycle through: campaigns, targets, one campaign, numbers, calls (page of 50),
the day's summary report by campaign, bids, health.

    .venv/bin/python bench/api_load.py [--rate 2000] [--seconds 20] [--clients 2] [--database-url URL]

Last line: ``rate=... achieved_rps=... p50_ms=... p99_ms=... errors=... requests=...``. Target (issue 6): p99 <= 50 ms
at 2k requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.sipp import ExchangeProcess  # the same harness the integration tests use

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


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


async def drive(base: str, rate: float, seconds: float, offset: int) -> tuple[list[float], int]:
    """Send ``rate`` requests/s for ``seconds`` on a fixed schedule; latency from each scheduled time."""
    targets = paths()
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2
        total = int(rate * seconds)
        pending: set[asyncio.Task[None]] = set()

        async def one(index: int, due: float) -> None:
            nonlocal errors
            try:
                async with session.get(base + targets[(index + offset) % len(targets)]) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(loop.time() - due)

        for index in range(total):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(index, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return latencies, errors


def client(base: str, rate: float, seconds: float, offset: int, start: object, out: object) -> None:
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(drive(base, rate, 1.0, offset))  # warm up connections and caches
    start.wait()  # type: ignore[attr-defined]
    began = time.perf_counter()
    latencies, errors = runner(drive(base, rate, seconds, offset))
    out.put((latencies, errors, time.perf_counter() - began))  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--cdrs", type=int, default=20_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/api_load.db"
        from dce.db.migrate import upgrade

        upgrade(url)
        asyncio.run(seed(url, args.cdrs))
        exchange = ExchangeProcess(Path(tmp) / "dce", url, log_level="WARNING",
                                   extra_config={"compliance": {"fraud": {"enabled": False}}})
        exchange.start()
        try:
            context = multiprocessing.get_context("spawn")
            start, out = context.Event(), context.Queue()
            procs = [context.Process(target=client, args=(exchange.http_base, args.rate / args.clients, args.seconds,
                                                          n, start, out)) for n in range(args.clients)]
            for proc in procs:
                proc.start()
            time.sleep(3.0)  # every client warmed up
            start.set()
            results = [out.get(timeout=args.seconds * 4 + 60) for _ in procs]
            for proc in procs:
                proc.join()
        finally:
            exchange.stop()
    latencies = sorted(x for lat, _, _ in results for x in lat)
    errors = sum(e for _, e, _ in results)
    elapsed = max(t for _, _, t in results)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(f"{len(latencies)} requests in {elapsed:.1f} s on {'PostgreSQL' if args.database_url else 'SQLite'}")
    print(f"rate={args.rate:.0f} achieved_rps={len(latencies) / elapsed:.0f} p50_ms={p50:.2f} p99_ms={p99:.2f} "
          f"errors={errors} requests={len(latencies)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
