"""How a Redis-backed component lives with Redis being slow or away: the call path never waits past a timeout.

A ``RedisGuard`` runs one Redis call under ``timeout_s``; on an error or a timeout it answers ``None`` (the caller
then decides on its own node's numbers), logs the first failure of an outage once and the recovery once, and for
``retry_s`` after a failure answers ``None`` at once without trying (a dead Redis costs the call path nothing
instead of a timeout per call). Best-effort writes (``always=True``) are tried even while backing off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

T = TypeVar("T")

log = logging.getLogger(__name__)


class RedisGuard:
    """Timeouts, one warning per outage and a short back-off, for the component named ``what``."""

    def __init__(self, what: str, *, timeout_s: float, retry_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, fallback: str = "this node's own counts") -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.fallback = fallback
        self.failures = 0
        self._clock = clock
        self._failing = False
        self._retry_at = 0.0

    @property
    def failing(self) -> bool:
        return self._failing

    async def run(self, call: Callable[[], Awaitable[T]], *, timeout_s: float | None = None,
                  always: bool = False) -> T | None:
        """``await call()`` within the timeout; None when Redis failed, timed out or is being backed off from."""
        if self._failing and not always and self._clock() < self._retry_at:
            return None
        try:
            limit = self.timeout_s if timeout_s is None else timeout_s
            if asyncio.current_task() is None:  # a call's first step runs outside any task (exchange.eager)
                result = await asyncio.wait_for(call(), limit)
            else:
                async with asyncio.timeout(limit):  # no extra task
                    result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(exc)
            return None
        self.ok()
        return result

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._retry_at = self._clock() + self.retry_s
        if not self._failing:
            self._failing = True
            log.warning("redis %s unavailable (%s: %s); using %s until it is back", self.what,
                        type(exc).__name__, exc, self.fallback)

    def ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("redis %s available again", self.what)
