"""Duplicate callers: who connected or converted on which campaign/target, and when.

Keeps the latest time per (ani, campaign) and (ani, campaign, target) for each outcome. A conversion counts as a
connect too (a converted call was connected).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dce.routing.model import DuplicateAfter, DuplicateRule, DuplicateScope


class DuplicateLedger:
    """In-process record of callers' past outcomes, answering the campaign duplicate rule."""

    def __init__(self) -> None:
        self._campaign: dict[tuple[str, str, DuplicateAfter], datetime] = {}
        self._target: dict[tuple[str, str, str, DuplicateAfter], datetime] = {}

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
            key_t = (ani, campaign_id, target_id, kind)
            if (prev := self._target.get(key_t)) is None or prev < when:
                self._target[key_t] = when

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

    def prune(self, before: datetime) -> None:
        """Forget outcomes older than ``before`` (call periodically with now - longest rule)."""
        self._campaign = {k: v for k, v in self._campaign.items() if v >= before}
        self._target = {k: v for k, v in self._target.items() if v >= before}
