"""Composition root: builds every room from Settings, runs SIP + HTTP, and shuts down without losing CDRs."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from dce import caches
from dce.background import Periodic
from dce.bidding.inbound import InboundPings, Reservations
from dce.bidding.live import LiveBidding
from dce.bidding.log import BidLogEntry
from dce.bidding.rtb import RtbPinger
from dce.billing.cdr import CallDetailRecord
from dce.clock import LoopClock
from dce.compliance.tcpa import CallingHours
from dce.compliance.verdict import Verdict
from dce.db.agent_repository import AgentBook
from dce.db.agent_watcher import AgentWatcher
from dce.db.bid_repository import insert_bids
from dce.db.cdr_spool import Spool
from dce.db.cdr_writer import BatchWriter, CdrWriter
from dce.db.engine import create_engine
from dce.db.gdpr import pseudonymise_old_calls, retention_cutoff
from dce.db.ledger_repository import buyer_balances, ledger_version
from dce.db.marketplace_repository import MarketplaceData
from dce.db.marketplace_watcher import MarketplaceWatcher
from dce.db.postback_dispatcher import PostbackDispatcher
from dce.db.record_codec import BID_CODEC, CDR_CODEC
from dce.db.redis_bindings import RedisBindings
from dce.db.redis_slots import RedisSlots
from dce.db.tracing import trace_statements
from dce.db.trunk_watcher import TrunkWatcher
from dce.db.watcher import Watcher
from dce.exchange.admission_setup import build_admission, merge_rules
from dce.exchange.agent_lines import AgentLines
from dce.exchange.agent_presence import RegistrarPresence
from dce.exchange.call_events import CallEvents
from dce.exchange.callflow import CallFlow
from dce.exchange.cluster import Cluster
from dce.exchange.compliance_setup import build_compliance
from dce.exchange.config import Settings
from dce.exchange.descriptors import descriptors_needed, ensure_descriptors
from dce.exchange.gc_policy import GcPolicy
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.outbound import credentials_box, resolver_from
from dce.exchange.personal_data import ERASERS, EXPORTERS
from dce.exchange.registrar_setup import build_registrar, registrations
from dce.exchange.router import OutboundTrunk, StaticRouter
from dce.exchange.settler import Settler
from dce.exchange.sip_driver import SipDriver
from dce.exchange.tracing import setup_tracing
from dce.exchange.watchdog import LifeBounds
from dce.http_api.agents import REGISTRATIONS
from dce.http_api.app import build_app, run_http
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.changes import Changes
from dce.http_api.consents import CALLING_HOURS, OUTBOUND_LISTS
from dce.http_api.debug import SETTINGS_DUMP
from dce.http_api.events import EVENT_HUB, EventHub
from dce.http_api.gdpr import ERASERS as ERASERS_KEY
from dce.http_api.gdpr import EXPORTERS as EXPORTERS_KEY
from dce.http_api.gdpr import PSEUDONYM_KEY
from dce.http_api.health import READY_CHECKS
from dce.http_api.marketplace import TARGET_CREDENTIALS
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.rate_limit import InProcessRateLimiter, RateLimiter
from dce.http_api.read_cache import CALLS_CACHE, CacheTtls
from dce.http_api.record_metrics import register as register_record_metrics
from dce.http_api.rtb import RtbPingService
from dce.http_api.sip_ws import SIP_WEBSOCKETS
from dce.media.ports import ephemeral_overlap
from dce.media.relay import MediaPlane, MediaRelay, PassthroughMedia
from dce.media.rtpengine import RtpengineMedia
from dce.routing.agents import AgentDirectory
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger, longest_rule_days
from dce.routing.engine import RoutingEngine
from dce.routing.model import Campaign, format_money
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes
from dce.sip.tls import TlsSettings, server_context
from dce.sip.trunk_rule import TrunkRule

log = logging.getLogger(__name__)

DUPLICATE_HISTORY_DAYS = 30  # kept at least this long, so a rule added or lengthened later still finds history
HOUSEKEEPING_INTERVAL_S = 5.0
WATCHDOG_INTERVAL_S = 5.0  # how often call tasks past their longest possible life are reaped
# Failures of what is around the exchange, not of its code: a port in use; a database or Redis unreachable, or
# refusing us (unknown role or database, schema not migrated).
EXPECTED_START_FAILURES: tuple[type[Exception], ...] = (OSError, DBAPIError, RedisError)


class StartError(Exception):
    """The exchange could not start: ``step`` failed with ``__cause__``; what it had opened is closed."""

    def __init__(self, step: str, cause: Exception) -> None:
        reason = str(cause).strip().splitlines()  # one line: SQLAlchemy appends the statement and a link
        super().__init__(f"{step}: {reason[0] if reason else type(cause).__name__}")
        self.step = step
        self.expected = isinstance(cause, EXPECTED_START_FAILURES)


@dataclass
class _Observer:
    """Feeds metrics from the SIP endpoint and the CallFlow."""

    metrics: ExchangeMetrics

    def message(self, direction: str, method: str) -> None:
        self.metrics.sip_message(direction, method)  # type: ignore[arg-type]

    def dropped(self, reason: str) -> None:
        self.metrics.sip_dropped(reason)

    def call_started(self) -> None:
        self.metrics.active_calls.inc()

    def call_reaped(self) -> None:
        self.metrics.calls_reaped.inc()

    def call_finished(self, cdr: CallDetailRecord) -> None:
        """Count the call, and log one INFO line for it: id, caller, DID, disposition, code, duration, target."""
        self.metrics.active_calls.dec()
        talk_s = (cdr.end_at - cdr.answer_at).total_seconds() if cdr.answer_at is not None else None
        buyer = cdr.terms.buyer_id if cdr.terms is not None and cdr.terms.buyer_id else ""
        self.metrics.call_finished(cdr.disposition.value, buyer, talk_s=talk_s)
        target = (cdr.terms.target_id if cdr.terms is not None else None) or cdr.destination or "none"
        log.info("call %s from %s to %s: %s %d in %d s, target %s", cdr.call_id, cdr.caller, cdr.did,
                 cdr.disposition.value, cdr.final_code, cdr.duration_s, target)

    def routed(self, seconds: float) -> None:
        self.metrics.routing_observed(seconds)

    def dialled(self, delay_s: float) -> None:
        self.metrics.added_delay.observe(delay_s)

    def screened(self, verdict: Verdict) -> None:
        self.metrics.screened(verdict.codes, verdict.risk)


@dataclass
class Exchange:
    """One running exchange node."""

    settings: Settings
    metrics: ExchangeMetrics = field(default_factory=ExchangeMetrics)
    sip_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    http_address: tuple[str, int] | None = None

    _stack: AsyncExitStack | None = field(default=None, init=False, repr=False)
    _stop_grace_s: float = field(default=2.0, init=False, repr=False)

    async def start(self) -> None:
        """Open the database, bind SIP and HTTP, and start taking calls.

        Each step registers how to close what it opened as it opens it, so :meth:`stop` closes everything in
        the reverse order; when a step fails, what was opened is closed and :class:`StartError` names the step.
        """
        caches.resize(self.settings.caches.model_dump())  # every per-number cache at its configured size
        self.clock = LoopClock(asyncio.get_running_loop())  # the one clock of the calls: SIP, CallFlow, router
        self._observer = _Observer(self.metrics)
        steps = (self._start_tracing, self._start_database, self._start_records, self._start_media,
                 self._start_sip, self._start_marketplace, self._start_trunks, self._start_agents,
                 self._start_compliance, self._start_retention,
                 self._start_postbacks, self._start_settlement, self._start_http, self._start_calls,
                 self._start_gc_policy)  # calls after http: at stop they end while the side API still answers
        stack = AsyncExitStack()
        step_name = "start"
        try:
            for step in steps:
                step_name = step.__name__.removeprefix("_start_")
                await step(stack)
        except BaseException as exc:
            try:
                await stack.aclose()
            except Exception:
                log.exception("closing what a failed start had opened failed")
            if isinstance(exc, Exception):
                raise StartError(step_name, exc) from exc
            raise
        self._stack = stack
        log.info("exchange up: SIP %s, HTTP %s, media %s", self.sip_addresses, self.http_address,
                 self.settings.media.mode)

    async def stop(self, *, grace_s: float = 2.0) -> None:
        """Hang up calls in progress, flush CDRs, close sockets and the database (a no-op when not started)."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._stop_grace_s = grace_s
        await stack.aclose()

    async def _start_tracing(self, stack: AsyncExitStack) -> None:
        self.tracing = setup_tracing(self.settings.tracing)  # off: the API's no-op tracer, no HTTP middleware
        stack.push_async_callback(self.tracing.shutdown)  # the last calls' and requests' spans are exported

    async def _start_database(self, stack: AsyncExitStack) -> None:
        database = self.settings.database
        self.engine = create_engine(database.url, connect_timeout_s=database.connect_timeout_s,
                                    statement_timeout_s=database.statement_timeout_s)
        stack.push_async_callback(self.engine.dispose)
        if self.tracing.enabled:  # SQL under a request's or a call's span shows as its children
            trace_statements(self.engine, self.tracing.tracer("dce.db"))

    async def _start_records(self, stack: AsyncExitStack) -> None:
        """The record writers; each reads back what its spool holds (the last stop's, or spilled) as it can."""
        spool_path = self.settings.database.spool_path
        self.writer = CdrWriter(self.engine, **self._writer_options(), on_depth=self.metrics.cdr_queue.set,
                                spool=Spool(spool_path, CDR_CODEC))
        self.bid_writer: BatchWriter[BidLogEntry] = BatchWriter(
            self.engine, insert=insert_bids, codec=BID_CODEC, **self._writer_options(),
            spool=Spool(spool_path + ".bids", BID_CODEC))
        for writer in (self.writer, self.bid_writer):  # closed bids first, CDRs last
            stack.push_async_callback(_close_writer, writer)
            await writer.start()

    async def _start_media(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        self.media: MediaPlane
        if settings.media.mode == "relay":
            if (clash := ephemeral_overlap(*settings.media.port_range)) is not None:
                log.warning("media.ports %s overlaps the kernel's ephemeral port range at %d-%d: outgoing "
                            "connections may take relay ports; move it (default 16384-32767) or narrow "
                            "net.ipv4.ip_local_port_range", settings.media.ports, *clash)
            self.media = MediaRelay(address=settings.media_address, port_range=settings.media.port_range,
                                    rtp_timeout_s=settings.media.rtp_timeout_s)
        elif settings.media.mode == "rtpengine":
            media = settings.media
            self.media = await RtpengineMedia.open(
                media.rtpengine_instances, timeout_s=media.rtpengine_timeout_s,
                retransmit_s=media.rtpengine_retransmit_s, down_s=media.rtpengine_down_s,
                rtp_timeout_s=media.rtp_timeout_s)
        else:
            self.media = PassthroughMedia()
        stack.push_async_callback(self.media.close)
        self.metrics.media_sessions_from(lambda: self.media.active_sessions)

    async def _start_sip(self, stack: AsyncExitStack) -> None:
        """The SIP driver (endpoint, B2BUA, transports), listening on ``sip.listen``."""
        settings = self.settings
        sip = settings.sip
        low, high = settings.media.port_range
        needed = descriptors_needed(tcp_max_connections=sip.tcp_max_connections,
                                    media_ports=high - low + 1 if settings.media.mode == "relay" else 0)
        if (available := ensure_descriptors(needed)) < needed:
            log.warning("open-file limit %d is below the %d descriptors sip.tcp_max_connections and media.ports "
                        "may use: calls will fail for want of descriptors first; raise it (LimitNOFILE=, "
                        "ulimit -Hn) or lower those settings", available, needed)
        self.sip_driver = SipDriver.from_config(sip, clock=self.clock, observer=self._observer,
                                                on_error=self.metrics.sip_dropped)
        self.metrics.flood_from(self.sip_driver.flood)
        stack.push_async_callback(self.sip_driver.close)
        auth_secret = settings.auth.secret.get_secret_value() if settings.auth.secret else None
        flood = self.sip_driver.flood
        self.admission = build_admission(sip, auth_secret=auth_secret, retry_after_s=sip.source_retry_after_s,
                                         on_outcome=self.metrics.trunk_call,
                                         on_auth_failure=flood.strike if flood is not None else None)
        self._static_trunks = self.admission.rules
        self._trust_trunks(self._static_trunks)
        self.sip_driver.core.admission = self.admission  # before listening: no INVITE gets past it
        self.registrar = build_registrar(sip, self.admission.signer, on_outcome=self.metrics.registration,
                                         on_auth_failure=flood.strike if flood is not None else None)
        self.metrics.registered_bindings.set_function(self.registrar.binding_count)
        self.sip_driver.core.registrar = self.registrar  # REGISTER answers 405 until agents are loaded
        log.info("SIP admission: %d trunks from sip.trunks; sources no trunk matches: %s", len(self._static_trunks),
                 sip.unknown_sources)
        await self.sip_driver.open(sip.endpoints(), public_address=sip.public_address)
        self.sip_addresses.update(self.sip_driver.addresses)

    def on_trunk_rules(self, rules: Iterable[TrunkRule]) -> None:
        """The trunks table's rules (its watcher): in force at once after ``sip.trunks``, which come first."""
        merged = merge_rules(self._static_trunks, rules)
        self.admission.replace_rules(merged)
        self._trust_trunks(merged)

    def _trust_trunks(self, rules: Iterable[TrunkRule]) -> None:
        """A trunk's own networks are never flood-banned (a 50 CPS carrier sends ~300 requests a window), unless
        wider than /16 (IPv4) or /48 (IPv6): a trunk open to the internet relies on its password, not its address."""
        if (flood := self.sip_driver.flood) is not None:
            flood.trust_also(network for rule in rules for network in rule.networks
                             if network.prefixlen >= (16 if network.version == 4 else 48))

    async def _start_marketplace(self, stack: AsyncExitStack) -> None:
        """Load the marketplace into memory, keep it fresh (API writes, other nodes), and route with it."""
        self.routes = StaticRoutes(self.settings.static_routes)
        fallback = StaticRouter(self.routes, self.settings.routing.ring_timeout_s)
        counters, duplicates = InMemoryCounters(), DuplicateLedger()  # shared by planning and leg accounting
        self.routing_engine = RoutingEngine(MarketplaceSnapshot.empty(), counters, duplicates, random.Random(),
                                            AgentDirectory(RegistrarPresence(self.registrar, self.clock)))
        self.http_client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, ttl_dns_cache=300),
            headers={"User-Agent": self.settings.sip.user_agent}, trace_configs=self.tracing.client_trace_configs())
        stack.push_async_callback(self.http_client.close)
        self.router = MarketplaceRouter(self.routing_engine, counters, duplicates, fallback, clock=self.clock,
                                        pinger=RtbPinger(self.http_client), reservations=Reservations(),
                                        live=LiveBidding())
        self.events_hub = EventHub()
        self.router.bid_log = self._log_bid
        self.router.on_bid = self.metrics.bid
        self.watcher = MarketplaceWatcher(self.engine, self._load_snapshot, interval_s=0.5)
        stack.push_async_callback(self.watcher.stop)
        await self.watcher.start()
        self.cluster: Cluster | None = None
        if self.settings.redis.url is not None:
            redis = self.settings.redis
            self.cluster = Cluster(redis.url, timeout_s=redis.timeout_ms / 1000, prefix=redis.key_prefix)
            stack.push_async_callback(self.cluster.stop)
            self.router.slots = self.cluster.slots
            self.cluster.on_change("marketplace", self.watcher.notify)
            self.metrics.redis_links_from(self.cluster.guards)
            self.cluster.start()
        self.duplicates = duplicates
        await stack.enter_async_context(Periodic("housekeeping", self._keep_house, interval_s=HOUSEKEEPING_INTERVAL_S,
                                                 failure="failed; trying again at the next interval"))

    async def _start_trunks(self, stack: AsyncExitStack) -> None:
        """The enabled trunks in memory for the INVITE path, reloaded on API writes, other nodes' writes (Redis)
        and every ``interval_s`` poll of their change counter."""
        self.trunk_rules: tuple[TrunkRule, ...] = ()
        self.trunk_watcher = TrunkWatcher(self.engine, self._load_trunks)
        stack.push_async_callback(self.trunk_watcher.stop)
        await self.trunk_watcher.start()
        if self.cluster is not None:
            self.cluster.on_change("trunks", self.trunk_watcher.notify)

    def _load_trunks(self, rules: tuple[TrunkRule, ...]) -> None:
        self.trunk_rules = rules
        self.on_trunk_rules(rules)
        log.info("trunks v%s: %d enabled (%s)", self.trunk_watcher.version, len(rules),
                 ", ".join(rule.name for rule in rules[:10]) + (", ..." if len(rules) > 10 else ""))

    def _trunks_changed(self) -> None:
        """An API write: reload here now, and on every other node through Redis when configured."""
        self.trunk_watcher.notify()
        if self.cluster is not None:
            self.cluster.announce("trunks")

    async def _start_agents(self, stack: AsyncExitStack) -> None:
        """Buyers' agents in memory for REGISTER (no database on it), reloaded like the trunks; with Redis, their
        bindings shared by every node (before the agents load: until then REGISTER is not served)."""
        if self.cluster is not None:
            bindings = RedisBindings(self.cluster.client, clock=self.clock, prefix=self.settings.redis.key_prefix)
            await bindings.start()
            stack.push_async_callback(bindings.stop)
            self.registrar.store = bindings
        self.agent_watcher = AgentWatcher(self.engine, self._load_agents)
        stack.push_async_callback(self.agent_watcher.stop)
        await self.agent_watcher.start()
        if self.cluster is not None:
            self.cluster.on_change("agents", self.agent_watcher.notify)

    def _agent_lines(self) -> AgentLines:
        """Agents' calls counted on this node, and with Redis on every node (slots outliving a crashed node expire
        after the longest call)."""
        slots = None
        if self.cluster is not None:
            redis = self.settings.redis
            slots = RedisSlots(self.cluster.client, prefix=redis.key_prefix, timeout_s=redis.timeout_ms / 1000,
                               ttl_s=int(self.settings.routing.max_call_duration_s) + 300)
        return AgentLines(self.routing_engine.agents, slots)

    def _load_agents(self, book: AgentBook) -> None:
        self.registrar.replace_accounts(book.accounts)
        self.routing_engine.agents.replace(book.agents, book.groups, self.clock.monotonic())
        log.info("agents v%s: %d enabled, %d groups", self.agent_watcher.version, len(book.accounts), len(book.groups))

    def _agents_changed(self) -> None:
        """An API write: reload here now, and on every other node through Redis when configured."""
        self.agent_watcher.notify()
        if self.cluster is not None:
            self.cluster.announce("agents")

    async def _start_compliance(self, stack: AsyncExitStack) -> None:
        self.compliance = build_compliance(self.settings.compliance, self.engine, campaign=self._campaign,
                                           conversion_s=self._conversion_s,
                                           shared_velocity=self.cluster.velocity if self.cluster else None)
        stack.push_async_callback(self.compliance.stop)
        await self.compliance.start()

    async def _start_retention(self, stack: AsyncExitStack) -> None:
        """Pseudonymise callers in CDRs older than the retention period, every ``retention_interval_s``."""
        gdpr = self.settings.compliance.gdpr
        if gdpr.retention_days is None:
            return
        if gdpr.key_bytes is None:
            log.error("compliance.gdpr.retention_days is set but pseudonym_key is not: retention is off")
            return
        await stack.enter_async_context(Periodic("retention", self._retain, interval_s=gdpr.retention_interval_s,
                                                 immediately=True, failure="job failed; retrying at the next interval"))

    async def _start_postbacks(self, stack: AsyncExitStack) -> None:
        """Postbacks load their configs before the first call: events emitted before that would be lost."""
        self.postback_client = aiohttp.ClientSession(headers={"User-Agent": self.settings.sip.user_agent},
                                                     trace_configs=self.tracing.client_trace_configs())
        stack.push_async_callback(self.postback_client.close)
        self.postbacks = PostbackDispatcher(self.engine, self.postback_client)
        stack.push_async_callback(self.postbacks.stop)
        await self.postbacks.start()
        self.call_events = CallEvents(self.postbacks, self.events_hub)

    async def _start_settlement(self, stack: AsyncExitStack) -> None:
        """The ledger's buyer balances in the routing snapshot, and settlement of finished calls."""
        self.balances = Watcher(self.engine, name="ledger", version=ledger_version, load=buyer_balances,
                                on_load=self.routing_engine.set_balances, interval_s=0.5)
        stack.push_async_callback(self.balances.stop)
        await self.balances.start()
        self.settler = Settler(self.engine, self.call_events, on_posted=self.balances.notify, clock=self.clock)
        stack.push_async_callback(self.settler.stop)
        self.settler.start()

    async def _start_calls(self, stack: AsyncExitStack) -> None:
        """The CallFlow and its watchdog; from here on, ending the exchange ends its calls first."""
        settings = self.settings
        self.callflow = CallFlow(sip=self.sip_driver, router=self.router,
                                 media=self.media, cdrs=self.writer, observer=self._observer, clock=self.clock,
                                 trunk=OutboundTrunk(settings.routing.outbound_trunk), gate=self.compliance.gate,
                                 events=self.call_events, tracer=self.tracing.tracer("dce.exchange.callflow"),
                                 bounds=LifeBounds(max_call_duration_s=settings.routing.max_call_duration_s,
                                                   leg_guard_s=self.sip_driver.core.endpoint.timers.timeout),
                                 resolver=resolver_from(settings.sip.dns, self.clock),
                                 credentials_box=credentials_box(settings), agents=self._agent_lines())
        self.sip_driver.deliver_to(self.callflow.dispatch)
        await stack.enter_async_context(Periodic(  # the net under the calls outlives its own bugs
            "call-watchdog", self._reap, interval_s=WATCHDOG_INTERVAL_S,
            failure="failed; checking again at the next interval"))
        stack.push_async_callback(self._end_calls)  # first at stop: calls end, then everything they use closes

    async def _reap(self) -> None:
        self.callflow.reap(self.clock.monotonic())

    async def _start_http(self, stack: AsyncExitStack) -> None:
        """The side API."""
        settings = self.settings
        database = settings.database
        register_record_metrics(self.metrics.registry, (self.writer, self.bid_writer), database.stall_after_s)
        app = build_app(engine=self.engine, metrics=self.metrics, status=self._status, clock=self.clock,
                        changes=Changes(marketplace=self._marketplace_changed, lists=self.compliance.notify,
                                        consents=self.compliance.notify,
                                        postbacks=self.postbacks.notify_configs_changed,
                                        ledger=self.balances.notify, converted=self.settler.announce_one,
                                        trunks=self._trunks_changed, agents=self._agents_changed),
                        rtb_pings=self._rtb_pings(), live_bidding=self.router.live, state=self._api_state(),
                        cors_origins=settings.http.cors_origins, auth=self._authenticator(),
                        rate_limiter=self._rate_limiter(), cache_ttls=CacheTtls(**settings.http.cache.model_dump()),
                        metrics_cache_s=settings.http.metrics_cache_s,
                        metrics_token=settings.http.metrics_token.get_secret_value()
                        if settings.http.metrics_token else None,
                        tracer=self.tracing.tracer("dce.http_api") if self.tracing.enabled else None)
        calls_cache = app[CALLS_CACHE]
        self.writer.on_written = lambda _count: calls_cache.invalidate()  # a stored CDR shows on the next page
        https = settings.http.tls
        ssl_context = server_context(TlsSettings(cert_file=https.cert_file, key_file=https.key_file),
                                     section="http.tls") if https.enabled else None
        self.runner: web.AppRunner = await run_http(app, settings.http.host, settings.http.port,
                                                    ssl_context=ssl_context)
        stack.push_async_callback(self.runner.cleanup)
        self.http_address = self.runner.addresses[0][:2]
        if settings.sip.websocket.enabled:  # SIP over WebSocket on this listener: /ws/sip
            self.sip_driver.serve_websockets("wss" if https.enabled else "ws", self.http_address,
                                             public_address=settings.sip.public_address)

    async def _start_gc_policy(self, stack: AsyncExitStack) -> None:
        gc_policy = GcPolicy()  # last: freezes everything start-up built
        stack.push_async_callback(gc_policy.stop)
        gc_policy.start()

    def _writer_options(self) -> dict[str, Any]:
        """The record writers' batching, write timeout and memory bound, from ``database``."""
        database = self.settings.database
        return {"batch_size": database.batch_size, "flush_interval_s": database.flush_interval_s,
                "write_timeout_s": database.statement_timeout_s, "queue_limit": database.queue_limit}

    async def _keep_house(self) -> None:
        """Forget duplicate-caller and fraud history no window can still see (bounded memory)."""
        campaigns = (c.campaign for c in self.routing_engine.snapshot.campaigns.values())
        horizon = longest_rule_days(campaigns, minimum=DUPLICATE_HISTORY_DAYS)
        now = self.clock.now()
        dropped = self.duplicates.expire(now, horizon)
        self.compliance.expire(now.timestamp())
        if dropped:
            log.debug("forgot %d duplicate-caller records older than %d days", dropped, horizon)

    def _rate_limiter(self) -> RateLimiter | None:
        """The side API's rate limits when enabled: shared by every node through Redis when configured."""
        if not self.settings.rate_limits.enabled:
            return None
        return self.cluster.rate_limiter() if self.cluster is not None else InProcessRateLimiter()

    def _authenticator(self) -> Authenticator | None:
        """The side API's auth when enabled (a bad key or secret fails the start, not the first request)."""
        auth = self.settings.auth
        if not auth.enabled:
            log.warning("auth.enabled is false: every side API route is open to anyone who can reach it")
            return None
        secret = auth.secret.get_secret_value() if auth.secret else None
        if auth.algorithm == "HS256" and secret is None:
            secret = secrets.token_urlsafe(48)
            log.warning("auth.secret is unset: tokens are signed with a random per-process secret, so they stop "
                        "working at restart and on other nodes (API keys are unaffected); set auth.secret")
        return Authenticator(AuthConfig(
            algorithm=auth.algorithm, secret=secret,
            private_key_path=auth.private_key_path, public_key_path=auth.public_key_path,
            access_ttl_s=auth.access_ttl_s, refresh_ttl_s=auth.refresh_ttl_s, issuer=auth.issuer,
            bootstrap_admin_key=auth.bootstrap_admin_key.get_secret_value() if auth.bootstrap_admin_key else None,
        ), engine=self.engine)

    def _api_state(self) -> dict[web.AppKey[Any], Any]:
        """What the routes read: the event hub, the settings dump, calling hours, the list check, GDPR registries,
        readiness checks."""
        compliance = self.settings.compliance
        state: dict[web.AppKey[Any], Any] = {
            EVENT_HUB: self.events_hub,
            SETTINGS_DUMP: lambda: self.settings.model_dump(mode="json"),
            CALLING_HOURS: CallingHours.from_config(compliance.calling_hours),
            ERASERS_KEY: ERASERS,
            EXPORTERS_KEY: EXPORTERS,
            READY_CHECKS: self._ready_checks,
            REGISTRATIONS: partial(registrations, self.registrar, self.clock),
        }
        if self.settings.sip.websocket.enabled:
            state[SIP_WEBSOCKETS] = self.sip_driver.websockets
        if self.compliance.lists is not None:
            state[OUTBOUND_LISTS] = self.compliance.lists.outbound
        key = compliance.gdpr.key_bytes
        if key is not None:
            state[PSEUDONYM_KEY] = key
        if (box := credentials_box(self.settings)) is not None:
            state[TARGET_CREDENTIALS] = box
        return state

    async def _retain(self) -> None:
        """Pseudonymise callers in CDRs older than the retention period, once."""
        gdpr = self.settings.compliance.gdpr
        assert gdpr.retention_days is not None and gdpr.key_bytes is not None
        changed = await pseudonymise_old_calls(self.engine, retention_cutoff(gdpr.retention_days), gdpr.key_bytes)
        if changed:
            log.info("retention: pseudonymised %d CDRs older than %d days", changed, gdpr.retention_days)

    def _marketplace_changed(self) -> None:
        """An API write: reload here now, and on every other node through Redis when configured."""
        self.watcher.notify()
        if self.cluster is not None:
            self.cluster.announce("marketplace")

    def _log_bid(self, entry: BidLogEntry) -> None:
        """Every bid goes to the bids table (batched) and to the live ``bids`` topic."""
        self.bid_writer.submit(entry)
        record = entry.record
        self.events_hub.publish("bids", {
            "type": "bid", "call_id": entry.call_id, "campaign_id": entry.campaign_id, "buyer_id": entry.buyer_id,
            "target_id": record.target_id, "amount": format_money(record.amount), "outcome": str(record.outcome),
            "reject_reason": str(record.reject_reason) if record.reject_reason is not None else None,
            "latency_ms": record.latency_ms, "at": entry.at.isoformat(),
        })

    def _campaign(self, campaign_id: str) -> Campaign | None:
        compiled = self.routing_engine.snapshot.campaigns.get(campaign_id)
        return compiled.campaign if compiled is not None else None

    def _conversion_s(self, target_id: str) -> int | None:
        compiled = self.routing_engine.snapshot.targets.get(target_id)
        return compiled.target.conversion_duration_s if compiled is not None else None

    def _rtb_pings(self) -> RtbPingService:
        """Publishers' pings run the same auction as calls, and reserve the winner for the caller's CID."""
        engine = self.routing_engine

        def campaign_by_key(key: str) -> Campaign | None:
            compiled = engine.snapshot.by_key.get(key)
            return compiled.campaign if compiled is not None else None

        pings = InboundPings(engine.eligible, self.router.pinger, self.router.reservations,
                             on_records=lambda records, campaign_id: self.router.record_bids(
                                 records, campaign_id=campaign_id))
        return RtbPingService(pings, campaign_by_key)

    def _load_snapshot(self, data: MarketplaceData) -> None:
        snapshot = MarketplaceSnapshot.build(data.publishers, data.buyers, data.campaigns, data.targets,
                                             data.tracking_numbers, previous=self.routing_engine.snapshot)
        self.routing_engine.replace(snapshot)
        log.info("marketplace v%d: %d campaigns, %d targets, %d numbers", data.version, len(data.campaigns),
                 len(data.targets), len(data.tracking_numbers))

    def _ready_checks(self) -> dict[str, str]:
        """Readiness of the record writers: "ok" unless records wait with none written for stall_after_s."""
        stall_after_s = self.settings.database.stall_after_s
        return {f"{writer.kind}_writer": writer.health(stall_after_s) for writer in (self.writer, self.bid_writer)}

    def _status(self) -> dict:
        return {"active_calls": self.sip_driver.core.active_calls, "cdr_queue": self.writer.pending,
                "media_sessions": self.media.active_sessions}

    async def _end_calls(self) -> None:
        """Hang up the calls in progress and let them end (CDRs written), then settle outbound INVITEs."""
        grace_s = self._stop_grace_s
        self.sip_driver.hang_up_all("exchange shutting down")
        ended = await self.callflow.drain(grace_s)
        if ended:
            log.warning("%d calls still running at shutdown were ended (their CDRs say so)", ended)
        await self.sip_driver.settle_dials(grace_s)


async def _close_writer(writer: BatchWriter[Any]) -> None:
    """Write what a record writer holds, or spool it (said after fsync); say what could be neither."""
    lost = await writer.close()
    if lost:
        log.error("%d %s records could be neither written nor spooled before shutdown", len(lost), writer.kind)
