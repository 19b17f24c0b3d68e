"""Prometheus metrics for the exchange, in a registry of their own."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

Direction = Literal["in", "out"]

# The exchange should add well under a millisecond between INVITE in and INVITE out: resolve that finely.
ADDED_DELAY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class ExchangeMetrics:
    """The exchange's metrics. Observation helpers cache label children: cheap on the SIP hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_total = Counter(
            "dce_calls_total", "Finished calls by disposition", ("status",), registry=self.registry
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
        self._violation_children: dict[str, Counter] = {}
        self._sip_children: dict[tuple[str, str], Counter] = {}
        self._call_children: dict[str, Counter] = {}
        self._drop_children: dict[str, Counter] = {}

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

    def call_finished(self, status: str) -> None:
        """Count one finished call; ``status`` is the CDR disposition."""
        child = self._call_children.get(status)
        if child is None:
            child = self._call_children[status] = self.calls_total.labels(str(status))
        child.inc()

    def screened(self, codes: tuple[str, ...], risk: float | None) -> None:
        """Count a screened call's reason codes and observe its fraud score."""
        for code in codes:
            child = self._violation_children.get(code)
            if child is None:
                child = self._violation_children[code] = self.compliance_violations.labels(code)
            child.inc()
        if risk is not None:
            self.fraud_score.observe(risk)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
