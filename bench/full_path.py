"""Load test: the full call path (marketplace, compliance and fraud, relay media, CDRs), plain vs digest vs TLS.

    .venv/bin/python bench/full_path.py                                   # plain, digest, tls at 300..1200 CPS
    .venv/bin/python bench/full_path.py --rates 300,600 --duration 20     # a shorter step
    .venv/bin/python bench/full_path.py --auth digest --rates 600         # only the digest-challenged caller
    .venv/bin/python bench/full_path.py --leg tls --rates 600             # only the caller's leg over TLS
    .venv/bin/python bench/full_path.py --variants kamailio,tls           # the exchange's TLS cost alone
    .venv/bin/python bench/full_path.py --database postgresql             # PostgreSQL instead of SQLite

One run per rate and variant, interleaved (every variant at a rate before the next rate), so the figures beside
each other come from the same minutes of this shared machine. Each run starts a fresh ``dce serve`` (relay media,
compliance and the fraud gate on: the default configuration, the publisher-velocity limit raised to fit the rate)
on a fresh database (a SQLite file, or a PostgreSQL database the bench creates and drops on
``--postgres-server``), configures through the HTTP API a publisher, a buyer, a target without caps on a SIPp
callee (uas_answer), a campaign with a fixed payout and the tracking number, then drives a SIPp caller from
distinct valid caller numbers (a new one per call) for ``--duration`` seconds at the rate, holding 1 s.

Variants (``--variants``; ``--auth``/``--leg`` pick one):

- ``plain``: SIPp -> exchange over UDP, no trunk credentials.
- ``digest``: the caller is a trunk with digest credentials; every INVITE is challenged (401), SIPp answers it
  (uac_auth_callers) and sends the INVITE again with Authorization: two round trips.
- ``tls``: SIPp has no TLS here, so Kamailio stands in front (tests/integration/kamailio.py): SIPp --UDP-->
  Kamailio --TLS (mutual, one reused connection)--> exchange --UDP--> SIPp callee.
- ``kamailio``: the same Kamailio forwarding over UDP: beside ``tls``, the exchange's own TLS cost.
- ``digest_tls``, ``digest_kamailio``: both.

Per run: achieved CPS, failed calls (SIPp), SIPp's INVITE->200 p50/p99 (-trace_rtt), the exchange-added delay p99
(dce_exchange_added_delay_seconds on /metrics, before/after), the exchange's CPU (100% = one core) and CPU time per
call (utime+stime from the first call until every CDR is written, over calls placed), its RSS after
the calls (and the peak, VmHWM), CDRs written (``GET /api/v1/calls`` once the writer has flushed) vs calls placed,
and ``dce_active_calls`` once the calls ended (must be 0). The last line is key=value pairs named
``<variant>_<rate>_<figure>``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import sipp_load  # noqa: E402 (bench/ goes on sys.path first)
import soak  # noqa: E402

from tests.databases import postgres_database  # noqa: E402
from tests.integration.kamailio import Kamailio, kamailio_binary, tls_module_installed  # noqa: E402
from tests.integration.sipp import HOST, ExchangeProcess, SippUas, free_port, sipp_binary  # noqa: E402
from tests.tls_pki import TlsPki  # noqa: E402

MB = 1 << 20
POSTGRES_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LEGS = ("udp", "kamailio", "tls")  # how the caller's leg reaches the exchange


@dataclass(frozen=True)
class Variant:
    """How the caller reaches the exchange: digest-challenged or not, and over which leg."""

    digest: bool
    leg: str

    @property
    def name(self) -> str:
        if self.leg == "udp":
            return "digest" if self.digest else "plain"
        return f"digest_{self.leg}" if self.digest else self.leg

    @staticmethod
    def named(name: str) -> Variant:
        digest = name.startswith("digest")
        leg = name.removeprefix("digest").removeprefix("_") or "udp"
        leg = "udp" if leg == "plain" else leg
        if leg not in LEGS or Variant(digest, leg).name != name:
            raise argparse.ArgumentTypeError(f"unknown variant {name!r}")
        return Variant(digest, leg)


@dataclass
class Outcome:
    """One run's figures beside SIPp's (``sipp_load.RunResult``)."""

    variant: str
    rate: float
    sipp: sipp_load.RunResult
    rss_mb: float = math.nan
    peak_rss_mb: float = math.nan
    cdrs: int = -1
    active_after: int = -1
    cpu_ms_per_call: float = math.nan

    @property
    def calls(self) -> int:
        return self.sipp.created

    def lines(self) -> list[str]:
        return [
            *self.sipp.lines(),
            f"   exchange RSS          {self.rss_mb:.1f} MB after the calls (peak {self.peak_rss_mb:.1f} MB)",
            f"   exchange CPU per call {self.cpu_ms_per_call:.2f} ms (utime+stime from the first call to the last CDR)",
            f"   CDRs written / placed {self.cdrs} / {self.calls}",
            f"   dce_active_calls      {self.active_after} after the run",
        ]

    def headline(self) -> dict[str, str]:
        run, key = self.sipp, f"{self.variant}_{self.rate:g}"
        return {
            f"{key}_cps": f"{run.achieved_cps:.1f}",
            f"{key}_failed": str(run.failed),
            f"{key}_p50_ms": f"{run.rtt_p50_ms:.2f}",
            f"{key}_p99_ms": f"{run.rtt_p99_ms:.2f}",
            f"{key}_added_p99_ms": f"{run.added_delay_p99_ms:.2f}",
            f"{key}_cpu_pct": f"{run.cpu_pct:.1f}",
            f"{key}_cpu_ms_per_call": f"{self.cpu_ms_per_call:.2f}",
            f"{key}_rss_mb": f"{self.rss_mb:.1f}",
            f"{key}_calls": str(self.calls),
            f"{key}_cdrs": str(self.cdrs),
            f"{key}_active": str(self.active_after),
        }

    @property
    def clean(self) -> bool:
        return self.sipp.failed == 0 and self.cdrs == self.calls and self.active_after == 0


def memory_mb(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of ``pid`` in MB: resident now and its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) * 1024 / MB for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


@contextlib.contextmanager
def database(kind: str, workdir: Path, server: str) -> Iterator[str]:
    """A fresh database for one run: a SQLite file in ``workdir``, or a PostgreSQL database created and dropped."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        with postgres_database(server) as url:
            yield url


def sip_config(variant: Variant, rate: float, pki: TlsPki | None, tls_port: int, udp_port: int) -> dict[str, Any]:
    """The exchange's ``sip`` section for ``variant``: the digest trunk, the TLS listener."""
    sip: dict[str, Any] = {}
    if variant.digest:
        sip.update(sipp_load.DIGEST_CONFIG["sip"])
    if variant.leg != "udp":
        assert pki is not None
        ours = pki.issue(f"dce-{variant.name}-{rate:g}", ips=[HOST])
        sip["listen"] = [f"udp:{HOST}:{udp_port}", f"tls:{HOST}:{tls_port}"]
        sip["tls"] = {"cert_file": str(ours.cert_file), "key_file": str(ours.key_file),
                      "client_ca_file": str(pki.ca_file), "verify_clients": True, "ca_file": str(pki.ca_file)}
    return sip


def run(args: argparse.Namespace, variant: Variant, rate: float, root: Path, pki: TlsPki | None) -> Outcome:
    """One fresh exchange (and Kamailio for its legs) at ``rate`` for ``args.duration`` seconds."""
    label = f"{variant.name}_{rate:g}"
    workdir = root / label
    workdir.mkdir(parents=True, exist_ok=True)
    drive_args = argparse.Namespace(cps=rate, duration=args.duration, hold_ms=args.hold_ms, callers="distinct")
    uas = SippUas("uas_answer", workdir, trace_msg=False, name=f"uas_{label}",
                  extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"]).start()
    exchange: ExchangeProcess | None = None
    kamailio: Kamailio | None = None
    outcome = Outcome(variant.name, rate, sipp_load.RunResult(label, rate))
    uas_result = None
    try:
        with database(args.database, workdir, args.postgres_server) as url:
            concurrent = rate * (args.hold_ms / 1000 + 2)  # calls alive at once, with margin for slow answers
            exchange = ExchangeProcess(
                workdir / "dce", url, media_mode="relay", log_level="WARNING", transports=("udp",),
                rtp_port_count=min(9000, int(concurrent * 4) + 400),
            )
            tls_port = free_port("tcp")
            exchange.extra_config = {
                "sip": sip_config(variant, rate, pki, tls_port, exchange.sip_port),
                "compliance": {"fraud": {"publisher_calls_per_minute": int(rate * 60 * 4) + 600}},
            }
            exchange.start(timeout=60)
            soak.configure(exchange, uas.uri, payout="0.40")
            target = exchange.sip_target
            if variant.leg != "udp":
                assert pki is not None
                kam_udp = free_port("udp")
                to_exchange = f"{HOST}:{tls_port}" if variant.leg == "tls" else exchange.sip_target
                kamailio = Kamailio(workdir / "kam", udp_port=kam_udp, tls_port=free_port("tcp"),
                                    to_tls=to_exchange, to_udp=f"{HOST}:{uas.port}",
                                    cert=pki.issue(f"kam-{label}", ips=[HOST]), ca_file=pki.ca_file,
                                    forward="tls" if variant.leg == "tls" else "udp",
                                    shm_mb=64 + int(rate) // 2).start()  # its transactions: ~8 KB for ~7 s each
                target = f"{HOST}:{kam_udp}"
            print(f"-- {label}: exchange pid {exchange.pid}, caller -> {target} ({variant.leg}"
                  f"{', digest' if variant.digest else ''}); {rate:g} CPS for {args.duration:g} s ...", flush=True)
            base = exchange.http_base
            before = sipp_load.delay_buckets(sipp_load.scrape(base))
            cpu_before = sipp_load.cpu_seconds(exchange.pid)
            result, cpu = sipp_load.drive(drive_args, label, target, workdir, exchange.pid, variant.digest)
            after = sipp_load.delay_buckets(sipp_load.scrape(base))
            outcome.rss_mb, outcome.peak_rss_mb = memory_mb(exchange.pid)
            # a call SIPp gave up on ends at the relay's media timeout (rtp_timeout_s, 60 s here) at the latest
            soak.wait_until(lambda: (soak.call_counts(base) or (0, 1))[1] == 0, exchange.rtp_timeout_s + 15)
            outcome.active_after = (soak.call_counts(base) or (0, -1))[1]
            soak.wait_until(lambda: soak.cdr_total(base) >= result.created, 60)
            outcome.cdrs = soak.cdr_total(base)
            outcome.cpu_ms_per_call = (sipp_load.cpu_seconds(exchange.pid) - cpu_before) * 1000 / max(result.created, 1)
            alive = exchange.alive()
            if kamailio is not None:
                kamailio.stop()
            exchange.stop()
    finally:
        if kamailio is not None:
            kamailio.stop()
        if exchange is not None:
            exchange.stop()
        uas_result = uas.stop(timeout=5)
    sipp = sipp_load.summarise(label, drive_args, result, uas_result, cpu)
    sipp.added_delay_p99_ms = sipp_load.histogram_quantile(before, after, 0.99) * 1000
    if not alive:
        sipp.notes.append(f"the exchange died during the run; log: {exchange.log_path}")
    outcome.sipp = sipp
    return outcome


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="300,600,800,1000,1200", help="calls per second, stepped in order")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of call generation per run")
    parser.add_argument("--hold-ms", type=int, default=1000, help="call hold time (SIPp -d)")
    parser.add_argument("--variants", default="plain,digest,tls",
                        help="comma-separated, interleaved at each rate: plain, digest, tls, kamailio, digest_tls, "
                             "digest_kamailio")
    parser.add_argument("--auth", choices=["none", "digest"], help="run only this caller (with --leg, or udp)")
    parser.add_argument("--leg", choices=LEGS, help="run only this leg (with --auth, or none)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-server", default=POSTGRES_SERVER,
                        help="where --database postgresql makes (and drops) a database per run")
    parser.add_argument("--workdir", help="keep SIPp/Kamailio/exchange files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.auth or args.leg:
        args.variants = [Variant(args.auth == "digest", args.leg or "udp")]
    else:
        try:
            args.variants = [Variant.named(name.strip()) for name in args.variants.split(",") if name.strip()]
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sipp_binary() is None:
        print("sipp is not on PATH (Debian: apt-get install sip-tester)", file=sys.stderr)
        return 2
    proxied = any(v.leg != "udp" for v in args.variants)
    if proxied and (kamailio_binary() is None or not tls_module_installed()):
        print("the kamailio and tls legs need kamailio with its tls module (apt-get install kamailio "
              "kamailio-tls-modules)", file=sys.stderr)
        return 2
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dce-full-path-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"bench files in {root}; {os.cpu_count()} CPUs shared by SIPp x2, the exchange (and Kamailio); "
          f"{args.database}; load average {load_average()}", flush=True)
    pki = TlsPki(root / "pki") if proxied else None
    outcomes: list[Outcome] = []
    for rate in args.rates:
        for variant in args.variants:
            outcome = run(args, variant, rate, root, pki)
            print("\n".join(outcome.lines()), flush=True)
            outcomes.append(outcome)
    print(f"load average after: {load_average()}", flush=True)
    headline: dict[str, str] = {}
    for outcome in outcomes:
        headline.update(outcome.headline())
    print(" ".join(f"{k}={v}" for k, v in headline.items()), flush=True)
    return 0 if all(outcome.clean for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
