"""Prometheus metrics for the exchange, in a registry of their own.

Names follow the seed brief: ``dce_calls_total{status,buyer}``, ``dce_calls_duration_seconds``,
``dce_bids_total{status}``, ``dce_routing_duration_seconds``, ``dce_compliance_violations_total{type}``,
``dce_fraud_score`` and ``http_requests_total{method,route,status}``; plus the SIP and media metrics
(``dce_sip_*``, ``dce_active_calls``, ``dce_exchange_added_delay_seconds``, ``dce_media_sessions``,
``dce_rtp_packets_total``) and, with Redis configured, ``dce_redis_up{component}`` and
``dce_redis_failures_total{component}``. Label values with unbounded sets (raw paths, numbers, call ids) never
become labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

Direction = Literal["in", "out"]

# The exchange should add well under a millisecond between INVITE in and INVITE out: resolve that finely.
ADDED_DELAY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# Talk time of answered calls, from seconds to an hour (longer calls land in +Inf).
CALL_DURATION_BUCKETS = (
    1.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
)  # fmt: skip

# A routing decision is in-memory work of microseconds; the seed alerts when its p99 passes 1 ms.
ROUTING_BUCKETS = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
)  # fmt: skip

HTTP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class CallsCounter(Collector):
    """``dce_calls_total{status,buyer}``. A call without a buyer is exposed without the ``buyer`` label, which
    Prometheus treats exactly as ``buyer=""`` (an empty label is an absent label): the series of non-marketplace
    calls keeps its plain ``{status="..."}`` name.

    Counts live in a dict (one dict update per call on the event loop's thread; no lock)."""

    name = "dce_calls"
    documentation = "Finished calls by disposition and buyer (no buyer label when the call had none)"

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._counts: dict[tuple[str, str], float] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, status: str, buyer: str = "", amount: float = 1.0) -> None:
        key = (status, buyer)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def value(self, status: str, buyer: str = "") -> float:
        return self._counts.get((status, buyer), 0.0)

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, "counter")

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        for (status, buyer), value in list(self._counts.items()):
            labels = {"status": status, "buyer": buyer} if buyer else {"status": status}
            metric.add_sample("dce_calls_total", labels, value)
        yield metric


class RedisLink(Protocol):
    """What the Redis metrics read off a Redis-backed component (``db.redis_guard.RedisGuard``)."""

    what: str
    failures: int

    @property
    def failing(self) -> bool: ...


class RedisHealth(Collector):
    """``dce_redis_up{component}`` (0 while a component falls back to this node's own numbers) and
    ``dce_redis_failures_total{component}`` (Redis calls that failed or timed out), read at scrape time."""

    def __init__(self, links: Callable[[], Iterable[RedisLink]], registry: CollectorRegistry) -> None:
        self._links = links
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # samples depend on what is configured: collected only at scrape

    def collect(self) -> Iterator[Metric]:
        up = Metric("dce_redis_up", "1 while Redis answers this component, 0 while it uses its own node's numbers",
                    "gauge")
        failures = Metric("dce_redis_failures", "Redis calls that failed or timed out, by component", "counter")
        for link in self._links():
            up.add_sample("dce_redis_up", {"component": link.what}, 0.0 if link.failing else 1.0)
            failures.add_sample("dce_redis_failures_total", {"component": link.what}, float(link.failures))
        yield up
        yield failures


class ExchangeMetrics:
    """The exchange's metrics. Observation helpers cache label children: cheap on the SIP hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_total = CallsCounter(self.registry)
        self.calls_duration = Histogram(
            "dce_calls_duration_seconds", "Talk time of answered calls (answer to hangup)",
            buckets=CALL_DURATION_BUCKETS, registry=self.registry,
        )
        self.bids_total = Counter(
            "dce_bids_total", "Bids by outcome: won, lost, rejected:<reason>", ("status",), registry=self.registry
        )
        self.routing_duration = Histogram(
            "dce_routing_duration_seconds", "Time to plan a call's route (targets, bids, ring tree)",
            buckets=ROUTING_BUCKETS, registry=self.registry,
        )
        self.sip_messages_total = Counter(
            "dce_sip_messages_total",
            "SIP messages received (in) and sent (out), by request method or 'response'",
            ("direction", "method"),
            registry=self.registry,
        )
        self.sip_dropped_total = Counter(
            "dce_sip_dropped_total", "SIP datagrams dropped, by reason", ("reason",), registry=self.registry
        )
        self.active_calls = Gauge("dce_active_calls", "Calls in progress", registry=self.registry)
        self.calls_reaped = Counter(
            "dce_calls_reaped_total", "Call tasks the watchdog ended past their longest possible life (a bug)",
            registry=self.registry,
        )
        self.added_delay = Histogram(
            "dce_exchange_added_delay_seconds",
            "Time from receiving the caller's INVITE to sending the outbound INVITE",
            buckets=ADDED_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.cdr_queue = Gauge("dce_cdr_queue_depth", "CDRs waiting to be written", registry=self.registry)
        self.compliance_violations = Counter(
            "dce_compliance_violations_total", "Calls flagged or rejected by the compliance and fraud gate, by reason",
            ("type",), registry=self.registry,
        )
        self.fraud_score = Histogram(
            "dce_fraud_score", "Fraud risk score of screened calls (0..1)",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=self.registry,
        )
        self.media_sessions = Gauge("dce_media_sessions", "Media sessions open", registry=self.registry)
        self.rtp_packets_total = Counter(
            "dce_rtp_packets_total", "RTP packets relayed, by direction (a_to_b, b_to_a)", ("direction",),
            registry=self.registry,
        )
        self.rtp_dropped_total = Counter(
            "dce_rtp_dropped_total", "RTP/RTCP packets the relay dropped, by direction", ("direction",),
            registry=self.registry,
        )
        self.http_requests_total = Counter(
            "http_requests_total", "HTTP requests by method, route template and status",
            ("method", "route", "status"), registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "http_request_duration_seconds", "HTTP request handling time by method and route template",
            ("method", "route"), buckets=HTTP_BUCKETS, registry=self.registry,
        )
        self._violation_children: dict[str, Counter] = {}
        self._sip_children: dict[tuple[str, str], Counter] = {}
        self._drop_children: dict[str, Counter] = {}
        self._bid_children: dict[str, Counter] = {}
        self._rtp_children: dict[str, Counter] = {}
        self._rtp_drop_children: dict[str, Counter] = {}
        self._http_children: dict[tuple[str, str, int], Counter] = {}
        self._http_duration_children: dict[tuple[str, str], Histogram] = {}

    def sip_message(self, direction: Direction, method: str) -> None:
        """Count one SIP message; ``method`` is the request method, or "response"."""
        key = (direction, method)
        child = self._sip_children.get(key)
        if child is None:
            child = self._sip_children[key] = self.sip_messages_total.labels(direction, method)
        child.inc()

    def sip_dropped(self, reason: str) -> None:
        """Count one dropped SIP message (unparseable, no transaction, ...)."""
        child = self._drop_children.get(reason)
        if child is None:
            child = self._drop_children[reason] = self.sip_dropped_total.labels(reason)
        child.inc()

    def call_finished(self, status: str, buyer: str | None = "", *, talk_s: float | None = None) -> None:
        """Count one finished call; ``status`` is the CDR disposition, ``buyer`` the buyer id ("" when none).

        ``talk_s`` (answered calls: answer to hangup) is observed in ``dce_calls_duration_seconds``."""
        self.calls_total.inc(str(status), buyer or "")
        if talk_s is not None:
            self.calls_duration.observe(talk_s)

    def bid(self, status: str, count: int = 1) -> None:
        """Count bids by outcome: "won", "lost" or "rejected:<reason>"."""
        child = self._bid_children.get(status)
        if child is None:
            child = self._bid_children[status] = self.bids_total.labels(status)
        child.inc(count)

    def routing_observed(self, seconds: float) -> None:
        """Observe one routing decision's duration."""
        self.routing_duration.observe(seconds)

    def screened(self, codes: tuple[str, ...], risk: float | None) -> None:
        """Count a screened call's reason codes and observe its fraud score."""
        for code in codes:
            child = self._violation_children.get(code)
            if child is None:
                child = self._violation_children[code] = self.compliance_violations.labels(code)
            child.inc()
        if risk is not None:
            self.fraud_score.observe(risk)

    def media_sessions_from(self, count: Callable[[], float]) -> None:
        """Read ``dce_media_sessions`` from ``count()`` at scrape time (e.g. the media plane's active_sessions)."""
        self.media_sessions.set_function(count)

    def redis_links_from(self, links: Callable[[], Iterable[RedisLink]]) -> None:
        """Expose the health of the Redis-backed components ``links()`` names at each scrape."""
        RedisHealth(links, self.registry)

    def rtp_packets(self, direction: str, packets: int, dropped: int = 0) -> None:
        """Add a media session's relayed (and dropped) packets for one direction; call once per session close,
        never per packet."""
        if packets:
            child = self._rtp_children.get(direction)
            if child is None:
                child = self._rtp_children[direction] = self.rtp_packets_total.labels(direction)
            child.inc(packets)
        if dropped:
            child = self._rtp_drop_children.get(direction)
            if child is None:
                child = self._rtp_drop_children[direction] = self.rtp_dropped_total.labels(direction)
            child.inc(dropped)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request. ``route`` must be a route template (bounded set), never the raw path."""
        key = (method, route, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_requests_total.labels(method, route, str(status))
        child.inc()
        hkey = (method, route)
        duration = self._http_duration_children.get(hkey)
        if duration is None:
            duration = self._http_duration_children[hkey] = self.http_request_duration.labels(method, route)
        duration.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
