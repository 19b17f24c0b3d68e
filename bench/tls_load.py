"""Load test: full-path CPS with the caller's leg over TLS, against plain UDP in the same run.

    .venv/bin/python bench/tls_load.py                        # 100 CPS for 30 s, UDP then TLS
    .venv/bin/python bench/tls_load.py --cps 200 --duration 60

SIPp has no TLS on this machine, so Kamailio (Debian's, with its tls module) stands in front:

    SIPp uac --UDP--> Kamailio --UDP | TLS (mutual, one reused connection)--> dce --UDP--> SIPp uas

Both runs go through the same Kamailio configuration and the same exchange settings (a TLS listener with a test
CA, client certificates required, passthrough media), so the difference is the exchange's TLS cost: framing,
encryption and the stream path for the A leg. Printed per run as bench/sipp_load.py does (achieved CPS, failed
calls, SIPp's INVITE->200 p50/p99, the exchange's CPU); the last line is key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import sipp_load  # noqa: E402 (bench/ goes on sys.path first)

from tests.integration.kamailio import Kamailio, kamailio_binary, tls_module_installed  # noqa: E402
from tests.integration.sipp import DID, HOST, ExchangeProcess, SippUas, free_port, sipp_binary  # noqa: E402
from tests.tls_pki import TlsPki  # noqa: E402


def run(args: argparse.Namespace, transport: str, root: Path, pki: TlsPki) -> sipp_load.RunResult:
    workdir = root / transport
    uas = SippUas("uas_answer", workdir, trace_msg=False, name=f"uas_{transport}",
                  extra=["-max_recv_loops", "10000", "-max_sched_loops", "10000"]).start()
    exchange: ExchangeProcess | None = None
    kamailio: Kamailio | None = None
    alive = False
    before: dict[float, float] = {}
    after: dict[float, float] = {}
    try:
        exchange = ExchangeProcess(workdir / "dce", f"sqlite+aiosqlite:///{workdir / 'bench.db'}", {DID: [uas.uri]},
                                   transports=("udp",), log_level="WARNING")
        dce_tls = free_port("tcp")
        ours = pki.issue(f"dce-{transport}", ips=[HOST])
        exchange.extra_config = {"sip": {
            "listen": [f"udp:{HOST}:{exchange.sip_port}", f"tls:{HOST}:{dce_tls}"],
            "tls": {"cert_file": str(ours.cert_file), "key_file": str(ours.key_file),
                    "client_ca_file": str(pki.ca_file), "verify_clients": True, "ca_file": str(pki.ca_file)}}}
        exchange.start(timeout=60)
        kam_udp, kam_tls = free_port("udp"), free_port("tcp")
        to_exchange = f"{HOST}:{dce_tls}" if transport == "tls" else exchange.sip_target
        kamailio = Kamailio(workdir / "kam", udp_port=kam_udp, tls_port=kam_tls, to_tls=to_exchange,
                            to_udp=f"{HOST}:{uas.port}", cert=pki.issue(f"kam-{transport}", ips=[HOST]),
                            ca_file=pki.ca_file, forward=transport).start()
        print(f"-- {transport}: exchange pid {exchange.pid}, Kamailio -> {to_exchange} over {transport}; "
              f"{args.cps:g} CPS for {args.duration:g} s ...", flush=True)
        args.callers = "distinct"
        before = sipp_load.delay_buckets(sipp_load.scrape(exchange.http_base))
        result, cpu = sipp_load.drive(args, transport, f"{HOST}:{kam_udp}", workdir, exchange.pid)
        after = sipp_load.delay_buckets(sipp_load.scrape(exchange.http_base))
        alive = exchange.alive()
    finally:
        if kamailio is not None:
            kamailio.stop()
        if exchange is not None:
            exchange.stop()
        uas_result = uas.stop(timeout=5)
    outcome = sipp_load.summarise(transport, args, result, uas_result, cpu)
    outcome.added_delay_p99_ms = sipp_load.histogram_quantile(before, after, 0.99) * 1000
    if not alive:
        outcome.notes.append(f"the exchange died during the run; log: {exchange.log_path if exchange else '?'}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cps", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of call generation")
    parser.add_argument("--hold-ms", type=int, default=1000, help="call hold time (SIPp -d)")
    parser.add_argument("--workdir", help="keep SIPp/Kamailio/exchange files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if sipp_binary() is None or kamailio_binary() is None or not tls_module_installed():
        print("needs sipp and kamailio with its tls module (apt-get install sip-tester kamailio "
              "kamailio-tls-modules)", file=sys.stderr)
        return 2
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dce-tls-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"bench files in {root}; {os.cpu_count()} CPUs shared by SIPp x2, Kamailio and the exchange", flush=True)
    pki = TlsPki(root / "pki")
    runs = [run(args, transport, root, pki) for transport in ("udp", "tls")]
    for outcome in runs:
        print("\n".join(outcome.lines()), flush=True)
    headline = {}
    for outcome in runs:
        headline[f"{outcome.label}_cps"] = f"{outcome.achieved_cps:.1f}"
        headline[f"{outcome.label}_failed"] = str(outcome.failed)
        headline[f"{outcome.label}_rtt_p99_ms"] = f"{outcome.rtt_p99_ms:.2f}"
        headline[f"{outcome.label}_exchange_cpu_pct"] = f"{outcome.cpu_pct:.1f}"
        headline[f"{outcome.label}_added_delay_p99_ms"] = f"{outcome.added_delay_p99_ms:.2f}"
    print(" ".join(f"{k}={v}" for k, v in headline.items()), flush=True)
    return 0 if all(outcome.failed == 0 for outcome in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
