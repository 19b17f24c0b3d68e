"""Duplicate callers: who connected or converted on which campaign/target, and when.

Keeps the latest time per (ani, campaign) and (ani, campaign, target) for each outcome. A conversion counts as a
connect too (a converted call was connected).

Memory stays bounded: every stored time also goes into a FIFO kept in time order, and :meth:`DuplicateLedger.expire`
(or :meth:`~DuplicateLedger.prune`) walks it from the oldest, so each record is pushed and popped once (amortised
O(1)), like ``dce.bidding.inbound.Reservations.evict``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from dce.routing.model import Campaign, DuplicateAfter, DuplicateRule, DuplicateScope


def longest_rule_days(campaigns: Iterable[Campaign], minimum: int = 0) -> int:
    """The longest duplicate window (days) among ``campaigns``' rules, at least ``minimum``: the horizon for
    :meth:`DuplicateLedger.expire` (history older than that can no longer make anyone a duplicate)."""
    return max([minimum, *(c.duplicate_rule.days for c in campaigns if c.duplicate_rule is not None)])


class DuplicateLedger:
    """In-process record of callers' past outcomes, answering the campaign duplicate rule."""

    def __init__(self) -> None:
        self._campaign: dict[tuple[str, str, DuplicateAfter], datetime] = {}
        self._target: dict[tuple[str, str, str, DuplicateAfter], datetime] = {}
        # (when, table, key) for every time stored, oldest first; table 0 is _campaign, 1 is _target
        self._fifo: deque[tuple[datetime, int, tuple]] = deque()

    def __len__(self) -> int:
        return len(self._campaign)

    def record(
        self, ani: str | None, campaign_id: str, target_id: str, outcome: DuplicateAfter, when: datetime
    ) -> None:
        """Remember that ``ani`` connected (or converted) on ``target_id`` of ``campaign_id`` at ``when``."""
        if not ani:
            return
        outcomes = (DuplicateAfter.CONNECTED, DuplicateAfter.CONVERTED)
        if DuplicateAfter(outcome) is DuplicateAfter.CONNECTED:
            outcomes = (DuplicateAfter.CONNECTED,)
        for kind in outcomes:
            key_c = (ani, campaign_id, kind)
            if (prev := self._campaign.get(key_c)) is None or prev < when:
                self._campaign[key_c] = when
                self._remember(when, 0, key_c)
            key_t = (ani, campaign_id, target_id, kind)
            if (prev := self._target.get(key_t)) is None or prev < when:
                self._target[key_t] = when
                self._remember(when, 1, key_t)

    def _remember(self, when: datetime, table: int, key: tuple) -> None:
        fifo = self._fifo
        if not fifo or fifo[-1][0] <= when:
            fifo.append((when, table, key))
            return
        # out of time order (a caller passing an earlier time, a clock step): insert where it belongs, walking
        # back from the newest, so the FIFO stays sorted and expire() stays exact
        index = len(fifo)
        while index and fifo[index - 1][0] > when:
            index -= 1
        fifo.insert(index, (when, table, key))

    def last(self, ani: str, campaign_id: str, target_id: str | None, outcome: DuplicateAfter) -> datetime | None:
        """The latest ``outcome`` for the caller on the campaign (or one of its targets), if any."""
        if target_id is None:
            return self._campaign.get((ani, campaign_id, outcome))
        return self._target.get((ani, campaign_id, target_id, outcome))

    def is_duplicate(
        self, rule: DuplicateRule, ani: str | None, campaign_id: str, target_id: str | None, now: datetime
    ) -> bool:
        """Whether the caller is a duplicate under ``rule`` at ``now``.

        With scope ``target`` and a ``target_id``, only that target's history counts; otherwise the campaign's.
        An anonymous caller (no ANI) is never a duplicate.
        """
        if not ani:
            return False
        scoped = target_id if rule.scope is DuplicateScope.TARGET else None
        last = self.last(ani, campaign_id, scoped, rule.after)
        return last is not None and now - last < timedelta(days=rule.days)

    def prune(self, before: datetime) -> int:
        """Forget outcomes older than ``before`` (call periodically with now - longest rule); returns how many
        stored times were dropped. Amortised O(1) per record: only the expired head of the FIFO is visited."""
        fifo, tables = self._fifo, (self._campaign, self._target)
        dropped = 0
        while fifo and fifo[0][0] < before:
            when, table, key = fifo.popleft()
            stored = tables[table]
            if stored.get(key) == when:  # not refreshed by a later record (that one is further back in the FIFO)
                del stored[key]
                dropped += 1
        return dropped

    def expire(self, now: datetime, horizon_days: float) -> int:
        """Forget outcomes older than ``now - horizon_days``: with the longest duplicate window in use (see
        :func:`longest_rule_days`) nothing that could still make a caller a duplicate is lost. Cheap enough to
        call every few seconds."""
        return self.prune(now - timedelta(days=horizon_days))
