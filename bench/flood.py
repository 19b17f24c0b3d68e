"""Flood bench: one source floods the exchange while legitimate calls from another must all get through.

    .venv/bin/python bench/flood.py                      # 5000 requests/s for 30 s beside 50 CPS of calls
    .venv/bin/python bench/flood.py --duration 5 --flood-rps 2000

A raw UDP sender bound to 127.0.0.2 (Linux loopback answers all of 127/8) sends INVITEs to a number nobody
serves, each a new transaction, at ``--flood-rps``; meanwhile SIPp (uac_basic_callers, from 127.0.0.1) places
``--cps`` calls per second for the same ``--duration`` through the exchange to a SIPp callee (uas_answer). The
exchange runs with ``sip.flood.requests_per_window: --limit`` (default 200 per 2 s, the default) and, as a
carrier edge would, the legitimate caller's address trusted (``sip.flood.trusted: [127.0.0.1/32]``: at 50 CPS it
sends ~300 requests per window, INVITE + ACK + BYE per call). ``--untrusted --limit 1000`` trusts nobody and
relies on the per-source counter alone; the flooder then gets 1000 full-cost INVITEs in before its ban.

The last line is ``flood_rps=... legit_placed=... legit_failed=... banned=... exchange_cpu_pct=...``:
the flood rate achieved, calls SIPp placed and lost, sources banned for flooding (from /metrics) and the
exchange's CPU over the run (100% = one core).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sipp_load import cpu_seconds, scrape  # noqa: E402 (the repo root goes on sys.path first)
from tests.integration.sipp import (  # noqa: E402
    DID,
    HOST,
    ExchangeProcess,
    SippUas,
    run_sipp_uac,
    sipp_binary,
)

FLOODER = "127.0.0.2"
UNSERVED = "+18005550199"  # the flood dials a number with no route: each INVITE would cost a 404


@dataclass
class FloodResult:
    flood_rps: float
    legit_placed: int
    legit_failed: int
    banned: int
    flood_dropped: int
    exchange_cpu_pct: float
    exchange_alive: bool

    def line(self) -> str:
        return (f"flood_rps={self.flood_rps:.0f} legit_placed={self.legit_placed} legit_failed={self.legit_failed} "
                f"banned={self.banned} exchange_cpu_pct={self.exchange_cpu_pct:.1f}")


def flood(target: tuple[str, int], rps: float, duration: float, sent: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    """Send INVITEs from FLOODER to ``target`` at ``rps`` for ``duration`` seconds (paced every 10 ms)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    template = (
        f"INVITE sip:{UNSERVED}@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {FLOODER}:{port};branch=z9hG4bK-fl-%d\r\nMax-Forwards: 70\r\n"
        f"From: <sip:flooder@{FLOODER}>;tag=f%d\r\nTo: <sip:{UNSERVED}@{target[0]}>\r\n"
        f"Call-ID: flood-%d@{FLOODER}\r\nCSeq: 1 INVITE\r\nContact: <sip:flooder@{FLOODER}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n")
    n = 0
    start = time.monotonic()
    tick = 0.01
    while (now := time.monotonic()) - start < duration:
        due = int((now - start) * rps)
        while n < due:
            with contextlib.suppress(BlockingIOError):  # our own buffer full: dropped, as a real flood's
                sock.sendto((template % (n, n, n)).encode(), target)
            n += 1
        drained = True
        while drained:  # read what the exchange answers (until the ban), so our buffer never blocks us
            try:
                sock.recv(65535)
            except BlockingIOError:
                drained = False
        time.sleep(max(0.0, tick - (time.monotonic() - now)))
    sent.value = n
    sock.close()


def _metric(text: str, name: str, labels: str) -> int:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def run(duration: float = 30.0, flood_rps: float = 5000.0, cps: float = 50.0, limit: int = 200,
        trusted: bool = True, workdir: Path | None = None, database_url: str | None = None) -> FloodResult:
    """One bench run (the integration test calls this with a short ``duration``)."""
    root = workdir or Path(tempfile.mkdtemp(prefix="dce-flood-"))
    root.mkdir(parents=True, exist_ok=True)
    uas = SippUas("uas_answer", root, trace_msg=False, name="uas",
                  extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"]).start()
    exchange = ExchangeProcess(
        root / "dce", database_url or f"sqlite+aiosqlite:///{root / 'flood.db'}", {DID: [uas.uri]},
        log_level="WARNING", extra_config={"sip": {"flood": {
            "requests_per_window": limit, "trusted": [f"{HOST}/32"] if trusted else []}}})
    try:
        exchange.start(timeout=60)
        calls = int(cps * duration)
        numbers = root / "callers.csv"
        numbers.write_text("SEQUENTIAL\n" + "".join(f"+1212{200 + n // 10_000 % 800}{n % 10_000:04d}\n"
                                                       for n in range(calls)))
        sent = multiprocessing.Value("q", 0)
        flooder = multiprocessing.Process(target=flood, args=((HOST, exchange.sip_port), flood_rps, duration, sent))
        cpu_before, wall_before = cpu_seconds(exchange.pid), time.monotonic()
        flooder.start()
        result = run_sipp_uac("uac_basic_callers", exchange.sip_target, root, calls=calls, rate=cps,
                              limit=int(cps * 4) + 50, hold_ms=1000, timeout=duration * 2 + 60, trace_msg=False,
                              name="legit", extra=["-inf", str(numbers), "-max_recv_loops", "10000",
                                                   "-max_sched_loops", "10000"])
        flooder.join(timeout=duration + 30)
        cpu = (cpu_seconds(exchange.pid) - cpu_before) / (time.monotonic() - wall_before) * 100
        metrics = scrape(exchange.http_base)
        alive = exchange.alive()
    finally:
        exchange.stop()
        uas.stop(timeout=5)
    placed = max(result.created, 0)
    return FloodResult(
        flood_rps=sent.value / duration,
        legit_placed=placed,
        legit_failed=max(placed - result.successful, result.failed, 0) if placed else calls,
        banned=_metric(metrics, "dce_sip_bans_total", 'reason="flood"'),
        flood_dropped=_metric(metrics, "dce_sip_dropped_total", 'reason="flood_banned"'),
        exchange_cpu_pct=cpu,
        exchange_alive=alive,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of flood and of legitimate calls")
    parser.add_argument("--flood-rps", type=float, default=5000.0, help="flood requests per second")
    parser.add_argument("--cps", type=float, default=50.0, help="legitimate calls per second")
    parser.add_argument("--limit", type=int, default=200, help="sip.flood.requests_per_window for the run")
    parser.add_argument("--untrusted", action="store_true", help="do not trust the legitimate caller's address")
    parser.add_argument("--workdir", help="keep SIPp/exchange files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if sipp_binary() is None:
        print("sipp is not on PATH (Debian: apt-get install sip-tester)", file=sys.stderr)
        return 2
    print(f"{os.cpu_count()} CPUs; flooder {FLOODER} at {args.flood_rps:g}/s and SIPp at {args.cps:g} CPS for "
          f"{args.duration:g} s; sip.flood.requests_per_window={args.limit}; legitimate caller "
          f"{'untrusted' if args.untrusted else 'trusted'}", flush=True)
    result = run(args.duration, args.flood_rps, args.cps, args.limit, not args.untrusted,
                 Path(args.workdir) if args.workdir else None)
    print(f"flood messages dropped unread: {result.flood_dropped}; exchange alive: {result.exchange_alive}")
    print(result.line(), flush=True)
    return 0 if result.legit_failed == 0 and result.banned >= 1 and result.exchange_alive else 1


if __name__ == "__main__":
    sys.exit(main())
