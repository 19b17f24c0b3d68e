"""billing.ledger: balanced entries only, and what each builder posts (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dce.billing import ledger
from dce.billing.ledger import (
    EXCHANGE_ADJUSTMENTS,
    EXCHANGE_CASH,
    EXCHANGE_REVENUE,
    JournalEntry,
    Line,
    UnbalancedEntry,
)

AT = datetime(2026, 3, 1, tzinfo=UTC)


def entry(*lines: tuple[str, int], key: str = "k", at: datetime = AT) -> JournalEntry:
    return JournalEntry(key=key, kind="test", at=at, actor=None, memo=None,
                        lines=tuple(Line(a, n) for a, n in lines))


@pytest.mark.parametrize("lines", [
    (),
    (("buyer:b1", 5),),
    (("buyer:b1", 5), ("exchange:revenue", -4)),
    (("buyer:b1", 5), ("exchange:revenue", -5), ("publisher:p1", 0)),
    (("buyer:b1", 5), ("buyer:b1", -5)),
    (("buyer:", 5), ("exchange:revenue", -5)),
    (("bank", 5), ("exchange:revenue", -5)),
    (("buyer:b1", 5.0), ("exchange:revenue", -5.0)),
    (("buyer:b1", True), ("exchange:revenue", -1)),
])
def test_malformed_entries_are_refused(lines: tuple[tuple[str, object], ...]) -> None:
    with pytest.raises(UnbalancedEntry):
        entry(*lines)  # type: ignore[arg-type]


def test_entry_needs_a_key_and_an_aware_time() -> None:
    with pytest.raises(UnbalancedEntry):
        entry(("buyer:b1", 5), ("exchange:revenue", -5), key="")
    with pytest.raises(UnbalancedEntry):
        entry(("buyer:b1", 5), ("exchange:revenue", -5), at=datetime(2026, 3, 1))


def test_sale_debits_the_buyer_credits_publisher_and_margin() -> None:
    sale = ledger.sale_entry("call-1", "b1", "p1", 40_000_000, 15_000_000, AT)
    assert sale.key == "sale:call-1" and sale.kind == ledger.SALE
    assert sale.lines == (Line("buyer:b1", 40_000_000), Line("publisher:p1", -15_000_000),
                          Line(EXCHANGE_REVENUE, -25_000_000))
    # no margin: no revenue line; a fixed payout above revenue: the exchange pays the difference
    assert ledger.sale_entry("c", "b1", "p1", 10, 10, AT).lines == (Line("buyer:b1", 10), Line("publisher:p1", -10))
    assert ledger.sale_entry("c", "b1", "p1", 10, 15, AT).amount_of(EXCHANGE_REVENUE) == 5
    late = ledger.sale_entry("c", "b1", None, 10, 0, AT, kind=ledger.CONVERSION)
    assert late.key == "conversion:c" and late.lines == (Line("buyer:b1", 10), Line(EXCHANGE_REVENUE, -10))


def test_sale_refuses_money_without_a_party_or_nothing_at_all() -> None:
    with pytest.raises(UnbalancedEntry):
        ledger.sale_entry("c", None, "p1", 10, 5, AT)
    with pytest.raises(UnbalancedEntry):
        ledger.sale_entry("c", "b1", None, 10, 5, AT)
    with pytest.raises(UnbalancedEntry):
        ledger.sale_entry("c", "b1", "p1", 0, 0, AT)
    with pytest.raises(UnbalancedEntry):
        ledger.sale_entry("c", "b1", "p1", -1, 0, AT)


def test_deposit_payment_adjustment_refund() -> None:
    deposit = ledger.deposit_entry("b1", 100, AT, key="deposit:1", actor="ops")
    assert deposit.lines == (Line(EXCHANGE_CASH, 100), Line("buyer:b1", -100))
    payment = ledger.publisher_payment_entry("p1", 30, AT, key="payment:1")
    assert payment.lines == (Line("publisher:p1", 30), Line(EXCHANGE_CASH, -30))
    credit = ledger.adjustment_entry("buyer:b1", 7, actor="ana", reason="goodwill", at=AT, key="adj:1")
    assert credit.lines == (Line("buyer:b1", -7), Line(EXCHANGE_ADJUSTMENTS, 7))
    assert credit.actor == "ana" and credit.memo == "goodwill"
    debit = ledger.adjustment_entry("publisher:p1", -3, actor="ana", reason="fraud", at=AT, key="adj:2")
    assert debit.lines == (Line("publisher:p1", 3), Line(EXCHANGE_ADJUSTMENTS, -3))
    sale = ledger.sale_entry("call-1", "b1", "p1", 40, 15, AT)
    refund = ledger.refund_entry("call-1", sale, actor="ana", reason="bad lead", at=AT)
    assert refund.key == "refund:call-1" and refund.kind == ledger.REFUND
    assert ledger.balances_of([sale, refund]) == {"buyer:b1": 0, "publisher:p1": 0, EXCHANGE_REVENUE: 0}
    for bad in (lambda: ledger.deposit_entry("b1", 0, AT, key="d"),
                lambda: ledger.publisher_payment_entry("p1", -1, AT, key="p"),
                lambda: ledger.adjustment_entry("buyer:b1", 0, actor="a", reason="r", at=AT, key="a"),
                lambda: ledger.adjustment_entry(EXCHANGE_ADJUSTMENTS, 5, actor="a", reason="r", at=AT, key="a")):
        with pytest.raises(UnbalancedEntry):
            bad()


def test_buyer_available_and_natural_balances() -> None:
    balances = ledger.balances_of([
        ledger.deposit_entry("b1", 100, AT, key="d"), ledger.sale_entry("c", "b1", "p1", 30, 10, AT),
    ])
    assert balances == {EXCHANGE_CASH: 100, "buyer:b1": -70, "publisher:p1": -10, EXCHANGE_REVENUE: -20}
    assert ledger.available(balances["buyer:b1"], 50) == 120
    assert ledger.available(balances["buyer:b1"], None) == 70
    assert ledger.natural_balance("buyer:b1", -70) == 70
    assert ledger.natural_balance(EXCHANGE_CASH, 100) == 100


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10_000)), max_size=30))
def test_sales_always_balance(sales: list[tuple[int, int]]) -> None:
    entries = [ledger.sale_entry(f"c{i}", "b1", "p1", revenue, revenue * bp // 10_000, AT)
               for i, (revenue, bp) in enumerate(sales) if revenue]
    assert sum(ledger.balances_of(entries).values()) == 0
