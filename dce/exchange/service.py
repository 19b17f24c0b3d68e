"""Composition root: builds every room from Settings, runs SIP + HTTP, and shuts down without losing CDRs."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from dce import caches
from dce.bidding.inbound import InboundPings, Reservations
from dce.bidding.live import LiveBidding
from dce.bidding.log import BidLogEntry
from dce.bidding.rtb import RtbPinger
from dce.billing.cdr import CallDetailRecord
from dce.clock import LoopClock
from dce.compliance.tcpa import CallingHours
from dce.compliance.verdict import Verdict
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
from dce.db.tracing import trace_statements
from dce.db.watcher import Watcher
from dce.exchange.call_events import CallEvents
from dce.exchange.callflow import CallFlow
from dce.exchange.cluster import Cluster
from dce.exchange.compliance_setup import build_compliance
from dce.exchange.config import Settings
from dce.exchange.descriptors import descriptors_needed, ensure_descriptors
from dce.exchange.gc_policy import GcPolicy
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.personal_data import ERASERS, EXPORTERS
from dce.exchange.router import OutboundTrunk, StaticRouter
from dce.exchange.settler import Settler
from dce.exchange.sip_driver import SipDriver
from dce.exchange.tracing import setup_tracing
from dce.exchange.watchdog import LifeBounds
from dce.http_api.app import build_app, run_http
from dce.http_api.auth import AuthConfig, Authenticator
from dce.http_api.consents import CALLING_HOURS, ON_CONSENTS_CHANGE, OUTBOUND_LISTS
from dce.http_api.debug import SETTINGS_DUMP
from dce.http_api.events import EVENT_HUB, EventHub
from dce.http_api.gdpr import ERASERS as ERASERS_KEY
from dce.http_api.gdpr import EXPORTERS as EXPORTERS_KEY
from dce.http_api.gdpr import PSEUDONYM_KEY
from dce.http_api.health import READY_CHECKS
from dce.http_api.ledger import ON_CONVERTED, ON_LEDGER_CHANGE
from dce.http_api.lists import ON_LISTS_CHANGE
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.postbacks import ON_POSTBACKS_CHANGE
from dce.http_api.rate_limit import InProcessRateLimiter, RateLimiter
from dce.http_api.read_cache import CALLS_CACHE, CacheTtls
from dce.http_api.record_metrics import register as register_record_metrics
from dce.http_api.rtb import RtbPingService
from dce.media.ports import ephemeral_overlap
from dce.media.relay import MediaPlane, MediaRelay, PassthroughMedia
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger, longest_rule_days
from dce.routing.engine import RoutingEngine
from dce.routing.model import Campaign, format_money
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes

log = logging.getLogger(__name__)

DUPLICATE_HISTORY_DAYS = 30  # kept at least this long, so a rule added or lengthened later still finds history


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

    async def start(self) -> None:
        """Open the database, bind SIP and HTTP, and start taking calls."""
        settings = self.settings
        caches.resize(settings.caches.model_dump())  # every per-number cache at its configured size
        observer = _Observer(self.metrics)
        self.tracing = setup_tracing(settings.tracing)  # off: the API's no-op tracer, no HTTP middleware
        database = settings.database
        self.engine = create_engine(database.url, connect_timeout_s=database.connect_timeout_s,
                                    statement_timeout_s=database.statement_timeout_s)
        if self.tracing.enabled:  # SQL under a request's or a call's span shows as its children
            trace_statements(self.engine, self.tracing.tracer("dce.db"))
        self.writer = CdrWriter(self.engine, **self._writer_options(), on_depth=self.metrics.cdr_queue.set,
                                spool=Spool(database.spool_path, CDR_CODEC))
        await self.writer.start()  # reads back what the spool holds (the last stop's, or spilled) as it can

        sip = settings.sip
        low, high = settings.media.port_range
        needed = descriptors_needed(tcp_max_connections=sip.tcp_max_connections,
                                    media_ports=high - low + 1 if settings.media.mode == "relay" else 0)
        if (available := ensure_descriptors(needed)) < needed:
            log.warning("open-file limit %d is below the %d descriptors sip.tcp_max_connections and media.ports "
                        "may use: calls will fail for want of descriptors first; raise it (LimitNOFILE=, "
                        "ulimit -Hn) or lower those settings", available, needed)
        self.sip_driver = SipDriver.from_config(sip, clock=LoopClock(asyncio.get_running_loop()), observer=observer,
                                                on_error=self.metrics.sip_dropped)
        await self.sip_driver.open(sip.endpoints(), public_address=sip.public_address)
        self.sip_addresses.update(self.sip_driver.addresses)

        self.media: MediaPlane
        if settings.media.mode == "relay":
            if (clash := ephemeral_overlap(*settings.media.port_range)) is not None:
                log.warning("media.ports %s overlaps the kernel's ephemeral port range at %d-%d: outgoing "
                            "connections may take relay ports; move it (default 16384-32767) or narrow "
                            "net.ipv4.ip_local_port_range", settings.media.ports, *clash)
            self.media = MediaRelay(address=settings.media_address, port_range=settings.media.port_range,
                                    rtp_timeout_s=settings.media.rtp_timeout_s)
        else:
            self.media = PassthroughMedia()
        self.metrics.media_sessions_from(lambda: self.media.active_sessions)
        self.routes = StaticRoutes(settings.static_routes)
        await self._start_marketplace(StaticRouter(self.routes, settings.routing.ring_timeout_s))
        self.compliance = build_compliance(settings.compliance, self.engine, campaign=self._campaign,
                                           conversion_s=self._conversion_s,
                                           shared_velocity=self.cluster.velocity if self.cluster else None)
        await self.compliance.start()
        self._retention = asyncio.create_task(self._retain())
        self.postback_client = aiohttp.ClientSession(headers={"User-Agent": settings.sip.user_agent},
                                                     trace_configs=self.tracing.client_trace_configs())
        self.postbacks = PostbackDispatcher(self.engine, self.postback_client)
        await self.postbacks.start()  # before the first call: events emitted before its configs load would be lost
        self.call_events = CallEvents(self.postbacks, self.events_hub)
        self.balances = Watcher(self.engine, name="ledger", version=ledger_version, load=buyer_balances,
                                on_load=self.routing_engine.set_balances, interval_s=0.5)
        await self.balances.start()
        self.settler = Settler(self.engine, self.call_events, on_posted=self.balances.notify)
        self.settler.start()
        self.callflow = CallFlow(sip=self.sip_driver, router=self.router,
                                 media=self.media, cdrs=self.writer, observer=observer,
                                 trunk=OutboundTrunk(settings.routing.outbound_trunk), gate=self.compliance.gate,
                                 events=self.call_events, tracer=self.tracing.tracer("dce.exchange.callflow"),
                                 bounds=LifeBounds(max_call_duration_s=settings.routing.max_call_duration_s,
                                                   leg_guard_s=self.sip_driver.core.endpoint.timers.timeout))
        self.sip_driver.deliver_to(self.callflow.dispatch)
        self._watchdog = asyncio.create_task(self.callflow.run_watchdog())

        register_record_metrics(self.metrics.registry, (self.writer, self.bid_writer), database.stall_after_s)
        app = build_app(engine=self.engine, metrics=self.metrics, status=self._status,
                        on_marketplace_change=self._marketplace_changed, rtb_pings=self._rtb_pings(),
                        live_bidding=self.router.live, state=self._api_state(),
                        cors_origins=settings.http.cors_origins, auth=self._authenticator(),
                        rate_limiter=self._rate_limiter(), cache_ttls=CacheTtls(**settings.http.cache.model_dump()),
                        metrics_cache_s=settings.http.metrics_cache_s,
                        metrics_token=settings.http.metrics_token.get_secret_value()
                        if settings.http.metrics_token else None,
                        tracer=self.tracing.tracer("dce.http_api") if self.tracing.enabled else None)
        calls_cache = app[CALLS_CACHE]
        self.writer.on_written = lambda _count: calls_cache.invalidate()  # a stored CDR shows on the next page
        self.runner: web.AppRunner = await run_http(app, settings.http.host, settings.http.port)
        self.http_address = self.runner.addresses[0][:2]
        self.gc_policy = GcPolicy()
        self.gc_policy.start()
        log.info("exchange up: SIP %s, HTTP %s, media %s", self.sip_addresses, self.http_address,
                 settings.media.mode)

    async def _start_marketplace(self, fallback: StaticRouter) -> None:
        """Load the marketplace into memory, keep it fresh (API writes, other nodes), and route with it."""
        counters, duplicates = InMemoryCounters(), DuplicateLedger()  # shared by planning and leg accounting
        self.routing_engine = RoutingEngine(MarketplaceSnapshot.empty(), counters, duplicates, random.Random())
        self.http_client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, ttl_dns_cache=300),
            headers={"User-Agent": self.settings.sip.user_agent}, trace_configs=self.tracing.client_trace_configs())
        self.router = MarketplaceRouter(self.routing_engine, counters, duplicates, fallback,
                                        pinger=RtbPinger(self.http_client), reservations=Reservations(),
                                        live=LiveBidding())
        self.bid_writer: BatchWriter[BidLogEntry] = BatchWriter(
            self.engine, insert=insert_bids, codec=BID_CODEC, **self._writer_options(),
            spool=Spool(self.settings.database.spool_path + ".bids", BID_CODEC))
        await self.bid_writer.start()
        self.events_hub = EventHub()
        self.router.bid_log = self._log_bid
        self.router.on_bid = self.metrics.bid
        self.watcher = MarketplaceWatcher(self.engine, self._load_snapshot, interval_s=0.5)
        await self.watcher.start()
        self.cluster: Cluster | None = None
        if self.settings.redis.url is not None:
            redis = self.settings.redis
            self.cluster = Cluster(redis.url, timeout_s=redis.timeout_ms / 1000, prefix=redis.key_prefix)
            self.router.slots = self.cluster.slots
            self.cluster.on_change("marketplace", self.watcher.notify)
            self.metrics.redis_links_from(self.cluster.guards)
            self.cluster.start()
        self.duplicates = duplicates
        self._housekeeping = asyncio.create_task(self._keep_house())

    def _writer_options(self) -> dict[str, Any]:
        """The record writers' batching, write timeout and memory bound, from ``database``."""
        database = self.settings.database
        return {"batch_size": database.batch_size, "flush_interval_s": database.flush_interval_s,
                "write_timeout_s": database.statement_timeout_s, "queue_limit": database.queue_limit}

    async def _keep_house(self, every_s: float = 5.0) -> None:
        """Forget duplicate-caller and fraud history no window can still see (bounded memory)."""
        while True:
            await asyncio.sleep(every_s)
            campaigns = (c.campaign for c in self.routing_engine.snapshot.campaigns.values())
            horizon = longest_rule_days(campaigns, minimum=DUPLICATE_HISTORY_DAYS)
            now = datetime.now(UTC)
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
        """What the compliance routes read: reload hooks, calling hours, the list check, GDPR registries."""
        compliance = self.settings.compliance
        state: dict[web.AppKey[Any], Any] = {
            EVENT_HUB: self.events_hub,
            SETTINGS_DUMP: lambda: self.settings.model_dump(mode="json"),
            ON_LISTS_CHANGE: self.compliance.notify,
            ON_POSTBACKS_CHANGE: self.postbacks.notify_configs_changed,
            ON_LEDGER_CHANGE: self.balances.notify,
            ON_CONVERTED: self.settler.announce_one,
            ON_CONSENTS_CHANGE: self.compliance.notify,
            CALLING_HOURS: CallingHours.from_config(compliance.calling_hours),
            ERASERS_KEY: ERASERS,
            EXPORTERS_KEY: EXPORTERS,
            READY_CHECKS: self._ready_checks,
        }
        if self.compliance.lists is not None:
            state[OUTBOUND_LISTS] = self.compliance.lists.outbound
        key = compliance.gdpr.key_bytes
        if key is not None:
            state[PSEUDONYM_KEY] = key
        return state

    async def _retain(self) -> None:
        """Pseudonymise callers in CDRs older than the retention period, every ``retention_interval_s``."""
        gdpr = self.settings.compliance.gdpr
        if gdpr.retention_days is None:
            return
        key = gdpr.key_bytes
        if key is None:
            log.error("compliance.gdpr.retention_days is set but pseudonym_key is not: retention is off")
            return
        while True:
            try:
                changed = await pseudonymise_old_calls(self.engine, retention_cutoff(gdpr.retention_days), key)
                if changed:
                    log.info("retention: pseudonymised %d CDRs older than %d days", changed, gdpr.retention_days)
            except Exception:
                log.exception("retention job failed; retrying at the next interval")
            await asyncio.sleep(gdpr.retention_interval_s)

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

    async def stop(self, *, grace_s: float = 2.0) -> None:
        """Hang up calls in progress, flush CDRs, close sockets and the database."""
        self.sip_driver.hang_up_all("exchange shutting down")
        ended = await self.callflow.drain(grace_s)
        if ended:
            log.warning("%d calls still running at shutdown were ended (their CDRs say so)", ended)
        await self.sip_driver.settle_dials(grace_s)
        await self.runner.cleanup()
        self._watchdog.cancel()
        self._housekeeping.cancel()
        await self.watcher.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.compliance.stop()
        self._retention.cancel()
        await self.settler.stop()
        await self.balances.stop()
        await self.postbacks.stop()
        await self.postback_client.close()
        await self.http_client.close()
        await self.sip_driver.close()
        await self.media.close()
        for writer in (self.bid_writer, self.writer):  # what is not written is spooled (said after fsync)
            lost = await writer.close()
            if lost:
                log.error("%d %s records could be neither written nor spooled before shutdown", len(lost),
                          writer.kind)
        await self.engine.dispose()
        await self.tracing.shutdown()  # the last calls' and requests' spans are exported before exit
        self.gc_policy.stop()
