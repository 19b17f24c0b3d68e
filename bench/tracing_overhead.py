"""What tracing costs a call: the CallFlow's span points with tracing off (the API's no-op tracer) and on (SDK).

Two figures each way, best of ``--rounds`` (perf_counter over a batch):
- ``points``: the span points of one dialled call in isolation, as the CallFlow makes them (reading the INVITE's
  headers for a traceparent, the ``sip.call`` root, plan, media, one dial leg, their attributes);
- ``call``: a whole call through the real CallFlow and sans-IO B2BUA on a virtual clock (INVITE in, plan, media,
  INVITE out, 486 back, CDR), the harness of ``tests/unit/test_callflow.py``.

"On" uses a TracerProvider with a BatchSpanProcessor feeding an exporter that drops the spans (the export runs
on the processor's thread, as in ``dce serve``; its cost to the event loop is the span work and the queue append);
"sampled out" is on with ``sample_ratio: 0`` (spans are created but not recorded).

    .venv/bin/python bench/tracing_overhead.py [--calls 5000] [--rounds 5]

Last line: ``off_points_us=... on_points_us=... unsampled_points_us=... off_call_us=... on_call_us=...
off_share_pct=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.exchange import tracing as t
from tests.unit.sipfactory import SDP_A, request, response_to
from tests.unit.test_callflow import DID, Harness, requests_of

HEADERS = tuple((name, "x") for name in (
    "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Type", "Content-Length"))


class Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def span_points(tracer: Tracer) -> None:
    """The CallFlow's span points for one call dialled to one target."""
    attributes = {t.CALL_ID: "c1", t.SIP_CALL_ID: "a@b", t.SIP_METHOD: "INVITE"}
    with t.open_span(tracer, t.CALL_SPAN, context=t.sip_parent(HEADERS), kind=SpanKind.SERVER,
                                      attributes=attributes) as root:
        root.set_attribute(t.DID, DID)
        with t.open_span(tracer, t.PLAN_SPAN) as step:
            step.set_attribute(t.TARGETS, 1)
        with t.open_span(tracer, t.MEDIA_SPAN):
            pass
        with t.open_span(tracer, t.DIAL_SPAN, kind=SpanKind.CLIENT, attributes={
                t.TARGET_ID: "t1", t.DESTINATION: "sip:127.0.0.1:5080", t.ATTEMPT: 1}) as leg:
            leg.set_attribute(t.SIP_STATUS, 486)
            leg.set_attribute(t.DIAL_OUTCOME, "busy")
        root.set_attribute(t.SIP_STATUS, 486)
        root.set_attribute(t.DISPOSITION, "busy")
        root.set_attribute(t.REASON, "last destination: 486 busy")


def time_points(tracer: Tracer, calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            span_points(tracer)
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


async def time_calls(tracer: Tracer | None, calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        h = Harness({DID: ["sip:127.0.0.1:5080"]})
        h.flow.tracer = tracer or NoOpTracer()
        started = time.perf_counter()
        for n in range(calls):
            sent = await h.feed(request("INVITE", f"sip:{DID}@10.0.0.1", body=SDP_A, call_id=f"c{n}@192.0.2.10"))
            [leg] = requests_of(sent, "INVITE")
            await h.feed(response_to(leg.request, 486, to_tag="b"), addr=leg.addr)
        best = min(best, (time.perf_counter() - started) / calls)
        assert len(h.cdrs) == calls
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=100_000))
    on = provider.get_tracer("bench")
    off = NoOpTracer()
    unsampled = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0))).get_tracer("bench")
    off_points = time_points(off, args.calls, args.rounds)
    on_points = time_points(on, args.calls, args.rounds)
    unsampled_points = time_points(unsampled, args.calls, args.rounds)
    off_call = asyncio.run(time_calls(off, args.calls // 5, args.rounds))
    on_call = asyncio.run(time_calls(on, args.calls // 5, args.rounds))
    provider.shutdown()
    print(f"span points of one call: off {off_points:.2f} us, on {on_points:.2f} us, "
          f"sampled out {unsampled_points:.2f} us")
    print(f"one call through CallFlow + B2BUA: off {off_call:.1f} us, on {on_call:.1f} us")
    print(f"off_points_us={off_points:.2f} on_points_us={on_points:.2f} unsampled_points_us={unsampled_points:.2f} "
          f"off_call_us={off_call:.1f} "
          f"on_call_us={on_call:.1f} off_share_pct={100 * off_points / off_call:.2f}")


if __name__ == "__main__":
    main()
