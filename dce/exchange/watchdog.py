"""The call watchdog: how long a call task can possibly live, and which tasks outlived that.

Every way a call ends is meant to end its task (the B2BUA queues one terminal event per call). The watchdog is
the net under that rule: a task still running past its call's longest possible life is waiting for something
no path will send (a bug), and the CallFlow ends it, hangs up both legs and writes its CDR. Pure bookkeeping:
the caller passes ``now`` (its clock's ``monotonic()``), so tests drive it with a virtual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from dce.exchange.router import CallLimits
from dce.routing.model import PlannedTarget

DEFAULT_MAX_CALL_DURATION_S = 4 * 3600.0
REAPED = "ended by the call watchdog"
SHUTDOWN = "exchange shutting down"


@dataclass(frozen=True, slots=True)
class LifeBounds:
    """The exchange-wide terms of a call's longest life."""

    max_call_duration_s: float = DEFAULT_MAX_CALL_DURATION_S  # talk time when the campaign sets none
    leg_guard_s: float = 32.0  # a leg's worst case past its ring timeout: a CANCEL never answered (64*T1)
    slack_s: float = 60.0  # planning, screening, teardown; also the bound before the plan is known

    def max_duration(self, limits: CallLimits) -> float:
        """The talk time allowed: the campaign's, else the exchange's."""
        return limits.max_call_duration_s or self.max_call_duration_s

    def longest_life(self, targets: Iterable[PlannedTarget], limits: CallLimits) -> float:
        """Auction + every target rung to its timeout and then some + the longest talk + slack, in seconds."""
        ringing = sum(target.ring_timeout_s + self.leg_guard_s for target in targets)
        return limits.auction_s + ringing + self.max_duration(limits) + self.slack_s


@dataclass(slots=True, eq=False)
class Watched:
    """One call task under watch."""

    call_id: str
    started_at: float
    deadline: float
    task: asyncio.Task[None] | None = None
    ended_by: str | None = None  # set when we cancel its task: the reason its CDR gives

    def end(self, reason: str) -> None:
        """Cancel the call's task on purpose; the task ends the call and records ``reason``."""
        self.ended_by = reason
        if self.task is not None:
            self.task.cancel()


class Watchdog:
    """The running call tasks and the time by which each must have finished."""

    def __init__(self, bounds: LifeBounds) -> None:
        self.bounds = bounds
        self._watched: dict[str, Watched] = {}

    def watch(self, call_id: str, started_at: float) -> Watched:
        """Start watching a call; until its plan is known it gets ``slack_s``."""
        watched = Watched(call_id, started_at, started_at + self.bounds.slack_s)
        self._watched[call_id] = watched
        return watched

    def planned(self, watched: Watched, targets: Iterable[PlannedTarget], limits: CallLimits) -> None:
        """The call's plan is known: its deadline becomes its longest possible life."""
        watched.deadline = watched.started_at + self.bounds.longest_life(targets, limits)

    def extend(self, call_id: str, seconds: float) -> None:
        """The call rings one more leg than its plan counted (a failover to a target's next DNS hop)."""
        watched = self._watched.get(call_id)
        if watched is not None:
            watched.deadline += seconds

    def forget(self, call_id: str) -> None:
        """The call's task is finishing."""
        self._watched.pop(call_id, None)

    def overdue(self, now: float) -> list[Watched]:
        """Calls past their deadline whose task was not ended yet."""
        return [w for w in self._watched.values() if w.ended_by is None and now > w.deadline]

    def running(self, tasks: set[asyncio.Task[None]]) -> list[Watched]:
        """The watched calls whose task is one of ``tasks``."""
        return [w for w in self._watched.values() if w.task in tasks]

    def __len__(self) -> int:
        return len(self._watched)
