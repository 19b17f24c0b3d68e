"""Load test: SIPp caller -> exchange -> SIPp callee on loopback, at a target call rate.

    .venv/bin/python bench/sipp_load.py                       # passthrough then relay, 300 CPS for 60 s each
    .venv/bin/python bench/sipp_load.py --mode relay --cps 100 --duration 20
    .venv/bin/python bench/sipp_load.py --peer sippy          # Sippy B2BUA's b2bua_simple instead, for comparison
    .venv/bin/python bench/sipp_load.py --peer direct         # no B2BUA: SIPp to SIPp, the measurement floor
    .venv/bin/python bench/sipp_load.py --mode passthrough --digest   # plain, then every INVITE digest-challenged

Per run it starts the exchange (a temporary migrated SQLite database, the chosen media mode), a SIPp uas
(uas_answer) and drives SIPp uac (uac_basic_callers: a distinct caller number per call, INVITE, 1 s hold, BYE)
with -r/-m/-l, then prints the achieved CPS,
failed calls (created but not successful), SIPp's INVITE->200 response time p50/p99 (-trace_rtt), the exchange's
CPU (utime+stime from /proc/<pid>/stat over the run, 100% = one core) and the exchange-added delay p99 estimated
from the dce_exchange_added_delay_seconds histogram at /metrics (difference before/after the run).
In relay mode the relay allocates ports and rewrites SDP for every call; uac_basic sends no RTP.

The last line is key=value pairs for the headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.sipp import (  # noqa: E402 (the repo root goes on sys.path first)
    DID,
    HOST,
    ExchangeProcess,
    SippResult,
    SippUas,
    free_port,
    http_get,
    run_sipp_uac,
    sipp_binary,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
# --digest: the caller is a trunk with credentials (MD5: what SIPp answers), unknown sources rejected.
DIGEST_CONFIG = {"sip": {"unknown_sources": "reject", "trunks": [
    {"name": "bench", "networks": [f"{HOST}/32"], "username": "bench", "password": "bench-pw", "algorithms": ["MD5"]}]}}
DIGEST_SIPP = ("-au", "bench", "-ap", "bench-pw")
# Diagnostic (--gc-off): the exchange with Python's cyclic garbage collector disabled.
GC_OFF_COMMAND = [
    sys.executable,
    "-c",
    "import gc, sys; gc.disable(); sys.argv[0] = 'dce'; from dce.exchange.cli import main; sys.exit(main())",
]


@dataclass
class RunResult:
    label: str
    target_cps: float
    achieved_cps: float = 0.0
    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    rtt_p50_ms: float = math.nan
    rtt_p99_ms: float = math.nan
    cpu_pct: float = math.nan
    added_delay_p99_ms: float = math.nan
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"== {self.label}: target {self.target_cps:g} CPS",
            f"   achieved CPS          {self.achieved_cps:.1f}",
            f"   calls created/ok/failed {self.created}/{self.successful}/{self.failed}"
            f"  (SIPp retransmissions {self.retransmissions})",
            f"   SIPp INVITE->200 p50  {self.rtt_p50_ms:.2f} ms   p99 {self.rtt_p99_ms:.2f} ms",
            f"   B2BUA CPU             {self.cpu_pct:.1f} % of one core",
            f"   added delay p99       {self.added_delay_p99_ms:.2f} ms (from /metrics histogram)",
            *(f"   note: {note}" for note in self.notes),
        ]


# ------------------------------------------------------------------------------------------- measurements


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (and its reaped children) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 -> indexes 11..14
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rtt_values_ms(result: SippResult) -> list[float]:
    """Response times (ms) from SIPp's -trace_rtt file: ``date_ms;response_time_ms;rtd_no``."""
    path = result.rtt_file()
    if path is None:
        return []
    values = []
    for row in csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"):
        if len(row) >= 2:
            with contextlib.suppress(ValueError):
                values.append(float(row[1]))
    return values


def _epoch(cell: str) -> float:
    return float(cell.split("\t")[-1])


def achieved_cps(result: SippResult) -> float:
    """Calls created per second while SIPp was creating them (from the periodic -trace_stat rows)."""
    path = result.workdir / f"{result.name}_stats.csv"
    rows = list(csv.DictReader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    created, seconds = 0, 0.0
    for row in rows:
        with contextlib.suppress(KeyError, ValueError):
            n = int(row["OutgoingCall(P)"])
            if n > 0:
                created += n
                seconds += _epoch(row["CurrentTime"]) - _epoch(row["LastResetTime"])
    return created / seconds if seconds > 0 else 0.0


_BUCKET = re.compile(r'^dce_exchange_added_delay_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.e+-]+)$', re.M)


def delay_buckets(metrics: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for le, count in _BUCKET.findall(metrics):
        bound = math.inf if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + float(count)  # summed over any labels
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Prometheus-style quantile (linear within the bucket) of the observations between two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    target = q * counts[-1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= target:
            if math.isinf(bound):
                return previous_bound  # beyond the last finite bucket: report its bound (a lower limit)
            span = count - previous_count
            fraction = (target - previous_count) / span if span > 0 else 1.0
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return math.nan


def scrape(http_base: str) -> str:
    status, body = http_get(f"{http_base}/metrics", timeout=10)
    return body.decode() if status == 200 else ""


# ------------------------------------------------------------------------------------------- one run


def drive(args: argparse.Namespace, label: str, target: str, workdir: Path, pid: int,
          digest: bool = False) -> tuple[SippResult, float]:
    calls = int(args.cps * args.duration)
    limit = int(args.cps * (args.hold_ms / 1000 + 2) * 2) + 50
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    scenario, inject = ("uac_auth", [*DIGEST_SIPP]) if digest else ("uac_basic", [])
    if args.callers == "distinct":  # one caller per call, as real traffic (one number at 300 CPS is fraud)
        numbers = workdir / f"callers_{label}.csv"
        numbers.write_text("SEQUENTIAL\n" + "".join(f"+1212{200 + n // 10_000 % 800}{n % 10_000:04d}\n"
                                                       for n in range(calls)))
        scenario, inject = f"{scenario}_callers", [*inject, "-inf", str(numbers)]
    result = run_sipp_uac(
        scenario,
        target,
        workdir,
        calls=calls,
        rate=args.cps,
        limit=limit,
        hold_ms=args.hold_ms,
        timeout=args.duration * 2 + 60,
        trace_msg=False,
        name=f"uac_{label}",
        extra=["-trace_rtt", "-rtt_freq", "1", "-max_recv_loops", "10000", "-max_sched_loops", "10000", *inject],
    )
    cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before) * 100
    return result, cpu


def summarise(label: str, args: argparse.Namespace, result: SippResult, uas: SippResult, cpu: float) -> RunResult:
    run = RunResult(label, args.cps)
    run.created = result.created
    run.successful = result.successful
    run.failed = max(result.created - result.successful, result.failed, 0)
    run.retransmissions = result.counter("Retransmissions(C)")
    run.achieved_cps = achieved_cps(result)
    rtts = rtt_values_ms(result)
    run.rtt_p50_ms, run.rtt_p99_ms = percentile(rtts, 0.5), percentile(rtts, 0.99)
    run.cpu_pct = cpu
    if result.returncode != 0:
        run.notes.append(f"SIPp uac exited {result.returncode}; errors: {result.errors()[-400:]!r}")
    if uas.failed > 0:
        run.notes.append(f"SIPp uas counted {uas.failed} failed call(s)")
    return run


def run_exchange(args: argparse.Namespace, mode: str, root: Path, *, digest: bool = False) -> RunResult:
    label = f"{mode}_digest" if digest else mode
    workdir = root / label
    uas = SippUas(
        "uas_answer",
        workdir,
        trace_msg=False,
        name=f"uas_{mode}",
        extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    ).start()
    exchange: ExchangeProcess | None = None
    try:
        exchange = ExchangeProcess(
            workdir / "dce",
            f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
            {DID: [uas.uri]},
            media_mode=mode,
            log_level="WARNING",
            rtp_port_count=6000,
            command=GC_OFF_COMMAND if args.gc_off else None,
            extra_config=DIGEST_CONFIG if digest else {},
        )
        exchange.start(timeout=60)
        before = delay_buckets(scrape(exchange.http_base))
        print(
            f"-- {mode}: exchange pid {exchange.pid} on {exchange.sip_target}; {args.cps:g} CPS for "
            f"{args.duration:g} s ...",
            flush=True,
        )
        result, cpu = drive(args, label, exchange.sip_target, workdir, exchange.pid, digest)
        after = delay_buckets(scrape(exchange.http_base))
        alive = exchange.alive()
    finally:
        if exchange is not None:
            exchange.stop()
        uas_result = uas.stop(timeout=5)
    run = summarise(label, args, result, uas_result, cpu)
    run.added_delay_p99_ms = histogram_quantile(before, after, 0.99) * 1000
    if not alive:
        run.notes.append(f"the exchange died during the run; log: {exchange.log_path}")
    return run


def sippy_command() -> list[str] | None:
    """How to run Sippy's b2bua_simple: from this interpreter if importable, else a b2bua_simple on PATH."""
    if importlib.util.find_spec("sippy") is not None:
        return [sys.executable, "-c", "import sys; from sippy.b2bua_simple import main_func; sys.exit(main_func())"]
    script = shutil.which("b2bua_simple")
    return [script] if script else None


def run_sippy(args: argparse.Namespace, root: Path) -> RunResult:
    command = sippy_command()
    if command is None:
        raise SystemExit("sippy is not importable and b2bua_simple is not on PATH (pip install sippy)")
    workdir = root / "sippy"
    workdir.mkdir(parents=True, exist_ok=True)
    uas = SippUas(
        "uas_answer",
        workdir,
        trace_msg=False,
        name="uas_sippy",
        extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    ).start()
    port = free_port("udp")
    log = (workdir / "sippy.log").open("wb")
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(
            [*command, "-f", "-l", HOST, "-p", str(port), "-n", f"{HOST}:{uas.port}", "-L", str(workdir / "sip.log")],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(2.0)  # it has no readiness endpoint
        if proc.poll() is not None:
            raise SystemExit(f"b2bua_simple exited {proc.returncode}; see {workdir / 'sippy.log'}")
        print(
            f"-- sippy: b2bua_simple pid {proc.pid} on {HOST}:{port}; {args.cps:g} CPS for {args.duration:g} s ...",
            flush=True,
        )
        result, cpu = drive(args, "sippy", f"{HOST}:{port}", workdir, proc.pid)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()
        uas_result = uas.stop(timeout=5)
    return summarise("sippy", args, result, uas_result, cpu)


def run_direct(args: argparse.Namespace, root: Path) -> RunResult:
    """SIPp caller straight to the SIPp callee: the floor of what this machine and SIPp measure."""
    workdir = root / "direct"
    uas = SippUas(
        "uas_answer",
        workdir,
        trace_msg=False,
        name="uas_direct",
        extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    ).start()
    try:
        print(f"-- direct: SIPp -> SIPp on {HOST}:{uas.port}; {args.cps:g} CPS for {args.duration:g} s ...", flush=True)
        result, cpu = drive(args, "direct", f"{HOST}:{uas.port}", workdir, uas.proc.pid if uas.proc else os.getpid())
    finally:
        uas_result = uas.stop(timeout=5)
    run = summarise("direct", args, result, uas_result, cpu)
    run.notes.append("CPU here is the SIPp callee's")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["passthrough", "relay", "both"], default="both")
    parser.add_argument(
        "--peer",
        choices=["dce", "sippy", "direct"],
        default="dce",
        help="the B2BUA under test (direct: no B2BUA, SIPp to SIPp, for the floor)",
    )
    parser.add_argument("--cps", type=float, default=300.0)
    parser.add_argument("--callers", choices=["distinct", "same"], default="distinct",
                        help="a different caller number per call (default), or SIPp's one number for every call")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of call generation")
    parser.add_argument("--hold-ms", type=int, default=1000, help="call hold time (SIPp -d)")
    parser.add_argument(
        "--gc-off", action="store_true", help="diagnostic: run the exchange with Python's cyclic GC disabled"
    )
    parser.add_argument("--digest", action="store_true",
                        help="after each plain run, one where every INVITE is digest-challenged (401, then again)")
    parser.add_argument("--workdir", help="keep SIPp/exchange files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if sipp_binary() is None:
        print("sipp is not on PATH (Debian: apt-get install sip-tester)", file=sys.stderr)
        return 2

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dce-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"bench files in {root}; {os.cpu_count()} CPUs; SIPp, callee and B2BUA share them", flush=True)
    runs: list[RunResult] = []
    if args.peer == "sippy":
        runs.append(run_sippy(args, root))
    elif args.peer == "direct":
        runs.append(run_direct(args, root))
    else:
        for mode in ("passthrough", "relay") if args.mode == "both" else (args.mode,):
            runs.append(run_exchange(args, mode, root))
            if args.digest:  # the same run's plain figure is the baseline beside it
                runs.append(run_exchange(args, mode, root, digest=True))
    for run in runs:
        print("\n".join(run.lines()), flush=True)

    headline: dict[str, str] = {}
    for run in runs:
        headline[f"{run.label}_cps"] = f"{run.achieved_cps:.1f}"
        headline[f"{run.label}_failed"] = str(run.failed)
    for key, attr in (
        ("added_delay_p99_ms", "added_delay_p99_ms"),
        ("rtt_p99_ms", "rtt_p99_ms"),
        ("rtt_p50_ms", "rtt_p50_ms"),
        ("exchange_cpu_pct", "cpu_pct"),
    ):
        for run in runs:
            name = key if run is runs[0] else f"{run.label}_{key}"
            headline[name] = f"{getattr(run, attr):.2f}"
    print(" ".join(f"{k}={v}" for k, v in headline.items()), flush=True)
    return 0 if all(run.failed == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
