"""The inbound RTB ping endpoint under load: an aiohttp server (its own process) mounting a handler that calls
``InboundPings.handle`` with a fixed eligible list of static targets, loaded by an aiohttp client on loopback.

    .venv/bin/python bench/rtb_ping.py [--seconds 10] [--concurrency 32]

This measures the exchange's own cost per ping (no buyer is pinged: outbound RTB latency is the buyers').
Last line: ``rps=... p50_ms=... p99_ms=... errors=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from dce.bidding.inbound import InboundPings, Reservations
from dce.bidding.rtb import RtbPinger
from dce.routing.model import Campaign, Target

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

CAMPAIGN = Campaign("camp", "Auto", reserve=1_000_000, key="bench")
TARGETS = [Target(f"t{n}", "b", f"t{n}", f"+1800555{n:04d}", revenue=(n + 1) * 1_000_000) for n in range(10)]


def serve(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            pings = InboundPings(lambda ctx, now: TARGETS, RtbPinger(session), Reservations())

            async def ping(request: web.Request) -> web.Response:
                if request.match_info["key"] != CAMPAIGN.key:
                    raise web.HTTPNotFound()
                try:
                    payload = await request.json()
                except ValueError:
                    payload = None
                return web.json_response(await pings.handle(CAMPAIGN, payload, datetime.now(UTC)))

            app = web.Application()
            app.router.add_post("/api/v1/rtb/{key}/ping", ping)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            ready.set()
            await asyncio.Event().wait()

    (uvloop.run if uvloop else asyncio.run)(main())


async def load(url: str, seconds: float, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                body = {"CID": f"+1212{rng.randrange(10**7):07d}", "zipcode": "10001", "source": "web"}
                started = time.perf_counter()
                try:
                    async with session.post(url, json=body) as resp:
                        answer = await resp.json()
                        if resp.status != 200 or answer.get("bidAmount") != "10.00":
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(10):
            raise SystemExit("server did not start")
        url = f"http://127.0.0.1:{port}/api/v1/rtb/{CAMPAIGN.key}/ping"
        run = uvloop.run if uvloop else asyncio.run
        run(load(url, 1.0, args.concurrency))  # warm-up
        started = time.perf_counter()
        cpu = time.process_time()
        latencies, errors = run(load(url, args.seconds, args.concurrency))
        elapsed = time.perf_counter() - started
        client_cpu = (time.process_time() - cpu) / elapsed
    finally:
        server.terminate()
        server.join()
    server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu_s = server_cpu.ru_utime + server_cpu.ru_stime
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"rps={len(latencies) / elapsed:.0f} p50_ms={p50:.2f} p99_ms={p99:.2f} errors={errors} "
        f"requests={len(latencies)} concurrency={args.concurrency} client_cpu={client_cpu:.2f} "
        f"server_cpu_s={server_cpu_s:.1f}"
    )


if __name__ == "__main__":
    main()
