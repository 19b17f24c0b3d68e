"""Prometheus metrics for the exchange, in a registry of their own.

Names follow the seed brief: ``dce_calls_total{status,buyer}``, ``dce_calls_duration_seconds``,
``dce_bids_total{status}``, ``dce_routing_duration_seconds``, ``dce_compliance_violations_total{type}``,
``dce_fraud_score`` and ``http_requests_total{method,route,status}``; plus the SIP and media metrics
(``dce_sip_*``, ``dce_active_calls``, ``dce_exchange_added_delay_seconds``, ``dce_media_sessions``,
``dce_rtp_packets_total``) and, with Redis configured, ``dce_redis_up{component}`` and
``dce_redis_failures_total{component}``.

Every label value comes from a closed set declared here (:data:`SIP_METHODS`, :data:`SIP_DROP_REASONS`, the
dispositions, bid outcomes and compliance reason codes of the domain enums, ...): a value outside its set is
counted as ``other``, so nothing a caller sends (an unknown SIP method, a junk header) can mint a series. Two
labels are bounded otherwise: ``route`` is a route template of the side API's route table (never the raw path)
and ``buyer`` holds at most :data:`MAX_BUYER_SERIES` buyer ids (ids come from the marketplace API; later ones
count as ``other``). :func:`label_violations` checks a registry against these rules (the tests run it), and a
new labelled metric must declare its sets in :attr:`ExchangeMetrics.label_sets` or the check reports it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dce.bidding.bids import Outcome, RejectReason
from dce.billing.cdr import Disposition
from dce.compliance.verdict import ReasonCode

Direction = Literal["in", "out"]

OTHER = "other"  # the label value of anything outside its closed set
SIP_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO",
    "REFER", "MESSAGE", "UPDATE", "response",
})  # RFC 3261 and its extensions' methods, and "response"
SIP_DIRECTIONS = frozenset({"in", "out"})
SIP_DROP_REASONS = frozenset({
    "too_large", "malformed", "malformed_answered", "core_exception", "tcp_connect_failed", "tcp_garbage",
    "unresolvable_destination", "source_call_limit", "send_failed", "tcp_limit", "tcp_slow_message", "tcp_idle",
    "tcp_not_reading", "flood_banned", "scanner", "tls_connect_failed", "tls_handshake_failed", "keepalive_timeout",
    "no_listener_for_transport", "ws_limit", "ws_first_message_timeout", "ws_idle", "ws_not_reading",
})  # add a new drop reason here, or it is counted as "other"
SIP_BAN_REASONS = frozenset({"flood", "scanner", "strikes"})  # dce.sip.flood.BAN_REASONS
CALL_STATUSES = frozenset(d.value for d in Disposition)
BID_STATUSES = frozenset({*(o.value for o in Outcome), *(f"{Outcome.REJECTED}:{r}" for r in RejectReason)})
VIOLATION_TYPES = frozenset(c.value for c in ReasonCode)
RTP_DIRECTIONS = frozenset({"a_to_b", "b_to_a"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_STATUSES = frozenset(str(code) for code in range(100, 600))
TRUNK_OUTCOMES = frozenset({"admitted", "challenged", "refused", "limited"})  # dce.sip.admission.Outcome
REGISTRATION_OUTCOMES = frozenset({"registered", "unregistered", "queried", "challenged", "refused", "invalid",
                                   "too_brief", "out_of_order", "too_many"})  # dce.sip.registrar.OUTCOMES
MAX_BUYER_SERIES = 1000  # distinct buyer ids on dce_calls_total; later ones count as buyer="other"


def closed(value: str, allowed: frozenset[str]) -> str:
    """``value`` when it is in ``allowed``, else :data:`OTHER`."""
    return value if value in allowed else OTHER


class Bounded:
    """A label bounded by something other than a fixed set: the route table (``route``), a cap (``buyer``)."""

    def __init__(self, why: str, cap: int | None = None) -> None:
        self.why = why
        self.cap = cap


LabelSet = frozenset[str] | Bounded

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
        self._buyers: set[str] = set()
        if registry is not None:
            registry.register(self)

    def inc(self, status: str, buyer: str = "", amount: float = 1.0) -> None:
        key = (closed(status, CALL_STATUSES), self._buyer(buyer))
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def _buyer(self, buyer: str) -> str:
        """``buyer``, or :data:`OTHER` once :data:`MAX_BUYER_SERIES` distinct buyers have a series."""
        if not buyer or buyer in self._buyers:
            return buyer
        if len(self._buyers) >= MAX_BUYER_SERIES:
            return OTHER
        self._buyers.add(buyer)
        return buyer

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


REDIS_COMPONENTS = frozenset({"velocity", "slots", "rate limits"})  # RedisGuard.what of each Redis user


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
            component = closed(link.what, REDIS_COMPONENTS)
            up.add_sample("dce_redis_up", {"component": component}, 0.0 if link.failing else 1.0)
            failures.add_sample("dce_redis_failures_total", {"component": component}, float(link.failures))
        yield up
        yield failures


class FloodState(Protocol):
    """What the flood metrics read off the SIP edge's guard (``dce.sip.flood.FloodGuard``)."""

    bans_total: dict[str, int]

    @property
    def banned(self) -> int: ...


class FloodBans(Collector):
    """``dce_sip_bans_total{reason}`` (sources banned: flood, scanner, strikes) and ``dce_sip_banned_sources``
    (banned now), read off the guard at scrape time: nothing is counted on the message path."""

    def __init__(self, guard: FloodState, registry: CollectorRegistry) -> None:
        self._guard = guard
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        bans = Metric("dce_sip_bans", "SIP sources banned at the edge, by reason", "counter")
        for reason, count in sorted(self._guard.bans_total.items()):
            bans.add_sample("dce_sip_bans_total", {"reason": closed(reason, SIP_BAN_REASONS)}, float(count))
        banned = Metric("dce_sip_banned_sources", "SIP sources banned now (their messages are dropped unread)",
                        "gauge")
        banned.add_sample("dce_sip_banned_sources", {}, float(self._guard.banned))
        yield bans
        yield banned


class _Children:
    """Label children of one metric, each label value mapped into its closed set first. Only children whose values
    were all in their sets are cached under the raw values, so unknown values cannot grow the cache either."""

    def __init__(self, metric: Counter | Histogram, sets: tuple[frozenset[str] | None, ...]) -> None:
        self._metric = metric
        self._sets = sets
        self._cache: dict[tuple[str, ...], Counter | Histogram] = {}

    def get(self, *values: str) -> Counter | Histogram:
        child = self._cache.get(values)
        if child is not None:
            return child
        labels = tuple(v if allowed is None else closed(v, allowed) for v, allowed in zip(values, self._sets,
                                                                                           strict=True))
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(*labels)
        return child


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
            "SIP messages received (in) and sent (out), by request method ('other' when unknown) or 'response'",
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
        self.trunk_calls_total = Counter(
            "dce_trunk_calls_total", "New INVITEs at admission by inbound trunk and outcome (admitted, challenged, "
            "refused, limited); sources no trunk matches count as trunk=\"unknown\"", ("trunk", "outcome"),
            registry=self.registry,
        )
        self._trunk_calls = _Children(self.trunk_calls_total, (None, TRUNK_OUTCOMES))
        self.registrations_total = Counter(
            "dce_registrations_total", "REGISTER requests of agents' devices by outcome", ("outcome",),
            registry=self.registry,
        )
        self._registrations = _Children(self.registrations_total, (REGISTRATION_OUTCOMES,))
        self.registered_bindings = Gauge("dce_registered_bindings", "Agents' device bindings held by the registrar",
                                         registry=self.registry)
        self._sip = _Children(self.sip_messages_total, (SIP_DIRECTIONS, SIP_METHODS))
        self._drops = _Children(self.sip_dropped_total, (SIP_DROP_REASONS,))
        self._bids = _Children(self.bids_total, (BID_STATUSES,))
        self._violations = _Children(self.compliance_violations, (VIOLATION_TYPES,))
        self._rtp = _Children(self.rtp_packets_total, (RTP_DIRECTIONS,))
        self._rtp_drops = _Children(self.rtp_dropped_total, (RTP_DIRECTIONS,))
        self._http = _Children(self.http_requests_total, (HTTP_METHODS, None, HTTP_STATUSES))
        self._http_duration = _Children(self.http_request_duration, (HTTP_METHODS, None))
        routes = Bounded("route templates of the side API's route table (http_metrics.route_template)")
        self.label_sets: dict[str, Mapping[str, LabelSet]] = {
            "dce_calls_total": {"status": CALL_STATUSES, "buyer": Bounded("marketplace buyer ids", MAX_BUYER_SERIES)},
            "dce_bids_total": {"status": BID_STATUSES},
            "dce_sip_messages_total": {"direction": SIP_DIRECTIONS, "method": SIP_METHODS},
            "dce_sip_dropped_total": {"reason": SIP_DROP_REASONS},
            "dce_compliance_violations_total": {"type": VIOLATION_TYPES},
            "dce_rtp_packets_total": {"direction": RTP_DIRECTIONS},
            "dce_rtp_dropped_total": {"direction": RTP_DIRECTIONS},
            "http_requests_total": {"method": HTTP_METHODS, "route": routes, "status": HTTP_STATUSES},
            "http_request_duration_seconds": {"method": HTTP_METHODS, "route": routes},
            "dce_redis_up": {"component": REDIS_COMPONENTS},
            "dce_trunk_calls_total": {"trunk": Bounded("inbound trunk names (sip.trunks, the trunks table) or "
                                                       "'unknown'; never a source address"),
                                      "outcome": TRUNK_OUTCOMES},
            "dce_registrations_total": {"outcome": REGISTRATION_OUTCOMES},
            "dce_redis_failures_total": {"component": REDIS_COMPONENTS},
            "dce_sip_bans_total": {"reason": SIP_BAN_REASONS},
        }

    def sip_message(self, direction: Direction, method: str) -> None:
        """Count one SIP message; ``method`` is the request method (unknown ones count as "other"), or "response"."""
        self._sip.get(direction, method).inc()

    def trunk_call(self, trunk: str, outcome: str) -> None:
        """Count one admission decision: ``trunk`` is a trunk's name or "unknown", ``outcome`` one of
        :data:`TRUNK_OUTCOMES`."""
        self._trunk_calls.get(trunk, outcome).inc()

    def registration(self, outcome: str) -> None:
        """Count one REGISTER's outcome (one of :data:`REGISTRATION_OUTCOMES`)."""
        self._registrations.get(outcome).inc()

    def sip_dropped(self, reason: str) -> None:
        """Count one dropped SIP message (one of :data:`SIP_DROP_REASONS`)."""
        self._drops.get(reason).inc()

    def call_finished(self, status: str, buyer: str | None = "", *, talk_s: float | None = None) -> None:
        """Count one finished call; ``status`` is the CDR disposition, ``buyer`` the buyer id ("" when none).

        ``talk_s`` (answered calls: answer to hangup) is observed in ``dce_calls_duration_seconds``."""
        self.calls_total.inc(str(status), buyer or "")
        if talk_s is not None:
            self.calls_duration.observe(talk_s)

    def bid(self, status: str, count: int = 1) -> None:
        """Count bids by outcome: "won", "lost" or "rejected:<reason>"."""
        self._bids.get(status).inc(count)

    def routing_observed(self, seconds: float) -> None:
        """Observe one routing decision's duration."""
        self.routing_duration.observe(seconds)

    def screened(self, codes: tuple[str, ...], risk: float | None) -> None:
        """Count a screened call's reason codes and observe its fraud score."""
        for code in codes:
            self._violations.get(code).inc()
        if risk is not None:
            self.fraud_score.observe(risk)

    def media_sessions_from(self, count: Callable[[], float]) -> None:
        """Read ``dce_media_sessions`` from ``count()`` at scrape time (e.g. the media plane's active_sessions)."""
        self.media_sessions.set_function(count)

    def flood_from(self, guard: FloodState | None) -> None:
        """Expose the SIP edge's bans (``dce_sip_bans_total``, ``dce_sip_banned_sources``); None: flood limits
        are off, nothing to expose."""
        if guard is not None:
            FloodBans(guard, self.registry)

    def redis_links_from(self, links: Callable[[], Iterable[RedisLink]]) -> None:
        """Expose the health of the Redis-backed components ``links()`` names at each scrape."""
        RedisHealth(links, self.registry)

    def rtp_packets(self, direction: str, packets: int, dropped: int = 0) -> None:
        """Add a media session's relayed (and dropped) packets for one direction; call once per session close,
        never per packet."""
        if packets:
            self._rtp.get(direction).inc(packets)
        if dropped:
            self._rtp_drops.get(direction).inc(dropped)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request. ``route`` must be a route template (bounded set), never the raw path."""
        self._http.get(method, route, str(status)).inc()
        self._http_duration.get(method, route).observe(seconds)  # type: ignore[union-attr]

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Scrapes:
    """``/metrics`` made cheap and optionally private.

    The exposition is rendered at most once per ``max_age_s`` (0: every scrape): rendering runs on the event loop
    that also carries SIP, so a flood of scrapes costs one render per interval, and concurrent scrapes share it
    (rendering is synchronous: the first renders, the rest find it fresh). With a ``token``, a scrape must send
    ``Authorization: Bearer <token>`` (Prometheus: ``authorization: {credentials: ...}``)."""

    def __init__(self, metrics: ExchangeMetrics, *, max_age_s: float = 1.0, token: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.max_age_s = max_age_s
        self._expected = f"Bearer {token}".encode() if token else None
        self._clock = clock
        self._rendered: tuple[bytes, str] | None = None
        self._at = 0.0

    def allows(self, authorization: str | None) -> bool:
        """Whether a scrape with this ``Authorization`` header may read the metrics."""
        if self._expected is None:
            return True
        return authorization is not None and hmac.compare_digest(authorization.encode(), self._expected)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, at most ``max_age_s`` old."""
        now = self._clock()
        if self._rendered is None or now - self._at >= self.max_age_s:
            self._rendered, self._at = self.metrics.render(), now
        return self._rendered


def label_violations(metrics: ExchangeMetrics, routes: Iterable[str] | None = None) -> list[str]:
    """Every label of ``metrics``' registry that breaks the closed-set rule, as text (empty: all bounded).

    A labelled sample whose metric declares no set for that label is a violation (a new label must say where its
    values come from); ``routes``, when given, is the closed set of ``route`` values (the app's templates)."""
    problems: list[str] = []
    for metric in vars(metrics).values():  # declared before any sample exists, not only once one does
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            name = f"{metric._name}_total" if metric._type == "counter" else metric._name
            for label in metric._labelnames:
                if label not in metrics.label_sets.get(name, {}):
                    problems.append(f"{name}: label {label!r} has no declared closed set")
    seen: dict[tuple[str, str], set[str]] = {}
    route_set = None if routes is None else frozenset(routes)
    for family in metrics.registry.collect():
        for sample in family.samples:
            name = f"{family.name}_total" if family.type == "counter" else family.name
            declared = metrics.label_sets.get(name, {})
            for label, value in sample.labels.items():
                if label == "le":
                    continue
                allowed = declared.get(label)
                if allowed is None:
                    problem = f"{name}: label {label!r} has no declared closed set"
                elif isinstance(allowed, Bounded):
                    seen.setdefault((name, label), set()).add(value)
                    if label == "route" and route_set is not None and value not in route_set:
                        problem = f"{name}: route {value!r} is not a route template"
                    else:
                        continue
                elif value in allowed or value == OTHER:
                    continue
                else:
                    problem = f"{name}: {label}={value!r} is outside its closed set"
                if problem not in problems:
                    problems.append(problem)
    for (name, label), values in seen.items():
        cap = metrics.label_sets[name][label]
        if isinstance(cap, Bounded) and cap.cap is not None and len(values) > cap.cap + 1:
            problems.append(f"{name}: {len(values)} values of {label!r}, more than its cap {cap.cap}")
    return problems
