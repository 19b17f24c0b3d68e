"""Health and readiness: ``/health``, ``/health/live``, ``/health/ready``.

The checks (a ``SELECT 1``, the node's status, the record writers) run at most once per ``HEALTH_TTL_S``: a flood
of probes shares one answer, and concurrent probes share one database query. ``/health`` tells anyone only
"ok"/"degraded"; its details (version, uptime, checks, queue depths) go to an authenticated admin, or to anyone
when auth is off (an open API on a closed network). ``/health/ready`` is 503 problem+json while the database does
not answer or records are not being written (a writer's ``READY_CHECKS`` entry is not "ok").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dce import __version__
from dce.db.engine import check
from dce.http_api.auth import AUTHENTICATOR, AuthError
from dce.http_api.describe import describe
from dce.http_api.keys import ENGINE, STARTED_AT, STATUS, clock_of
from dce.http_api.lifecycle import close_with
from dce.http_api.problems import problem

log = logging.getLogger(__name__)

HEALTH_TTL_S = 1.0
READY_CHECKS = web.AppKey("ready_checks", Callable[[], Mapping[str, str]])  # name -> "ok" or why not


@dataclass(frozen=True, slots=True)
class Health:
    """One evaluation of the checks."""

    checks: dict[str, str]  # name -> "ok" or the problem
    ready: dict[str, str]  # the checks readiness depends on
    status: dict[str, Any]  # the node's status fields (active calls, queue depths)

    @property
    def ok(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


class HealthCache:
    """The last :class:`Health` for ``ttl_s``; concurrent callers of a stale one share one evaluation."""

    def __init__(self, ttl_s: float = HEALTH_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._value: Health | None = None
        self._at = 0.0
        self._pending: asyncio.Future[Health] | None = None
        self.evaluations = 0

    async def aclose(self) -> None:
        """Cancel an evaluation under way (the app is closing)."""
        pending = self._pending
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)

    def expire(self) -> None:
        """Forget the last answer: the next probe evaluates again."""
        self._value = None

    async def get(self, app: web.Application) -> Health:
        if self._value is not None and self._clock() - self._at < self._ttl_s:
            return self._value
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._evaluate(app))
        pending = self._pending
        return await asyncio.shield(pending)  # a probe that goes away does not cancel the others' answer

    async def _evaluate(self, app: web.Application) -> Health:
        try:
            self.evaluations += 1
            health = await _evaluate(app)
            self._value, self._at = health, self._clock()
            return health
        finally:
            self._pending = None


HEALTH_CACHE = web.AppKey("health_cache", HealthCache)


async def _database(app: web.Application) -> str:
    """Return "ok", or the error text."""
    try:
        await check(app[ENGINE])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
    return "ok"


def _read(fn: Any, what: str) -> tuple[dict[str, Any], str | None]:
    """``dict(fn())``, or ({}, the error text) when it fails (logged): a broken hook degrades health, never 500s."""
    if fn is None:
        return {}, None
    try:
        return dict(fn()), None
    except Exception as exc:
        log.exception("%s failed", what)
        return {}, f"{type(exc).__name__}: {exc}"


async def _evaluate(app: web.Application) -> Health:
    checks: dict[str, str] = {"database": await _database(app)}
    ready = {"database": checks["database"]}
    status, error = _read(app.get(STATUS), "status()")
    if error is not None:
        checks["status"] = error
    checks.update(status.pop("checks", None) or {})
    writers, error = _read(app.get(READY_CHECKS), "readiness checks")
    if error is not None:
        writers = {"readiness": error}
    checks.update(writers)
    ready.update(writers)
    return Health(checks, ready, status)


async def _detailed(request: web.Request) -> bool:
    """Whether the caller may see the details: an admin's credentials, or auth off."""
    auth = request.app.get(AUTHENTICATOR)
    if auth is None:
        return True
    try:
        who = await auth.authenticate(request)
    except AuthError:
        return False
    return who is not None and who.is_admin


@describe(problems=())
async def health(request: web.Request) -> web.Response:
    """Status "ok" or "degraded" (always HTTP 200); details (version, uptime, checks, status) for admins."""
    current = await request.app[HEALTH_CACHE].get(request.app)
    body: dict[str, Any] = {"status": "ok" if current.ok else "degraded"}
    if await _detailed(request):
        uptime_s = clock_of(request).monotonic() - request.app[STARTED_AT]
        body = {**current.status, **body, "version": __version__, "uptime_s": round(uptime_s, 3),
                "checks": current.checks}
    return web.json_response(body)


async def live(_request: web.Request) -> web.Response:
    """200 while the process serves requests."""
    return web.json_response({"status": "ok"})


@describe(problems=(503,))
async def ready(request: web.Request) -> web.Response:
    """200 when the database answers and records are being written, else 503 problem+json."""
    current = await request.app[HEALTH_CACHE].get(request.app)
    failing = {name: value for name, value in current.ready.items() if value != "ok"}
    if failing:
        detailed = await _detailed(request)
        detail = "; ".join(f"{name}: {value}" if detailed else name for name, value in failing.items())
        return problem(503, f"not ready: {detail}", title="Not Ready")
    return web.json_response({"status": "ok"})


def health_routes() -> list[web.RouteDef]:
    """The three health routes."""
    return [web.get("/health", health), web.get("/health/live", live), web.get("/health/ready", ready)]


def install(app: web.Application) -> None:
    """The health routes and their answer cache on ``app`` (closed with it)."""
    app[HEALTH_CACHE] = HealthCache()
    close_with(app, app[HEALTH_CACHE])
    app.add_routes(health_routes())
