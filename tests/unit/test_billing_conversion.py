"""billing.conversion.decide: duration timing, webhooks, duplicates, payout rules (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dce.billing.cdr import CallDetailRecord, ConversionFrom, Disposition, SaleTerms
from dce.billing.conversion import (
    DUPLICATE,
    DURATION,
    NO_DURATION_RULE,
    NO_TERMS,
    NOT_ANSWERED,
    TOO_SHORT,
    WEBHOOK,
    Settlement,
    WebhookConversion,
    decide,
    payout_for,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
TERMS = SaleTerms(campaign_id="c1", publisher_id="p1", buyer_id="b1", target_id="t1", revenue=40_000_000,
                  conversion_s=60, payout_fixed=None, payout_share_bp=5000)


def call(*, ring_s: int = 10, talk_s: int | None = 60, dial_after_s: int = 1,
         terms: SaleTerms | None = TERMS) -> CallDetailRecord:
    """Invite at T0, first dial ``dial_after_s`` later, answered ``ring_s`` after the dial, ``talk_s`` of talk
    (None: never answered)."""
    dial = T0 + timedelta(seconds=dial_after_s)
    answer = dial + timedelta(seconds=ring_s) if talk_s is not None else None
    end = dial + timedelta(seconds=20)
    if answer is not None and talk_s is not None:
        end = answer + timedelta(seconds=talk_s)
    return CallDetailRecord(
        call_id="call-1", a_leg_call_id="a", b_leg_call_id="b", caller="+13125550199", called="+12125550100",
        did="+12125550100", destination=None, invite_at=T0, end_at=end,
        disposition=Disposition.ANSWERED if answer else Disposition.NO_ANSWER, final_code=200 if answer else 480,
        answer_at=answer, dial_at=dial, terms=terms,
    )


def test_non_marketplace_call_settles_with_nothing() -> None:
    assert decide(call(terms=None), duplicate=False, webhook=None) == Settlement(False, 0, 0, NO_TERMS)
    assert decide(call(terms=None), duplicate=False, webhook=WebhookConversion("call-1")).converted is False


def test_answered_call_converts_at_exactly_the_conversion_duration() -> None:
    assert decide(call(talk_s=60), duplicate=False, webhook=None) == Settlement(True, 40_000_000, 20_000_000, DURATION)
    assert decide(call(talk_s=59), duplicate=False, webhook=None) == Settlement(False, 0, 0, TOO_SHORT)


def test_timed_from_dial_or_incoming() -> None:
    # 45 s talk after 10 s ring after 1 s to dial: answer 45 s, dial 55 s, incoming 56 s
    for timing, need, converted in [
        (ConversionFrom.ANSWER, 45, True), (ConversionFrom.ANSWER, 46, False),
        (ConversionFrom.DIAL, 55, True), (ConversionFrom.DIAL, 56, False),
        (ConversionFrom.INCOMING, 56, True), (ConversionFrom.INCOMING, 57, False),
    ]:
        terms = replace(TERMS, conversion_from=timing, conversion_s=need)
        assert decide(call(talk_s=45, terms=terms), duplicate=False, webhook=None).converted is converted, timing


def test_dial_timing_without_a_dial_time_falls_back_to_answer() -> None:
    cdr = call(talk_s=60, terms=replace(TERMS, conversion_from=ConversionFrom.DIAL, conversion_s=61))
    assert decide(cdr, duplicate=False, webhook=None).converted
    cdr.dial_at = None
    assert not decide(cdr, duplicate=False, webhook=None).converted


def test_unanswered_calls_convert_only_by_webhook() -> None:
    assert decide(call(talk_s=None), duplicate=False, webhook=None) == Settlement(False, 0, 0, NOT_ANSWERED)
    settled = decide(call(talk_s=None), duplicate=False, webhook=WebhookConversion("call-1"))
    assert settled == Settlement(True, 40_000_000, 20_000_000, WEBHOOK)


def test_no_conversion_duration_means_webhook_only() -> None:
    terms = replace(TERMS, conversion_s=None)
    assert decide(call(talk_s=600, terms=terms), duplicate=False, webhook=None).reason == NO_DURATION_RULE
    assert decide(call(talk_s=600, terms=terms), duplicate=False, webhook=WebhookConversion("call-1")).converted


def test_webhook_revenue_overrides_the_sale_price() -> None:
    settled = decide(call(talk_s=5), duplicate=False, webhook=WebhookConversion("call-1", revenue=9_000_001))
    assert settled == Settlement(True, 9_000_001, 4_500_000, WEBHOOK)  # half of 9.000001, rounded down


def test_duplicates_are_neither_charged_nor_paid() -> None:
    assert decide(call(), duplicate=True, webhook=None) == Settlement(False, 0, 0, DUPLICATE)
    assert decide(call(), duplicate=True, webhook=WebhookConversion("call-1")) == Settlement(False, 0, 0, DUPLICATE)


def test_fixed_payout_and_missing_parties() -> None:
    fixed = replace(TERMS, payout_fixed=12_500_000, payout_share_bp=None)
    settled = decide(call(terms=fixed), duplicate=False, webhook=None)
    assert settled == Settlement(True, 40_000_000, 12_500_000, DURATION)
    no_publisher = replace(fixed, publisher_id=None)
    assert decide(call(terms=no_publisher), duplicate=False, webhook=None).payout == 0
    no_buyer = replace(TERMS, buyer_id=None)
    assert decide(call(terms=no_buyer), duplicate=False, webhook=None) == Settlement(True, 0, 0, DURATION)
    no_rule = replace(TERMS, payout_share_bp=None)
    assert decide(call(terms=no_rule), duplicate=False, webhook=None).payout == 0


@pytest.mark.parametrize(("revenue", "bp", "payout"), [
    (999_999, 3333, 333_299), (1, 9999, 0), (10, 10_000, 10), (10, 25_000, 10), (10, -5, 0), (0, 5000, 0),
])
def test_share_rounds_down_and_never_exceeds_revenue(revenue: int, bp: int, payout: int) -> None:
    assert payout_for(replace(TERMS, payout_share_bp=bp), revenue) == payout


@given(revenue=st.integers(0, 10**13), bp=st.integers(-20_000, 20_000))
def test_share_payout_bounds(revenue: int, bp: int) -> None:
    payout = payout_for(replace(TERMS, payout_share_bp=bp), revenue)
    assert 0 <= payout <= revenue
    assert payout == revenue * min(max(bp, 0), 10_000) // 10_000
