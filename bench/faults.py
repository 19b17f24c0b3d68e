"""Fault runs: a real ``dce serve`` on PostgreSQL under SIPp load while something breaks; then count the records.

    .venv/bin/python bench/faults.py                              # silent_db at full size: 50 CPS, 20 s outage
    .venv/bin/python bench/faults.py --duration 6 --outage-s 3    # a bounded run (the slow test uses this)

Scenarios (``--scenario``, one function each in ``SCENARIOS``):

- ``silent_db``: SIPp (uac_basic_callers, a distinct caller per call) -> exchange -> SIPp (uas_answer) at ``--cps``
  for ``--duration`` s. The exchange reaches PostgreSQL through a TCP proxy that goes *silent* for the last
  ``--outage-s`` s of the load (bytes vanish, no reset; connections open then never answer again). When the load
  is over the exchange gets SIGTERM with the database still silent, the network heals, and the exchange starts
  again on the same database and spool. Counted: calls placed (SIPp created), CDRs in the database, duplicates
  (a SIP call with more than one CDR) and missing calls (placed, no CDR), after the restart has settled.

PostgreSQL comes from ``--database-url`` or ``DCE_TEST_DATABASE_URL`` (a server URL; a fresh database is made and
dropped). The last line is key=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.databases import POSTGRES_ENV, postgres_database  # noqa: E402 (the repo root goes on sys.path first)
from tests.integration.db_proxy import CuttableProxy  # noqa: E402
from tests.integration.sipp import DID, ExchangeProcess, SippResult, SippUas, run_sipp_uac  # noqa: E402

SIPP_LOOPS = ["-max_recv_loops", "10000", "-max_sched_loops", "10000"]


def count_cdrs(database_url: str) -> tuple[int, int]:
    """(CDR rows, distinct inbound SIP calls among them) in the database of ``database_url``."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def query() -> tuple[int, int]:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            row = await connection.fetchrow("SELECT count(*) AS n, count(DISTINCT a_leg_call_id) AS d FROM calls")
            return int(row["n"]), int(row["d"])
        finally:
            await connection.close()

    return asyncio.run(query())


def wait_settled(database_url: str, expected: int, timeout_s: float) -> tuple[int, int, float]:
    """Poll until ``expected`` distinct calls are stored or nothing changed for 5 s (bounded by ``timeout_s``):
    (rows, distinct, seconds waited)."""
    started = time.monotonic()
    last, last_change = (-1, -1), started
    while time.monotonic() - started < timeout_s:
        current = count_cdrs(database_url)
        if current != last:
            last, last_change = current, time.monotonic()
        if current[1] >= expected or time.monotonic() - last_change > 5:
            break
        time.sleep(0.5)
    return last[0], last[1], time.monotonic() - started


def silent_db(args: argparse.Namespace, root: Path, server_url: str) -> dict[str, Any]:
    """The database silently unreachable for the last ``outage_s`` of the load, SIGTERM, heal, restart, count."""
    figures: dict[str, Any] = {"scenario": "silent_db", "cps": args.cps, "duration_s": args.duration,
                               "outage_s": args.outage_s}
    with postgres_database(server_url) as database_url:
        url = make_url(database_url)
        proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
        uas = SippUas("uas_answer", root, trace_msg=False, name="uas", extra=SIPP_LOOPS).start()
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        exchange = ExchangeProcess(root / "dce", proxied, {DID: [uas.uri]}, log_level="WARNING",
                                   extra_config={"database": {"spool_path": str(root / "spool.jsonl")}})
        try:
            exchange.start(timeout=60)
            calls = int(args.cps * args.duration)
            numbers = root / "callers.csv"
            numbers.write_text("SEQUENTIAL\n" + "".join(f"+1212{200 + n // 10_000 % 800}{n % 10_000:04d}\n"
                                                           for n in range(calls)))
            result: list[SippResult] = []
            load = threading.Thread(target=lambda: result.append(run_sipp_uac(
                "uac_basic_callers", exchange.sip_target, root, calls=calls, rate=args.cps, hold_ms=args.hold_ms,
                limit=int(args.cps * (args.hold_ms / 1000 + 2) * 2) + 50, timeout=args.duration * 2 + 60,
                trace_msg=False, name="load", extra=[*SIPP_LOOPS, "-inf", str(numbers)])))
            started = time.monotonic()
            load.start()
            time.sleep(max(0.0, args.duration - args.outage_s))
            proxy.silence()
            silenced = time.monotonic()
            print(f"-- database silent at t={silenced - started:.1f} s", flush=True)
            load.join()
            time.sleep(max(0.0, args.outage_s - (time.monotonic() - silenced)))
            stop_started = time.monotonic()
            figures["silent_s"] = round(stop_started - silenced, 1)  # load over (SIPp done): silent until SIGTERM
            figures["exit_code"] = exchange.stop(timeout=120)  # SIGTERM, the database still silent
            figures["stop_s"] = round(time.monotonic() - stop_started, 1)
            print(f"-- SIGTERM after {figures['silent_s']} s of silence; the stop took {figures['stop_s']} s",
                  flush=True)
            first_log = exchange.log()
            proxy.heal()
            exchange.start(timeout=60)  # the same config: same database (via the healed proxy) and spool
            placed = result[0].created if result else 0
            rows, distinct, waited = wait_settled(database_url, placed, timeout_s=args.settle_timeout_s)
            figures.update(placed=placed, sipp_failed=max(placed - result[0].successful, 0) if result else 0,
                           cdrs=rows, duplicates=rows - distinct, missing=max(placed - distinct, 0),
                           settle_s=round(waited, 1), spooled_at_stop=int("spooled to" in first_log),
                           alive=int(exchange.alive()))
        finally:
            exchange.stop()
            uas.stop(timeout=5)
            proxy.close()
    return figures


SCENARIOS: dict[str, Callable[[argparse.Namespace, Path, str], dict[str, Any]]] = {"silent_db": silent_db}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="silent_db")
    parser.add_argument("--cps", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of SIPp load")
    parser.add_argument("--outage-s", type=float, default=20.0, help="seconds the database is silent")
    parser.add_argument("--hold-ms", type=int, default=1000)
    parser.add_argument("--settle-timeout-s", type=float, default=120.0)
    parser.add_argument("--database-url", default=os.environ.get(POSTGRES_ENV), help="a PostgreSQL server URL")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.outage_s > args.duration:
        parser.error("--outage-s must not exceed --duration")
    if not args.database_url or make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error(f"a PostgreSQL server URL is needed: --database-url or {POSTGRES_ENV}")
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen scenario; its figures."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dce-faults-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return SCENARIOS[args.scenario](args, root, args.database_url)


def main(argv: list[str] | None = None) -> int:
    figures = run(argv)
    print(" ".join(f"{key}={value}" for key, value in figures.items()), flush=True)
    return 0 if figures.get("missing") == 0 and figures.get("duplicates") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
