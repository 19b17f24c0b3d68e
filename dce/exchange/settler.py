"""Settlement off the call path: every second, finished calls are settled into the ledger, and each new
conversion is posted back. The routing snapshot's buyer balances follow the ledger through a version watcher."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.background import Periodic
from dce.clock import Clock, SystemClock
from dce.db.cdr_repository import get_cdr
from dce.db.settlement import Settled, settle_pending
from dce.exchange.call_events import CallEvents


class Settler:
    """Runs ``settle_pending`` every ``interval_s`` and announces the conversions it (or a webhook) made."""

    def __init__(self, engine: AsyncEngine, events: CallEvents | None, *, interval_s: float = 1.0,
                 grace_s: float = 2.0, on_posted: Callable[[], None] | None = None,
                 clock: Clock | None = None) -> None:
        self.engine = engine
        self.events = events
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.on_posted = on_posted  # e.g. reload the routing balances at once
        self.clock = clock or SystemClock()
        self.settled = 0
        self._job = Periodic("settler", self.settle, interval_s=interval_s, immediately=True,
                             failure="settlement failed; retrying at the next tick")

    def start(self) -> None:
        """Settle now, then every ``interval_s``."""
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def settle(self) -> None:
        """Settle the finished calls that are due, once."""
        self.settled += await settle_pending(self.engine, now=self.clock.now(), grace_s=self.grace_s,
                                             on_settled=self.announce)

    async def announce(self, settled: list[Settled]) -> None:
        """Post back each conversion among ``settled``; reload balances when money moved."""
        if any(s.entry_id is not None for s in settled) and self.on_posted is not None:
            self.on_posted()
        if self.events is None:
            return
        for one in settled:
            if not one.settlement.converted:
                continue
            cdr = await get_cdr(self.engine, one.call_id)
            if cdr is not None:
                self.events.converted(cdr, one.settlement.revenue, one.settlement.payout, self.clock.now())

    async def announce_one(self, settled: Settled) -> None:
        """A buyer's webhook converted a call that had settled unconverted."""
        await self.announce([settled])
