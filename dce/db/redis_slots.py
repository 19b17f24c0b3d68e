"""Concurrency slots shared by every node through Redis: one atomic round trip per dial.

A target's concurrency cap must hold across nodes, so before dialling a capped target each node takes a slot
with one Lua script call (INCR, refuse and undo above the limit, refresh the key's expiry); the slot is given
back (DECR) when that leg ends. Redis being slow or away never stops calls: after ``timeout_s`` the caller is told
"unknown" (None) and falls back to its own node's count, and the error is logged once per outage.

A node that dies holding slots leaves them until the key expires (``ttl_s``, refreshed by every acquire).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_ACQUIRE = """
local held = redis.call('INCR', KEYS[1])
if held > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RELEASE = """
local held = redis.call('DECR', KEYS[1])
if held <= 0 then redis.call('DEL', KEYS[1]) end
return held
"""


class RedisSlots:
    """Targets' concurrency slots in Redis (keys ``<prefix><target id>``)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "dce:slots:", ttl_s: int = 6 * 3600,
                 timeout_s: float = 0.05) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self.failures = 0
        self._failing = False

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if not self._failing:
            self._failing = True
            log.warning("redis slots unavailable (%s); counting this node's calls only until it is back", exc)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("redis slots available again")

    async def acquire(self, target_id: str, limit: int) -> bool | None:
        """Take one of ``limit`` slots: True taken, False full, None when Redis could not answer in time."""
        try:
            taken = await asyncio.wait_for(
                self._acquire(keys=[self.prefix + target_id], args=[limit, self.ttl_s]), self.timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._ok()
        return bool(taken)

    async def release(self, target_id: str) -> None:
        """Give a slot back (best effort: a failure is logged; the key's expiry bounds a leak)."""
        try:
            await asyncio.wait_for(self._release(keys=[self.prefix + target_id]), max(self.timeout_s, 1.0))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    async def held(self, target_id: str) -> int:
        """Slots held now across every node (for tests and status)."""
        value = await self.client.get(self.prefix + target_id)
        return int(value or 0)
