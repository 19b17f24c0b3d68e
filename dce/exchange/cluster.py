"""What exchange nodes sharing one database share through Redis, when ``redis.url`` is set: concurrency slots
(``db.redis_slots``) and change notifications (a write on one node reloads every node at once, instead of at
the next poll of the version rows)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dce.db.redis_slots import RedisSlots

log = logging.getLogger(__name__)

CHANNEL = "dce:changes"


class Cluster:
    """The Redis link of one node: its slots, and a listener that reloads on other nodes' changes."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.client = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self.slots = RedisSlots(self.client, timeout_s=timeout_s)
        self._listeners: dict[str, Callable[[], None]] = {}
        self._task: asyncio.Task[None] | None = None

    def on_change(self, kind: str, reload: Callable[[], None]) -> None:
        """Call ``reload`` when any node announces a change of ``kind`` (e.g. "marketplace")."""
        self._listeners[kind] = reload

    def announce(self, kind: str) -> None:
        """Tell every node (this one included) that ``kind`` changed; never waits."""
        task = asyncio.ensure_future(self._publish(kind))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _publish(self, kind: str) -> None:
        try:
            await self.client.publish(CHANNEL, kind)
        except (RedisError, OSError) as exc:
            log.warning("could not announce a %s change (%s); other nodes will see it at their next poll", kind, exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="cluster-listener")

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub()
                await pubsub.subscribe(CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    kind = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
                    reload = self._listeners.get(kind)
                    if reload is not None:
                        reload()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("cluster listener lost Redis (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()
