"""Fraud velocity counted by every node through Redis: calls per caller (minute, hour) and per publisher (minute).

Each call is one Lua script call (one round trip): per window, INCR the counter of the current time bucket (a
key per caller or publisher and bucket, expiring two windows later) and read the previous bucket's. The count
in the sliding window ending ``now`` is estimated as ``current + previous * (the share of the previous bucket
still inside the window)``, which assumes the previous bucket's calls were spread evenly over it. Redis slow or
away: None after the timeout, and the fraud scorer goes on with this node's own exact counts.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from dce.compliance.fraud import HOUR, MINUTE, SharedVelocity
from dce.db.redis_guard import RedisGuard

# KEYS: pairs (current bucket, previous bucket); ARGV[i]: the i-th pair's expiry (s). Returns current, previous, ...
_COUNT = """
local out = {}
for i = 1, #KEYS, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[(i + 1) / 2]) end
  out[#out + 1] = n
  out[#out + 1] = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
end
return out
"""


def sliding(current: int, previous: int, now: float, window: float) -> float:
    """The estimated count in the ``window`` seconds ending ``now`` from two fixed buckets' counts."""
    into = (now % window) / window  # how far into the current bucket ``now`` is (0..1)
    return current + previous * (1.0 - into)


class RedisVelocity:
    """Shared velocity counters under ``<prefix><a|ah|p>:<caller or publisher>:<bucket>``."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "dce:vel:", timeout_s: float = 0.05,
                 retry_s: float = 1.0) -> None:
        self.client = client
        self.prefix = prefix
        self.guard = RedisGuard("velocity", timeout_s=timeout_s, retry_s=retry_s,
                                fallback="this node's own counts for fraud velocity")
        self._count = client.register_script(_COUNT)

    async def count(self, ani_key: str | None, publisher_id: str | None, now: float) -> SharedVelocity | None:
        """Count this call at ``now`` (epoch s) and return every node's counts; None if Redis did not answer.

        ``ani_key`` is the caller as the scorer keys it (``classify_ani``), None or "" for an anonymous caller.
        """
        windows: list[tuple[str, str, float]] = []
        if ani_key:
            windows += [("a", ani_key, MINUTE), ("ah", ani_key, HOUR)]
        if publisher_id is not None:
            windows.append(("p", publisher_id, MINUTE))
        if not windows:
            return SharedVelocity()
        keys: list[str] = []
        args: list[int] = []
        for tag, who, window in windows:
            bucket = int(now // window)
            keys += [f"{self.prefix}{tag}:{who}:{bucket}", f"{self.prefix}{tag}:{who}:{bucket - 1}"]
            args.append(int(2 * window) + 1)
        answer = await self.guard.run(lambda: self._count(keys=keys, args=args))
        if answer is None:
            return None
        counts = {tag: sliding(int(answer[2 * i]), int(answer[2 * i + 1]), now, window)
                  for i, (tag, _who, window) in enumerate(windows)}
        return SharedVelocity(counts.get("a"), counts.get("ah"), counts.get("p"))
