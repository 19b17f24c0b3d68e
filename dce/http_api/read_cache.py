"""Encoded answers of read routes, kept for a short time so a busy API does not ask the database for each.

A :class:`ResponseCache` holds the body (bytes, encoded once) and headers of successful (200) answers, by a key
the route builds from everything the answer depends on (path, query, the caller's tenant). An entry lives
``ttl_s`` from the moment its computation *started*, so an answer is never older than ``ttl_s``. Concurrent misses
of one key share one computation (no stampede when an entry expires under load); that computation runs in its own
task, so a client hanging up does not cancel it for the others.

:meth:`ResponseCache.invalidate` drops every entry at once, and an answer computed across an invalidation is
never stored nor shared with requests that arrived after it: a write made through this node, followed by
``invalidate()``, is visible to the next read on this node (read-your-writes). Writes the cache is not told
about (another node, a script) show after at most ``ttl_s``.

Which routes use which cache (``build_app`` makes them, :class:`CacheTtls` sets their lifetimes):

* marketplace reads (``MARKETPLACE_CACHE``): invalidated by every marketplace write through the API; ``ttl_s``
  bounds the staleness of other nodes' writes.
* calls and bid pages (``CALLS_CACHE``): dropped whenever this node's CDR writer stores a batch (the service wires
  ``CdrWriter.on_written``), so a finished call shows on the next page; other nodes' calls and new bids within
  ``ttl_s``. Reports (``REPORTS_CACHE``): time-bound only (settlements are written off the request path). Both
  carry ``Cache-Control: private, max-age=<ttl>``.

A ``ttl_s`` of 0 turns a cache off (every request computes its answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dce.http_api.lifecycle import close_with

Compute = Callable[[], Awaitable[web.Response]]


@dataclass(frozen=True, slots=True)
class CacheTtls:
    """Lifetimes (seconds) of the read caches; 0 turns one off."""

    marketplace_s: float = 1.0
    calls_s: float = 1.0
    reports_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Cached:
    """A stored 200 answer: its body and the headers to send again."""

    body: bytes
    headers: Mapping[str, str]

    def response(self) -> web.Response:
        return web.Response(body=self.body, headers=self.headers)


class ResponseCache:
    """Encoded 200 answers by key for ``ttl_s`` seconds (at most ``max_entries`` of at most ``max_bytes`` of
    bodies in all; the oldest go first), shared computations, :meth:`invalidate`. ``cache_control``: add
    ``Cache-Control: private, max-age=<ttl>`` to the answers."""

    def __init__(self, ttl_s: float, *, max_entries: int = 1024, max_bytes: int = 32 * 1024 * 1024,
                 cache_control: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.extra_headers: dict[str, str] = (
            {"Cache-Control": f"private, max-age={int(ttl_s)}"} if cache_control and ttl_s > 0 else {}
        )
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self.bytes = 0  # bodies held
        self._entries: dict[Hashable, tuple[float, Cached]] = {}  # key -> (expires at, answer)
        self._flights: dict[tuple[int, Hashable], asyncio.Future[Cached | web.Response]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self) -> None:
        """Forget every entry; computations under way are neither stored nor shared with later requests."""
        self.generation += 1
        self._entries.clear()
        self.bytes = 0

    async def aclose(self) -> None:
        """Forget every entry and cancel the computations under way (the app is closing)."""
        self.invalidate()
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)

    async def get(self, key: Hashable, compute: Compute) -> web.Response:
        """The answer for ``key``: a fresh copy of the stored one, or ``compute()``'s (stored when it is a 200)."""
        if self.ttl_s <= 0:
            return await compute()
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > now:
                self.hits += 1
                return entry[1].response()
            self._drop(key)
        self.misses += 1
        flight_key = (self.generation, key)
        flight = self._flights.get(flight_key)
        leader = flight is None
        if flight is None:
            flight = asyncio.ensure_future(self._compute(key, compute, self.generation, now))
            self._flights[flight_key] = flight
            flight.add_done_callback(lambda done: self._landed(flight_key, done))
        answer = await asyncio.shield(flight)
        if isinstance(answer, Cached):
            return answer.response()
        return answer if leader else await compute()  # a response object goes to one request only

    def _landed(self, flight_key: tuple[int, Hashable], flight: asyncio.Future[Cached | web.Response]) -> None:
        self._flights.pop(flight_key, None)
        if not flight.cancelled():
            flight.exception()  # retrieved here too: every waiter may have gone

    async def _compute(self, key: Hashable, compute: Compute, generation: int, started: float) -> Cached | web.Response:
        response = await compute()
        body = response.body
        if response.status != 200 or not isinstance(body, bytes):
            return response  # not stored: the first caller sends it, the others compute their own
        cached = Cached(body, {**response.headers, **self.extra_headers})
        if generation == self.generation and len(body) <= self.max_bytes:
            self._drop(key)
            if len(self._entries) >= self.max_entries or self.bytes + len(body) > self.max_bytes:
                self._evict(self.clock(), len(body))
            self._entries[key] = (started + self.ttl_s, cached)
            self.bytes += len(body)
        return cached

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[1].body)

    def _evict(self, now: float, room: int) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            self._drop(key)
        while self._entries and (len(self._entries) >= self.max_entries or self.bytes + room > self.max_bytes):
            self._drop(next(iter(self._entries)))  # the oldest insertion


MARKETPLACE_CACHE = web.AppKey("marketplace_cache", ResponseCache)
CALLS_CACHE = web.AppKey("calls_cache", ResponseCache)
REPORTS_CACHE = web.AppKey("reports_cache", ResponseCache)


def install(app: web.Application, ttls: CacheTtls) -> None:
    """Put the three read caches on ``app`` (the parent app; sub-apps read them through ``config_dict``); its
    ``cleanup_ctx`` closes them (:meth:`ResponseCache.aclose`)."""
    caches = (ResponseCache(ttls.marketplace_s), ResponseCache(ttls.calls_s, cache_control=True),
              ResponseCache(ttls.reports_s, cache_control=True))
    app[MARKETPLACE_CACHE], app[CALLS_CACHE], app[REPORTS_CACHE] = caches
    close_with(app, *caches)


async def cached(request: web.Request, cache_key: web.AppKey[ResponseCache], key: Hashable,
                 compute: Compute) -> web.Response:
    """``compute()`` through the app's cache under ``cache_key`` (straight through when the app has none)."""
    cache = request.config_dict.get(cache_key)
    if cache is None:
        return await compute()
    return await cache.get(key, compute)


def request_key(request: web.Request, tenant: Mapping[str, str]) -> tuple[Any, ...]:
    """A key for an answer that depends on the path, the query and the caller's tenant only."""
    return request.path, request.query_string, tuple(sorted(tenant.items()))


def invalidate(request: web.Request, cache_key: web.AppKey[ResponseCache]) -> None:
    """Drop the app's cache under ``cache_key`` (after a write), if it has one."""
    cache = request.config_dict.get(cache_key)
    if cache is not None:
        cache.invalidate()
