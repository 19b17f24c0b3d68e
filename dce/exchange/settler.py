"""Settlement off the call path: every second, finished calls are settled into the ledger, and each new
conversion is posted back. The routing snapshot's buyer balances follow the ledger through a version watcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db.cdr_repository import get_cdr
from dce.db.settlement import Settled, settle_pending
from dce.exchange.call_events import CallEvents

log = logging.getLogger(__name__)


class Settler:
    """Runs ``settle_pending`` every ``interval_s`` and announces the conversions it (or a webhook) made."""

    def __init__(self, engine: AsyncEngine, events: CallEvents | None, *, interval_s: float = 1.0,
                 grace_s: float = 2.0, on_posted: Callable[[], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.events = events
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.on_posted = on_posted  # e.g. reload the routing balances at once
        self.clock = clock
        self.settled = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="settler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                self.settled += await settle_pending(self.engine, now=self.clock(), grace_s=self.grace_s,
                                                     on_settled=self.announce)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settlement failed; retrying at the next tick")
            await asyncio.sleep(self.interval_s)

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
                self.events.converted(cdr, one.settlement.revenue, one.settlement.payout, self.clock())

    async def announce_one(self, settled: Settled) -> None:
        """A buyer's webhook converted a call that had settled unconverted."""
        await self.announce([settled])
