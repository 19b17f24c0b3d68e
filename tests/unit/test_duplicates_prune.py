"""DuplicateLedger forgets what no duplicate window can still see (virtual clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dce.routing.duplicates import DuplicateLedger, longest_rule_days
from dce.routing.model import Campaign, DuplicateAfter, DuplicateRule, DuplicateScope

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CONNECTED, CONVERTED = DuplicateAfter.CONNECTED, DuplicateAfter.CONVERTED
RULE = DuplicateRule(CONNECTED, days=30)


def stored(ledger: DuplicateLedger) -> int:
    """Everything the ledger holds: campaign and target entries."""
    return ledger.entries


def test_an_entry_older_than_the_horizon_is_gone_a_fresh_one_stays() -> None:
    ledger = DuplicateLedger()
    ledger.record("+12125550001", "c", "t", CONNECTED, T0)
    ledger.record("+12125550002", "c", "t", CONVERTED, T0 + timedelta(days=20))
    now = T0 + timedelta(days=31)

    dropped = ledger.expire(now, 30)

    assert dropped == 2  # the old caller's campaign and target entries
    assert ledger.last("+12125550001", "c", None, CONNECTED) is None
    assert ledger.last("+12125550001", "c", "t", CONNECTED) is None
    assert ledger.is_duplicate(RULE, "+12125550002", "c", None, now)
    assert ledger.last("+12125550002", "c", "t", CONVERTED) == T0 + timedelta(days=20)
    assert len(ledger) == 2  # the fresh caller: connected and converted, per campaign


def test_pruning_never_changes_an_answer_inside_the_window() -> None:
    ledger = DuplicateLedger()
    ani = "+12125550003"
    ledger.record(ani, "c", "t", CONNECTED, T0)
    just_inside = T0 + timedelta(days=30) - timedelta(seconds=1)
    ledger.expire(just_inside, 30)
    assert ledger.is_duplicate(RULE, ani, "c", None, just_inside)
    ledger.expire(T0 + timedelta(days=30, seconds=1), 30)
    assert ledger.last(ani, "c", None, CONNECTED) is None


def test_a_refreshed_caller_survives_the_expiry_of_its_older_record() -> None:
    ledger = DuplicateLedger()
    ani = "+12125550004"
    ledger.record(ani, "c", "t", CONNECTED, T0)
    ledger.record(ani, "c", "t", CONNECTED, T0 + timedelta(days=10))  # the same keys, later
    now = T0 + timedelta(days=35)
    assert ledger.expire(now, 30) == 0  # the T0 entries were superseded: nothing stored is dropped
    assert ledger.last(ani, "c", "t", CONNECTED) == T0 + timedelta(days=10)
    assert ledger.is_duplicate(DuplicateRule(CONNECTED, days=30, scope=DuplicateScope.TARGET), ani, "c", "t", now)
    ledger.expire(T0 + timedelta(days=41), 30)
    assert stored(ledger) == 0


def test_records_out_of_time_order_are_pruned_exactly() -> None:
    ledger = DuplicateLedger()
    ledger.record("+12125550005", "c", "t", CONNECTED, T0 + timedelta(days=5))
    ledger.record("+12125550006", "c", "t", CONNECTED, T0)  # an earlier time, recorded later
    ledger.record("+12125550007", "c", "t", CONNECTED, T0 + timedelta(days=2))
    ledger.prune(T0 + timedelta(days=1))
    assert ledger.last("+12125550006", "c", None, CONNECTED) is None
    assert ledger.last("+12125550007", "c", None, CONNECTED) is not None
    assert ledger.last("+12125550005", "c", None, CONNECTED) is not None


def test_memory_is_bounded_by_the_window_over_a_long_run() -> None:
    """A call every minute from ever new callers (and some repeat ones) for 120 days, expiring every few minutes."""
    ledger = DuplicateLedger()
    horizon_days = 7
    per_window = horizon_days * 24 * 60  # records one window holds
    peak_keys = peak_entries = 0
    now = T0
    for minute in range(120 * 24 * 60):
        now = T0 + timedelta(minutes=minute)
        ani = f"+1212{minute % 50_000:07d}"  # callers come back after ~35 days
        ledger.record(ani, "c", f"t{minute % 3}", CONVERTED if minute % 4 == 0 else CONNECTED, now)
        if minute % 5 == 0:
            ledger.expire(now, horizon_days)
            peak_keys, peak_entries = max(peak_keys, len(ledger)), max(peak_entries, ledger.entries)
    # at most one window of records (+ the minutes between expiries); a conversion is stored as a connect too,
    # and target entries come on top
    assert peak_keys <= 2 * (per_window + 5)
    assert peak_entries <= 4 * (per_window + 5)
    assert len(ledger) >= per_window  # and it really does keep the window
    ledger.expire(now + timedelta(days=horizon_days, seconds=1), horizon_days)
    assert stored(ledger) == 0


def test_longest_rule_days_is_the_horizon_to_expire_with() -> None:
    campaigns = [
        Campaign(id="a", name="A"),
        Campaign(id="b", name="B", duplicate_rule=DuplicateRule(days=7)),
        Campaign(id="c", name="C", duplicate_rule=DuplicateRule(CONVERTED, days=90)),
    ]
    assert longest_rule_days(campaigns) == 90
    assert longest_rule_days(campaigns[:1]) == 0
    assert longest_rule_days(campaigns[:1], minimum=30) == 30
    assert longest_rule_days(iter(campaigns), minimum=30) == 90
