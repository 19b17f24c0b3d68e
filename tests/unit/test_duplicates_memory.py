"""The duplicate ledger keeps a 30-day history per caller in tens of bytes, not kilobytes."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

from dce.routing.duplicates import DuplicateLedger
from dce.routing.model import DuplicateAfter, DuplicateRule

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CALLERS = 100_000


def test_a_hundred_thousand_callers_cost_tens_of_bytes_each() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger = DuplicateLedger()
        for n in range(CALLERS):  # 300 CPS of new callers, each connected once on one campaign and target
            ledger.record(f"+1212{2000000 + n:07d}", "c1", "t1", DuplicateAfter.CONNECTED,
                          T0 + timedelta(seconds=n / 300))
        per_caller = (tracemalloc.get_traced_memory()[0] - before) / CALLERS
    finally:
        tracemalloc.stop()
    assert per_caller < 64, f"{per_caller:.0f} bytes per caller"
    now = T0 + timedelta(days=29)
    assert ledger.is_duplicate(DuplicateRule(days=30), f"+1212{2000000 + CALLERS - 1:07d}", "c1", None, now)
    assert not ledger.is_duplicate(DuplicateRule(days=30), "+12123999999", "c1", None, now)
