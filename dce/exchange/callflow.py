"""The CallFlow: one call walked through every room, start to finish.

    INVITE in -> DID lookup -> plan (marketplace engine or static routes) -> compliance and fraud gate
    -> auction when targets bid -> media -> dial in order -> bridge -> teardown -> CDR

The SIP details (transactions, relaying responses, CANCEL races, BYE) live in ``dce.sip.b2bua``; this module
only decides. Each call runs as one task that reads the B2BUA's events for that call from a queue; every wait
accepts the call's terminal event (``CallEnded``/``CallCancelled``, one per call whoever ends it), and the
watchdog (``reap``) ends any task that outlives its call's longest possible life. Either way: one CDR per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

from dce.billing.cdr import CallDetailRecord, Disposition, HangupSide, SaleTerms
from dce.compliance.screen import rejected
from dce.compliance.verdict import ALLOW, Verdict
from dce.exchange.call_events import CallEvents
from dce.exchange.eager import start_eagerly
from dce.exchange.log_context import set_call_id
from dce.exchange.router import STATIC_TARGET, CallLimits, CallRequest, OutboundTrunk, Routed, Router
from dce.exchange.screening import CallGate
from dce.exchange.tracing import (
    ATTEMPT,
    AUCTION_SPAN,
    CALL_SPAN,
    CAMPAIGN_ID,
    COMPLIANCE_ACTION,
    COMPLIANCE_CODES,
    DESTINATION,
    DIAL_OUTCOME,
    DIAL_SPAN,
    DISPOSITION,
    FRAUD_RISK,
    MEDIA_SPAN,
    PLAN_SPAN,
    PUBLISHER_ID,
    REASON,
    SCREEN_SPAN,
    SIP_CALL_ID,
    SIP_METHOD,
    SIP_STATUS,
    TARGET_ID,
    TARGETS,
    open_span,
    sip_parent,
)
from dce.exchange.tracing import CALL_ID as CALL_ID_ATTR
from dce.exchange.tracing import DID as DID_ATTR
from dce.exchange.watchdog import REAPED, SHUTDOWN, LifeBounds, Watchdog, Watched
from dce.media.ports import PortsExhausted
from dce.media.relay import MediaPlane, MediaSession, MediaStats
from dce.routing.model import PlannedTarget
from dce.routing.numbers import to_e164
from dce.sip.b2bua import (
    Call,
    CallCancelled,
    CallEnded,
    CallEvent,
    CallOffered,
    DialAnswered,
    DialFailed,
    DialProgress,
)

log = logging.getLogger(__name__)


class SipCommands(Protocol):
    """The B2BUA commands the CallFlow uses, through the SIP driver (each one stamped and pumped to the wire)."""

    def reject(self, call: Call, status: int, *, reason_header: str | None = None) -> None: ...
    def dial(self, call: Call, destination: str, *, ring_timeout: float, max_duration: float | None) -> None: ...
    def hangup(self, call: Call, *, reason: str) -> None: ...
    def release(self, call: Call) -> None: ...


class CdrSink(Protocol):
    """Takes finished CDRs off the hot path (the batching writer)."""

    def submit(self, cdr: CallDetailRecord) -> None: ...


class CallObserver(Protocol):
    """Metrics hooks."""

    def call_started(self) -> None: ...
    def call_finished(self, cdr: CallDetailRecord) -> None: ...
    def call_reaped(self) -> None: ...
    def dialled(self, delay_s: float) -> None: ...
    def screened(self, verdict: Verdict) -> None: ...
    def routed(self, seconds: float) -> None: ...


# Final responses to the caller when every destination failed, by the last failure's kind.
FAILURE_RESPONSES = {
    "busy": (486, Disposition.BUSY, 'Q.850;cause=17;text="user busy"'),
    "no_answer": (480, Disposition.NO_ANSWER, 'Q.850;cause=19;text="no answer"'),
    "timeout": (408, Disposition.FAILED, 'Q.850;cause=102;text="destination timeout"'),
    "failed": (503, Disposition.FAILED, 'Q.850;cause=38;text="destination failed"'),
}


@dataclass(slots=True)
class _Outcome:
    disposition: Disposition
    final_code: int
    hangup_side: HangupSide | None = None
    reason: str | None = None


class CallFlow:
    """Decides what happens to each inbound call. One instance per exchange; one task per call."""

    def __init__(self, *, sip: SipCommands, router: Router, media: MediaPlane, cdrs: CdrSink,
                 observer: CallObserver, trunk: OutboundTrunk | None = None, gate: CallGate | None = None,
                 events: CallEvents | None = None,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 tracer: Tracer | None = None, bounds: LifeBounds | None = None) -> None:
        self.sip = sip
        self.router = router
        self.trunk = trunk or OutboundTrunk(None)
        self.media = media
        self.cdrs = cdrs
        self.observer = observer
        self.gate = gate
        self.events = events
        self.wall_clock = wall_clock
        self.tracer = tracer or NoOpTracer()  # spans are observability only: no decision reads them
        self.watchdog = Watchdog(bounds or LifeBounds())
        self._queues: dict[str, asyncio.Queue[CallEvent]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- event dispatch (called synchronously by the SIP adapter after each input) ---------------------
    def dispatch(self, event: CallEvent) -> None:
        """Route a B2BUA event to its call's task (starting the task for a new call)."""
        call = event.call
        if isinstance(event, CallOffered):
            queue: asyncio.Queue[CallEvent] = asyncio.Queue()
            self._queues[call.id] = queue
            watched = self.watchdog.watch(call.id, event.at)
            task = start_eagerly(self._run(call, queue, watched))  # route and dial inside this callback
            if task is not None:
                watched.task = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        queue = self._queues.get(call.id)  # type: ignore[assignment]
        if queue is not None:
            queue.put_nowait(event)

    async def drain(self, grace_s: float) -> int:
        """Shutdown: wait up to ``grace_s`` for every call task, then end the rest (each records its CDR).

        Returns how many had to be ended.
        """
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for watched in self.watchdog.running(pending):
            watched.end(SHUTDOWN)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    # -- the watchdog ----------------------------------------------------------------------------------
    def reap(self, now: float) -> int:
        """End every call task older than its call's longest possible life (``now``: the SIP clock).

        Such a task waits for something no path will send: a bug. It is logged with the call id, counted and
        cancelled; the cancelled task hangs up both legs and writes the CDR (failed, reason naming the watchdog).
        """
        overdue = self.watchdog.overdue(now)
        for watched in overdue:
            log.error("call %s: still running %.0f s after its INVITE, past its longest possible life "
                      "(%.0f s): the watchdog ends it", watched.call_id, now - watched.started_at,
                      watched.deadline - watched.started_at)
            self.observer.call_reaped()
            watched.end(REAPED)
        return len(overdue)

    async def run_watchdog(self, every_s: float = 5.0) -> None:
        """Reap every ``every_s`` seconds, for as long as the exchange runs."""
        while True:
            await asyncio.sleep(every_s)
            try:
                self.reap(self.sip.monotonic())
            except Exception:  # the net under the calls must outlive its own bugs
                log.exception("call watchdog failed; checking again in %.0f s", every_s)

    # -- one call --------------------------------------------------------------------------------------
    async def _run(self, call: Call, events: asyncio.Queue[CallEvent], watched: Watched) -> None:
        set_call_id(call.id)  # log lines of this call's task carry its id
        headers = tuple(call.a.request.headers)
        with open_span(
                self.tracer, CALL_SPAN, context=sip_parent(headers), kind=SpanKind.SERVER,
                attributes={CALL_ID_ATTR: call.id, SIP_CALL_ID: call.a.call_id, SIP_METHOD: "INVITE"}) as span:
            await self._handle(call, events, watched, headers, span)

    async def _handle(self, call: Call, events: asyncio.Queue[CallEvent], watched: Watched,
                      headers: tuple[tuple[str, str], ...], span: Span) -> None:
        self.observer.call_started()
        times = _Times(self, watched.started_at)
        media: MediaSession | None = None
        target: PlannedTarget | None = None
        routed: Routed | None = None
        verdict = ALLOW
        did = to_e164(call.called_user) or call.called_user
        cancelled = False
        try:
            span.set_attribute(DID_ATTR, did)
            request = CallRequest(did, call.caller_user, headers)
            with open_span(self.tracer, PLAN_SPAN) as step:
                started = time.perf_counter()
                routed = self.router.plan(request, times.invite_at)
                self.observer.routed(time.perf_counter() - started)
                _traced_plan(step, routed)
            limits = self.router.limits(routed) if routed is not None else CallLimits()  # read once per call
            if routed is not None:
                self.watchdog.planned(watched, routed.plan.targets, limits)
            if routed is not None and routed.context is not None:
                _traced_campaign(span, routed)
            if routed is not None and self.gate is not None:
                with open_span(self.tracer, SCREEN_SPAN) as step:
                    verdict = await self.gate.screen_shared(request, routed, times.invite_at.timestamp())
                    _traced_verdict(step, verdict)
                self.observer.screened(verdict)
                if verdict.suppressed_buyers and not rejected(verdict):
                    routed = self.router.without_buyers(routed, verdict.suppressed_buyers)
            campaign_terms = None  # the campaign and publisher, for the events (the same after any auction)
            if self.events is not None and routed is not None:
                campaign_terms = self.router.terms(routed, None)
                self._announce_screening(call, did, campaign_terms, verdict, times.invite_at)
            if routed is not None and not rejected(verdict) and routed.plan.targets \
                    and self.router.needs_auction(routed):
                with open_span(self.tracer, AUCTION_SPAN) as step:
                    routed = await self.router.auction(routed, call.id)
                    _traced_plan(step, routed)
            if self.events is not None and routed is not None and not rejected(verdict):
                reason = routed.refusal.reason if routed.refusal is not None else routed.plan.reason
                self.events.decided(call.id, self.wall_clock(), campaign_terms, routed.plan.targets, reason)
            if (ended := _ended_already(events)) is not None:  # the caller left (or we hung up) meanwhile
                times.end(ended.at)
                outcome = _ended(ended, answered=False)
            elif routed is None:
                self.sip.reject(call, 404, reason_header='Q.850;cause=1;text="unallocated number"')
                outcome = _Outcome(Disposition.REJECTED, 404, reason="no route for DID")
            elif rejected(verdict):
                assert self.gate is not None  # only a gate rejects
                status = self.gate.reject_status
                self.sip.reject(call, status, reason_header=self.gate.reason_header(verdict))
                outcome = _Outcome(Disposition.BLOCKED, status, HangupSide.SYSTEM, verdict.reason)
            elif routed.refusal is not None:
                refusal = routed.refusal
                self.sip.reject(call, refusal.status, reason_header=f'Q.850;cause=21;text="{_quoted(refusal.reason)}"')
                outcome = _Outcome(Disposition.REJECTED, refusal.status, HangupSide.SYSTEM, refusal.reason)
            elif not routed.plan.targets:
                reason = routed.plan.reason or "no eligible target"
                self.sip.reject(call, 480, reason_header=f'Q.850;cause=3;text="{_quoted(reason)}"')
                outcome = _Outcome(Disposition.NO_ROUTE, 480, HangupSide.SYSTEM, reason)
            else:
                with open_span(self.tracer, MEDIA_SPAN):
                    media = await self.media.allocate(call.id, on_timeout=lambda: self.sip.hangup(
                        call, reason="media timeout"))
                call.media = media
                max_duration = self.watchdog.bounds.max_duration(limits)
                outcome, target = await self._dial_in_order(call, routed, media, max_duration, events, times)
        except PortsExhausted as exc:  # or DescriptorsExhausted: the reason says which
            self.sip.reject(call, 503, reason_header=f'Q.850;cause=47;text="{exc.reason}"')
            outcome = _Outcome(Disposition.FAILED, 503, reason=exc.reason)
        except Exception as exc:  # never leave either party hanging on a bug: 500 before answer, BYE after
            log.exception("call %s failed", call.id)
            span.record_exception(exc)
            self.sip.reject(call, 500, reason_header='Q.850;cause=41;text="exchange error"')
            self.sip.hangup(call, reason="exchange error")
            outcome = _Outcome(Disposition.FAILED, 500, HangupSide.SYSTEM, f"exchange error: {exc}")
        except asyncio.CancelledError:  # the watchdog or shutdown ends a task stuck waiting: end the call too
            cancelled = watched.ended_by is None
            reason = watched.ended_by or "call task cancelled"
            self.sip.hangup(call, reason=reason)  # BYE both legs when answered, else CANCEL B and 480 A
            times.end(self.sip.monotonic())
            outcome = _Outcome(Disposition.FAILED, 200 if times.answer_at else 480, HangupSide.SYSTEM, reason)
            target = target or _held_target(routed)
        finally:
            self._queues.pop(call.id, None)
            self.watchdog.forget(call.id)
            stats = media.stats if media is not None else None
            if media is not None:
                media.close()
            if routed is not None:  # every slot this call still holds, whichever way it ended
                for held in [t for t in routed.plan.targets if t.target_id in routed.held]:
                    self.router.release(routed, held)
        self._record(call, did, target, routed, outcome, times, stats, verdict)
        self.sip.release(call)
        _traced_outcome(span, outcome, target)
        if cancelled:
            raise asyncio.CancelledError  # cancelled by someone else: recorded, and still cancelled

    def _announce_screening(self, call: Call, did: str, terms: SaleTerms | None, verdict: Verdict,
                            at: datetime) -> None:
        """Tell the listeners what the gate found and, when it let the call in, that the call is incoming."""
        assert self.events is not None
        self.events.screened(call.id, at, terms, verdict)
        if not rejected(verdict):
            self.events.incoming(call.id, at, to_e164(call.caller_user) or call.caller_user, did, terms)

    async def _dial_in_order(self, call: Call, routed: Routed, media: MediaSession, max_duration: float,
                             events: asyncio.Queue[CallEvent], times: _Times) -> tuple[_Outcome, PlannedTarget | None]:
        """Try each planned target until one answers; then wait for the call to end.

        Every wait here takes the call's terminal event, whichever way it ended (caller, callee, the exchange's
        hangup on media timeout or shutdown, the maximum call duration).
        """
        failure: DialFailed | None = None
        tried: PlannedTarget | None = None
        for target in routed.plan.targets:
            uri = self.trunk.uri_for(target.destination)
            if uri is None:
                log.warning("call %s: no outbound trunk to dial %s (target %s)", call.id, target.destination,
                            target.target_id)
                continue
            if not await self.router.acquire(routed, target, self.wall_clock()):
                continue  # its concurrency slot went to another call since the plan was made
            tried = target
            with open_span(
                    self.tracer, DIAL_SPAN, kind=SpanKind.CLIENT,
                    attributes={TARGET_ID: target.target_id, DESTINATION: uri, ATTEMPT: call.attempts + 1}) as leg:
                try:
                    self.sip.dial(call, uri, ring_timeout=target.ring_timeout_s, max_duration=max_duration)
                except ValueError as exc:  # the caller's SDP offer cannot be relayed
                    self.sip.reject(call, 488, reason_header='Q.850;cause=88;text="unreadable SDP offer"')
                    times.end(self.sip.monotonic())
                    _traced_leg(leg, 488, "bad_offer")
                    return _Outcome(Disposition.REJECTED, 488, HangupSide.SYSTEM, f"bad SDP offer: {exc}"), target
                if call.attempts == 1:
                    times.dial(self.sip.monotonic())
                    self.observer.dialled(self.sip.monotonic() - call.invite_at)
                while True:
                    event = await events.get()
                    if isinstance(event, DialProgress):
                        times.ring(event.at)
                    elif isinstance(event, DialAnswered):
                        times.answer(event.at)
                        _traced_leg(leg, 200, "answered")
                        media.answered()  # RTP inactivity counts from here, not while ringing
                        self.router.connected(routed, target, times.answer_at or self.wall_clock())
                        if self.events is not None:
                            self.events.connected(call.id, times.answer_at or self.wall_clock(),
                                                  to_e164(call.caller_user) or call.caller_user,
                                                  to_e164(call.called_user) or call.called_user,
                                                  self.router.terms(routed, target))
                        ended = await _terminal(events)
                        times.end(ended.at)
                        return _ended(ended, answered=True), target
                    elif isinstance(event, CallCancelled | CallEnded):  # before answer: the caller or the exchange
                        times.end(event.at)
                        outcome = _ended(event, answered=False)
                        _traced_leg(leg, outcome.final_code, outcome.disposition.value)
                        return outcome, target
                    elif isinstance(event, DialFailed):
                        failure = event
                        _traced_leg(leg, event.status, event.reason)
                        self.router.release(routed, target)
                        break
        if failure is None:  # no target could be dialled: slots taken meanwhile, or numbers without a trunk
            reason = "no target could be dialled (at capacity, or a number with no outbound trunk)"
            self.sip.reject(call, 480, reason_header=f'Q.850;cause=34;text="{reason}"')
            times.end(self.sip.monotonic())
            return _Outcome(Disposition.NO_ROUTE, 480, HangupSide.SYSTEM, reason), None
        status, disposition, reason_header = FAILURE_RESPONSES[failure.reason]
        if failure.reason == "failed" and 400 <= failure.status < 500:
            status = failure.status  # a definite client error from the destination is passed on as is
        self.sip.reject(call, status, reason_header=reason_header)
        times.end(failure.at)
        return _Outcome(disposition, status, HangupSide.SYSTEM,
                        f"last destination: {failure.status} {failure.reason}"), tried

    def _record(self, call: Call, did: str, target: PlannedTarget | None, routed: Routed | None,
                outcome: _Outcome, times: _Times, stats: MediaStats | None, verdict: Verdict) -> None:
        end = times.end_at or self.wall_clock()
        packets = bytes_ = 0
        if stats is not None:
            for direction in (stats.a_to_b, stats.b_to_a):
                packets += direction.rtp_packets + direction.rtcp_packets
                bytes_ += direction.rtp_bytes + direction.rtcp_bytes
        cdr = CallDetailRecord(
            call_id=call.id,
            a_leg_call_id=call.a.call_id,
            b_leg_call_id=call.b.call_id if call.b is not None else None,
            caller=to_e164(call.caller_user) or call.caller_user,
            called=to_e164(call.called_user) or call.called_user,
            did=did,
            destination=target.destination if target is not None else None,
            invite_at=times.invite_at,
            ring_at=times.ring_at,
            answer_at=times.answer_at,
            end_at=end,
            disposition=outcome.disposition,
            final_code=outcome.final_code,
            hangup_side=outcome.hangup_side,
            reason=outcome.reason,
            packets_relayed=packets,
            bytes_relayed=bytes_,
            extra={**_routing_details(target, routed), **_screening_details(verdict)},
            verstat=verdict.verstat,
            dial_at=times.dial_at,
            terms=self.router.terms(routed, target) if routed is not None else None,
        )
        self.cdrs.submit(cdr)
        self.observer.call_finished(cdr)
        if self.events is not None:
            self.events.finished(cdr)
        if routed is not None and target is not None and cdr.disposition is Disposition.ANSWERED:
            self.router.completed(routed, target, cdr.billable_s, cdr.end_at)
            if self.gate is not None:
                self.gate.completed(routed, target.target_id, cdr.billable_s, cdr.end_at.timestamp())


def _ended(event: CallEnded | CallCancelled, *, answered: bool) -> _Outcome:
    """The outcome of a call ended by its terminal event."""
    if isinstance(event, CallCancelled):
        return _Outcome(Disposition.CANCELLED, 487, HangupSide.CALLER, "caller cancelled")
    if answered:
        return _Outcome(Disposition.ANSWERED, 200, HangupSide(event.side), event.reason)
    return _Outcome(Disposition.FAILED, 480, HangupSide.SYSTEM, event.reason)  # the exchange hung up first


def _held_target(routed: Routed | None) -> PlannedTarget | None:
    """The target whose slot the call holds (the one being dialled or talked to), if any."""
    if routed is None:
        return None
    return next((t for t in routed.plan.targets if t.target_id in routed.held), None)


def _traced_plan(span: Span, routed: Routed | None) -> None:
    if routed is not None:
        span.set_attribute(TARGETS, len(routed.plan.targets))
        if not routed.plan.targets and routed.plan.reason:
            span.set_attribute(REASON, routed.plan.reason)


def _traced_campaign(span: Span, routed: Routed) -> None:
    context = routed.context
    if context is not None and context.campaign_id:
        span.set_attribute(CAMPAIGN_ID, context.campaign_id)
    if context is not None and context.publisher_id:
        span.set_attribute(PUBLISHER_ID, context.publisher_id)


def _traced_verdict(span: Span, verdict: Verdict) -> None:
    span.set_attribute(COMPLIANCE_ACTION, str(verdict.action))
    if verdict.codes:
        span.set_attribute(COMPLIANCE_CODES, [str(code) for code in verdict.codes])
    if verdict.risk is not None:
        span.set_attribute(FRAUD_RISK, verdict.risk)


def _traced_leg(span: Span, status: int | None, outcome: str) -> None:
    if status is not None:
        span.set_attribute(SIP_STATUS, status)
    span.set_attribute(DIAL_OUTCOME, outcome)
    if status is not None and status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"{status} {outcome}"))


def _traced_outcome(span: Span, outcome: _Outcome, target: PlannedTarget | None) -> None:
    """The call's result on its root span; a 5xx to the caller is an error (as for an HTTP server span)."""
    span.set_attribute(SIP_STATUS, outcome.final_code)
    span.set_attribute(DISPOSITION, outcome.disposition.value)
    if outcome.reason:
        span.set_attribute(REASON, outcome.reason)
    if target is not None and target.target_id != STATIC_TARGET:
        span.set_attribute(TARGET_ID, target.target_id)
    if outcome.final_code >= 500:
        span.set_status(Status(StatusCode.ERROR, outcome.reason))


def _routing_details(target: PlannedTarget | None, routed: Routed | None) -> dict[str, str]:
    """Marketplace ids and revenue for billing, kept on the CDR."""
    details: dict[str, str] = {}
    context = routed.context if routed is not None else None
    if context is not None:
        if context.campaign_id:
            details["campaign_id"] = context.campaign_id
        if context.publisher_id:
            details["publisher_id"] = context.publisher_id
    if target is not None and target.target_id != STATIC_TARGET:
        details["target_id"] = target.target_id
        details["revenue_micros"] = str(target.revenue)
        if target.bid_id:
            details["bid_id"] = target.bid_id
    return details


def _screening_details(verdict: Verdict) -> dict[str, str]:
    """The gate's verdict on the CDR: action and reason codes when not plainly allowed, and the fraud risk."""
    details: dict[str, str] = {}
    if verdict.findings:
        details["compliance"] = str(verdict.action)
        details["compliance_codes"] = ",".join(verdict.codes)
    if verdict.risk is not None:
        details["fraud_risk"] = f"{verdict.risk:.3f}"
    return details


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


class _Times:
    """Wall-clock times of a call's milestones, converted from the loop's monotonic event times."""

    def __init__(self, flow: CallFlow, offered_at: float) -> None:
        self._flow = flow
        self.invite_at = self._wall(offered_at)
        self.dial_at: datetime | None = None
        self.ring_at: datetime | None = None
        self.answer_at: datetime | None = None
        self.end_at: datetime | None = None

    def _wall(self, at: float) -> datetime:
        delta = self._flow.sip.monotonic() - at
        now = self._flow.wall_clock()
        return now if delta <= 0 else datetime.fromtimestamp(now.timestamp() - delta, UTC)

    def dial(self, at: float) -> None:
        if self.dial_at is None:
            self.dial_at = self._wall(at)

    def ring(self, at: float) -> None:
        if self.ring_at is None:
            self.ring_at = self._wall(at)

    def answer(self, at: float) -> None:
        self.answer_at = self._wall(at)

    def end(self, at: float) -> None:
        self.end_at = self._wall(at)


def _ended_already(events: asyncio.Queue[CallEvent]) -> CallEnded | CallCancelled | None:
    """The call's terminal event if it is already queued (before any dial, nothing else can be)."""
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, CallEnded | CallCancelled):
            return event
    return None


async def _terminal(events: asyncio.Queue[CallEvent]) -> CallEnded | CallCancelled:
    """The call's terminal event (whatever else is queued before it is spent)."""
    while True:
        event = await events.get()
        if isinstance(event, CallEnded | CallCancelled):
            return event
