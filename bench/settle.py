"""Settling 100k CDRs into the ledger, on SQLite and on PostgreSQL.

1. Generates N marketplace CDRs (seeded): 10 campaigns, 40 publishers, 25 buyers; callers drawn from a pool so
   that repeat callers hit the campaigns' duplicate rules; answered and unanswered calls, durations around the
   conversion durations (timed from answer, dial or the incoming call), fixed and revenue-share payouts; 1% of the
   calls confirmed by a webhook conversion (some with a revenue override).
2. Stores them through ``insert_cdrs`` (and the conversions) in a fresh, migrated database — not timed.
3. Times ``settle_pending`` over all of them (batches of 1000, one transaction each), then checks the journal:
   ``verify_balances`` must be ok, and settling again must settle nothing.

Last line: ``cdrs=100000 sqlite_s=... postgresql_s=... entries=...`` (target, issue 5: <= 30 s on each).
PostgreSQL is skipped, with the reason printed, when the server is unreachable.

    .venv/bin/python bench/settle.py [--cdrs 100000] [--batch 1000]
        [--postgres-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from dce.billing.cdr import CallDetailRecord, ConversionFrom, Disposition, HangupSide, SaleTerms  # noqa: E402
from dce.db.cdr_repository import insert_cdrs  # noqa: E402
from dce.db.engine import create_engine  # noqa: E402
from dce.db.ledger_repository import conversions, verify_balances  # noqa: E402
from dce.db.migrate import upgrade_async  # noqa: E402
from dce.db.settlement import settle_pending  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def generate(n: int, seed: int = 5) -> tuple[list[CallDetailRecord], list[dict[str, Any]]]:
    rng = random.Random(seed)
    campaigns = [
        {
            "id": f"camp-{c}",
            "conversion_s": rng.choice([30, 60, 90, 120]),
            "from": rng.choice(list(ConversionFrom)),
            "dup_days": rng.choice([None, 1, 7, 30]),
            "dup_after": rng.choice(["connected", "converted"]),
        }
        for c in range(10)
    ]
    callers = [f"+1312555{k:04d}" for k in range(n // 3)]
    cdrs: list[CallDetailRecord] = []
    webhooks: list[dict[str, Any]] = []
    for i in range(n):
        camp = rng.choice(campaigns)
        invite = T0 + timedelta(seconds=i * 2 + rng.random())
        answered = rng.random() < 0.7
        dial = invite + timedelta(seconds=1)
        answer = dial + timedelta(seconds=rng.randint(2, 20)) if answered else None
        end = (answer + timedelta(seconds=rng.randint(1, 240))) if answer else dial + timedelta(seconds=20)
        share = rng.random() < 0.5
        terms = SaleTerms(
            campaign_id=camp["id"], publisher_id=f"pub-{rng.randrange(40)}", buyer_id=f"buyer-{rng.randrange(25)}",
            target_id=f"tgt-{rng.randrange(60)}", revenue=rng.randint(5, 80) * 1_000_000 + rng.randrange(1_000_000),
            conversion_s=camp["conversion_s"], conversion_from=camp["from"],
            payout_fixed=None if share else rng.randint(1, 30) * 1_000_000,
            payout_share_bp=rng.randint(1000, 9000) if share else None,
            duplicate_days=camp["dup_days"], duplicate_after=camp["dup_after"],
        )
        call_id = f"bench-{i:07d}"
        cdrs.append(CallDetailRecord(
            call_id=call_id, a_leg_call_id=f"a-{i}@carrier", b_leg_call_id=f"b-{i}@dce" if answered else None,
            caller=rng.choice(callers), called="+12125550100", did="+12125550100",
            destination="sip:buyer@127.0.0.1" if answered else None, invite_at=invite, end_at=end,
            disposition=Disposition.ANSWERED if answered else Disposition.NO_ANSWER,
            final_code=200 if answered else 480, ring_at=dial, answer_at=answer,
            hangup_side=HangupSide.CALLER if answered else None, dial_at=dial, terms=terms,
        ))
        if rng.random() < 0.01:
            webhooks.append({"call_id": call_id, "source": "webhook", "at": end,
                             "revenue": rng.randint(10, 200) * 1_000_000 if rng.random() < 0.5 else None})
    return cdrs, webhooks


async def run(url: str, cdrs: list[CallDetailRecord], webhooks: list[dict[str, Any]], batch: int) -> tuple[float, int]:
    await upgrade_async(url)
    engine = create_engine(url)
    try:
        for start in range(0, len(cdrs), 5000):
            await insert_cdrs(engine, cdrs[start:start + 5000])
        async with engine.begin() as connection:
            await connection.execute(conversions.insert(), webhooks)
        if engine.dialect.name == "postgresql":  # as autovacuum would after a bulk load: planner statistics
            async with engine.connect() as connection:
                await connection.execute(text("ANALYZE"))
        now = cdrs[-1].end_at + timedelta(hours=1)
        began = time.perf_counter()
        settled = await settle_pending(engine, now=now, batch=batch)
        elapsed = time.perf_counter() - began
        assert settled == len(cdrs), (settled, len(cdrs))
        assert await settle_pending(engine, now=now, batch=batch) == 0
        check = await verify_balances(engine)
        assert check.ok, check
        print(f"  {engine.dialect.name}: {settled} calls settled in {elapsed:.2f} s "
              f"({settled / elapsed:,.0f}/s); {check.entries} entries, {check.lines} lines, journal balances")
        return elapsed, check.entries
    finally:
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdrs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    cdrs, webhooks = generate(args.cdrs)
    print(f"generated {len(cdrs)} CDRs, {len(webhooks)} webhook conversions")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_s, entries = asyncio.run(run(f"sqlite+aiosqlite:///{tmp}/settle.db", cdrs, webhooks, args.batch))
    postgresql_s = "skipped"
    try:
        from tests.databases import postgres_database  # a throwaway database on that server

        with postgres_database(args.postgres_url) as url:
            pg_s, pg_entries = asyncio.run(run(url, cdrs, webhooks, args.batch))
        assert pg_entries == entries, (pg_entries, entries)
        postgresql_s = f"{pg_s:.2f}"
    except OSError as exc:
        print(f"PostgreSQL skipped: {args.postgres_url} unreachable ({exc})")
    print(f"cdrs={len(cdrs)} sqlite_s={sqlite_s:.2f} postgresql_s={postgresql_s} entries={entries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
