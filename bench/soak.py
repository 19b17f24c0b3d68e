"""Soak: the full marketplace path at a fixed call rate from distinct callers, watching the exchange's memory.

    .venv/bin/python bench/soak.py --minutes 2 --cps 100
    .venv/bin/python bench/soak.py --minutes 6 --cps 300 --media relay

It starts a real ``dce serve`` (a temporary migrated SQLite database, the fraud gate on, the chosen media plane),
a SIPp callee (uas_answer) and configures through the API one publisher, one buyer with one target on that
callee (converting after 1 s, so settlement and the ledger run too) and one campaign with a 30-day duplicate
rule on the DID. Then a SIPp caller (uac_basic_callers) places ``cps * minutes * 60`` calls, each from a caller
number of its own, holding each for ``--hold-ms``.

While it runs, every ``--interval-s`` it prints the exchange's RSS and the calls finished so far (from
``/metrics``). Afterwards it waits for the CDR writer and prints:

- the RSS slope after warm-up (least squares over the samples past ``--warmup-s``), in MB per 100k callers,
  and the growth from the first sample after warm-up to the last (%);
- the state the rules must keep for a while ("horizon state": the duplicate ledger for its 30 days, the fraud
  scorer's per-caller history for its longest window), measured in this process with tracemalloc as bytes per
  distinct caller, and the growth left once that is taken out (``net_growth_pct``: the number that must stay
  under 10 %);
- failed calls (SIPp), CDRs written vs calls placed (``GET /api/v1/calls``), active calls left
  (``dce_active_calls``).

The fraud publisher-velocity limit is raised to fit the rate (one publisher sends every call); everything else is
the default configuration. The last line is key=value pairs.

``--retainers`` (a diagnosis, slower, RSS not comparable): the exchange runs under a wrapper that starts
tracemalloc when warm-up ends; 40 s after the last call (every lingering transaction gone) it counts what only
the cyclic collector would free (the GC policy runs it every 10 minutes) and prints the allocation sites of
what is still alive, by size: what the calls after warm-up left behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dce.compliance.fraud import FraudScorer  # noqa: E402 (the repo root goes on sys.path first)
from dce.routing.duplicates import DuplicateLedger  # noqa: E402
from dce.routing.model import DuplicateAfter  # noqa: E402
from tests.integration.sipp import (  # noqa: E402
    DID,
    ExchangeProcess,
    SippUas,
    http_get,
    run_sipp_uac,
    sipp_binary,
)

MB = 1 << 20
PER = 100_000  # slopes are reported per this many distinct callers
LINGER_S = 40  # RFC 3261 transactions end 64*T1 (32 s) after their call

# --retainers: ``dce`` under a wrapper; SIGUSR2 starts tracemalloc, the next dumps cyclic garbage and a snapshot.
_RETAINERS_WRAPPER = """
import collections, gc, json, signal, sys, tracemalloc
def dump(_sig, _frame):
    if not tracemalloc.is_tracing():
        tracemalloc.start(8)
        return
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    counts = collections.Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage)
    gc.garbage.clear()
    gc.set_debug(0)
    gc.collect()
    tracemalloc.take_snapshot().dump(OUT + ".snapshot")
    with open(OUT + ".garbage.json", "w") as f:
        json.dump(counts.most_common(12), f)
    gc.freeze()
OUT = sys.argv.pop(1)
signal.signal(signal.SIGUSR2, dump)
sys.argv[0] = "dce"
from dce.exchange.cli import main
sys.exit(main())
"""


def caller_number(n: int) -> str:
    """The ``n``-th distinct caller: valid NANP numbers (area codes 212.., exchanges 200-999), 8M per area."""
    area = (212, 213, 312, 415, 617, 646, 702, 718)[n // 8_000_000 % 8]
    return f"+1{area}{200 + n // 10_000 % 800}{n % 10_000:04d}"


# --------------------------------------------------------------------------------------------- the exchange


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


_SAMPLE = re.compile(r"^(dce_calls_total|dce_active_calls)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def call_counts(http_base: str) -> tuple[int, int] | None:
    """``(calls finished, calls active)`` from ``/metrics``, None when it did not answer."""
    status, body = http_get(f"{http_base}/metrics", timeout=10)
    if status != 200:
        return None
    finished = active = 0.0
    for name, value in _SAMPLE.findall(body.decode()):
        if name == "dce_calls_total":
            finished += float(value)
        else:
            active += float(value)
    return int(finished), int(active)


def cdr_total(http_base: str) -> int:
    status, body = http_get(f"{http_base}/api/v1/calls?limit=1", timeout=30)
    return int(json.loads(body)["total"]) if status == 200 else -1


def api(exchange: ExchangeProcess, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{exchange.http_base}/api/v1{path}", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-API-Key": exchange.admin_key})
    with urllib.request.urlopen(request, timeout=10):
        pass


def configure(exchange: ExchangeProcess, callee_uri: str, *, payout: str | None = None) -> None:
    """One publisher, one buyer, one target (no caps) on the callee, one campaign with a 30-day duplicate rule
    (and with ``payout``, the publisher's fixed payout per converted call), one tracking number: :data:`DID`."""
    api(exchange, "/publishers", {"id": "p1", "name": "Publisher One"})
    api(exchange, "/buyers", {"id": "b1", "name": "Buyer One", "timezone": "America/New_York"})
    api(exchange, "/targets", {"id": "t1", "buyer_id": "b1", "name": "Callee", "destination": callee_uri,
                               "revenue": "1.00", "conversion_duration_s": 1})
    api(exchange, "/campaigns", {"id": "c1", "name": "Soak", "publisher_ids": ["p1"], "target_ids": ["t1"],
                                 "duplicate_rule": {"after": "connected", "days": 30, "scope": "campaign"},
                                 **({"payouts": [{"publisher_id": "p1", "fixed": payout}]} if payout else {})})
    api(exchange, "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})
    time.sleep(1.5)  # API changes reach live routing within 1 s


# --------------------------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    at: float  # seconds since the caller started
    calls: int  # calls finished (dce_calls_total)
    active: int
    rss: int


@dataclass
class Sampler:
    """Samples RSS and call counts of the exchange every ``interval_s`` in a thread, printing each sample."""

    pid: int
    http_base: str
    interval_s: float
    on_warm: Callable[[], None] | None = None  # called once, at the first sample past warm_s
    warm_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Sampler:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval_s)

    def take(self) -> Sample | None:
        counts = call_counts(self.http_base)
        if counts is None:
            return None
        sample = Sample(time.monotonic() - self._started, counts[0], counts[1], rss_bytes(self.pid))
        self.samples.append(sample)
        if self.on_warm is not None and sample.at >= self.warm_s:
            self.on_warm()
            self.on_warm = None
        print(f"   t={sample.at:6.0f} s  calls {sample.calls:7d}  active {sample.active:5d}  "
              f"RSS {sample.rss / MB:7.1f} MB", flush=True)
        return sample

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (NaN with fewer than two distinct x)."""
    if len(points) < 2:
        return math.nan
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else math.nan


# --------------------------------------------------------------------------------------------- horizon state


def bytes_per_caller(fill: Callable[[int], None], callers: int = 20_000) -> float:
    """Bytes tracemalloc sees kept after ``fill(callers)`` records that many distinct callers, per caller (the
    per-number caches, bounded and counted in the RSS, are switched off while measuring where they can be)."""
    try:
        from dce import caches
    except ImportError:  # before the caches were bounded (a baseline run): they are measured too
        caches = None
    if caches is not None:
        caches.resize({"numbers": 0})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill(callers)
        return (tracemalloc.get_traced_memory()[0] - before) / callers
    finally:
        tracemalloc.stop()
        if caches is not None:
            caches.resize(caches.DEFAULT_SIZES)


def horizon_bytes_per_caller() -> dict[str, float]:
    """What each piece of state with a horizon keeps per distinct caller (one call each, all inside the horizon)."""
    kept: dict[str, Any] = {}

    def ledger(n: int) -> None:
        kept["ledger"] = book = DuplicateLedger()
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(n):
            book.record(caller_number(i), "c1", "t1", DuplicateAfter.CONNECTED, start + timedelta(seconds=i / 100))

    def fraud(n: int) -> None:
        kept["fraud"] = scorer = FraudScorer()
        for i in range(n):
            scorer.assess(caller_number(i), publisher_id="p1", campaign_id="c1", now=1000.0 + i / 100)

    return {"duplicate_ledger": bytes_per_caller(ledger), "fraud_history": bytes_per_caller(fraud)}


# --------------------------------------------------------------------------------------------- the run


@dataclass
class SoakResult:
    calls: int = 0
    failed: int = 0
    cdrs: int = 0
    active_left: int = -1
    rss_warm: int = 0
    rss_last: int = 0
    warm_calls: int = 0
    last_calls: int = 0
    slope_bytes_per_call: float = math.nan
    horizon: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def growth_pct(self) -> float:
        return (self.rss_last - self.rss_warm) / self.rss_warm * 100 if self.rss_warm else math.nan

    @property
    def horizon_bytes(self) -> float:
        return sum(self.horizon.values())

    @property
    def net_growth_pct(self) -> float:
        """Growth after warm-up less what the horizon state accounts for (its callers stay until the horizon)."""
        if not self.rss_warm:
            return math.nan
        horizon = self.horizon_bytes * (self.last_calls - self.warm_calls)
        return (self.rss_last - self.rss_warm - horizon) / self.rss_warm * 100

    def headline(self) -> dict[str, str]:
        return {
            "calls": str(self.calls),
            "failed": str(self.failed),
            "cdrs": str(self.cdrs),
            "active_left": str(self.active_left),
            "rss_warm_mb": f"{self.rss_warm / MB:.1f}",
            "rss_last_mb": f"{self.rss_last / MB:.1f}",
            "growth_pct": f"{self.growth_pct:.1f}",
            "net_growth_pct": f"{self.net_growth_pct:.1f}",
            "mb_per_100k_callers": f"{self.slope_bytes_per_call * PER / MB:.1f}",
            "bytes_per_call": f"{self.slope_bytes_per_call:.0f}",
            **{f"{name}_bytes_per_caller": f"{value:.0f}" for name, value in self.horizon.items()},
        }


def print_retainers(traced: Path, calls: int) -> None:
    """What the exchange kept from the calls after warm-up: cyclic garbage by type, live allocations by site."""
    garbage = json.loads(traced.with_suffix(".garbage.json").read_text())
    print("   only the cyclic GC would free: " + (", ".join(f"{n} {kind}" for kind, n in garbage) or "nothing"))
    snapshot = tracemalloc.Snapshot.load(str(traced.with_suffix(".snapshot")))
    total = sum(trace.size for trace in snapshot.traces)
    print(f"   alive, allocated after warm-up: {total / MB:.1f} MB ({total / calls:.0f} B per call); top sites:")
    for stat in snapshot.statistics("lineno")[:15]:
        frame = stat.traceback[0]
        print(f"   {stat.size / 1024:9.1f} KiB {stat.count:8d} blocks  {frame.filename}:{frame.lineno}")


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def soak(args: argparse.Namespace, root: Path) -> SoakResult:
    calls = round(args.cps * args.minutes * 60)
    numbers = root / "callers.csv"
    numbers.write_text("SEQUENTIAL\n" + "".join(f"{caller_number(n + args.first_caller)}\n" for n in range(calls)))
    uas = SippUas("uas_answer", root, trace_msg=False, name="uas_soak",
                  extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"]).start()
    result = SoakResult()
    exchange: ExchangeProcess | None = None
    sampler: Sampler | None = None
    traced = root / "retainers"
    try:
        exchange = ExchangeProcess(
            root / "dce", f"sqlite+aiosqlite:///{root / 'soak.db'}", media_mode=args.media, log_level="WARNING",
            rtp_port_count=6000,
            extra_config={"compliance": {"fraud": {"publisher_calls_per_minute": int(args.cps * 60 * 4) + 600}}},
            command=[sys.executable, "-c", _RETAINERS_WRAPPER, str(traced)] if args.retainers else None,
        )
        exchange.start(timeout=60)
        configure(exchange, uas.uri)
        print(f"-- exchange pid {exchange.pid} on {exchange.sip_target} ({args.media}); {args.cps:g} CPS for "
              f"{args.minutes:g} min = {calls} distinct callers", flush=True)
        pid = exchange.pid
        sampler = Sampler(pid, exchange.http_base, args.interval_s, warm_s=args.warmup_s,
                          on_warm=(lambda: os.kill(pid, signal.SIGUSR2)) if args.retainers else None).start()
        limit = int(args.cps * (args.hold_ms / 1000 + 2) * 2) + 50
        uac = run_sipp_uac(
            "uac_basic_callers", exchange.sip_target, root, calls=calls, rate=args.cps, limit=limit,
            hold_ms=args.hold_ms, timeout=args.minutes * 60 * 1.5 + 60, trace_msg=False, name="uac_soak",
            extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000", "-inf", str(numbers)],
        )
        result.calls = max(uac.created, 0)
        result.failed = max(uac.created - uac.successful, uac.failed, 0)
        if uac.returncode != 0:
            result.notes.append(f"SIPp caller exited {uac.returncode}: {uac.errors()[-400:]!r}")
        base = exchange.http_base
        wait_until(lambda: (call_counts(base) or (0, 1))[1] == 0, 30)
        sampler.stop()
        sampler.take()
        wait_until(lambda: cdr_total(base) >= result.calls, 60)
        result.cdrs = cdr_total(base)
        result.active_left = (call_counts(base) or (0, -1))[1]
        if args.retainers:
            time.sleep(LINGER_S)
            os.kill(exchange.pid, signal.SIGUSR2)
            wait_until(lambda: traced.with_suffix(".garbage.json").exists(), 120)
            warm = next((s.calls for s in sampler.samples if s.at >= args.warmup_s), 0)
            print_retainers(traced, max(result.calls - warm, 1))
        if not exchange.alive():
            result.notes.append(f"the exchange died; log: {exchange.log_path}")
    finally:
        if sampler is not None:
            sampler.stop()
        if exchange is not None:
            exchange.stop()
        uas.stop(timeout=5)
    assert sampler is not None
    warm = [s for s in sampler.samples if s.at >= args.warmup_s]
    if len(warm) >= 2:
        result.rss_warm, result.rss_last = warm[0].rss, warm[-1].rss
        result.warm_calls, result.last_calls = warm[0].calls, warm[-1].calls
        result.slope_bytes_per_call = slope([(s.calls, s.rss) for s in warm])
    else:
        result.notes.append(f"fewer than two samples after the {args.warmup_s:g} s warm-up")
    result.horizon = horizon_bytes_per_caller()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6.0, help="minutes of call generation")
    parser.add_argument("--cps", type=float, default=100.0, help="calls per second, each from a new caller")
    parser.add_argument("--hold-ms", type=int, default=1000, help="call hold time (SIPp -d)")
    parser.add_argument("--media", choices=["passthrough", "relay"], default="relay")
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="seconds of the run left out of the slope (caches fill, the allocator settles)")
    parser.add_argument("--first-caller", type=int, default=0, help="offset into the caller numbers")
    parser.add_argument("--retainers", action="store_true",
                        help="diagnosis: trace allocations after warm-up and print what the calls left alive")
    parser.add_argument("--workdir", help="keep SIPp/exchange files here (default: a temporary directory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sipp_binary() is None:
        print("sipp is not on PATH (Debian: apt-get install sip-tester)", file=sys.stderr)
        return 2
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dce-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"soak files in {root}", flush=True)
    result = soak(args, root)
    print(f"== {result.calls} calls, {result.failed} failed, {result.cdrs} CDRs, {result.active_left} active left")
    print(f"   RSS after warm-up {result.rss_warm / MB:.1f} MB -> {result.rss_last / MB:.1f} MB "
          f"({result.growth_pct:+.1f} %) over {result.last_calls - result.warm_calls} callers; "
          f"slope {result.slope_bytes_per_call * PER / MB:.1f} MB per 100k callers")
    print("   horizon state per caller: " + ", ".join(f"{k} {v:.0f} B" for k, v in result.horizon.items())
          + f"; growth without it {result.net_growth_pct:+.1f} %")
    for note in result.notes:
        print(f"   note: {note}")
    print(" ".join(f"{k}={v}" for k, v in result.headline().items()), flush=True)
    ok = result.failed == 0 and result.cdrs == result.calls and result.active_left == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
