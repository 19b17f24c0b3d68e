"""Targets' caps shared by every node through Redis: concurrency slots and hour/day/month counts.

Before dialling a capped target each node makes one Lua script call that checks the target's current hour, day
and month counts against its caps and takes a concurrency slot (INCR, refuse and undo above the limit, refresh
the key's expiry), atomically: one round trip per dial. The slot is given back (DECR) when that leg ends; a
connect or conversion increments the window counters in one pipeline (keys per target, kind and window start in
the buyer's zone, expiring a while after the window ends). Both happen off the call path.

Redis being slow or away never stops calls: after ``timeout_s`` the caller is told "unknown" (None) and falls
back to its own node's counts; the outage is logged once (``RedisGuard``). A node that dies holding slots leaves
them until the key expires (``ttl_s``, refreshed by every acquire).
"""

from __future__ import annotations

from typing import NamedTuple

import redis.asyncio as aioredis

from dce.db.redis_guard import RedisGuard
from dce.routing.model import CapCounts

# KEYS[1] the slot, KEYS[2..] the window counters to check; ARGV[1] the concurrency limit (-1: take no slot),
# ARGV[2] the slot's ttl, ARGV[3..] each window's limit. 1: slot taken, 2: allowed (no slot), 0: concurrency
# full, -i: the i-th window is at its cap.
_ACQUIRE = """
for i = 2, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[i + 1]) then return 1 - i end
end
local limit = tonumber(ARGV[1])
if limit < 0 then return 2 end
local held = redis.call('INCR', KEYS[1])
if held > limit then
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

WINDOWS = ("hour", "day", "month")
_KEEP_S = (2 * 3600, 2 * 86_400, 33 * 86_400)  # a counter expires this long after its window began (past its end)


class Windows(NamedTuple):
    """A target's calendar caps at one moment: what they count, when the current hour/day/month began (epoch s,
    in the buyer's zone: ``routing.counters.window_starts``), and the limits (None: unlimited)."""

    kind: CapCounts
    starts: tuple[float, float, float]
    hourly: int | None = None
    daily: int | None = None
    monthly: int | None = None


class RedisSlots:
    """Targets' shared caps in Redis: slots under ``<prefix>slots:<target>``, window counts under
    ``<prefix>cap:<target>:<kind>:<hour|day|month>:<window start>``."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "dce:", ttl_s: int = 6 * 3600,
                 timeout_s: float = 0.05, retry_s: float = 1.0) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.guard = RedisGuard("slots", timeout_s=timeout_s, retry_s=retry_s,
                                fallback="this node's own counts for caps")
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @property
    def failures(self) -> int:
        return self.guard.failures

    def slot_key(self, target_id: str) -> str:
        return f"{self.prefix}slots:{target_id}"

    def window_keys(self, target_id: str, kind: CapCounts, starts: tuple[float, float, float]) -> list[str]:
        """The hour, day and month counters' keys of the windows that began at ``starts``."""
        base = f"{self.prefix}cap:{target_id}:{kind}:"
        return [f"{base}{name}:{int(start)}" for name, start in zip(WINDOWS, starts, strict=True)]

    async def acquire(self, target_id: str, limit: int | None, windows: Windows | None = None) -> bool | None:
        """Check the window caps and take one of ``limit`` slots (None: no slot, only the windows) atomically:
        True allowed (the slot taken), False full or over a cap, None when Redis could not answer in time."""
        keys = [self.slot_key(target_id)]
        args: list[int] = [-1 if limit is None else limit, self.ttl_s]
        if windows is not None:
            for key, cap in zip(self.window_keys(target_id, windows.kind, windows.starts),
                                (windows.hourly, windows.daily, windows.monthly), strict=True):
                if cap is not None:
                    keys.append(key)
                    args.append(cap)
        if len(keys) == 1 and limit is None:
            return True
        answer = await self.guard.run(lambda: self._acquire(keys=keys, args=args))
        return None if answer is None else int(answer) > 0

    async def release(self, target_id: str) -> None:
        """Give a slot back (best effort: a failure is logged; the key's expiry bounds a leak)."""
        await self.guard.run(lambda: self._release(keys=[self.slot_key(target_id)]),
                             timeout_s=max(self.guard.timeout_s, 1.0), always=True)

    async def record(self, target_id: str, kind: CapCounts, starts: tuple[float, float, float], now: float) -> None:
        """Count one connect or conversion at ``now`` (epoch s) in the current hour, day and month (one pipeline,
        best effort); each counter expires a while after its window ends (relative to ``now``: time is injected)."""
        async def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for key, start, keep_s in zip(self.window_keys(target_id, kind, starts), starts, _KEEP_S, strict=True):
                pipe.incr(key)
                pipe.expire(key, max(1, int(start + keep_s - now)))
            await pipe.execute()

        await self.guard.run(send, timeout_s=max(self.guard.timeout_s, 1.0), always=True)

    async def held(self, target_id: str) -> int:
        """Slots held now across every node (for tests and status)."""
        value = await self.client.get(self.slot_key(target_id))
        return int(value or 0)

    async def counts(self, target_id: str, kind: CapCounts, starts: tuple[float, float, float]) -> list[int]:
        """The hour, day and month counts across every node (for tests and status)."""
        values = await self.client.mget(self.window_keys(target_id, kind, starts))
        return [int(v or 0) for v in values]
