"""Tracing: the span tree of calls through the real CallFlow and B2BUA, the setup from config, trace ids in logs.

Spans go to the SDK's InMemorySpanExporter through a real TracerProvider.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind, StatusCode

from dce.billing.cdr import Disposition
from dce.compliance.verdict import Action, ReasonCode
from dce.exchange.config import ConfigError, TracingConfig, load_settings
from dce.exchange.tracing import Tracing, open_span, setup_tracing, sip_parent
from dce.routing.model import PlannedTarget, RoutingPlan
from tests.unit.sipfactory import SDP_A, ack_for, new_branch, request, response_to
from tests.unit.test_callflow import (
    CALLER,
    DID,
    Harness,
    PlannedRouter,
    Screened,
    finding,
    invite,
    requests_of,
    statuses,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def traced(harness: Harness, exporter: InMemorySpanExporter) -> Harness:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness.flow.tracer = provider.get_tracer("test")
    return harness


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[str]:
    """Names of the direct children of ``parent``, in start order."""
    kids = [s for s in exporter.get_finished_spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return [s.name for s in sorted(kids, key=lambda s: s.start_time)]


async def answered_after_busy(h: Harness, data: bytes | None = None) -> None:
    a_invite = data or invite()
    sent = await h.feed(a_invite)
    [first] = requests_of(sent, "INVITE")
    sent = await h.feed(response_to(first.request, 486, to_tag="b1"), addr=first.addr)
    [second] = requests_of(sent, "INVITE")
    sent = await h.feed(response_to(second.request, 200, to_tag="b2", contact="<sip:b@127.0.0.1:5081>",
                                    body=b"v=0\r\n"), addr=second.addr)
    ok = next(s for s in sent if s.addr == CALLER and s.message.__class__.__name__ == "Response")
    await h.feed(ack_for(a_invite, ok.response, branch=new_branch()))
    bye = request("BYE", "sip:10.0.0.1:5060", call_id="call-1@192.0.2.10", to_tag=ok.response.to_tag, cseq=2,
                  from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")
    await h.feed(bye)


# ------------------------------------------------------------------------------------------- call spans


async def test_an_answered_call_after_failover_is_one_trace_with_a_span_per_step_and_leg(spans):
    h = traced(Harness({DID: ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]}), spans)
    await answered_after_busy(h)
    [cdr] = h.cdrs
    named = by_name(spans)
    [root] = named["sip.call"]
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert root.attributes["dce.call_id"] == cdr.call_id
    assert root.attributes["sip.call_id"] == cdr.a_leg_call_id
    assert root.attributes["dce.did"] == DID
    assert (root.attributes["sip.status_code"], root.attributes["dce.disposition"]) == (200, "answered")
    assert root.status.status_code is StatusCode.UNSET
    assert children(spans, root) == ["routing.plan", "media.allocate", "sip.dial", "sip.dial"]
    assert named["routing.plan"][0].attributes["dce.targets"] == 2
    busy, answered = sorted(named["sip.dial"], key=lambda s: s.start_time)
    assert busy.kind is SpanKind.CLIENT
    assert dict(busy.attributes) == {"dce.target_id": "static", "dce.destination": "sip:127.0.0.1:5080",
                                     "dce.dial.attempt": 1, "sip.status_code": 486, "dce.dial.outcome": "busy"}
    assert (answered.attributes["dce.destination"], answered.attributes["dce.dial.attempt"]) == (
        "sip:127.0.0.1:5081", 2)
    assert (answered.attributes["sip.status_code"], answered.attributes["dce.dial.outcome"]) == (200, "answered")
    assert busy.end_time <= answered.start_time
    assert answered.end_time <= root.end_time
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {root.context.trace_id}


async def test_an_invite_carrying_a_traceparent_continues_that_trace(spans):
    h = traced(Harness({DID: ["sip:127.0.0.1:5080"]}), spans)
    data = request("INVITE", f"sip:{DID}@10.0.0.1", body=SDP_A, from_uri="sip:+13125550199@192.0.2.10",
                   extra=[("traceparent", TRACEPARENT), ("tracestate", "vendor=x")])
    sent = await h.feed(data)
    [leg] = requests_of(sent, "INVITE")
    await h.feed(response_to(leg.request, 486, to_tag="b"), addr=leg.addr)
    [root] = by_name(spans)["sip.call"]
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.context.trace_state.get("vendor") == "x"
    assert (root.attributes["sip.status_code"], root.attributes["dce.disposition"]) == (486, "busy")


async def test_consecutive_calls_are_separate_traces(spans, caplog):
    """A call's span must not become the parent of the next call (the eager start runs in a context of its own)."""
    caplog.set_level(logging.WARNING)
    h = traced(Harness({DID: ["sip:127.0.0.1:5080"]}), spans)
    for n in range(2):
        sent = await h.feed(request("INVITE", f"sip:{DID}@10.0.0.1", body=SDP_A, call_id=f"c{n}@192.0.2.10"))
        [leg] = requests_of(sent, "INVITE")
        await h.feed(response_to(leg.request, 486, to_tag="b"), addr=leg.addr)
    roots = by_name(spans)["sip.call"]
    assert len(roots) == 2 and all(root.parent is None for root in roots)
    assert roots[0].context.trace_id != roots[1].context.trace_id
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], "e.g. 'Failed to detach context'"


async def test_a_blocked_call_has_the_gate_span_and_no_leg(spans):
    h = traced(Screened({DID: ["sip:127.0.0.1:5080"]}, finding(Action.REJECT, ReasonCode.DNC_NATIONAL, "dnc")),
               spans)
    sent = await h.feed(invite())
    assert statuses(sent) == [100, 603]
    named = by_name(spans)
    [root] = named["sip.call"]
    assert children(spans, root) == ["routing.plan", "compliance.screen"]
    [gate] = named["compliance.screen"]
    assert gate.attributes["dce.compliance.action"] == "reject"
    assert list(gate.attributes["dce.compliance.codes"]) == ["dnc_national"]
    assert gate.attributes["dce.fraud_risk"] == 0.25
    assert (root.attributes["sip.status_code"], root.attributes["dce.disposition"]) == (603, "blocked")
    assert root.attributes["dce.reason"] == "dnc_national: dnc"


class AuctionRouter(PlannedRouter):
    def needs_auction(self, routed):
        return True

    async def auction(self, routed, call_id):
        routed.plan = RoutingPlan(routed.plan.targets[1:])  # the second target outbid the first
        return routed


async def test_a_marketplace_call_carries_its_campaign_and_an_auction_span(spans):
    plan = RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 5_000_000, 20),
                        PlannedTarget("t2", "sip:127.0.0.1:5081", 4_000_000, 20)))
    h = traced(Harness({}), spans)
    h.flow.router = AuctionRouter(plan)
    sent = await h.feed(invite())
    [leg] = requests_of(sent, "INVITE")
    assert leg.addr == ("127.0.0.1", 5081)
    await h.feed(response_to(leg.request, 503, to_tag="b"), addr=leg.addr)
    named = by_name(spans)
    [root] = named["sip.call"]
    assert children(spans, root) == ["routing.plan", "routing.auction", "media.allocate", "sip.dial"]
    assert (root.attributes["dce.campaign_id"], root.attributes["dce.publisher_id"]) == ("c1", "p1")
    assert named["routing.plan"][0].attributes["dce.targets"] == 2
    assert named["routing.auction"][0].attributes["dce.targets"] == 1
    [dial] = named["sip.dial"]
    assert (dial.attributes["dce.target_id"], dial.attributes["sip.status_code"]) == ("t2", 503)
    assert dial.status.status_code is StatusCode.ERROR
    assert root.attributes["dce.target_id"] == "t2"
    assert (root.attributes["sip.status_code"], root.status.status_code) == (503, StatusCode.ERROR)


async def test_an_exchange_error_is_recorded_on_the_call_span(spans):
    class Broken(PlannedRouter):
        def plan(self, request, now):
            raise RuntimeError("routing table on fire")

    h = traced(Harness({}), spans)
    h.flow.router = Broken(RoutingPlan(()))
    sent = await h.feed(invite())
    assert statuses(sent) == [100, 500]
    named = by_name(spans)
    [root] = named["sip.call"]
    assert root.status.status_code is StatusCode.ERROR
    assert [event.name for event in root.events] == ["exception"]
    assert "routing table on fire" in root.events[0].attributes["exception.message"]
    assert named["routing.plan"][0].status.status_code is StatusCode.ERROR  # the exception crossed it
    assert h.cdrs[0].disposition is Disposition.FAILED


async def test_without_a_tracer_the_flow_uses_the_no_op_tracer_and_records_nothing(spans):
    h = Harness({DID: ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]})
    assert isinstance(h.flow.tracer, NoOpTracer)
    await answered_after_busy(h)
    assert h.cdrs[0].disposition is Disposition.ANSWERED


def test_with_tracing_off_a_span_point_attaches_nothing():
    from opentelemetry.trace import INVALID_SPAN, get_current_span

    first = open_span(NoOpTracer(), "sip.call", context=sip_parent([("traceparent", TRACEPARENT)]))
    assert first is open_span(NoOpTracer(), "routing.plan")  # one shared do-nothing context
    with first as span:
        assert span is INVALID_SPAN and get_current_span() is INVALID_SPAN
        span.set_attribute("dce.did", DID)


def test_sip_parent_reads_traceparent_case_insensitively_and_is_empty_without_it():
    from opentelemetry.trace import get_current_span

    context = sip_parent([("Via", "x"), ("Traceparent", TRACEPARENT)])
    span_context = get_current_span(context).get_span_context()
    assert (f"{span_context.trace_id:032x}", span_context.is_remote) == (TRACE_ID, True)
    assert not get_current_span(sip_parent([("Via", "x")])).get_span_context().is_valid
    assert not get_current_span(sip_parent([("Traceparent", "garbage")])).get_span_context().is_valid


# ------------------------------------------------------------------------------------------- logs


async def test_a_call_s_log_lines_carry_its_call_id_and_its_span_s_trace_id(spans, json_log):
    plan = RoutingPlan((PlannedTarget("t1", "+12125550123", 1_000_000, 20),))  # no trunk: logs a warning
    h = traced(Harness({}), spans)
    h.flow.router = PlannedRouter(plan)
    await h.feed(invite())
    [line] = [json.loads(text) for text in json_log.getvalue().splitlines() if "no outbound trunk" in text]
    [root] = by_name(spans)["sip.call"]
    assert line["call_id"] == root.attributes["dce.call_id"]
    assert line["trace_id"] == f"{root.context.trace_id:032x}"
    assert line["span_id"] == f"{root.context.span_id:016x}"


def test_json_log_lines_carry_the_current_span_and_nothing_without_one(spans, json_log):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log = logging.getLogger("dce.test")
    with provider.get_tracer("test").start_as_current_span("work") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = (json.loads(text) for text in json_log.getvalue().splitlines())
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside


# ------------------------------------------------------------------------------------------- setup


def test_tracing_is_off_by_default_and_validated():
    config = load_settings().tracing
    assert (config.enabled, config.exporter, config.service_name, config.sample_ratio) == (False, "otlp", "dce", 1.0)
    tracing = setup_tracing(config)
    assert not tracing.enabled and isinstance(tracing.tracer("x"), NoOpTracer)
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"tracing": {"endpoint": "collector:4318"}})
    assert bad.value.key == "tracing.endpoint"
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"tracing": {"sample_ratio": 1.5}})
    assert bad.value.key == "tracing.sample_ratio"


async def test_setup_batches_spans_with_the_service_name_and_shutdown_flushes_them(spans):
    tracing = setup_tracing(TracingConfig(enabled=True, service_name="dce-test"), exporter=spans)
    with tracing.tracer("t").start_as_current_span("one"):
        pass
    assert spans.get_finished_spans() == ()  # still queued in the batch processor (5 s schedule)
    await tracing.shutdown()
    [span] = spans.get_finished_spans()
    assert span.resource.attributes["service.name"] == "dce-test"
    assert not tracing.enabled
    await tracing.shutdown()  # a second stop is harmless


async def test_sample_ratio_zero_drops_new_traces_but_follows_a_sampled_parent(spans):
    tracing = setup_tracing(TracingConfig(enabled=True, sample_ratio=0), exporter=spans)
    tracer = tracing.tracer("t")
    with tracer.start_as_current_span("new") as dropped:
        assert not dropped.is_recording()
    with tracer.start_as_current_span("continued", context=sip_parent([("traceparent", TRACEPARENT)])):
        pass
    await tracing.shutdown()
    assert [span.name for span in spans.get_finished_spans()] == ["continued"]


def test_the_console_exporter_can_be_chosen():
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    tracing = setup_tracing(TracingConfig(enabled=True, exporter="console"))
    assert isinstance(tracing, Tracing) and tracing.provider is not None
    [processor] = tracing.provider._active_span_processor._span_processors
    assert isinstance(processor, BatchSpanProcessor)
    assert isinstance(processor._batch_processor._exporter, ConsoleSpanExporter)
    tracing.provider.shutdown()



async def test_a_dead_collector_costs_the_stop_the_export_timeout_not_the_sdks_ten_seconds():
    import socket
    import time

    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{unused.getsockname()[1]}/v1/traces"
        tracing = setup_tracing(TracingConfig(enabled=True, endpoint=endpoint, export_timeout_s=0.3))
        with tracing.tracer("t").start_as_current_span("lost"):
            pass
        started = time.monotonic()
        await tracing.shutdown()
        assert time.monotonic() - started < 5.0  # the SDK's default gives up after ~7 s of retries
    assert load_settings().tracing.export_timeout_s == 2.0
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"tracing": {"export_timeout_s": 0}})
    assert bad.value.key == "tracing.export_timeout_s"
