"""Registrar bindings shared by exchange nodes through Redis (``redis.url`` set): any node finds an agent's devices.

:class:`RedisBindings` is a :class:`~dce.sip.registrar.BindingStore`. The registrar reads and writes a local replica
synchronously (no Redis round trip on REGISTER); a background writer copies each changed agent's bindings to
``<prefix>reg:<agent id>`` (JSON, expiry as wall-clock epoch seconds, the key living as long as its longest
binding) and publishes ``<node> <agent id>`` on ``<prefix>reg``; every other node's listener reloads that agent's
key into its replica, and loads every key each time it (re)subscribes (at start, and after Redis was away).
Expiry crosses nodes as wall-clock time (each node's monotonic clock is its own). Two nodes registering one agent
at once: the later write of the agent's whole set wins.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dce.background import Periodic
from dce.clock import Clock
from dce.sip.registrar import Binding, MemoryBindings

log = logging.getLogger(__name__)


class RedisBindings:
    """A :class:`~dce.sip.registrar.BindingStore` replicated through Redis. ``await start()`` loads what other
    nodes hold and begins writing and listening; ``await stop()`` ends both (pending writes are flushed first)."""

    def __init__(self, client: aioredis.Redis, *, clock: Clock, prefix: str = "dce:") -> None:
        self.client = client
        self.clock = clock
        self.node = uuid.uuid4().hex
        self.key_prefix = prefix + "reg:"
        self.channel = prefix + "reg"
        self._local = MemoryBindings()
        self._pending: set[str] = set()
        self._writer = Periodic("bindings-writer", self.flush, interval_s=1.0,
                                failure="could not write bindings to Redis; retrying in 1 s",
                                expected=(RedisError, OSError))
        self._listener = Periodic("bindings-listener", self._listen, interval_s=1.0, immediately=True,
                                  failure="lost Redis; resubscribing in 1 s", expected=(RedisError, OSError))

    # -- BindingStore --------------------------------------------------------------------------------
    def get(self, agent_id: str) -> tuple[Binding, ...]:
        return self._local.get(agent_id)

    def put(self, agent_id: str, bindings: tuple[Binding, ...]) -> None:
        self._local.put(agent_id, bindings)
        self._pending.add(agent_id)
        self._writer.notify()

    def agents(self) -> Iterator[str]:
        return self._local.agents()

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Hear other nodes' changes (loading what they hold) and keep writing ours, in the background: a node whose
        Redis is away starts on its own bindings and catches up when Redis answers."""
        try:
            await self._reload_all()
        except (RedisError, OSError) as exc:
            log.warning("could not load other nodes' bindings from Redis (%s); the listener catches up", exc)
        self._listener.start()
        self._writer.start()

    async def stop(self) -> None:
        await self._listener.stop()
        await self._writer.stop()
        try:
            await self.flush()
        except (RedisError, OSError) as exc:
            log.warning("could not write the last bindings to Redis (%s)", exc)

    # -- replication ---------------------------------------------------------------------------------
    def _encode(self, bindings: tuple[Binding, ...]) -> tuple[str, int]:
        """The JSON of ``bindings`` (wall-clock expiry) and how many milliseconds the key must live."""
        offset = self.clock.now().timestamp() - self.clock.monotonic()
        items = [{**asdict(b), "expires_at": b.expires_at + offset} for b in bindings]
        longest = max(b.expires_at for b in bindings) - self.clock.monotonic()
        return json.dumps(items), max(1, int(longest * 1000))

    def _decode(self, text: str | bytes) -> tuple[Binding, ...]:
        offset = self.clock.monotonic() - self.clock.now().timestamp()
        items: list[dict[str, Any]] = json.loads(text)
        return tuple(Binding(**{**item, "expires_at": float(item["expires_at"]) + offset}) for item in items)

    async def flush(self) -> None:
        """Write the agents changed here since the last flush, and tell the other nodes."""
        while self._pending:
            agent_id = self._pending.pop()
            bindings = self._local.get(agent_id)
            key = self.key_prefix + agent_id
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    if bindings:
                        text, ttl_ms = self._encode(bindings)
                        pipe.set(key, text, px=ttl_ms)
                    else:
                        pipe.delete(key)
                    pipe.publish(self.channel, f"{self.node} {agent_id}")
                    await pipe.execute()
            except BaseException:
                self._pending.add(agent_id)  # written at the next flush
                raise

    async def _reload(self, key: str) -> None:
        agent_id = key.removeprefix(self.key_prefix)
        text = await self.client.get(key)
        try:
            self._local.put(agent_id, self._decode(text) if text else ())
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable bindings of agent %r in Redis (%s)", agent_id, exc)

    async def _reload_all(self) -> None:
        async for key in self.client.scan_iter(match=self.key_prefix + "*", count=500):
            key = key.decode() if isinstance(key, bytes) else key
            if key.removeprefix(self.key_prefix) not in self._pending:  # ours, newer, still to be written
                await self._reload(key)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            await self._reload_all()  # after subscribing: whatever changed while we were not listening
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message["data"]
                node, _, agent_id = (data.decode() if isinstance(data, bytes) else str(data)).partition(" ")
                if node != self.node and agent_id and agent_id not in self._pending:
                    await self._reload(self.key_prefix + agent_id)
        finally:
            await pubsub.aclose()
