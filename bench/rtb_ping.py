"""The inbound RTB ping endpoint under load: the real side API (``dce.http_api.app.build_app``, so the real
``/api/v1/rtb/{key}/ping`` route, middleware and ``InboundPings.handle``) in ONE server process, routing against a
real ``RoutingEngine`` over an in-memory marketplace, loaded by aiohttp clients on loopback.

    .venv/bin/python bench/rtb_ping.py [--seconds 10] [--concurrency 32] [--clients 2]

The load comes from ``--clients`` processes (aiohttp + uvloop, ``concurrency / clients`` keep-alive connections
each), so the load generator is not the bottleneck of a single Python client process. They share the machine's
cores with the server. This measures the exchange's own cost per ping (no buyer is pinged: outbound RTB latency
is the buyers'). Bid records go through ``MarketplaceRouter.record_bids`` as in the exchange; its bid log is a
bounded in-memory queue standing in for the batching writer (database writes are not measured).
Last line: ``rps=... p50_ms=... p99_ms=... errors=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import socket
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

_run = uvloop.run if uvloop else asyncio.run
EXPECTED = "10.00"  # the best static target's revenue


def marketplace():  # type: ignore[no-untyped-def]
    """One keyed campaign with 10 static targets (one with criteria the pings match), its buyer and publisher."""
    from dce.routing.model import Buyer, Campaign, Criterion, CriterionOp, Publisher, Target
    from dce.routing.snapshot import MarketplaceSnapshot

    targets = [
        Target(f"t{n}", "b", f"t{n}", f"+1800555{n:04d}", revenue=(n + 1) * 1_000_000, priority=1 + n % 3)
        for n in range(9)
    ]
    targets.append(
        Target(
            "t9", "b", "t9", "sip:t9@buyer.example", revenue=10_000_000,
            criteria=(Criterion("tag:source", CriterionOp.IN, ("web", "tv")),),
        )
    )  # fmt: skip
    campaign = Campaign(
        "camp", "Auto", publisher_ids=("p",), target_ids=tuple(t.id for t in targets), reserve=1_000_000, key="bench"
    )
    return MarketplaceSnapshot.build([Publisher("p", "Pub")], [Buyer("b", "Buyer")], [campaign], targets, [])


def serve(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    from sqlalchemy.ext.asyncio import create_async_engine

    from dce.bidding.inbound import InboundPings, Reservations
    from dce.bidding.rtb import RtbPinger
    from dce.clock import SystemClock
    from dce.exchange.marketplace_router import MarketplaceRouter
    from dce.exchange.router import StaticRouter
    from dce.http_api.app import build_app
    from dce.http_api.metrics import ExchangeMetrics
    from dce.http_api.rtb import RtbPingService
    from dce.routing.counters import InMemoryCounters
    from dce.routing.duplicates import DuplicateLedger
    from dce.routing.engine import RoutingEngine
    from dce.routing.static import StaticRoutes

    async def main() -> None:
        counters, duplicates = InMemoryCounters(), DuplicateLedger()
        engine = RoutingEngine(marketplace(), counters, duplicates, random.Random(1))

        def campaign_by_key(key: str):  # type: ignore[no-untyped-def]  # as ExchangeService._rtb_pings does
            compiled = engine.snapshot.by_key.get(key)
            return compiled.campaign if compiled is not None else None

        db = create_async_engine("sqlite+aiosqlite://")  # only /health uses it
        async with aiohttp.ClientSession() as session:
            # as ExchangeService wires it: bid records go through MarketplaceRouter.record_bids to the bid log,
            # here a bounded queue standing in for the batching writer's (the database side is not measured)
            router = MarketplaceRouter(
                engine, counters, duplicates, StaticRouter(StaticRoutes({}), 30.0),
                clock=SystemClock(), pinger=RtbPinger(session), reservations=Reservations(),
            )  # fmt: skip
            router.bid_log = deque(maxlen=10_000).append
            def on_records(records: list, campaign_id: str) -> None:
                router.record_bids(records, campaign_id=campaign_id)

            pings = InboundPings(engine.eligible, router.pinger, router.reservations, on_records=on_records)
            app = build_app(engine=db, metrics=ExchangeMetrics(), rtb_pings=RtbPingService(pings, campaign_by_key))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
            ready.set()
            await asyncio.Event().wait()

    _run(main())


async def load(url: str, seconds: float, concurrency: int, seed: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            clock = time.perf_counter
            while clock() < deadline:
                body = f'{{"CID":"+1212{rng.randrange(10**7):07d}","zipcode":"10001","source":"web"}}'.encode()
                started = clock()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        answer = await resp.json()
                        if resp.status != 200 or answer.get("bidAmount") != EXPECTED:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(clock() - started)

        await asyncio.gather(*(worker(seed * 1000 + n) for n in range(concurrency)))
    return latencies, errors


def client(url: str, seconds: float, concurrency: int, seed: int, start: object, out: object) -> None:
    """One load process: warm up, wait for the others, load for ``seconds``, send (latencies, errors, elapsed)."""
    _run(load(url, 0.5, concurrency, seed + 7))
    start.wait()  # type: ignore[attr-defined]
    began = time.perf_counter()
    cpu = time.process_time()
    latencies, errors = _run(load(url, seconds, concurrency, seed))
    elapsed = time.perf_counter() - began
    out.send((latencies, errors, elapsed, time.process_time() - cpu))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32, help="connections in total, over all clients")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    procs: list[multiprocessing.Process] = []
    try:
        if not ready.wait(20):
            raise SystemExit("server did not start")
        url = f"http://127.0.0.1:{port}/api/v1/rtb/bench/ping"
        start = multiprocessing.Barrier(args.clients + 1)
        pipes = []
        for n in range(args.clients):
            share = args.concurrency // args.clients + (n < args.concurrency % args.clients)
            receive, send = multiprocessing.Pipe(duplex=False)
            proc = multiprocessing.Process(target=client, args=(url, args.seconds, share, n + 1, start, send))
            proc.start()
            procs.append(proc)
            pipes.append(receive)
        start.wait(30)
        server_before = _cpu_of(server.pid)
        results = [pipe.recv() for pipe in pipes]
        server_cpu = _cpu_of(server.pid) - server_before
    finally:
        for proc in procs:
            proc.join(5)
        server.terminate()
        server.join()
    latencies = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    client_cpu = sum(r[3] for r in results) / elapsed
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"rps={len(latencies) / elapsed:.0f} p50_ms={p50:.2f} p99_ms={p99:.2f} errors={errors} "
        f"requests={len(latencies)} concurrency={args.concurrency} clients={args.clients} "
        f"client_cpu={client_cpu:.2f} server_cpu={server_cpu / elapsed:.2f} "
        f"server_us_per_req={server_cpu / len(latencies) * 1e6:.0f}"
    )


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK")

if __name__ == "__main__":
    main()
