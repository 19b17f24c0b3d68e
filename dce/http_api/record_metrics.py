"""Metrics of the record writers (CDRs, bids), read off the writers at each scrape.

- ``dce_records_dead_lettered_total{kind}``: records set aside in the dead-letter table (alert on any increase);
- ``dce_records_spilled_total{kind}``: records spilled to the durable spool because the memory queue was full;
- ``dce_records_pending{kind}``: records in memory not yet written;
- ``dce_records_stalled_seconds{kind}``: how long records have waited with none written (0 when none wait);
- ``dce_record_writer_stalled{kind}``: 1 while that is ``stall_after_s`` or more (readiness is false then).

``kind`` is the writer's own name ("cdr", "bid"): a closed set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


class RecordWriterCollector(Collector):
    """Exposes ``writers`` (objects with ``kind``, ``dead_lettered``, ``spilled``, ``pending``, ``stalled_s``)."""

    def __init__(self, writers: Sequence[Any], stall_after_s: float) -> None:
        self._writers = writers
        self._stall_after_s = stall_after_s

    def collect(self) -> Iterator[Metric]:
        dead = CounterMetricFamily("dce_records_dead_lettered", "Records set aside in the dead-letter table",
                                   labels=["kind"])
        spilled = CounterMetricFamily("dce_records_spilled", "Records spilled to the spool (memory queue full)",
                                      labels=["kind"])
        pending = GaugeMetricFamily("dce_records_pending", "Records in memory not yet written", labels=["kind"])
        waited = GaugeMetricFamily("dce_records_stalled_seconds",
                                   "Seconds records have waited with none written (0: none wait)", labels=["kind"])
        stalled = GaugeMetricFamily("dce_record_writer_stalled",
                                    "1 while records are not being written (readiness is false)", labels=["kind"])
        for writer in self._writers:
            kind = [writer.kind]
            seconds = writer.stalled_s
            dead.add_metric(kind, writer.dead_lettered)
            spilled.add_metric(kind, writer.spilled)
            pending.add_metric(kind, writer.pending)
            waited.add_metric(kind, seconds)
            stalled.add_metric(kind, 1.0 if seconds >= self._stall_after_s else 0.0)
        yield from (dead, spilled, pending, waited, stalled)


def register(registry: CollectorRegistry, writers: Sequence[Any], stall_after_s: float) -> None:
    """Expose ``writers`` on ``registry``."""
    registry.register(RecordWriterCollector(writers, stall_after_s))
