"""Rate limits shared by every node through Redis: one token bucket per (caller, endpoint class) in a hash.

Each hit is one Lua script call (one round trip) that refills the bucket for the time since its last hit, takes
the cost if it can, stores the bucket and sets its expiry to the time it takes to fill again (an idle bucket
vanishes: it would be created full anyway). Time is the nodes' wall clock passed in (``clock``, injectable);
a bucket never refills backwards when a node's clock is behind the one that last touched it. Redis failing or
slow: this node's own buckets (an ``InProcessRateLimiter``) answer instead, and the outage is logged once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from dce.db.redis_guard import RedisGuard
from dce.http_api.rate_limit import Decision, InProcessRateLimiter, Rule

# KEYS[1] the bucket; ARGV: rate (tokens/s), burst, cost, now (s), ttl (ms). Returns {allowed, tokens, retry s}.
_HIT = """
local rate, burst, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(bucket[1]), tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
elseif now > at then
  tokens, at = math.min(burst, tokens + (now - at) * rate), now
end
local allowed, retry = 0, (cost - tokens) / rate
if tokens >= cost then
  tokens, allowed, retry = tokens - cost, 1, 0
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {allowed, tostring(tokens), tostring(retry)}
"""


class RedisRateLimiter:
    """``RateLimiter`` over buckets in Redis (keys ``<prefix><caller>|<endpoint class>``)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "dce:rl:", timeout_s: float = 0.05,
                 retry_s: float = 1.0, clock: Callable[[], float] = time.time,
                 fallback: InProcessRateLimiter | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self._clock = clock
        self.fallback = fallback or InProcessRateLimiter(clock=clock)
        self.guard = RedisGuard("rate limits", timeout_s=timeout_s, retry_s=retry_s,
                                fallback="this node's own rate-limit buckets")
        self._hit = client.register_script(_HIT)

    async def hit(self, key: str, rule: Rule, cost: float = 1.0) -> Decision:
        now = self._clock()
        ttl_ms = math.ceil(rule.refill_s * 1000) + 1000
        args = [repr(float(rule.rate)), repr(float(rule.burst)), repr(float(cost)), repr(now), ttl_ms]
        answer = await self.guard.run(lambda: self._hit(keys=[self.prefix + key], args=args))
        if answer is None:
            return self.fallback.take(key, rule, cost)
        allowed, tokens, retry = answer
        return Decision(bool(int(allowed)), max(0.0, float(retry)), float(tokens))
