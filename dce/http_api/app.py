"""The aiohttp side API: health, metrics and ``/api/v1``.

An endpoint lives in one module with its test: the handler carries its permission (``@require``, or it is listed
in :data:`dce.http_api.permissions.PUBLIC_PATHS`) and its documentation (``@describe``: summary, query parameters,
the pydantic model it reads its body with, statuses), and sits in that module's route list; a write tells the
exchange through :func:`dce.http_api.changes.notify`. Only a new module adds a line here.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.live import LiveBidding
from dce.clock import Clock, SystemClock
from dce.http_api.agents import agent_routes
from dce.http_api.auth import AUTHENTICATOR, Authenticator, auth_middleware
from dce.http_api.auth_api import auth_routes
from dce.http_api.bids import routes as bid_routes
from dce.http_api.calls import build_api_app
from dce.http_api.changes import CHANGES, Changes
from dce.http_api.consents import consent_routes
from dce.http_api.debug import debug_api_routes, debug_routes
from dce.http_api.describe import describe
from dce.http_api.events import events_routes
from dce.http_api.gdpr import gdpr_routes
from dce.http_api.health import install as install_health
from dce.http_api.http_metrics import http_metrics_middleware
from dce.http_api.inputs import input_guard_middleware
from dce.http_api.keys import CLOCK, ENGINE, METRICS, STARTED_AT, STATUS
from dce.http_api.ledger import ledger_routes
from dce.http_api.lists import list_routes
from dce.http_api.live_bidding import LIVE_BIDDING, live_bidding_api_routes, live_bidding_ws_routes
from dce.http_api.marketplace import marketplace_routes
from dce.http_api.metrics import ExchangeMetrics, Scrapes
from dce.http_api.openapi import setup_docs
from dce.http_api.postbacks import postback_routes
from dce.http_api.problems import problem, problem_middleware
from dce.http_api.rate_limit import RateLimiter, rate_limit_middleware
from dce.http_api.read_cache import CacheTtls
from dce.http_api.read_cache import install as install_read_caches
from dce.http_api.reports import report_routes
from dce.http_api.rtb import RTB_PINGS, RtbPingService, rtb_routes
from dce.http_api.security import hide_server_software, security_middlewares
from dce.http_api.sip_ws import sip_ws_routes
from dce.http_api.tracing import tracing_middleware
from dce.http_api.trunks import trunk_routes
from dce.http_api.ws_outbox import install as install_open_sockets

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

SCRAPES = web.AppKey("scrapes", Scrapes)


@describe(content_type="text/plain", problems=(401,))
@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition text, rendered at most once a second (``http.metrics_cache_s``). When
    ``http.metrics_token`` is set, send ``Authorization: Bearer <token>``: without it the answer is 401."""
    scrapes = request.app[SCRAPES]
    if not scrapes.allows(request.headers.get("Authorization")):
        response = problem(401, "this exchange's metrics need Authorization: Bearer <http.metrics_token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = scrapes.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(
    *,
    engine: AsyncEngine,
    metrics: ExchangeMetrics,
    status: Callable[[], dict[str, Any]] | None = None,
    changes: Changes | None = None,
    rtb_pings: RtbPingService | None = None,
    live_bidding: LiveBidding | None = None,
    state: Mapping[web.AppKey[Any], Any] | None = None,
    cors_origins: Sequence[str] = (),
    auth: Authenticator | None = None,
    rate_limiter: RateLimiter | None = None,
    tracer: Tracer | None = None,
    cache_ttls: CacheTtls = CacheTtls(),
    metrics_cache_s: float = 1.0,
    metrics_token: str | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """The side API. ``status()`` adds fields (e.g. active calls; a "checks" dict merges) to ``/health``.

    ``changes`` hears of every successful write through the API (:class:`~dce.http_api.changes.Changes`: one hook
    per kind, e.g. ``marketplace=MarketplaceWatcher.notify`` so live routing reloads at once).

    ``cors_origins``: browser origins allowed to call the API. ``auth`` checks every non-public route's
    permission (401/403); ``rate_limiter`` answers 429 past the token buckets; ``tracer`` (tracing on) opens a
    server span per request, outermost. ``live_bidding`` enables
    ``/ws/v1/bidding`` and ``POST /api/v1/bids`` (live auctions). ``state`` sets further app keys the route modules
    read (e.g. ``consents.CALLING_HOURS``, ``gdpr.ERASERS``, ``events.EVENT_HUB``). ``cache_ttls``: how long
    marketplace, calls/bids and report answers may be served from memory (:mod:`dce.http_api.read_cache`).
    ``metrics_cache_s``: how old a ``/metrics`` answer may be; ``metrics_token``: the bearer token ``/metrics``
    requires (None: open). ``clock``: the exchange's one clock, which handlers read the time from (default: the
    system's).

    The caller owns ``engine`` (disposes it) and keeps ``metrics`` fed. What the app itself opens closes with it:
    the read and health caches through its ``cleanup_ctx``, open WebSockets when it shuts down.
    """
    hide_server_software()
    middlewares = [http_metrics_middleware(metrics), *security_middlewares(cors_origins)]
    if tracer is not None:
        middlewares.insert(0, tracing_middleware(tracer))
    if auth is not None:  # after CORS (preflights pass), before rate limits (which key on the caller)
        middlewares.append(auth_middleware(auth))
    if rate_limiter is not None:
        middlewares.append(rate_limit_middleware(rate_limiter))
    # problem+json outermost of the last two: the input guard's 422 (NUL in a query or path) is one of its problems
    app = web.Application(middlewares=[*middlewares, problem_middleware, input_guard_middleware])
    if auth is not None:
        app[AUTHENTICATOR] = auth
    app[ENGINE] = engine
    app[METRICS] = metrics
    app[SCRAPES] = Scrapes(metrics, max_age_s=metrics_cache_s, token=metrics_token)
    app[CLOCK] = clock = clock or SystemClock()
    app[STARTED_AT] = clock.monotonic()
    install_read_caches(app, cache_ttls)
    if status is not None:
        app[STATUS] = status
    app[CHANGES] = changes if changes is not None else Changes()
    if rtb_pings is not None:
        app[RTB_PINGS] = rtb_pings
    if live_bidding is not None:
        app[LIVE_BIDDING] = live_bidding
    for key, value in (state or {}).items():
        app[key] = value
    install_health(app)
    install_open_sockets(app)
    app.add_routes(routes)
    app.add_routes(live_bidding_ws_routes())
    app.add_routes(events_routes())
    app.add_routes(sip_ws_routes())
    app.add_routes(debug_routes())
    api = build_api_app()
    api.add_routes(marketplace_routes())
    api.add_routes(rtb_routes())
    api.add_routes(bid_routes)
    api.add_routes(live_bidding_api_routes())
    api.add_routes(list_routes())
    api.add_routes(consent_routes())
    api.add_routes(gdpr_routes())
    api.add_routes(postback_routes())
    api.add_routes(report_routes())
    api.add_routes(ledger_routes())
    api.add_routes(debug_api_routes())
    api.add_routes(auth_routes())
    api.add_routes(trunk_routes())
    api.add_routes(agent_routes())
    app.add_subapp("/api/v1", api)
    setup_docs(app)  # /api/openapi.json and /swagger, built from the route table above
    return app


async def run_http(app: web.Application, host: str, port: int, *,
                   ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (port 0: see ``runner.addresses``), HTTPS with ``ssl_context``;
    ``cleanup()`` stops it."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
