"""What exchange nodes sharing one database share through Redis, when ``redis.url`` is set: targets' caps
(concurrency slots and hour/day/month counts, ``db.redis_slots``), fraud velocity (``db.redis_velocity``), the
side API's rate limits (``http_api.redis_rate_limit``) and change notifications (a write on one node reloads
every node at once, instead of at the next poll of the version rows)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dce.background import Periodic
from dce.db.redis_guard import RedisGuard
from dce.db.redis_slots import RedisSlots
from dce.db.redis_velocity import RedisVelocity
from dce.http_api.redis_rate_limit import RedisRateLimiter

log = logging.getLogger(__name__)

CHANNEL = "changes"  # after the key prefix


def connect(url: str, *, max_connections: int = 256, timeout_s: float = 1.0) -> aioredis.Redis:
    """A client whose pool makes a command wait for a free connection past ``max_connections`` (bounded by the
    callers' timeouts) rather than fail at once, as redis-py's default pool does past 100. ``timeout_s`` bounds
    that wait, a connect and a socket read (the callers' own budgets are shorter on the call path)."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout_s,
                                                    socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    return aioredis.Redis.from_pool(pool)


class Cluster:
    """The Redis link of one node: its shared counters, and a listener that reloads on other nodes' changes."""

    def __init__(self, url: str, *, timeout_s: float, prefix: str = "dce:") -> None:
        self.client = connect(url)
        self.prefix = prefix
        self.channel = prefix + CHANNEL
        self.slots = RedisSlots(self.client, prefix=prefix, timeout_s=timeout_s)
        self.velocity = RedisVelocity(self.client, prefix=prefix + "vel:", timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self._listeners: dict[str, Callable[[], None]] = {}
        self._limiters: list[RedisRateLimiter] = []
        self._listener = Periodic("cluster-listener", self._listen, interval_s=1.0, immediately=True,
                                  failure="lost Redis; retrying in 1 s", expected=(RedisError, OSError))

    def rate_limiter(self) -> RedisRateLimiter:
        """Rate-limit buckets every node shares."""
        limiter = RedisRateLimiter(self.client, prefix=self.prefix + "rl:", timeout_s=self.timeout_s)
        self._limiters.append(limiter)
        return limiter

    def guards(self) -> list[RedisGuard]:
        """The guard of each component using Redis (their health is exposed as metrics)."""
        return [self.slots.guard, self.velocity.guard, *(limiter.guard for limiter in self._limiters)]

    def on_change(self, kind: str, reload: Callable[[], None]) -> None:
        """Call ``reload`` when any node announces a change of ``kind`` (e.g. "marketplace")."""
        self._listeners[kind] = reload

    def announce(self, kind: str) -> None:
        """Tell every node (this one included) that ``kind`` changed; never waits."""
        task = asyncio.ensure_future(self._publish(kind))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _publish(self, kind: str) -> None:
        try:
            await self.client.publish(self.channel, kind)
        except (RedisError, OSError) as exc:
            log.warning("could not announce a %s change (%s); other nodes will see it at their next poll", kind, exc)

    def start(self) -> None:
        """Listen for other nodes' changes (resubscribing after a lost connection)."""
        self._listener.start()

    async def _listen(self) -> None:
        """Subscribe and call the listeners until the connection is lost."""
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                kind = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
                reload = self._listeners.get(kind)
                if reload is not None:
                    reload()
        finally:
            await pubsub.aclose()

    async def stop(self) -> None:
        """Stop listening and close the Redis client."""
        await self._listener.stop()
        await self.client.aclose()
