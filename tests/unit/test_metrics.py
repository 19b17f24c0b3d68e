"""ExchangeMetrics: names, labels and exposition."""

from __future__ import annotations

import logging

import pytest

from dce.billing.cdr import Disposition
from dce.http_api.metrics import MAX_BUYER_SERIES, OTHER, ExchangeMetrics, Scrapes, label_violations


def test_metrics_render_with_names_and_labels() -> None:
    metrics = ExchangeMetrics()
    metrics.sip_message("in", "INVITE")
    metrics.sip_message("in", "INVITE")
    metrics.sip_message("out", "response")
    metrics.sip_dropped("malformed")
    metrics.call_finished("answered")
    metrics.active_calls.inc()
    metrics.added_delay.observe(0.0004)
    metrics.cdr_queue.set(3)
    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'dce_sip_messages_total{direction="in",method="INVITE"} 2.0' in text
    assert 'dce_sip_messages_total{direction="out",method="response"} 1.0' in text
    assert 'dce_sip_dropped_total{reason="malformed"} 1.0' in text
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
    metrics.screened(("outside_calling_hours",), 0.1)
    metrics.http_request("GET", "/health", 200, 0.001)
    text = metrics.render()[0].decode()
    for name in (
        "dce_calls_total", "dce_calls_duration_seconds", "dce_bids_total", "dce_routing_duration_seconds",
        "dce_compliance_violations_total", "dce_fraud_score", "http_requests_total",
        "http_request_duration_seconds", "dce_media_sessions", "dce_rtp_packets_total",
    ):
        assert f"# TYPE {name} " in text, name


def _sip_method_labels(metrics: ExchangeMetrics) -> set[tuple[str, str]]:
    return {
        (sample.labels["direction"], sample.labels["method"])
        for family in metrics.registry.collect() if family.name == "dce_sip_messages"
        for sample in family.samples if sample.name == "dce_sip_messages_total"
    }


def test_unknown_sip_methods_from_the_wire_share_one_series() -> None:
    """1000 distinct unknown methods, fed through the endpoint and the exchange's observer: one "other" series."""
    from dce.exchange.service import _Observer
    from dce.sip.b2bua import B2BUA
    from dce.sip.endpoint import SipEndpoint
    from tests.unit.sipfactory import request

    metrics = ExchangeMetrics()
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)}, observer=_Observer(metrics))
    B2BUA(endpoint)
    before = len(metrics.render()[0])
    for i in range(1000):
        method = f"X{i:04d}FLOOD"
        endpoint.receive(request(method, call_id=f"flood-{i}"), "udp", ("192.0.2.10", 5060), now=float(i))
    endpoint.receive(request("OPTIONS", call_id="options-1"), "udp", ("192.0.2.10", 5060), now=1000.0)
    labels = _sip_method_labels(metrics)
    assert labels <= {("in", "other"), ("in", "OPTIONS"), ("out", "response")}, labels
    assert ("in", "other") in labels
    assert len(metrics.render()[0]) < before + 2000  # a few series more, not a thousand
    assert label_violations(metrics) == []


def test_every_label_comes_from_a_closed_set() -> None:
    """Whatever code passes in, every label of every metric stays inside its declared set (unknown -> other)."""
    metrics = ExchangeMetrics()
    for i in range(200):
        junk = f"junk-{i}\n\"{{}}"
        metrics.sip_message("in", junk)
        metrics.sip_message(junk, "INVITE")  # type: ignore[arg-type]
        metrics.sip_dropped(junk)
        metrics.call_finished(junk, talk_s=1.0)
        metrics.bid(junk)
        metrics.screened((junk,), 0.5)
        metrics.rtp_packets(junk, 3, dropped=1)
        metrics.http_request(junk, "/api/v1/campaigns/{key}", 200 + i, 0.001)
    assert label_violations(metrics) == []
    text = metrics.render()[0].decode()
    assert "junk" not in text
    assert 'dce_sip_dropped_total{reason="other"} 200.0' in text
    assert 'dce_calls_total{status="other"} 200.0' in text


def test_buyer_label_is_capped() -> None:
    metrics = ExchangeMetrics()
    for i in range(MAX_BUYER_SERIES + 50):
        metrics.call_finished("answered", f"buyer-{i}")
    buyers = {labels.get("buyer") for labels in _labels(metrics, "dce_calls_total")}
    assert len(buyers) == MAX_BUYER_SERIES + 1
    assert metrics.calls_total.value("answered", OTHER) == 50
    assert label_violations(metrics) == []


def test_label_violations_catches_an_undeclared_labelled_metric() -> None:
    """A metric added later with a label nobody declared a closed set for is reported by the check."""
    from prometheus_client import Counter

    metrics = ExchangeMetrics()
    Counter("dce_new_thing_total", "from the wire?", ("peer",), registry=metrics.registry).labels("1.2.3.4").inc()
    assert label_violations(metrics) == ["dce_new_thing_total: label 'peer' has no declared closed set"]
    fresh = ExchangeMetrics()  # an attribute of ExchangeMetrics is checked before it has any sample
    fresh.by_peer = Counter("dce_by_peer_total", "x", ("peer",), registry=fresh.registry)  # type: ignore[attr-defined]
    assert label_violations(fresh) == ["dce_by_peer_total: label 'peer' has no declared closed set"]
    assert label_violations(ExchangeMetrics()) == []


def _labels(metrics: ExchangeMetrics, sample_name: str) -> list[dict[str, str]]:
    return [s.labels for f in metrics.registry.collect() for s in f.samples if s.name == sample_name]


def test_redis_components_are_a_closed_set() -> None:
    class Link:
        def __init__(self, what: str) -> None:
            self.what, self.failures, self.failing = what, 1, False

    metrics = ExchangeMetrics()
    metrics.redis_links_from(lambda: [Link("velocity"), Link("slots"), Link("rate limits"), Link("wire junk")])
    assert label_violations(metrics) == []
    assert 'dce_redis_up{component="other"} 1.0' in metrics.render()[0].decode()


def test_scrapes_render_at_most_once_per_interval() -> None:
    metrics = ExchangeMetrics()
    now = [100.0]
    scrapes = Scrapes(metrics, max_age_s=1.0, clock=lambda: now[0])
    renders = 0
    real = metrics.render

    def counting() -> tuple[bytes, str]:
        nonlocal renders
        renders += 1
        return real()

    metrics.render = counting  # type: ignore[method-assign]
    first = scrapes.render()[0]
    metrics.call_finished("answered")
    for _ in range(500):
        assert scrapes.render()[0] == first  # a flood within the second: the same text, one render
    assert renders == 1
    now[0] += 1.0
    assert b'dce_calls_total{status="answered"} 1.0' in scrapes.render()[0]
    assert renders == 2
    assert Scrapes(metrics, max_age_s=0).render()[0] != first  # 0: every scrape renders


def test_scrapes_token() -> None:
    scrapes = Scrapes(ExchangeMetrics(), token="s3cret")
    assert scrapes.allows("Bearer s3cret")
    assert not scrapes.allows(None) and not scrapes.allows("Bearer nope") and not scrapes.allows("s3cret")
    assert Scrapes(ExchangeMetrics()).allows(None)


def test_a_finished_call_logs_one_concise_info_line(caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    from dce.billing.cdr import SaleTerms
    from dce.exchange.service import _Observer
    from tests.cdr_factory import make_cdr

    observer = _Observer(ExchangeMetrics())
    sold = replace(make_cdr(7), terms=SaleTerms(campaign_id="c1", buyer_id="b1", target_id="t-acme"))
    busy = make_cdr(8, disposition=Disposition.BUSY)
    with caplog.at_level(logging.INFO, logger="dce.exchange.service"):
        observer.call_finished(sold)
        observer.call_finished(busy)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [
        "call call-00007 from +13125550199 to +12125550100: answered 200 in 70 s, target t-acme",
        "call call-00008 from +13125550199 to +12125550100: busy 486 in 3 s, target none",
    ]
