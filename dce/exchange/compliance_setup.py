"""Builds the compliance gate from configuration and keeps its in-memory state fresh.

Checks, in the order they run on each call:
  1. number lists (DNC national/state/internal, litigators, blocked ANI/DID; buyers' suppression lists),
  2. STIR/SHAKEN verification against the trust store (certificates from disk, or fetched from their x5u URLs in
     the background when ``stir.fetch`` is on), with the campaign's policy,
  3. fraud scoring (velocity, anonymous/invalid ANI, duplicates, conversion clusters, blacklisted ANI).
Lists and consents are reloaded by version-polling watchers, so API changes apply within a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.compliance.cert_fetch import FetchSettings
from dce.compliance.fraud import FraudScorer, FraudSettings, SharedVelocity, classify_ani
from dce.compliance.lists import ListBook
from dce.compliance.screen import Check, ScreenedCall, Screener, Screening
from dce.compliance.stir_shaken import CertificateStore, StirCheck
from dce.compliance.verdict import Finding, ReasonCode
from dce.db.list_repository import lists_version, load_book
from dce.db.watcher import Watcher
from dce.exchange.config import ComplianceConfig, StirConfig
from dce.exchange.screening import CallGate, CompletionListener
from dce.routing.model import Campaign

log = logging.getLogger(__name__)


class ListsCheck:
    """The number lists as a screening check, over the book the lists watcher keeps fresh."""

    def __init__(self, book: ListBook | None = None) -> None:
        self.book = book or ListBook()

    def replace(self, book: ListBook) -> None:
        self.book = book

    def __call__(self, call: ScreenedCall, now: float, out: Screening) -> None:
        findings, suppressed = self.book.screen(call.ani, call.did, call.state)
        if findings:
            out.extend(findings)
        if suppressed:
            out.suppressed_buyers = suppressed

    def outbound(self, number: str) -> list[Finding]:
        """List findings for calling ``number`` (DNC, litigators, blocked): the outbound check's list step."""
        return self.book.screen(number, "", None)[0]


class SharedCounter(Protocol):
    """Velocity counted by every node (``db.redis_velocity.RedisVelocity``)."""

    async def count(self, ani_key: str | None, publisher_id: str | None, now: float) -> SharedVelocity | None: ...


class FraudCheck:
    """Fraud scoring as a screening check; learns conversion clusters from answered calls. With ``shared``,
    the velocity signals also read every node's counts (``velocity``, awaited before the screening)."""

    def __init__(self, scorer: FraudScorer, shared: SharedCounter | None = None) -> None:
        self.scorer = scorer
        self.shared = shared

    async def velocity(self, call: ScreenedCall, now: float) -> SharedVelocity | None:
        """Count this call in the shared velocity counters; their counts, or None when unknown."""
        if self.shared is None:
            return None
        _kind, key = classify_ani(call.ani, self.scorer.settings.region)
        return await self.shared.count(key or None, call.publisher_id, now)

    def __call__(self, call: ScreenedCall, now: float, out: Screening) -> None:
        assessment = self.scorer.assess(call.ani, publisher_id=call.publisher_id, campaign_id=call.campaign_id,
                                        now=now, blacklisted=out.has(ReasonCode.BLOCKED_ANI), shared=call.velocity)
        out.risk = assessment.risk
        out.extend(assessment.findings)

    def completed(self, publisher_id: str | None, billable_s: int, conversion_s: int | None, now: float) -> None:
        if publisher_id is not None:
            self.scorer.record_completed(publisher_id, billable_s, conversion_s, now)


@dataclass
class Compliance:
    """The gate the CallFlow uses, and the watchers that keep its lists fresh."""

    gate: CallGate | None
    watchers: list[Watcher] = field(default_factory=list)  # type: ignore[type-arg]
    fraud: FraudScorer | None = None
    lists: ListsCheck | None = None
    stir: StirCheck | None = None

    async def start(self) -> None:
        """Load every list and start watching; when one fails, the ones started are stopped."""
        try:
            for watcher in self.watchers:
                await watcher.start()
        except BaseException:
            await self.stop()
            raise

    def expire(self, now: float) -> None:
        """Forget fraud history older than every window (bounded memory); call every few seconds."""
        if self.fraud is not None:
            self.fraud.expire(now)

    async def stop(self) -> None:
        """Stop watching (a watcher never started is a no-op) and stop fetching certificates."""
        for watcher in self.watchers:
            await watcher.stop()
        if self.stir is not None and self.stir.store.fetcher is not None:
            await self.stir.store.fetcher.close()

    def notify(self) -> None:
        """Reload lists and consents now (an API write happened)."""
        for watcher in self.watchers:
            watcher.notify()


def build_compliance(config: ComplianceConfig, engine: AsyncEngine, *,
                     campaign: Callable[[str], Campaign | None],
                     conversion_s: Callable[[str], int | None],
                     shared_velocity: SharedCounter | None = None) -> Compliance:
    """The gate for ``config`` (None when compliance is disabled); fraud velocity across nodes with
    ``shared_velocity``."""
    if not config.enabled:
        return Compliance(None)
    checks: list[Check] = []
    listeners: list[CompletionListener] = []
    watchers: list[Watcher] = []  # type: ignore[type-arg]
    lists = ListsCheck()
    checks.append(lists)
    watchers.append(Watcher(engine, name="lists", version=lists_version, load=load_book, on_load=lists.replace,
                            interval_s=config.refresh_interval_s))
    stir = build_stir(config.stir) if config.stir.enabled else None
    if stir is not None:
        checks.append(stir)
    fraud = None
    velocity = None
    if config.fraud.enabled:
        fraud = FraudScorer(FraudSettings.from_mapping(config.fraud.model_dump()))
        fraud_check = FraudCheck(fraud, shared_velocity)
        checks.append(fraud_check)
        listeners.append(fraud_check)
        if shared_velocity is not None:
            velocity = fraud_check.velocity
    gate = CallGate(Screener(checks), reject_status=config.reject_status, caller_reason=config.caller_reason,
                    campaign=campaign, conversion_s=conversion_s, listeners=tuple(listeners), velocity=velocity,
                    prepare=stir.prepare if stir is not None and stir.store.fetcher is not None else None)
    return Compliance(gate, watchers, fraud, lists, stir)


def build_stir(config: StirConfig) -> StirCheck:
    """The STIR/SHAKEN check: the certificate store (and its x5u fetcher with ``fetch``) and the pending policy."""
    fetch = FetchSettings(
        timeout_s=config.fetch_timeout_s, max_bytes=config.fetch_max_bytes, max_redirects=config.fetch_max_redirects,
        cache_size=config.fetch_cache_size, default_ttl_s=config.fetch_default_ttl_s,
        min_ttl_s=config.fetch_min_ttl_s, max_ttl_s=config.fetch_max_ttl_s, failure_ttl_s=config.fetch_failure_ttl_s,
        max_in_flight=config.fetch_max_in_flight, ca_file=config.fetch_ca_file,
        allowed_hosts=tuple(config.fetch_allowed_hosts) if config.fetch_allowed_hosts is not None else None,
    ) if config.fetch else None
    store = CertificateStore.load(config.trust_store, config.certificates, fetch=fetch,
                                  require_tn_auth_list=config.require_tn_auth_list)
    return StirCheck(store, max_age_s=config.max_age_s, pending=config.pending, wait_s=config.pending_wait_ms / 1000)
