"""RFC 3263 resolution cost on the dial path (dce.sip.resolver against dnsmasq on loopback).

- hit: what a dial pays when the name is cached -- ``SipResolver.cached(uri, now)`` for a name with one SRV
  record, for one whose SRV records share a priority (a weighted draw per call, RFC 2782), and for a numeric host.
- miss: ``--misses`` lookups of distinct names at once against a server that never answers (each ends in its
  timeout), while the event loop's lag is sampled every millisecond and cached names keep being resolved: a miss
  must not delay unrelated calls.

Needs dnsmasq (apt-get install dnsmasq). The last line is machine-readable.

    .venv/bin/python bench/dns.py [--hits 200000] [--misses 50]
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script, this file would shadow dnspython's ``dns`` package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.dns_server

import argparse
import asyncio
import socket
import time

from dce.sip.resolver import SipResolver
from tests.dns_server import Dnsmasq

HOSTS = [("a.buyer.test", "127.0.0.11"), ("b.buyer.test", "127.0.0.12")]


def per_call_us(resolver: SipResolver, uri: str, count: int) -> float:
    """The best of 5 runs of ``count`` cache hits, in µs per hit."""
    cached = resolver.cached
    now = time.monotonic()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            cached(uri, now)
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


async def misses_beside_hits(resolver: SipResolver, misses: int, timeout_s: float) -> tuple[float, float, int, int]:
    """``misses`` lookups to a silent server at once (none: just wait ``timeout_s``, the baseline); meanwhile the
    loop's lag and the hits served. Returns (how long it took, the worst loop lag in ms, hits served meanwhile,
    misses that failed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        silent = SipResolver(nameservers=[f"127.0.0.1:{blackhole.getsockname()[1]}"], timeout_s=timeout_s,
                             lifetime_s=timeout_s)
        lags: list[float] = []
        hits = 0
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - before - 0.001) * 1000)

        async def dialer() -> None:  # unrelated calls to a cached name, one per millisecond
            nonlocal hits
            while not done.is_set():
                if resolver.cached("sip:x@single.test", time.monotonic()):
                    hits += 1
                await asyncio.sleep(0.001)

        async def miss(index: int) -> bool:
            try:
                await silent.resolve(f"sip:x@slow{index}.test")
            except Exception:
                return False
            return True

        tasks = [asyncio.create_task(ticker()), asyncio.create_task(dialer())]
        started = time.perf_counter()
        results = await asyncio.gather(*(miss(i) for i in range(misses))) if misses else []
        if not misses:
            await asyncio.sleep(timeout_s * 2)
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(*tasks)
    return elapsed, max(lags), hits, results.count(False)


async def run(hits: int, misses: int, timeout_s: float) -> None:
    with Dnsmasq(srv=[("_sip._udp.single.test", "a.buyer.test", 5070, 10, 10),
                      ("_sip._udp.weighted.test", "a.buyer.test", 5070, 10, 60),
                      ("_sip._udp.weighted.test", "b.buyer.test", 5072, 10, 40)], hosts=HOSTS) as server:
        resolver = SipResolver(nameservers=[server.nameserver], ipv6=False)
        started = time.perf_counter()
        await resolver.resolve("sip:x@single.test")
        first_ms = (time.perf_counter() - started) * 1000
        await resolver.resolve("sip:x@weighted.test")
    single = per_call_us(resolver, "sip:buyer@single.test", hits)
    weighted = per_call_us(resolver, "sip:buyer@weighted.test", hits)
    numeric = per_call_us(resolver, "sip:buyer@127.0.0.1:5070", hits)
    print(f"first lookup (NAPTR, SRV, A against dnsmasq): {first_ms:.2f} ms")
    print(f"cache hit per dial: one SRV record {single:.2f} us, weighted SRV pair {weighted:.2f} us, "
          f"numeric host {numeric:.2f} us")
    base_s, base_lag_ms, base_served, _ = await misses_beside_hits(resolver, 0, timeout_s)
    elapsed, worst_lag_ms, served, failed = await misses_beside_hits(resolver, misses, timeout_s)
    print(f"baseline, no misses: {base_served} cached dials in {base_s:.2f} s, worst loop lag {base_lag_ms:.2f} ms")
    print(f"{misses} misses to a silent server: all done in {elapsed:.2f} s ({failed} failed as expected), "
          f"worst loop lag meanwhile {worst_lag_ms:.2f} ms, {served} cached dials served meanwhile")
    rate_ratio = (served / elapsed) / (base_served / base_s) if base_served else 0.0
    verdict = "ok" if max(single, weighted) < 5 and rate_ratio > 0.8 else "over_budget"
    print(f"hit_us={single:.2f} hit_weighted_us={weighted:.2f} hit_numeric_us={numeric:.2f} misses={misses} "
          f"miss_s={elapsed:.2f} loop_lag_max_ms={worst_lag_ms:.2f} baseline_lag_max_ms={base_lag_ms:.2f} "
          f"dial_rate_during_misses_vs_baseline={rate_ratio:.2f} verdict={verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--misses", type=int, default=50)
    parser.add_argument("--miss-timeout", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(run(args.hits, args.misses, args.miss_timeout))


if __name__ == "__main__":
    main()
