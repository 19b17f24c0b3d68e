"""ExchangeMetrics: names, labels and exposition."""

from __future__ import annotations

from dce.http_api.metrics import ExchangeMetrics


def test_metrics_render_with_names_and_labels() -> None:
    metrics = ExchangeMetrics()
    metrics.sip_message("in", "INVITE")
    metrics.sip_message("in", "INVITE")
    metrics.sip_message("out", "response")
    metrics.sip_dropped("unparseable")
    metrics.call_finished("answered")
    metrics.active_calls.inc()
    metrics.added_delay.observe(0.0004)
    metrics.cdr_queue.set(3)
    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'dce_sip_messages_total{direction="in",method="INVITE"} 2.0' in text
    assert 'dce_sip_messages_total{direction="out",method="response"} 1.0' in text
    assert 'dce_sip_dropped_total{reason="unparseable"} 1.0' in text
    assert 'dce_calls_total{status="answered"} 1.0' in text
    assert "dce_active_calls 1.0" in text
    assert 'dce_exchange_added_delay_seconds_bucket{le="0.0005"} 1.0' in text
    assert "dce_cdr_queue_depth 3.0" in text


def test_registries_are_independent() -> None:
    first, second = ExchangeMetrics(), ExchangeMetrics()
    first.call_finished("busy")
    assert b'dce_calls_total{status="busy"}' not in second.render()[0]
