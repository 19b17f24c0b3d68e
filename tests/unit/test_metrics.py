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


def test_calls_total_buyer_label_only_when_there_is_a_buyer() -> None:
    metrics = ExchangeMetrics()
    metrics.call_finished("answered")  # old call signature
    metrics.call_finished("answered", "acme", talk_s=42.0)
    metrics.call_finished("answered", "acme")
    metrics.call_finished("busy", None)
    text = metrics.render()[0].decode()
    assert 'dce_calls_total{status="answered"} 1.0' in text
    assert 'dce_calls_total{buyer="acme",status="answered"} 2.0' in text
    assert 'dce_calls_total{status="busy"} 1.0' in text
    assert metrics.calls_total.value("answered", "acme") == 2
    assert 'dce_calls_duration_seconds_bucket{le="30.0"} 0.0' in text
    assert 'dce_calls_duration_seconds_bucket{le="45.0"} 1.0' in text
    assert 'dce_calls_duration_seconds_bucket{le="3600.0"} 1.0' in text
    assert "dce_calls_duration_seconds_count 1.0" in text


def test_bids_routing_media_and_http_helpers() -> None:
    metrics = ExchangeMetrics()
    metrics.bid("won")
    metrics.bid("lost", 2)
    metrics.bid("rejected:late")
    metrics.bid("lost")
    metrics.routing_observed(7e-6)
    metrics.routing_observed(0.002)
    metrics.media_sessions_from(lambda: 4)
    metrics.rtp_packets("a_to_b", 1500, dropped=3)
    metrics.rtp_packets("b_to_a", 1490)
    metrics.http_request("GET", "/api/v1/campaigns/{key}", 200, 0.003)
    metrics.http_request("GET", "/api/v1/campaigns/{key}", 404, 0.001)
    text = metrics.render()[0].decode()
    assert 'dce_bids_total{status="won"} 1.0' in text
    assert 'dce_bids_total{status="lost"} 3.0' in text
    assert 'dce_bids_total{status="rejected:late"} 1.0' in text
    assert 'dce_routing_duration_seconds_bucket{le="5e-06"} 0.0' in text
    assert 'dce_routing_duration_seconds_bucket{le="1e-05"} 1.0' in text
    assert 'dce_routing_duration_seconds_bucket{le="0.01"} 2.0' in text
    assert "dce_media_sessions 4.0" in text
    assert 'dce_rtp_packets_total{direction="a_to_b"} 1500.0' in text
    assert 'dce_rtp_packets_total{direction="b_to_a"} 1490.0' in text
    assert 'dce_rtp_dropped_total{direction="a_to_b"} 3.0' in text
    assert 'http_requests_total{method="GET",route="/api/v1/campaigns/{key}",status="200"} 1.0' in text
    assert 'http_requests_total{method="GET",route="/api/v1/campaigns/{key}",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_count{method="GET",route="/api/v1/campaigns/{key}"} 2.0' in text


def test_seed_metric_names_are_all_exposed() -> None:
    metrics = ExchangeMetrics()
    metrics.call_finished("answered", "acme", talk_s=1.0)
    metrics.bid("won")
    metrics.screened(("tcpa",), 0.1)
    metrics.http_request("GET", "/health", 200, 0.001)
    text = metrics.render()[0].decode()
    for name in (
        "dce_calls_total", "dce_calls_duration_seconds", "dce_bids_total", "dce_routing_duration_seconds",
        "dce_compliance_violations_total", "dce_fraud_score", "http_requests_total",
        "http_request_duration_seconds", "dce_media_sessions", "dce_rtp_packets_total",
    ):
        assert f"# TYPE {name} " in text, name
