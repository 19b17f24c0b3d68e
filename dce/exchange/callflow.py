"""The CallFlow: one call walked through every room, start to finish, one step after the other.

    plan     the router's plan for the DID (marketplace engine or static routes)        ``_plan``
    screen   the compliance and fraud gate's verdict; suppressed buyers leave the plan   ``_screen``
    auction  the plan re-ranked when targets bid                                         ``_auction``
    decide   pure: Gone | Reject | Dial (``dce.exchange.decision``)                      ``decide``
    act      reject; or dial the targets in order -> bridge -> wait for the end          ``_dial_in_order``
    record   exactly one CDR, whichever way the call ended                               ``_record``

The SIP details (transactions, relaying responses, CANCEL races, BYE) live in ``dce.sip.b2bua``; this module
only decides and commands. Each call runs as one task that reads the B2BUA's events for that call from a queue;
every wait accepts the call's terminal event (``CallEnded``/``CallCancelled``, one per call whoever ends it), and
the watchdog (``reap``) ends any task that outlives its call's longest possible life. Either way: one CDR per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

from dce.billing.cdr import CallDetailRecord, Disposition, HangupSide, SaleTerms
from dce.clock import Clock
from dce.compliance.screen import rejected
from dce.compliance.verdict import ALLOW, Verdict
from dce.exchange.agent_lines import AgentLines
from dce.exchange.call_events import CallEvents
from dce.exchange.decision import REFUSALS, Dial, Gone, Outcome, Reject, decide, ended, exhausted
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
from dce.media.ports import MediaUnavailable
from dce.media.relay import MediaPlane, MediaSession, MediaStats
from dce.routing.agents import AgentDirectory, agent_reference
from dce.routing.model import PlannedTarget
from dce.routing.numbers import to_e164
from dce.sip.b2bua import (
    Call,
    CallCancelled,
    CallEnded,
    CallEvent,
    CallOffered,
    CallRefused,
    DialAnswered,
    DialFailed,
    DialProgress,
    SdpNeeded,
    called_user,
    caller_user,
)
from dce.sip.digest import ALGORITHMS
from dce.sip.outbound_auth import OutboundCredentials
from dce.sip.resolver import MAX_HOPS_PER_TARGET, NextHop, ResolveError, SipResolver
from dce.sip.secret_box import SecretBox, SecretBoxError

log = logging.getLogger(__name__)


class SipCommands(Protocol):
    """The B2BUA commands the CallFlow uses, through the SIP driver (each one stamped and pumped to the wire)."""

    def reject(self, call: Call, status: int, *, reason_header: str | None = None) -> None: ...
    def dial(self, call: Call, destination: str, *, ring_timeout: float, max_duration: float | None,
             next_hop: NextHop | None = None, credentials: OutboundCredentials | None = None) -> None: ...
    def fork(self, call: Call, destinations: list[tuple[str, NextHop | None]], *, ring_timeout: float,
             max_duration: float | None) -> None: ...
    def hangup(self, call: Call, *, reason: str) -> None: ...
    def sdp_ready(self, call: Call, token: int, body: bytes) -> None: ...
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


NO_LIMITS = CallLimits()


@dataclass(slots=True)
class _CallState:
    """What one call's task has learnt so far: each step fills its part; the record reads them all."""

    call: Call
    did: str  # the called number, E.164 when it is a number
    caller: str  # the same for the caller
    request: CallRequest
    times: _Times
    routed: Routed | None = None
    limits: CallLimits = NO_LIMITS
    verdict: Verdict = ALLOW
    terms: SaleTerms | None = None  # the campaign and publisher, for the events (the same after any auction)
    media: MediaSession | None = None
    target: PlannedTarget | None = None  # the target the CDR names
    ringing: dict[str, str] | None = None  # an agent target's URIs being rung -> their agents
    agent_id: str | None = None  # the agent who answered (an agent target)


class CallFlow:
    """Decides what happens to each inbound call. One instance per exchange; one task per call.

    ``clock``: the same clock as the SIP driver's (its events' ``at`` are readings of ``clock.monotonic()``).
    """

    def __init__(self, *, sip: SipCommands, router: Router, media: MediaPlane, cdrs: CdrSink,
                 observer: CallObserver, clock: Clock, trunk: OutboundTrunk | None = None,
                 gate: CallGate | None = None, events: CallEvents | None = None,
                 tracer: Tracer | None = None, bounds: LifeBounds | None = None,
                 resolver: SipResolver | None = None, credentials_box: SecretBox | None = None,
                 agents: AgentLines | None = None) -> None:
        self.sip = sip
        self.router = router
        self.trunk = trunk or OutboundTrunk(None)
        self.media = media
        self.cdrs = cdrs
        self.observer = observer
        self.clock = clock
        self.gate = gate
        self.events = events
        self.tracer = tracer or NoOpTracer()  # spans are observability only: no decision reads them
        self.watchdog = Watchdog(bounds or LifeBounds())
        self.resolver = resolver  # RFC 3263 next hops; None: the URI's host must be an IP address
        self.credentials_box = credentials_box  # opens targets' sealed passwords
        self.agents = agents if agents is not None else AgentLines(AgentDirectory())  # agent targets: who to ring
        self._opened: dict[str, str] = {}  # sealed -> plain, so a Fernet decrypt is not paid per call
        self._queues: dict[str, asyncio.Queue[CallEvent]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- event dispatch (called by the SIP driver's pump) ---------------------
    def dispatch(self, event: CallEvent) -> None:
        """Route a B2BUA event to its call's task (starting the task for a new call)."""
        if isinstance(event, CallRefused):
            self._record_refused(event)
            return
        if isinstance(event, SdpNeeded):
            task = asyncio.ensure_future(self._rewrite_sdp(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
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
        """End every call task older than its call's longest possible life (``now``: ``clock.monotonic()``).

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

    # -- one call: plan -> screen -> auction -> decide -> act -> record ---------------------------------
    async def _run(self, call: Call, events: asyncio.Queue[CallEvent], watched: Watched) -> None:
        set_call_id(call.id)  # log lines of this call's task carry its id
        headers = tuple(call.a.request.headers)
        with open_span(
                self.tracer, CALL_SPAN, context=sip_parent(headers), kind=SpanKind.SERVER,
                attributes={CALL_ID_ATTR: call.id, SIP_CALL_ID: call.a.call_id, SIP_METHOD: "INVITE"}) as span:
            await self._handle(call, events, watched, headers, span)

    async def _handle(self, call: Call, events: asyncio.Queue[CallEvent], watched: Watched,
                      headers: tuple[tuple[str, str], ...], span: Span) -> None:
        """Walk the call, whatever ends it: a bug, a cancelled task (watchdog, shutdown); then record it once."""
        self.observer.call_started()
        did = _number(call.called_user)
        c = _CallState(call, did, _number(call.caller_user),
                       CallRequest(did, call.caller_user, headers), _Times(self.clock, watched.started_at))
        cancelled = False
        try:
            span.set_attribute(DID_ATTR, did)
            outcome = await self._walk(c, events, watched, span)
        except MediaUnavailable as exc:  # no ports, no descriptors, no media server: the reason says which
            outcome = self._reject(call, REFUSALS["no_media"].reject(exc.reason))
        except Exception as exc:  # never leave either party hanging on a bug: 500 before answer, BYE after
            log.exception("call %s failed", call.id)
            span.record_exception(exc)
            outcome = self._reject(call, REFUSALS["error"].reject(f"exchange error: {exc}"))
            self.sip.hangup(call, reason="exchange error")
        except asyncio.CancelledError:  # the watchdog or shutdown ends a task stuck waiting: end the call too
            cancelled = watched.ended_by is None
            outcome = self._end_cancelled(c, watched.ended_by or "call task cancelled")
        finally:
            self._queues.pop(call.id, None)
            self.watchdog.forget(call.id)
            stats = await self._release(c)
        self._record(c, outcome, stats)
        self.sip.release(call)
        _traced_outcome(span, outcome, c.target)
        if cancelled:
            raise asyncio.CancelledError  # cancelled by someone else: recorded, and still cancelled

    async def _walk(self, c: _CallState, events: asyncio.Queue[CallEvent], watched: Watched, span: Span) -> Outcome:
        """Plan, screen, auction, decide, act: the call's outcome."""
        routed = c.routed = self._plan(c)
        if routed is not None:
            c.limits = self.router.limits(routed)  # read once per call
            self.watchdog.planned(watched, routed.plan.targets, c.limits)
            _traced_campaign(span, routed)
            routed = c.routed = await self._screen(c, routed)
            routed = c.routed = await self._auction(c, routed)
        decision = decide(routed, c.verdict, self.gate, _ended_already(events))
        match decision:
            case Gone(event):  # the caller left (or we hung up) meanwhile
                c.times.end(event.at)
                return ended(event, answered=False)
            case Reject():
                return self._reject(c.call, decision)
            case Dial(routed):
                with open_span(self.tracer, MEDIA_SPAN):
                    c.media = await self.media.allocate(c.call.id, on_timeout=lambda: self.sip.hangup(
                        c.call, reason="media timeout"))
                c.call.media = c.media
                if c.media.deferred and c.call.a.request.body:  # the caller's offer, before any dial reads it
                    try:
                        await c.media.rewrite("a", c.call.a.request.body, offer=True)
                    except ValueError as exc:  # refused by the media server
                        return self._reject(c.call, REFUSALS["bad_offer"].reject(f"bad SDP offer: {exc}"))
                outcome, c.target = await self._dial_in_order(c, routed, c.media, events)
                return outcome

    def _plan(self, c: _CallState) -> Routed | None:
        """Step 1, plan: the router's plan for the DID (None: no source knows it)."""
        with open_span(self.tracer, PLAN_SPAN) as step:
            started = time.perf_counter()
            routed = self.router.plan(c.request, c.times.invite_at)
            self.observer.routed(time.perf_counter() - started)
            _traced_plan(step, routed)
        return routed

    async def _screen(self, c: _CallState, routed: Routed) -> Routed:
        """Step 2, screen: the gate's verdict (kept on ``c``), without the buyers whose suppression lists hold the
        caller; the listeners hear what the gate found."""
        if self.gate is not None:
            with open_span(self.tracer, SCREEN_SPAN) as step:
                c.verdict = await self.gate.screen_shared(c.request, routed, c.times.invite_at.timestamp())
                _traced_verdict(step, c.verdict)
            self.observer.screened(c.verdict)
            if c.verdict.suppressed_buyers and not rejected(c.verdict):
                routed = self.router.without_buyers(routed, c.verdict.suppressed_buyers)
        if self.events is not None:
            c.terms = self.router.terms(routed, None)
            self.events.screened(c.call.id, c.times.invite_at, c.terms, c.verdict)
            if not rejected(c.verdict):
                self.events.incoming(c.call.id, c.times.invite_at, c.caller, c.did, c.terms)
        return routed

    async def _auction(self, c: _CallState, routed: Routed) -> Routed:
        """Step 3, auction: the plan re-ranked by bids when targets bid; the listeners hear the plan."""
        if rejected(c.verdict):
            return routed
        if routed.plan.targets and self.router.needs_auction(routed):
            with open_span(self.tracer, AUCTION_SPAN) as step:
                routed = await self.router.auction(routed, c.call.id)
                _traced_plan(step, routed)
        if self.events is not None:
            reason = routed.refusal.reason if routed.refusal is not None else routed.plan.reason
            self.events.decided(c.call.id, self.clock.now(), c.terms, routed.plan.targets, reason)
        return routed

    def _reject(self, call: Call, reject: Reject) -> Outcome:
        """Act on a rejection: the final response to the caller; the outcome its CDR records."""
        self.sip.reject(call, reject.status, reason_header=reject.reason_header)
        return reject.outcome

    async def _dial_in_order(self, c: _CallState, routed: Routed, media: MediaSession,
                             events: asyncio.Queue[CallEvent]) -> tuple[Outcome, PlannedTarget | None]:
        """Step 5, dial: each planned target until one answers, then until the call ends; the outcome and the
        target the CDR names (the last one dialled)."""
        max_duration = self.watchdog.bounds.max_duration(c.limits)
        failure: DialFailed | None = None
        tried: PlannedTarget | None = None
        for target in routed.plan.targets:
            attempts = self._attempts(c, target)
            if not attempts:
                continue
            if not await self.router.acquire(routed, target, self.clock.now()):
                continue  # its concurrency slot went to another call since the plan was made
            tried = target
            rung = 0
            for wave in attempts:
                held = await self.agents.hold({agent_id for agent_id, _, _ in wave if agent_id is not None},
                                              c.call.id)
                wave = [ring for ring in wave if ring[0] is None or ring[0] in held]
                if not wave:
                    continue  # other calls took their last free lines since the hunt was ordered
                rung += 1
                if rung > 1:  # hunting on within this target: the call may live one more ring
                    self.watchdog.extend(c.call.id, target.ring_timeout_s + self.watchdog.bounds.leg_guard_s)
                c.ringing = {uri: agent_id for agent_id, uri, _ in wave if agent_id is not None}
                dests = [(uri, via) for _, uri, via in wave]
                with open_span(
                        self.tracer, DIAL_SPAN, kind=SpanKind.CLIENT,
                        attributes={TARGET_ID: target.target_id, DESTINATION: ",".join(uri for uri, _ in dests),
                                    ATTEMPT: c.call.attempts + 1}) as leg:
                    result = await self._dial(c, routed, target, dests, max_duration, media, events, leg)
                if not isinstance(result, DialFailed):
                    return result, target
                self.agents.release(c.call.id, None)  # unanswered: the agents are free again, idle times kept
                failure = result
            self.router.release(routed, target)
        reject = exhausted(failure)
        c.times.end(failure.at if failure is not None else self.clock.monotonic())
        return self._reject(c.call, reject), tried

    async def _dial(self, c: _CallState, routed: Routed, target: PlannedTarget,
                    dests: list[tuple[str, NextHop | None]], max_duration: float, media: MediaSession,
                    events: asyncio.Queue[CallEvent], leg: Span) -> Outcome | DialFailed:
        """One URI of a target (or several rung at once), each sent to its given next hop or else to where its name
        resolves: its failure, or the call's outcome when it answers or the call ends.

        Every wait takes the call's terminal event, whichever way it ended (caller, callee, the exchange's hangup on
        media timeout or shutdown, the maximum call duration).
        """
        call, times, (uri, via) = c.call, c.times, dests[0]
        if len(dests) > 1:
            hops: list[NextHop | None] | DialFailed = [None]  # the fork sends each to its own next hop
        elif via is None:
            hops = await self._next_hops(call, uri)
        else:  # a registered device: over the flow its REGISTER came by; a TCP/TLS one whose connection is gone: its
            hops = [via, None] if via[0] in ("tcp", "tls") else [via]  # Contact (a WebSocket one has no other way)
        if isinstance(hops, DialFailed):  # the name does not resolve: this target fails like an unreachable one
            _traced_leg(leg, hops.status, hops.reason)
            return hops
        credentials = self._credentials(target)
        for index, hop in enumerate(hops):
            try:
                if len(dests) > 1:
                    self.sip.fork(call, dests, ring_timeout=target.ring_timeout_s, max_duration=max_duration)
                else:
                    self.sip.dial(call, uri, ring_timeout=target.ring_timeout_s, max_duration=max_duration,
                                  next_hop=hop, credentials=credentials)
            except ValueError as exc:  # the caller's SDP offer cannot be relayed
                times.end(self.clock.monotonic())
                _traced_leg(leg, 488, "bad_offer")
                return self._reject(call, REFUSALS["bad_offer"].reject(f"bad SDP offer: {exc}"))
            if call.attempts and times.dial_at is None:  # the call's first INVITE out
                now = self.clock.monotonic()
                times.dial(now)
                self.observer.dialled(now - call.invite_at)
            while True:
                match event := await events.get():
                    case DialProgress():
                        times.ring(event.at)
                    case DialAnswered():
                        _traced_leg(leg, 200, "answered")
                        return await self._talk(c, routed, target, media, times.answer(event.at), events)
                    case CallCancelled() | CallEnded():  # before answer: the caller or the exchange
                        times.end(event.at)
                        outcome = ended(event, answered=False)
                        _traced_leg(leg, outcome.final_code, outcome.disposition.value)
                        return outcome
                    case DialFailed():
                        break
            if event.failover and index + 1 < len(hops):  # RFC 3263 §4.3: the next hop of the same name
                log.info("call %s: %s failed at %s (%d); trying its next hop", call.id, uri, hop, event.status)
                self.watchdog.extend(call.id, target.ring_timeout_s + self.watchdog.bounds.leg_guard_s)
                continue
            _traced_leg(leg, event.status, event.reason)
            return event
        raise AssertionError("unreachable: a target has at least one hop")

    def _attempts(self, c: _CallState, target: PlannedTarget) -> list[list[tuple[str | None, str, NextHop | None]]]:
        """What dialling ``target`` rings, wave after wave, each wave's (agent id or None, URI, next hop or None)
        rung at once: an agent's devices together (each where its REGISTER came from); a group's available agents
        by its strategy (ring_all: every agent's devices in one wave; round_robin, longest_idle: one agent a
        wave); else the target's own URI (a number through the outbound trunk). Empty when there is nothing to
        ring."""
        if agent_reference(target.destination) is not None:
            attempts: list[list[tuple[str | None, str, NextHop | None]]] = [
                [(ring.agent_id, contact.uri, contact.via) for ring in wave for contact in ring.contacts]
                for wave in self.agents.hunt(target.destination)]
            if not attempts:
                log.info("call %s: no available agent for %s (target %s)", c.call.id, target.destination,
                         target.target_id)
            return attempts
        uri = self.trunk.uri_for(target.destination)
        if uri is None:
            log.warning("call %s: no outbound trunk to dial %s (target %s)", c.call.id, target.destination,
                        target.target_id)
            return []
        return [[(None, uri, None)]]

    def _credentials(self, target: PlannedTarget) -> OutboundCredentials | None:
        """The target's digest credentials for the B2BUA to answer one 401/407 with (a sealed password opened
        once per seal and kept in memory; None when it cannot be opened: the challenge then fails the leg)."""
        auth = target.auth
        if auth is None:
            return None
        password = auth.password
        if password is None and auth.sealed_password is not None:
            password = self._opened.get(auth.sealed_password)
            if password is None:
                if self.credentials_box is None:
                    log.warning("target %s: its password is sealed but no secrets.target_credentials_key is set",
                                target.target_id)
                    return None
                try:
                    password = self.credentials_box.open(auth.sealed_password)
                except SecretBoxError:
                    log.warning("target %s: its sealed password does not open with this key", target.target_id)
                    return None
                if len(self._opened) >= 4096:
                    self._opened.clear()
                self._opened[auth.sealed_password] = password
        ha1 = {algorithm: value for algorithm, value in auth.ha1 if algorithm in ALGORITHMS}
        return OutboundCredentials(auth.username, password, auth.realm, ha1)  # type: ignore[arg-type]

    async def _next_hops(self, call: Call, uri: str) -> list[NextHop | None] | DialFailed:
        """Where to send the INVITE for ``uri``: the resolver's next hops (a cache hit without waiting, a miss
        looked up without blocking other calls), at most MAX_HOPS_PER_TARGET; [None] (the URI's own host) with no
        resolver; a DialFailed naming the DNS failure when the name does not resolve."""
        resolver = self.resolver
        if resolver is None:
            return [None]
        try:
            hops = resolver.cached(uri, self.clock.monotonic())
            if hops is None:
                hops = await resolver.resolve(uri)
        except ResolveError as exc:
            log.warning("call %s: cannot resolve %s: %s", call.id, uri, exc)
            return DialFailed(call, 503, "failed", self.clock.monotonic(), detail=str(exc))
        return list(hops[:MAX_HOPS_PER_TARGET]) or [None]

    async def _talk(self, c: _CallState, routed: Routed, target: PlannedTarget, media: MediaSession,
                    answered_at: datetime, events: asyncio.Queue[CallEvent]) -> Outcome:
        """The target answered: count the connect, tell the listeners, wait for the call to end."""
        media.answered()  # RTP inactivity counts from here, not while ringing
        if c.ringing:  # the agent whose device answered keeps its line; the others rung with it are free again
            answering = c.call.b.destination if c.call.b is not None else None
            c.agent_id = c.ringing.get(answering or "")
            self.agents.release(c.call.id, None, keep=c.agent_id)
        self.router.connected(routed, target, answered_at)
        if self.events is not None:
            self.events.connected(c.call.id, answered_at, c.caller, c.did, self.router.terms(routed, target))
        event = await _terminal(events)
        c.times.end(event.at)
        return ended(event, answered=True)

    def _end_cancelled(self, c: _CallState, reason: str) -> Outcome:
        """The task was cancelled (watchdog, shutdown, or from outside): end the call with it."""
        self.sip.hangup(c.call, reason=reason)  # BYE both legs when answered, else CANCEL B and 480 A
        c.times.end(self.clock.monotonic())
        c.target = c.target or _held_target(c.routed)
        return Outcome(Disposition.FAILED, 200 if c.times.answer_at else 480, HangupSide.SYSTEM, reason)

    async def _rewrite_sdp(self, event: SdpNeeded) -> None:
        """A body the B2BUA holds for a deferred media session (rtpengine): rewrite it and hand it back. When the
        media plane fails, the message goes on unrewritten and the call is hung up."""
        call = event.call
        session: MediaSession = call.media  # type: ignore[assignment]
        try:
            body = await session.rewrite(event.side, event.body, offer=event.offer)
        except Exception as exc:  # refused, unavailable, or a bug: the call must not hang on a held message
            log.warning("call %s: media plane failed on an SDP %s from %s: %r", call.id,
                        "offer" if event.offer else "answer", event.side, exc)
            self.sip.sdp_ready(call, event.token, event.body)
            self.sip.hangup(call, reason="media unavailable")
            return
        self.sip.sdp_ready(call, event.token, body)

    async def _release(self, c: _CallState) -> MediaStats | None:
        """Give back what the call holds, whichever way it ended: its media session and every slot; the media's
        counts."""
        self.agents.release(c.call.id, self.clock.monotonic() if c.times.answer_at is not None else None)
        stats = await c.media.finish() if c.media is not None else None
        if c.routed is not None:
            for held in [t for t in c.routed.plan.targets if t.target_id in c.routed.held]:
                self.router.release(c.routed, held)
        return stats

    def _record_refused(self, refused: CallRefused) -> None:
        """A ``rejected`` CDR for an INVITE refused at admission (no call task): it names the source and trunk."""
        request = refused.request
        did = _number(called_user(request))
        at = self.clock.wall(refused.at)
        extra = {"source": refused.source, "transport": refused.transport}
        cdr = CallDetailRecord(
            call_id=refused.id, a_leg_call_id=request.call_id, b_leg_call_id=None,
            caller=_number(caller_user(request)), called=did, did=did, destination=None,
            invite_at=at, end_at=at, disposition=Disposition.REJECTED, final_code=refused.status,
            hangup_side=HangupSide.SYSTEM, reason=f"{refused.reason} ({refused.source})", extra=extra,
            trunk=refused.trunk)
        self.observer.call_started()
        self._publish(cdr)

    def _publish(self, cdr: CallDetailRecord) -> None:
        """The call's one CDR: to the writer, the metrics and the live event feed."""
        self.cdrs.submit(cdr)
        self.observer.call_finished(cdr)
        if self.events is not None:
            self.events.finished(cdr)

    # -- step 6, record: exactly one CDR per call ------------------------------------------------------
    def _record(self, c: _CallState, outcome: Outcome, stats: MediaStats | None) -> None:
        call, times, target, routed, verdict = c.call, c.times, c.target, c.routed, c.verdict
        end = times.end_at or self.clock.now()
        packets = bytes_ = 0
        if stats is not None:
            for direction in (stats.a_to_b, stats.b_to_a):
                packets += direction.rtp_packets + direction.rtcp_packets
                bytes_ += direction.rtp_bytes + direction.rtcp_bytes
        cdr = CallDetailRecord(
            call_id=call.id,
            a_leg_call_id=call.a.call_id,
            b_leg_call_id=call.b.call_id if call.b is not None else None,
            caller=c.caller,
            called=c.did,
            did=c.did,
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
            extra={**_routing_details(target, routed), **_screening_details(verdict),
                   **({"agent_id": c.agent_id} if c.agent_id else {})},
            trunk=call.trunk,
            verstat=verdict.verstat,
            dial_at=times.dial_at,
            terms=self.router.terms(routed, target) if routed is not None else None,
        )
        self._publish(cdr)
        if routed is not None and target is not None and cdr.disposition is Disposition.ANSWERED:
            self.router.completed(routed, target, cdr.billable_s, cdr.end_at)
            if self.gate is not None:
                self.gate.completed(routed, target.target_id, cdr.billable_s, cdr.end_at.timestamp())


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


def _traced_outcome(span: Span, outcome: Outcome, target: PlannedTarget | None) -> None:
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


class _Times:
    """Wall-clock times of a call's milestones, from the clock's monotonic readings its events carry."""

    def __init__(self, clock: Clock, offered_at: float) -> None:
        self._wall = clock.wall
        self.invite_at = clock.wall(offered_at)
        self.dial_at: datetime | None = None
        self.ring_at: datetime | None = None
        self.answer_at: datetime | None = None
        self.end_at: datetime | None = None

    def dial(self, at: float) -> None:
        if self.dial_at is None:
            self.dial_at = self._wall(at)

    def ring(self, at: float) -> None:
        if self.ring_at is None:
            self.ring_at = self._wall(at)

    def answer(self, at: float) -> datetime:
        self.answer_at = self._wall(at)
        return self.answer_at

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


def _number(user: str) -> str:
    """A number as the records keep it: E.164 when it reads as one, else as sent."""
    return to_e164(user) or user
