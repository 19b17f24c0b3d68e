"""Garbage-collector policy for a process that must answer SIP in milliseconds.

CPython's full collections walk every tracked object. At 300 CPS an exchange keeps ~10k ended calls' transactions
for 64*T1 (32 s, absorbing retransmissions, RFC 3261/6026), and those passes stalled the event loop for 100-500 ms
every few seconds (bench/sipp_load.py). The call path creates no reference cycles (the B2BUA unlinks an ended call
from its lingering transactions, and the endpoint's timer heap holds its entries weakly; a test counts cyclic
garbage after a burst of calls), so objects are freed by reference counting and the collector has little to find.

The policy: freeze everything built at start-up, then every ``freeze_every_s`` move the survivors into the
permanent generation, so collections only ever walk the last second's objects. As a safety valve against cycles
made elsewhere (libraries, exception tracebacks), a full unfrozen collection runs every ``full_every_s``.
"""

from __future__ import annotations

import gc
import logging
import time

from dce.background import Periodic

log = logging.getLogger(__name__)


class GcPolicy:
    """Runs the freeze/collect schedule on an event loop."""

    def __init__(self, *, freeze_every_s: float = 1.0, full_every_s: float = 600.0) -> None:
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s
        self._job = Periodic("gc-policy", self._tick, interval_s=freeze_every_s)
        self._last_full = 0.0
        self.full_collections = 0
        self.last_full_collected = 0

    def start(self) -> None:
        """Collect and freeze what start-up built, then keep freezing on schedule."""
        gc.collect()
        gc.freeze()
        self._last_full = time.monotonic()
        self._job.start()

    async def stop(self) -> None:
        """Stop the schedule and hand every object back to the collector."""
        await self._job.stop()
        gc.unfreeze()

    async def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_full >= self.full_every_s:
            self._last_full = now
            started = time.perf_counter()
            gc.unfreeze()
            self.last_full_collected = gc.collect()
            self.full_collections += 1
            log.info("full collection: %d unreachable objects in %.1f ms", self.last_full_collected,
                     (time.perf_counter() - started) * 1000)
        gc.freeze()
