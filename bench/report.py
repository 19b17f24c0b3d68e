"""The summary report over 1M CDRs (issue 5, Reports): ``report_repository.summary`` per group_by.

1. A throwaway database migrated to head (PostgreSQL: a fresh ``dce_t_*`` database on the server of
   --database-url, dropped afterwards; --sqlite: a file in a temp dir), so the calls table has its real indexes.
2. N CDRs spread over 30 days (50 campaigns, 20 publishers, 30 buyers, 200 targets; dispositions: 60% answered,
   the rest busy/no answer/failed/cancelled/rejected/no route/blocked; ~40% of all calls converted with settled
   revenue and payout, 3% of the answered duplicates), settled like the settlement job leaves them, with
   realistic widths for the other columns (SIP Call-IDs, URIs, extra JSON). PostgreSQL: COPY via asyncpg;
   SQLite: executemany in one transaction. Then VACUUM ANALYZE (PostgreSQL) / ANALYZE (SQLite).
3. ``summary`` per group_by over the whole 30 days and over one day (day 15): one warm-up, then the median of
   --runs runs, timed around the repository call (query, fetch and the Python rows).

Last line: ``cdrs=... campaign_ms=... publisher_ms=... buyer_ms=... target_ms=... hour_ms=... day_ms=... worst_ms=...``
(the 30-day times; worst over the 30-day and 1-day runs). Target (issue 5): <= 500 ms on PostgreSQL for 1M CDRs.

    .venv/bin/python bench/report.py [--cdrs 1000000] [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]
    .venv/bin/python bench/report.py --bucket-stats  # with the suggested CREATE STATISTICS (BUCKET_STATS)
    .venv/bin/python bench/report.py --sqlite
    .venv/bin/python bench/report.py --explain      # EXPLAIN (ANALYZE, BUFFERS) of each 30-day query too
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
START = datetime(2025, 6, 1, tzinfo=UTC)
DAYS = 30
CAMPAIGNS, PUBLISHERS, BUYERS, TARGETS = 50, 20, 30, 200
# disposition -> weight (per 1000 calls)
MIX = {"answered": 600, "busy": 40, "no_answer": 90, "failed": 20, "cancelled": 60, "rejected": 20,
       "no_route": 70, "blocked": 100}
CODES = {"answered": 200, "busy": 486, "no_answer": 480, "failed": 503, "cancelled": 487, "rejected": 603,
         "no_route": 404, "blocked": 603}


def generate(n: int, seed: int = 20250601) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The calls columns and N rows (times aware UTC, extra as JSON text)."""
    from dce.db.report_repository import calls

    rng = random.Random(seed)
    names = [column.name for column in calls.columns]
    dispositions = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    campaign_publishers = {c: [rng.randrange(PUBLISHERS) for _ in range(4)] for c in range(CAMPAIGNS)}
    campaign_targets = {c: rng.sample(range(TARGETS), 12) for c in range(CAMPAIGNS)}
    span = DAYS * 86400
    rows: list[tuple[Any, ...]] = []
    invite_index = names.index("invite_at")
    for i in range(n):
        disposition = dispositions[i]
        invite_at = START + timedelta(seconds=rng.random() * span)
        campaign = rng.randrange(CAMPAIGNS)
        publisher = rng.choice(campaign_publishers[campaign])
        routed = disposition not in ("blocked", "no_route")
        target = rng.choice(campaign_targets[campaign]) if routed else None
        answered = disposition == "answered"
        talk = int(rng.expovariate(1 / 150)) + 1 if answered else 0
        ring = rng.randint(1, 12)
        answer_at = invite_at + timedelta(seconds=ring) if answered else None
        end_at = (answer_at + timedelta(seconds=talk)) if answer_at else invite_at + timedelta(seconds=ring)
        revenue = rng.choice((15, 20, 25, 30, 40, 45, 60)) * 1_000_000 if routed else None
        share = 6000 if campaign % 3 else None
        fixed = None if share else 8_000_000
        duplicate = answered and rng.random() < 0.03
        converted = answered and not duplicate and rng.random() < 0.69
        settled_revenue = revenue if converted and revenue else 0
        settled_payout = (settled_revenue * share // 10_000 if share else fixed or 0) if converted else 0
        values = {
            "call_id": f"{i:08x}-{rng.getrandbits(64):016x}",
            "a_leg_call_id": f"{rng.getrandbits(96):024x}@carrier-{i % 7}.example.net",
            "b_leg_call_id": f"{rng.getrandbits(64):016x}@dce" if routed else None,
            "caller": f"+1{rng.randint(2002000000, 9899999999)}",
            "called": f"+1800555{campaign:04d}",
            "did": f"+1800555{campaign:04d}",
            "destination": f"sip:+1212555{target:04d}@buyer-{target % BUYERS}.example.com:5060" if routed else None,
            "invite_at": invite_at,
            "ring_at": invite_at + timedelta(seconds=1),
            "answer_at": answer_at,
            "end_at": end_at,
            "disposition": disposition,
            "final_code": CODES[disposition],
            "hangup_side": "caller" if answered else None,
            "reason": None if answered or routed else ("dnc_national" if disposition == "blocked" else "no route"),
            "duration_s": int((end_at - invite_at).total_seconds()),
            "billable_s": talk,
            "packets_relayed": talk * 100,
            "bytes_relayed": talk * 17200,
            "extra": json.dumps({"campaign": f"cmp-{campaign}", "state": "NY"}),
            "verstat": "TN-Validation-Passed" if rng.random() < 0.7 else None,
            "dial_at": invite_at + timedelta(milliseconds=20) if routed else None,
            "campaign_id": f"cmp-{campaign:03d}",
            "publisher_id": f"pub-{publisher:03d}",
            "buyer_id": f"buy-{target % BUYERS:03d}" if target is not None else None,
            "target_id": f"tgt-{target:03d}" if target is not None else None,
            "revenue": revenue,
            "conversion_s": 90 if routed else None,
            "conversion_from": "answer",
            "payout_fixed": fixed,
            "payout_share_bp": share,
            "duplicate_days": 30,
            "duplicate_after": "connected",
            "bid_id": None,
            "converted": converted,
            "duplicate": duplicate,
            "settled_revenue": settled_revenue,
            "settled_payout": settled_payout,
            "settled_at": end_at + timedelta(seconds=2),
        }
        rows.append(tuple(values[name] for name in names))
    rows.sort(key=lambda row: row[invite_index])  # stored roughly in arrival order, as the CDR writer does
    return names, rows


# Suggested for a calls migration (PostgreSQL 14+): without statistics on the bucket expressions the planner
# estimates one group per row for hour/day, so it skips the parallel partial aggregate (about 2x slower).
BUCKET_STATS = (
    "CREATE STATISTICS IF NOT EXISTS st_calls_invite_hour ON (date_trunc('hour', invite_at AT TIME ZONE 'UTC')) "
    "FROM calls",
    "CREATE STATISTICS IF NOT EXISTS st_calls_invite_day ON (date_trunc('day', invite_at AT TIME ZONE 'UTC')) "
    "FROM calls",
)


async def load_postgres(url: str, names: list[str], rows: list[tuple[Any, ...]], bucket_stats: bool) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        for start in range(0, len(rows), 100_000):
            await connection.copy_records_to_table("calls", records=rows[start:start + 100_000], columns=names)
        if bucket_stats:
            for statement in BUCKET_STATS:
                await connection.execute(statement)
        await connection.execute("VACUUM ANALYZE calls")
    finally:
        await connection.close()


def load_sqlite(path: str, names: list[str], rows: list[tuple[Any, ...]]) -> None:
    def plain(value: Any) -> Any:  # what UtcDateTime stores on SQLite: naive UTC text
        return value.replace(tzinfo=None).isoformat(" ") if isinstance(value, datetime) else value

    connection = sqlite3.connect(path)
    try:
        placeholders = ", ".join("?" for _ in names)
        with connection:
            connection.executemany(
                f"INSERT INTO calls ({', '.join(names)}) VALUES ({placeholders})",
                ([plain(v) for v in row] for row in rows),
            )
        connection.execute("ANALYZE")
    finally:
        connection.close()


async def measure(url: str, runs: int, explain: bool) -> dict[tuple[str, str], tuple[float, int]]:
    from sqlalchemy import text

    from dce.db.engine import create_engine
    from dce.db.report_repository import GROUP_BYS, summary, summary_query

    engine = create_engine(url)
    ranges = {"30d": (START, START + timedelta(days=DAYS)),
              "1d": (START + timedelta(days=15), START + timedelta(days=16))}
    results: dict[tuple[str, str], tuple[float, int]] = {}
    try:
        for group_by in GROUP_BYS:
            for label, (since, until) in ranges.items():
                rows = await summary(engine, since=since, until=until, group_by=group_by)  # warm-up
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    rows = await summary(engine, since=since, until=until, group_by=group_by)
                    times.append((time.perf_counter() - t0) * 1000)
                results[group_by, label] = (statistics.median(times), len(rows) - 1)
                if explain and label == "30d":
                    query = summary_query(engine.dialect.name, since=since, until=until, group_by=group_by)
                    compiled = query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
                    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if engine.dialect.name == "postgresql" else \
                        "EXPLAIN QUERY PLAN "
                    async with engine.begin() as connection:
                        if engine.dialect.name == "postgresql":
                            await connection.execute(text("SET LOCAL jit = off"))
                        plan = (await connection.execute(text(prefix + str(compiled)))).all()
                    print(f"-- {group_by} 30d\n" + "\n".join(" | ".join(str(c) for c in row) for row in plan))
    finally:
        await engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdrs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL server (a fresh database on it)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite in a temp dir instead")
    parser.add_argument("--bucket-stats", action="store_true",
                        help="PostgreSQL: create the suggested statistics on the hour/day bucket expressions first")
    parser.add_argument("--explain", action="store_true", help="print the plans of the 30-day queries")
    args = parser.parse_args()

    from dce.db.migrate import upgrade

    t0 = time.perf_counter()
    names, rows = generate(args.cdrs)
    print(f"generated {len(rows)} CDRs in {time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="dce-report-") as tmp:
        if args.sqlite:
            path = str(Path(tmp) / "bench.db")
            url = f"sqlite+aiosqlite:///{path}"
            upgrade(url)
            t0 = time.perf_counter()
            load_sqlite(path, names, rows)
            del rows
            print(f"loaded into SQLite in {time.perf_counter() - t0:.1f} s", flush=True)
            results = asyncio.run(measure(url, args.runs, args.explain))
        else:
            from tests.databases import postgres_database  # a throwaway database on that server

            with postgres_database(args.database_url) as url:
                upgrade(url)
                t0 = time.perf_counter()
                asyncio.run(load_postgres(url, names, rows, args.bucket_stats))
                del rows
                print(f"loaded into PostgreSQL (COPY, VACUUM ANALYZE) in {time.perf_counter() - t0:.1f} s",
                      flush=True)
                results = asyncio.run(measure(url, args.runs, args.explain))

    from dce.db.report_repository import GROUP_BYS

    backend = "sqlite" if args.sqlite else "postgresql" + (" with bucket statistics" if args.bucket_stats else "")
    print(f"\nsummary over {args.cdrs} CDRs on {backend}, median of {args.runs} (ms)")
    print(f"{'group_by':<10} {'30 days':>10} {'groups':>7} {'1 day':>10} {'groups':>7}")
    for group_by in GROUP_BYS:
        month, month_groups = results[group_by, "30d"]
        day, day_groups = results[group_by, "1d"]
        print(f"{group_by:<10} {month:>10.1f} {month_groups:>7} {day:>10.1f} {day_groups:>7}")
    worst = max(ms for ms, _ in results.values())
    fields = " ".join(f"{g}_ms={results[g, '30d'][0]:.1f}" for g in GROUP_BYS)
    print(f"cdrs={args.cdrs} {fields} worst_ms={worst:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
