"""Duplicate callers: who connected or converted on which campaign/target, and when.

Keeps the latest time per (ani, campaign) and (ani, campaign, target) for each outcome. A conversion counts as a
connect too (a converted call was connected).

Compact: one :class:`~dce.lastseen.LastSeen` per (campaign, outcome) and per (campaign, target, outcome), keyed
by the caller as an int64 (its E.164 digits; a hash for anything else) with the time in integer microseconds, so a
caller connected once costs about 2 x 16 bytes for the whole horizon (30 days by default), not a Python tuple,
datetime and dict entry each. :meth:`DuplicateLedger.expire` forgets what is older than the horizon.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from dce.lastseen import LastSeen, number_key
from dce.routing.model import Campaign, DuplicateAfter, DuplicateRule, DuplicateScope

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_SLACK_SHARE = 32  # expired history is freed once it is 1/32 of the horizon old (a day of a 30-day rule)


def longest_rule_days(campaigns: Iterable[Campaign], minimum: int = 0) -> int:
    """The longest duplicate window (days) among ``campaigns``' rules, at least ``minimum``: the horizon for
    :meth:`DuplicateLedger.expire` (history older than that can no longer make anyone a duplicate)."""
    return max([minimum, *(c.duplicate_rule.days for c in campaigns if c.duplicate_rule is not None)])


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // _MICRO


class DuplicateLedger:
    """In-process record of callers' past outcomes, answering the campaign duplicate rule."""

    def __init__(self) -> None:
        self._campaign: dict[tuple[str, DuplicateAfter], LastSeen] = {}
        self._target: dict[tuple[str, str, DuplicateAfter], LastSeen] = {}

    def __len__(self) -> int:
        """Entries held for campaigns (a caller counts once per campaign and outcome, until merged/expired)."""
        return sum(len(table) for table in self._campaign.values())

    @property
    def entries(self) -> int:
        """Every entry held, campaign and target tables alike."""
        return len(self) + sum(len(table) for table in self._target.values())

    @property
    def nbytes(self) -> int:
        """Bytes in the frozen arrays (the small per-table dicts of the newest entries not counted)."""
        return sum(t.nbytes for t in (*self._campaign.values(), *self._target.values()))

    def record(
        self, ani: str | None, campaign_id: str, target_id: str, outcome: DuplicateAfter, when: datetime
    ) -> None:
        """Remember that ``ani`` connected (or converted) on ``target_id`` of ``campaign_id`` at ``when``."""
        if not ani:
            return
        key, at = number_key(ani), _micros(when)
        outcomes = (DuplicateAfter.CONNECTED, DuplicateAfter.CONVERTED)
        if DuplicateAfter(outcome) is DuplicateAfter.CONNECTED:
            outcomes = (DuplicateAfter.CONNECTED,)
        for kind in outcomes:
            table = self._campaign.get((campaign_id, kind))
            if table is None:
                table = self._campaign[(campaign_id, kind)] = LastSeen()
            table.put(key, at)
            table = self._target.get((campaign_id, target_id, kind))
            if table is None:
                table = self._target[(campaign_id, target_id, kind)] = LastSeen()
            table.put(key, at)

    def last(self, ani: str, campaign_id: str, target_id: str | None, outcome: DuplicateAfter) -> datetime | None:
        """The latest ``outcome`` for the caller on the campaign (or one of its targets), if any."""
        if target_id is None:
            table = self._campaign.get((campaign_id, outcome))
        else:
            table = self._target.get((campaign_id, target_id, outcome))
        at = table.get(number_key(ani)) if table is not None else None
        return None if at is None else _EPOCH + at * _MICRO

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

    def prune(self, before: datetime, slack: timedelta = timedelta(0)) -> int:
        """Forget outcomes older than ``before``; returns how many stored entries were freed. Their memory is
        freed once they are ``slack`` past ``before`` (a table is rewritten at most every ``slack``)."""
        cutoff, spare = _micros(before), slack // _MICRO
        tables = (*self._campaign.values(), *self._target.values())
        return sum(table.forget_below(cutoff, spare) for table in tables)

    def expire(self, now: datetime, horizon_days: float) -> int:
        """Forget outcomes older than ``now - horizon_days``: with the longest duplicate window in use (see
        :func:`longest_rule_days`) nothing that could still make a caller a duplicate is lost. Cheap enough to
        call every few seconds."""
        horizon = timedelta(days=horizon_days)
        return self.prune(now - horizon, horizon / _SLACK_SHARE)
