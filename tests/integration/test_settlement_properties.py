"""Settlement over random call histories (hypothesis), on SQLite or (DCE_TEST_DATABASE_URL) PostgreSQL.

Properties: the journal always balances; each cached balance equals the sum of its lines; settling twice changes
nothing; payouts never exceed what the rule allows; what settlement decides matches a brute-force reference model
(duplicates by the campaign rule, conversions by duration or webhook) whatever the batch size; the ledger agrees
with the calls rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing import ledger
from dce.billing.cdr import CallDetailRecord, ConversionFrom, Disposition, SaleTerms
from dce.billing.conversion import WebhookConversion, decide, payout_for
from dce.db import ledger_repository as repo
from dce.db import settlement
from dce.db.cdr_repository import insert_cdrs
from dce.db.engine import create_engine
from dce.db.models import CallRecordRow
from tests.databases import run_coroutine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 1, tzinfo=UTC)
calls = CallRecordRow.__table__


@dataclass(frozen=True)
class Spec:
    caller: int
    campaign: int
    minutes: int  # INVITE minutes after T0
    talk_s: int | None  # None: not answered
    ring_s: int
    conversion_s: int | None
    conversion_from: ConversionFrom
    revenue: int
    fixed: int | None
    share_bp: int | None
    buyer: int | None
    publisher: int | None
    dup_days: int | None
    dup_after: str
    webhook: int | None  # None: no webhook; -1: webhook without revenue; else its revenue


specs = st.builds(
    Spec,
    caller=st.integers(0, 2),
    campaign=st.integers(0, 1),
    minutes=st.integers(0, 4 * 24 * 60),
    talk_s=st.one_of(st.none(), st.integers(0, 120)),
    ring_s=st.integers(0, 30),
    conversion_s=st.sampled_from([None, 0, 30, 60]),
    conversion_from=st.sampled_from(list(ConversionFrom)),
    revenue=st.integers(0, 50_000_000),
    fixed=st.one_of(st.none(), st.integers(0, 60_000_000)),
    share_bp=st.one_of(st.none(), st.integers(0, 12_000)),
    buyer=st.one_of(st.none(), st.integers(0, 1)),
    publisher=st.one_of(st.none(), st.integers(0, 1)),
    dup_days=st.sampled_from([None, 1, 2]),
    dup_after=st.sampled_from(["connected", "converted"]),
    webhook=st.one_of(st.none(), st.just(-1), st.integers(0, 90_000_000)),
)


def cdr_of(i: int, spec: Spec) -> CallDetailRecord:
    invite = T0 + timedelta(minutes=spec.minutes, seconds=i % 7)
    dial = invite + timedelta(seconds=1)
    answer = dial + timedelta(seconds=spec.ring_s) if spec.talk_s is not None else None
    end = answer + timedelta(seconds=spec.talk_s or 0) if answer else dial + timedelta(seconds=spec.ring_s)
    terms = SaleTerms(
        campaign_id=f"camp-{spec.campaign}",
        publisher_id=None if spec.publisher is None else f"pub-{spec.publisher}",
        buyer_id=None if spec.buyer is None else f"buyer-{spec.buyer}",
        revenue=spec.revenue, conversion_s=spec.conversion_s, conversion_from=spec.conversion_from,
        payout_fixed=spec.fixed, payout_share_bp=spec.share_bp, duplicate_days=spec.dup_days,
        duplicate_after=spec.dup_after,
    )
    return CallDetailRecord(
        call_id=f"call-{i:03d}", a_leg_call_id=f"a{i}", b_leg_call_id=None, caller=f"+1312555000{spec.caller}",
        called="+12125550100", did="+12125550100", destination=None, invite_at=invite, end_at=end,
        disposition=Disposition.ANSWERED if answer else Disposition.NO_ANSWER, final_code=200 if answer else 480,
        answer_at=answer, dial_at=dial, terms=None if spec.campaign == 1 and spec.caller == 2 else terms,
    )


def webhook_of(cdr: CallDetailRecord, spec: Spec) -> WebhookConversion | None:
    if spec.webhook is None or cdr.terms is None:
        return None
    return WebhookConversion(cdr.call_id, revenue=None if spec.webhook < 0 else spec.webhook)


def reference(
    cdrs: list[CallDetailRecord], webhooks: dict[str, WebhookConversion], cutoffs: list[datetime]
) -> dict[str, tuple[bool, Any]]:
    """Brute force, round by round (each ``cutoff`` settles the calls ended by then, oldest INVITE first): a call
    is a duplicate when an earlier call of the caller to the campaign within the window connected, or (rule
    "converted") converted as settled so far."""
    converted: dict[str, bool] = {}
    out: dict[str, tuple[bool, Any]] = {}
    for cutoff in cutoffs:
        due = sorted((c for c in cdrs if c.call_id not in out and c.end_at <= cutoff),
                     key=lambda c: (c.invite_at, c.call_id))
        for cdr in due:
            terms = cdr.terms
            duplicate = False
            if terms is not None and terms.duplicate_days:
                since = cdr.invite_at - timedelta(days=terms.duplicate_days)
                duplicate = any(
                    earlier.caller == cdr.caller and earlier.terms is not None
                    and earlier.terms.campaign_id == terms.campaign_id and since < earlier.invite_at
                    and (earlier.invite_at, earlier.call_id) < (cdr.invite_at, cdr.call_id)
                    and (converted.get(earlier.call_id, False) if terms.duplicate_after == "converted"
                         else earlier.answer_at is not None)
                    for earlier in cdrs
                )
            decided = decide(cdr, duplicate=duplicate, webhook=webhooks.get(cdr.call_id))
            converted[cdr.call_id] = decided.converted
            out[cdr.call_id] = (duplicate, decided)
    return out


async def snapshot(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as connection:
        rows = (await connection.execute(
            select(calls.c.call_id, calls.c.converted, calls.c.duplicate, calls.c.settled_revenue,
                   calls.c.settled_payout, calls.c.settled_at).order_by(calls.c.call_id)
        )).all()
    stored, total = await repo.entries(engine, limit=10_000)
    return tuple(rows), total, [s.entry for s in stored], await repo.balances(engine), await repo.ledger_version(engine)


async def check_ledger(engine: AsyncEngine) -> None:
    verification = await repo.verify_balances(engine)
    assert verification.ok, verification
    stored, _ = await repo.entries(engine, limit=10_000)
    for item in stored:
        assert sum(line.amount for line in item.entry.lines) == 0


async def reset(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for table in (repo.journal_lines, repo.journal_entries, repo.account_balances, repo.conversions, calls):
            await connection.execute(delete(table))


async def scenario(url: str, history: list[Spec], batch: int, rounds: int, late: list[int], refunds: list[int]) -> None:
    engine = create_engine(url)
    try:
        await reset(engine)
        cdrs = [cdr_of(i, spec) for i, spec in enumerate(history)]
        await insert_cdrs(engine, cdrs)
        late_ids = {cdrs[i % len(cdrs)].call_id for i in late}
        webhooks = {}
        for cdr, spec in zip(cdrs, history, strict=True):
            hook = webhook_of(cdr, spec)
            if hook is not None and cdr.call_id not in late_ids:
                webhooks[cdr.call_id] = hook
                await settlement.record_conversion(engine, cdr.call_id, revenue=hook.revenue)
        await repo.post(engine, ledger.deposit_entry("buyer-0", 25_000_000, T0, key="deposit:0"))

        # settle in rounds (a moving "now"), each in batches of `batch`
        last_end = max(c.end_at for c in cdrs)
        cutoffs = [T0 + (last_end - T0) * r / rounds for r in range(1, rounds + 1)] + [last_end]
        for now in cutoffs:
            await settlement.settle_pending(engine, now=now, grace_s=0, batch=batch)
            await check_ledger(engine)

        expected = reference(cdrs, webhooks, cutoffs)
        async with engine.connect() as connection:
            rows = {row.call_id: row for row in await connection.execute(select(calls))}
        by_id = {c.call_id: c for c in cdrs}
        for call_id, (duplicate, decided) in expected.items():
            row = rows[call_id]
            assert row.settled_at is not None
            assert (row.duplicate, row.converted, row.settled_revenue, row.settled_payout) == (
                duplicate, decided.converted, decided.revenue, decided.payout), call_id
            terms = by_id[call_id].terms
            if terms is not None and row.converted:  # payouts never exceed the rule
                allowed = payout_for(terms, row.settled_revenue)
                assert row.settled_payout <= allowed
                if terms.payout_fixed is None:
                    assert row.settled_payout <= row.settled_revenue
            else:
                assert row.settled_payout == 0 and row.settled_revenue == 0
        await check_ledger(engine)

        # settling twice changes nothing
        before = await snapshot(engine)
        assert await settlement.settle_pending(engine, now=last_end + timedelta(days=1), grace_s=0, batch=batch) == 0
        assert await settlement.settle_one(engine, cdrs[0].call_id) is None
        assert await snapshot(engine) == before

        # late webhooks (after settlement) and refunds: still balanced, still within the rule
        for call_id in sorted(late_ids):
            spec = history[int(call_id.split("-")[1])]
            hook = webhook_of(by_id[call_id], spec)
            if hook is None:
                continue
            outcome = await settlement.record_conversion(engine, call_id, revenue=hook.revenue)
            if outcome.settled_now is not None:
                assert outcome.settled_now.settlement.converted
                assert outcome.settled_now.settlement.payout <= payout_for(by_id[call_id].terms, hook.revenue
                                                                           if hook.revenue is not None
                                                                           else by_id[call_id].terms.revenue)
            with pytest.raises(settlement.AlreadyConverted):
                await settlement.record_conversion(engine, call_id)
        for i in refunds:
            call_id = cdrs[i % len(cdrs)].call_id
            with contextlib.suppress(settlement.NothingToRefund, settlement.AlreadyRefunded):
                await settlement.refund_call(engine, call_id, actor="test", reason="property")
        await check_ledger(engine)

        # the ledger agrees with the calls rows: buyers are charged the settled revenue minus refunds
        async with engine.connect() as connection:
            rows = {row.call_id: row for row in await connection.execute(select(calls))}
        stored, _ = await repo.entries(engine, limit=10_000)
        charged = sum(line.amount for s in stored if s.entry.kind in (ledger.SALE, ledger.CONVERSION, ledger.REFUND)
                      for line in s.entry.lines if line.account.startswith("buyer:"))
        refunded = {s.entry.key.split(":", 1)[1] for s in stored if s.entry.kind == ledger.REFUND}
        assert charged == sum(r.settled_revenue for r in rows.values() if r.call_id not in refunded)
        paid = -sum(line.amount for s in stored if s.entry.kind in (ledger.SALE, ledger.CONVERSION, ledger.REFUND)
                    for line in s.entry.lines if line.account.startswith("publisher:"))
        assert paid == sum(r.settled_payout for r in rows.values() if r.call_id not in refunded)
        snap = await snapshot(engine)
        assert await settlement.settle_pending(engine, now=last_end + timedelta(days=2), grace_s=0) == 0
        assert await snapshot(engine) == snap
    finally:
        await engine.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(
    history=st.lists(specs, min_size=1, max_size=25),
    batch=st.integers(1, 8),
    rounds=st.integers(1, 3),
    late=st.lists(st.integers(0, 100), max_size=4),
    refunds=st.lists(st.integers(0, 100), max_size=4),
)
def test_random_call_histories_settle_into_a_balanced_ledger(
    migrated_database_url: str, history: list[Spec], batch: int, rounds: int, late: list[int], refunds: list[int]
) -> None:
    run_coroutine(scenario(migrated_database_url, history, batch, rounds, late, refunds))
