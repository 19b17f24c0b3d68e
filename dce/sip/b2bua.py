"""The B2BUA core (sans-IO): a call as an inbound leg (A) and outbound legs (B), and the rules that tie them.

It is the endpoint's transaction user. What to do with a call (route it, reject it, dial whom, when to give up)
is decided above it, by the exchange's CallFlow, which reads ``next_event()`` and answers with commands
(``reject``, ``dial``, ``cancel_dial``, ``hangup``). Everything else is handled here: relaying provisional and final
responses with SDP rewritten, ACKing the callee's 2xx, CANCEL in both directions (including a 2xx that crosses
the CANCEL), BYE from either side, re-INVITE/UPDATE/INFO pass-through, Max-Forwards, 481/483/491, and the
maximum call duration.

Every way a call ends goes through ``_end``, which queues exactly one terminal event (``CallEnded`` or
``CallCancelled``): the CallFlow waiting on a call always hears that it is over, whoever ended it.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from dce.sip.admission import Admission, Admit, Challenged, Refuse
from dce.sip.dialog import Dialog
from dce.sip.endpoint import SipEndpoint, default_port, new_token
from dce.sip.message import (
    Request,
    Response,
    header_uri,
    make_response,
    next_request,
    uri_hostport,
    uri_user,
)
from dce.sip.outbound_auth import OutboundCredentials, authorized_retry
from dce.sip.registrar import Registrar
from dce.sip.session_timer import (
    SessionTimer,
    TimerPolicy,
    TooSmall,
    UasTerms,
    negotiate_uas,
    retry_after_422,
    supports_timer,
    uac_terms,
)
from dce.sip.source_limit import SourceLimit
from dce.sip.transaction import (
    Address,
    ClientInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    State,
)
from dce.sip.websocket import uri_transport

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK"
COPIED_HEADERS = ("P-Asserted-Identity", "Privacy", "Identity", "Subject")
PASS_THROUGH_METHODS = ("UPDATE", "INFO")  # forwarded end to end inside a dialog, like re-INVITE
# timer: RFC 4028 on both legs. 100rel: a caller that requires it gets its provisional responses reliably (RSeq,
# retransmitted until its PRACK, RFC 3262 §3); its Require is never passed on to the callee.
SUPPORTED_OPTIONS: frozenset[str] = frozenset({"timer", "100rel"})
_SUPPORTED_WITHOUT_TIMERS = SUPPORTED_OPTIONS - {"timer"}  # sip.session_timers: false
NO_PRACK = "no PRACK from caller"  # a reliable provisional unacknowledged for 64*T1 (RFC 3262 §3): the call ends
SESSION_EXPIRED = "session timer expired"  # the CallEnded reason (and the CDR's) when a session was not refreshed
REFRESH_FAILED = "session refresh failed"  # our refresh got 408/481 or no answer: the peer is gone
REFRESH_RETRY_S = 4.0  # a refresh refused otherwise (491 glare, 5xx) is tried again after this
URI_SCHEMES = frozenset({"sip", "sips", "tel"})  # Request-URI schemes we serve; any other is answered 416
# A sips: Request-URI asks for TLS on every hop (RFC 3261 §26.2.2): one that came over another transport is refused
# with RFC 5630's warn-code for a SIPS request that cannot be served as such (§5.3: 480 with Warning 380).
SIPS_NOT_ALLOWED = '380 dce "SIPS Not Allowed"'
# RFC 3398: Q.850 cause 34 maps to 503. Not 486: that says the callee is busy, and a carrier would not advance
# its route; a 503 with Retry-After tells this source alone to back off or try another route.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'  # RFC 3326: why a losing fork is cancelled
SOURCE_LIMIT_REASON = 'Q.850;cause=34;text="no circuit/channel available"'


class SdpRewriter(Protocol):
    """The media plane's view of a call (relay, passthrough or rtpengine).

    A session with a true ``deferred`` attribute (rtpengine: a network round trip per body) is not asked
    synchronously once the call is dialled: the core queues :class:`SdpNeeded` and holds the message carrying
    the body until :meth:`B2BUA.sdp_ready`. Its ``rewrite_from_a`` is still called by ``dial`` for the caller's
    offer, which the CallFlow has it prepare before dialling.
    """

    def rewrite_from_a(self, sdp: bytes) -> bytes: ...
    def rewrite_from_b(self, sdp: bytes) -> bytes: ...


class CallState(enum.Enum):
    """Where a call is, as the B2BUA sees it."""

    OFFERED = "offered"  # A's INVITE received; waiting for the CallFlow
    DIALING = "dialing"  # a B leg is being tried
    ANSWERED = "answered"  # both legs confirmed
    ENDED = "ended"


class Side(enum.StrEnum):
    """Which leg of a call."""

    A = "a"
    B = "b"


# -- events for the CallFlow ---------------------------------------------------------------------------
@dataclass(slots=True)
class CallOffered:
    """A new inbound call; the CallFlow must reject or dial."""

    call: Call
    at: float


@dataclass(slots=True)
class DialProgress:
    """The current B leg sent a provisional (180/183), already relayed to A."""

    call: Call
    status: int
    at: float


@dataclass(slots=True)
class DialAnswered:
    """The B leg answered: both legs are now confirmed and bridged."""

    call: Call
    at: float


@dataclass(slots=True)
class DialFailed:
    """The B leg ended without answer (busy, error, ring timeout, transport timeout). A is still waiting."""

    call: Call
    status: int
    reason: str  # busy | no_answer | failed | timeout
    at: float
    detail: str = ""  # why, when we know more than the status (the name did not resolve, "TLS certificate ...")
    failover: bool = False  # 503, timer B or unreachable: another next hop of the same name may serve (RFC 3263)


@dataclass(slots=True)
class CallCancelled:
    """Terminal: A cancelled before answer; A got 487 and any B leg is being cancelled."""

    call: Call
    at: float


@dataclass(slots=True)
class CallEnded:
    """Terminal: the call ended other than by A's CANCEL. Answered: both legs have been sent BYE (or received
    one). Not answered: A got a final failure (a reject or the exchange's hangup) and any B leg is cancelled."""

    call: Call
    side: str  # caller | callee | system
    reason: str
    at: float


@dataclass(slots=True)
class CallRefused:
    """An INVITE refused at admission (403 unknown source or bad credentials, 503 over a trunk limit): no Call
    was created; the CallFlow records a ``rejected`` CDR naming the source."""

    source: str
    transport: str
    status: int
    reason: str
    request: Request
    trunk: str | None
    at: float
    id: str  # the exchange's id for the refused call (its CDR's call_id)


@dataclass(slots=True)
class SdpNeeded:
    """The call's media session rewrites SDP asynchronously: rewrite ``body`` (an offer or an answer) received
    from ``side`` and hand it back with ``B2BUA.sdp_ready(call, token, rewritten, now)``; until then the
    message that relays it waits (the core's state has moved on already)."""

    call: Call
    side: Side
    body: bytes
    offer: bool
    token: int
    at: float


CallEvent = (CallOffered | DialProgress | DialAnswered | DialFailed | CallCancelled | CallEnded | CallRefused
             | SdpNeeded)
SdpThen = Callable[[bytes, float], None]


# -- legs and calls ------------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class InboundLeg:
    """The caller's side: the INVITE we are serving."""

    txn: ServerInviteTransaction
    request: Request
    local_tag: str
    dialog: Dialog | None = None
    session_terms: UasTerms | None = None  # what our 2xx says about session timers (None: timers off)
    reliable: bool = False  # the caller requires 100rel: our provisionals to it are reliable (RFC 3262)
    rseq: int = 0  # the RSeq of our last reliable provisional (0: none sent yet)
    unacked: _Reliable1xx | None = None  # the reliable provisional awaiting its PRACK (one at a time)
    queued: tuple[int, str] | None = None  # the latest provisional (status, reason) waiting for that PRACK

    @property
    def call_id(self) -> str:
        return self.request.call_id


@dataclass(slots=True, eq=False, weakref_slot=True)
class OutboundLeg:
    """One attempt to reach a destination."""

    call: Call
    destination: str
    request: Request
    txn: ClientInviteTransaction
    ring_timeout: float
    dialog: Dialog | None = None
    provisional: bool = False
    cancel_pending: bool = False
    cancel_reason: str | None = None  # why we cancelled: no_answer | cancelled | hangup
    finished: bool = False
    deadline_name: str | None = None
    deadline: float | None = None
    heap_deadline: float | None = None
    credentials: OutboundCredentials | None = None  # answer one 401/407 with these
    auth_tried: bool = False
    session_expires: int = 0  # the Session-Expires we offered (0: none)
    retried_422: bool = False  # a 422 is answered with one retry, not more
    ack_pending: bool = False  # delayed offer: the 2xx carried the offer, its ACK waits for the caller's answer
    ack_body: bytes = b""  # the answer our ACK carries (sent again for a retransmitted 2xx)
    ack_rewriting: bool = False  # that answer is with the media plane (SdpNeeded): the ACK still waits
    ring_at: float = 0.0  # when the ring timeout ends this attempt (armed once anything answers)

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        name, self.deadline, self.deadline_name = self.deadline_name, None, None
        b2bua: B2BUA = self.call.b2bua
        if name == "ring":
            b2bua._ring_timeout(self, now)
        elif name == "cancel_guard":
            b2bua._give_up_leg(self, now)
        elif name == "no_response":
            b2bua._no_response(self, now)


def caller_user(request: Request) -> str:
    """The user part of an INVITE's From URI (the caller's number as sent)."""
    return uri_user(header_uri(request.get("From") or ""))


def called_user(request: Request) -> str:
    """The user part of an INVITE's Request-URI (the number called, as sent)."""
    return uri_user(request.uri)


@dataclass(slots=True, eq=False, weakref_slot=True)
class Call:
    """A call through the B2BUA. Its one timer is the maximum call duration, armed at answer."""

    id: str
    b2bua: B2BUA
    a: InboundLeg
    invite_at: float
    state: CallState = CallState.OFFERED
    b: OutboundLeg | None = None
    forks: tuple[OutboundLeg, ...] = ()  # legs rung in parallel (``B2BUA.fork``) until one answers or all fail
    media: SdpRewriter | None = None
    pending_reinvite: bool = False
    attempts: int = 0
    source: str = ""  # the caller's IP address (what the per-source limit counts)
    trunk: str | None = None  # the inbound trunk admission matched (None: no admission, or an unknown source)
    max_duration: float | None = None  # seconds from answer; None: unlimited
    deadline: float | None = None
    heap_deadline: float | None = None

    @property
    def caller_user(self) -> str:
        return caller_user(self.a.request)

    @property
    def called_user(self) -> str:
        return called_user(self.a.request)

    def next_deadline(self) -> float | None:
        """The earliest of the maximum duration and each leg's session timer."""
        if self.state is not CallState.ANSWERED:
            return self.deadline
        deadline = self.deadline
        for timer in self.session_timers():
            at = timer.next_deadline()
            deadline = at if deadline is None else min(deadline, at)
        return deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.b2bua.hangup(self, now, reason="max call duration")
            return
        if self.state is CallState.ANSWERED:
            for side, dialog in ((Side.A, self.a.dialog), (Side.B, self.b.dialog if self.b else None)):
                timer = dialog.session if dialog is not None else None
                due = timer.due(now) if timer is not None else None
                if due == "expired":
                    self.b2bua.hangup(self, now, reason=SESSION_EXPIRED)
                    return
                if due == "refresh":
                    self.b2bua._refresh(self, side, now)

    def session_timers(self) -> list[SessionTimer]:
        """The legs' session timers (none before answer, or with timers off)."""
        dialogs = (self.a.dialog, self.b.dialog if self.b is not None else None)
        return [d.session for d in dialogs if d is not None and d.session is not None]


@dataclass(slots=True, eq=False, weakref_slot=True)
class _Reliable1xx:
    """A reliable provisional response to the caller (RFC 3262 §3): resent at T1, 2*T1, 4*T1... until its PRACK;
    after 64*T1 without one the call ends."""

    call: Call
    response: Response
    rseq: int
    interval: float
    deadline: float | None
    give_up_at: float
    heap_deadline: float | None = None

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.call.b2bua._resend_reliable(self, now)


@dataclass(slots=True, eq=False)
class _Refresh:
    """Our own session refresh (re-INVITE or UPDATE) on one leg, awaiting its final response."""

    call: Call
    side: Side


@dataclass(slots=True, eq=False)
class _Relay:
    """An in-dialog request forwarded to the other leg, awaiting its final response."""

    call: Call
    origin: ServerTransaction
    from_side: Side
    forwarded: ClientTransaction | None = None
    terms: UasTerms | None = None  # the session-timer terms of our 2xx to the origin (re-INVITE/UPDATE)


class B2BUA:
    """Transaction user that pairs legs into calls. Drive it through its endpoint; read ``next_event()``."""

    def __init__(self, endpoint: SipEndpoint, *, max_calls_per_source: int = 0, retry_after_s: int = 5,
                 session_timers: TimerPolicy | None = TimerPolicy(), no_response_s: float | None = None) -> None:
        """``session_timers``: RFC 4028 terms for both legs (None: no Session-Expires offered or answered).
        ``no_response_s``: an outbound INVITE that heard nothing at all (not even 100 Trying) this long after it
        was sent is given up as a timeout that another next hop may serve (Kamailio's ``fr_timer``); None: only
        timer B (64*T1) or the ring timeout gives up on a silent destination."""
        self.endpoint = endpoint
        self.session_timers = session_timers
        self.no_response_s = no_response_s
        endpoint.tu = self
        self.source_limit = SourceLimit(max_calls_per_source)
        self.retry_after_s = retry_after_s
        self.calls: dict[str, Call] = {}
        self._dialogs: dict[tuple[str, str, str], tuple[Call, Side]] = {}
        self._early: dict[tuple[str, str, str], Call] = {}  # A's early dialogs with a reliable 1xx (PRACK's match)
        self._events: deque[CallEvent] = deque()
        self.admission: Admission | None = None  # set: each new INVITE must pass it (trunk, digest, limits)
        self.registrar: Registrar | None = None  # set, with agents: REGISTER registers them (else 405 as before)
        self.wall_offset = 0.0  # wall-clock epoch seconds minus ``now`` (set by the driver; for digest nonces)
        self._held: dict[int, SdpThen] = {}  # SdpNeeded token -> what sends the message once its body is back
        self._next_token = 1

    # -- adapter pass-through ------------------------------------------------------------------------
    def receive(self, data: bytes, transport: str, addr: Address, now: float, *, stream: bool = False) -> None:
        """Feed wire input (see SipEndpoint.receive)."""
        self.endpoint.receive(data, transport, addr, now, stream=stream)

    def handle_timer(self, now: float) -> None:
        """Fire due timers."""
        self.endpoint.handle_timer(now)

    def transport_error(self, transport: str, addr: Address, now: float, reason: str = "") -> None:
        """The transport cannot reach ``addr`` (see SipEndpoint.transport_error)."""
        self.endpoint.transport_error(transport, addr, now, reason)

    def next_timer(self) -> float | None:
        """Earliest deadline."""
        return self.endpoint.next_timer()

    def datagrams_to_send(self) -> list[tuple[bytes, str, Address]]:
        """Wire output."""
        return self.endpoint.datagrams_to_send()

    def next_event(self) -> CallEvent | None:
        """The next event for the CallFlow, or None."""
        return self._events.popleft() if self._events else None

    @property
    def active_calls(self) -> int:
        """Calls not yet ended."""
        return len(self.calls)

    # -- commands from the CallFlow --------------------------------------------------------------------
    def reject(self, call: Call, status: int, now: float, *, reason: str | None = None,
               reason_header: str | None = None) -> None:
        """Answer the caller with a final failure and end the call."""
        if call.state in (CallState.ANSWERED, CallState.ENDED):
            return
        extra = [("Reason", reason_header)] if reason_header else None
        response = make_response(call.a.request, status, reason, to_tag=call.a.local_tag, extra=extra)
        self.endpoint.respond(call.a.txn, response, now)
        self._end(call, CallEnded(call, "system", f"rejected {status}", now))

    def dial(self, call: Call, destination: str, now: float, *, ring_timeout: float,
             max_duration: float | None = None, next_hop: tuple[str, str, int] | None = None,
             credentials: OutboundCredentials | None = None) -> OutboundLeg | None:
        """Send an INVITE to ``destination`` on behalf of the caller (replacing any failed B leg).

        ``max_duration``: once answered, the call is hung up after this many seconds (BYE to both legs).
        ``next_hop``: ``(transport, ip, port)`` to send it to (RFC 3263, resolved above us); the Request-URI stays
        ``destination``. Default: the URI's own host and port. ``credentials``: answer one 401/407 with them.
        Returns None, sending nothing, when the call already ended (its terminal event is already queued), or
        when ``destination`` wants TLS (``sips:``, ``;transport=tls``) and we have no tls: listener: that leg
        fails at once (``DialFailed`` 503 with a ``detail``), never downgraded to another transport.
        """
        if call.state is CallState.ENDED:
            return None
        call.forks = ()
        a_request = call.a.request
        uri = destination if uri_user(destination) else _with_user(destination, call.called_user)
        secure = uri[:5].lower() == "sips:"
        if next_hop is not None:
            transport, host, port = next_hop
            secure = secure or transport == "tls"
        else:
            host, port, params = uri_hostport(uri)
            transport = "tls" if secure else (params.get("transport") or "udp").lower()
        if transport == "tls" and "tls" not in self.endpoint.local:
            # Never downgrade a sips:/transport=tls destination to a transport anyone on the path can read.
            self._events.append(DialFailed(call, 503, "failed", now,
                                           detail="TLS destination but no tls: SIP listener is configured"))
            return None
        if transport not in self.endpoint.local:
            transport = "udp"
        addr = (host.strip("[]"), port or default_port(transport))
        local_tag = new_token()
        request = Request(method="INVITE", uri=uri)
        headers = request.headers
        from_value = a_request.get("From") or ""
        headers.append(("From", _replace_tag(from_value, local_tag)))
        headers.append(("To", f"<{uri}>"))
        headers.append(("Call-ID", new_token() + new_token()))
        headers.append(("CSeq", "1 INVITE"))
        headers.append(("Contact", self._contact(transport, addr, secure)))
        max_forwards = a_request.get("Max-Forwards")
        headers.append(("Max-Forwards", str(int(max_forwards) - 1) if max_forwards else "69"))
        headers.append(("Allow", ALLOW))
        policy = self.session_timers
        if policy is not None:  # RFC 4028 §7.1: offer ours, let the callee pick the refresher
            headers.append(("Supported", "timer"))
            headers.append(("Session-Expires", str(policy.session_expires_s)))
            headers.append(("Min-SE", str(policy.min_se_s)))
        for name in COPIED_HEADERS:
            for value in a_request.get_all(name):
                headers.append((name, value))
        for name, value in a_request.headers:
            if name.lower().startswith("x-"):
                headers.append((name, value))
        if a_request.body:
            # An offer the media plane cannot read raises here (ValueError) before anything is sent.
            request.body = call.media.rewrite_from_a(a_request.body) if call.media else a_request.body
            headers.append(("Content-Type", a_request.get("Content-Type") or "application/sdp"))
        txn = self.endpoint.send_request(request, transport, addr, now)
        assert isinstance(txn, ClientInviteTransaction)
        leg = OutboundLeg(call=call, destination=destination, request=request, txn=txn,
                          ring_timeout=ring_timeout, credentials=credentials,
                          session_expires=policy.session_expires_s if policy else 0, ring_at=now + ring_timeout)
        txn.user_data = leg
        call.b = leg
        call.state = CallState.DIALING
        call.attempts += 1
        call.max_duration = max_duration
        wait = self.no_response_s
        if wait is not None and wait < ring_timeout:  # the ring timer takes over at the first response
            self._set_leg_timer(leg, "no_response", now + wait)
        else:
            self._set_leg_timer(leg, "ring", leg.ring_at)
        return leg

    def fork(self, call: Call, destinations: list[tuple[str, tuple[str, str, int] | None]], now: float, *,
             ring_timeout: float, max_duration: float | None = None) -> list[OutboundLeg]:
        """INVITE every ``(destination, next hop)`` at once (next hop None: the URI's own host and port, as
        ``dial``): the first 2xx is bridged and the other legs are CANCELled (``Reason: SIP;cause=200;text="Call
        completed elsewhere"``, RFC 3326); a 2xx that crosses that CANCEL is ACKed and BYEd. Provisional responses
        of every leg reach the caller. One ``DialFailed`` (the last leg's) once every leg failed. A destination
        wanting TLS without a tls: listener is left out (all of them: one ``DialFailed`` 503, as ``dial``)."""
        wanted = [(d, hop) for d, hop in destinations if not self._tls_missing(d, hop)]
        if len(wanted) < 2:
            destination, hop = (wanted or destinations)[0]
            leg = self.dial(call, destination, now, ring_timeout=ring_timeout, max_duration=max_duration,
                            next_hop=hop)
            return [leg] if leg is not None else []
        legs = [leg for d, hop in wanted if (leg := self.dial(call, d, now, ring_timeout=ring_timeout,
                                                              max_duration=max_duration, next_hop=hop)) is not None]
        call.forks = tuple(legs)
        return legs

    def _tls_missing(self, destination: str, hop: tuple[str, str, int] | None) -> bool:
        """``destination`` (or its next hop) wants TLS (``sips:``, ``;transport=tls``) and there is no tls:
        listener."""
        if "tls" in self.endpoint.local:
            return False
        return (_secure(destination) or (hop is not None and hop[0] == "tls")
                or (uri_hostport(destination)[2].get("transport") or "").lower() == "tls")

    def _ringing(self, call: Call) -> tuple[OutboundLeg, ...]:
        """The legs being rung for the call: its parallel forks, else its B leg."""
        return call.forks or ((call.b,) if call.b is not None else ())

    def cancel_dial(self, call: Call, now: float, *, reason: str = "cancelled") -> None:
        """Stop ringing the current B leg(s) (the caller keeps waiting unless the CallFlow rejects it)."""
        for leg in self._ringing(call):
            if not leg.finished and leg.dialog is None:
                self._cancel_leg(leg, now, reason)

    def hangup(self, call: Call, now: float, *, reason: str = "hangup") -> None:
        """End a call from the exchange's side: BYE both legs when answered, else CANCEL B and 480 A."""
        if call.state is CallState.ANSWERED:
            for side in (Side.A, Side.B):
                self._send_bye(call, side, now, reason)
        elif call.state in (CallState.OFFERED, CallState.DIALING):
            for leg in self._ringing(call):
                if not leg.finished and leg.dialog is None:
                    self._cancel_leg(leg, now, "hangup")
            response = make_response(call.a.request, 480, to_tag=call.a.local_tag,
                                     extra=[("Reason", f'Q.850;cause=41;text="{reason}"')])
            self.endpoint.respond(call.a.txn, response, now)
        else:
            return
        self._end(call, CallEnded(call, "system", reason, now))

    def sdp_ready(self, call: Call, token: int, body: bytes, now: float) -> None:
        """The media plane's rewrite of an :class:`SdpNeeded` body: the held message goes out with it (also
        after the call ended, so every transaction gets its message; a stale provisional is dropped)."""
        then = self._held.pop(token, None)
        if then is not None:
            then(body, now)

    def release(self, call: Call) -> None:
        """Unlink an ended call from the transactions that outlive it (up to 64*T1, absorbing retransmissions).

        Called once the CallFlow has recorded the call. A B leg still being cancelled stays with its INVITE
        transaction until that ends, so a late 2xx is still ACKed and BYEd and a deferred CANCEL still sent.
        Breaking these links makes the call's objects acyclic, so
        reference counting frees them at once instead of the cyclic collector finding them later (its full
        passes over ~10k lingering calls stalled the loop for 100+ ms at 300 CPS).
        """
        if call.state is not CallState.ENDED:
            return
        call.a.txn.user_data = None
        legs = {*self._ringing(call), *((call.b,) if call.b is not None else ())}
        call.b, call.forks = None, ()
        for leg in legs:
            if leg.txn.state is State.TERMINATED:
                leg.txn.user_data = None
        # else B may still answer (a 2xx crossing our CANCEL) or still owe us a CANCEL: its transaction keeps the
        # leg reachable, so the 2xx is ACKed and BYEd, and drops it when it terminates (SipEndpoint.on_terminated)
        call.media = None

    # -- TransactionUser: requests ---------------------------------------------------------------------
    def on_request(self, txn: ServerTransaction, now: float) -> None:
        request = txn.request
        if request.to_tag is not None:
            self._in_dialog_request(txn, request, now)
            return
        method = request.method
        if request.uri.partition(":")[0].lower() not in URI_SCHEMES:  # RFC 3261 §8.2.2.1, before any work
            self.endpoint.respond(txn, make_response(request, 416, to_tag=new_token()), now)
        elif _secure(request.uri) and txn.transport != "tls":
            self.endpoint.respond(txn, make_response(request, 480, to_tag=new_token(), extra=[
                ("Warning", SIPS_NOT_ALLOWED),
                ("Reason", f'SIP;cause=480;text="sips: Request-URI over {txn.transport}, not TLS"')]), now)
        elif method == "INVITE":
            self._new_call(txn, request, now)  # type: ignore[arg-type]
        elif unsupported := _unsupported(_options(request.get_all("Require")),  # RFC 3261 §8.2.2.3 (bext01)
                                         timers=self.session_timers is not None):
            self.endpoint.respond(txn, make_response(request, 420, to_tag=new_token(), extra=[
                ("Unsupported", ", ".join(unsupported))]), now)
        elif method == "OPTIONS":
            self.endpoint.respond(txn, make_response(request, 200, to_tag=new_token(), extra=[
                ("Allow", ALLOW), ("Accept", "application/sdp")]), now)
        elif method == "REGISTER" and self.registrar is not None and self.registrar.has_accounts:
            self._register(self.registrar, txn, request, now)
        elif method == "BYE":
            self.endpoint.respond(txn, make_response(request, 481, to_tag=new_token()), now)
        else:
            self.endpoint.respond(txn, make_response(request, 405, to_tag=new_token(),
                                                     extra=[("Allow", ALLOW)]), now)

    def _register(self, registrar: Registrar, txn: ServerTransaction, request: Request, now: float) -> None:
        """Answer a REGISTER with the registrar's reply; its binding expiries join the endpoint's timer heap."""
        reply = registrar.register(request, txn.addr, txn.transport, now, now + self.wall_offset)
        self.endpoint.respond(txn, make_response(request, reply.status, reply.reason, to_tag=new_token(),
                                                 extra=list(reply.headers)), now)
        self.endpoint.schedule(registrar)

    def on_ack(self, request: Request, now: float) -> None:
        """A's ACK for our 2xx. The B leg was ACKed when its 2xx arrived, except after a delayed offer: then this
        ACK carries the caller's answer, which our ACK to the callee relays (rewritten)."""
        found = self._dialogs.get((request.call_id, request.to_tag or "", request.from_tag or ""))
        if found is None or found[1] is not Side.A:
            return
        call = found[0]
        leg = call.b
        if leg is None or not leg.ack_pending or leg.ack_rewriting or request.cseq[0] != call.a.request.cseq[0]:
            return
        leg.ack_rewriting = True

        def send(body: bytes, now: float) -> None:
            if not leg.ack_pending:  # the call ended meanwhile: _send_bye confirmed the 2xx already
                return
            leg.ack_pending = leg.ack_rewriting = False
            if body:
                leg.ack_body = body
                assert call.a.dialog is not None and leg.dialog is not None
                call.a.dialog.remote_sdp, leg.dialog.local_sdp = request.body, body
            self._send_ack(leg, now)

        self._with_sdp(call, Side.A, request.body, False, send, now)

    def on_cancel(self, invite_txn: ServerInviteTransaction, cancel: Request, now: float) -> None:
        call = invite_txn.user_data
        if isinstance(call, _Relay):  # a re-INVITE still pending on the other leg: 487 here, CANCEL there
            self.endpoint.respond(invite_txn, make_response(invite_txn.request, 487), now)
            forwarded = call.forwarded
            if isinstance(forwarded, ClientInviteTransaction) and forwarded.state is State.PROCEEDING:
                self.endpoint.cancel(forwarded, now)
            return
        if not isinstance(call, Call) or call.state in (CallState.ANSWERED, CallState.ENDED):
            return
        reason = cancel.get("Reason")
        self.endpoint.respond(invite_txn, make_response(call.a.request, 487, to_tag=call.a.local_tag), now)
        for leg in self._ringing(call):
            if not leg.finished:
                self._cancel_leg(leg, now, "cancelled", reason_header=reason)
        self._end(call, CallCancelled(call, now))

    def _new_call(self, txn: ServerInviteTransaction, request: Request, now: float) -> None:
        local_tag = new_token()
        max_forwards = request.get("Max-Forwards")
        if max_forwards is not None and int(max_forwards) <= 0:
            self.endpoint.respond(txn, make_response(request, 483, to_tag=local_tag), now)
            return
        required = _options(request.get_all("Require"))
        unsupported = _unsupported(required, timers=self.session_timers is not None)
        if unsupported:
            self.endpoint.respond(txn, make_response(request, 420, to_tag=local_tag, extra=[
                ("Unsupported", ", ".join(unsupported))]), now)
            return
        content_type = (request.get("Content-Type") or "").partition(";")[0].strip().lower()
        if request.body and content_type not in ("application/sdp", "") and not content_type.startswith("multipart/"):
            # RFC 3261 §8.2.3 (RFC 4475 invut): a body we cannot read; multipart (SIP-I) and a body without a
            # Content-Type (read as SDP, as dial() relays it) pass as before
            self.endpoint.respond(txn, make_response(request, 415, to_tag=local_tag, extra=[
                ("Accept", "application/sdp")]), now)
            return
        if not _accepts_sdp(request.get_all("Accept")):  # our answer will be SDP (RFC 4475 sdp01)
            self.endpoint.respond(txn, make_response(request, 406, to_tag=local_tag, extra=[
                ("Accept", "application/sdp")]), now)
            return
        terms = self._session_terms(txn, request, now, local_tag=local_tag)
        if terms is False:
            return
        source = txn.addr[0]
        trunk: str | None = None
        if self.admission is not None:
            decision = self.admission.admit(request, source, txn.transport, now + self.wall_offset, now)
            if not isinstance(decision, Admit):
                self._refuse(txn, request, decision, local_tag, now)
                return
            trunk = decision.trunk
        if not self.source_limit.acquire(source):  # before any work: the CallFlow never sees it
            if trunk is not None and self.admission is not None:
                self.admission.release(trunk)
            self.endpoint.observer.dropped("source_call_limit")
            self.endpoint.respond(txn, make_response(request, 503, to_tag=local_tag, extra=[
                ("Retry-After", str(self.retry_after_s)), ("Reason", SOURCE_LIMIT_REASON)]), now)
            return
        call = Call(id=new_token() + new_token(), b2bua=self, a=InboundLeg(
            txn, request, local_tag, session_terms=terms or None, reliable="100rel" in required),
                    invite_at=now, source=source, trunk=trunk)
        txn.user_data = call
        self.calls[call.id] = call
        self._events.append(CallOffered(call, now))

    def _refuse(self, txn: ServerInviteTransaction, request: Request, decision: Challenged | Refuse,
                local_tag: str, now: float) -> None:
        """Answer an INVITE admission did not let in (the transaction absorbs retransmissions and the ACK)."""
        status, phrase = (401, "Unauthorized") if isinstance(decision, Challenged) else (decision.status, None)
        self.endpoint.respond(txn, make_response(request, status, phrase, to_tag=local_tag,
                                                 extra=list(decision.headers)), now)
        if isinstance(decision, Refuse):
            self._events.append(CallRefused(txn.addr[0], txn.transport, status, decision.reason, request,
                                            decision.trunk, now, new_token() + new_token()))
    def _session_terms(self, txn: ServerTransaction, request: Request, now: float, *, local_tag: str | None = None,
                       peer_refreshed: bool = True) -> UasTerms | Literal[False] | None:
        """RFC 4028 §9: the session-timer terms of our 2xx to ``request``; None with timers off; False when the
        request was answered here (422 with our Min-SE, or 400 for an unreadable Session-Expires/Min-SE)."""
        policy = self.session_timers
        if policy is None:
            return None
        options = [*request.get_all("Supported"), *request.get_all("Require")]
        try:
            terms = negotiate_uas(request.get("Session-Expires"), request.get("Min-SE"), supports_timer(options),
                                  policy, peer_refreshed=peer_refreshed)
        except ValueError as exc:
            warning = str(exc).replace('"', "'")
            self.endpoint.respond(txn, make_response(request, 400, "Bad Session-Expires or Min-SE", to_tag=local_tag,
                                                     extra=[("Warning", f'399 dce "{warning}"')]), now)
            return False
        if isinstance(terms, TooSmall):
            self.endpoint.respond(txn, make_response(request, 422, "Session Interval Too Small", to_tag=local_tag,
                                                     extra=[("Min-SE", str(terms.min_se))]), now)
            return False
        return terms

    def _in_dialog_request(self, txn: ServerTransaction, request: Request, now: float) -> None:
        key = (request.call_id, request.to_tag or "", request.from_tag or "")
        found = self._dialogs.get(key)
        if found is None:
            early = self._early.get(key) if request.method == "PRACK" else None
            if early is not None:
                self._prack(early, txn, request, now)
            else:
                self.endpoint.respond(txn, make_response(request, 481), now)
            return
        call, side = found
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b else None)
        assert dialog is not None
        if not dialog.accept_remote_cseq(request):
            self.endpoint.respond(txn, make_response(request, 500, "CSeq out of order"), now)
            return
        method = request.method
        if method == "PRACK" and side is Side.A:
            self._prack(call, txn, request, now)
        elif method == "BYE":
            self.endpoint.respond(txn, make_response(request, 200), now)
            other = Side.B if side is Side.A else Side.A
            self._send_bye(call, other, now, "hangup")
            self._end(call, CallEnded(call, "caller" if side is Side.A else "callee", "bye", now))
        elif method == "OPTIONS":
            self.endpoint.respond(txn, make_response(request, 200, extra=[("Allow", ALLOW)]), now)
        elif method == "INVITE" or method in PASS_THROUGH_METHODS:
            if method != "INFO" and self._answered_refresh(call, dialog, txn, request, now):
                return
            self._relay_in_dialog(call, side, txn, request, now)
        else:
            self.endpoint.respond(txn, make_response(request, 405, extra=[("Allow", ALLOW)]), now)

    def _answered_refresh(self, call: Call, dialog: Dialog, txn: ServerTransaction, request: Request,
                          now: float) -> bool:
        """A re-INVITE/UPDATE that changes no SDP is a session refresh (RFC 4028): answered here, its leg's timer
        restarted, and not relayed (the other leg has its own timer). True when answered (422/400 included).

        Our 2xx repeats the SDP we last sent that leg (unchanged, so the session stays as it is): as the answer
        to a repeated offer, or as the offer a re-INVITE without a body asks for (the ACK's answer changes nothing).
        """
        if self.session_timers is None or call.state is not CallState.ANSWERED:
            return False
        if call.pending_reinvite and request.method == "INVITE":
            return False  # an INVITE is under way: the relay path answers 491 (RFC 3261 §14.2)
        if not dialog.is_same_session(request.body):
            return False
        timer = dialog.session
        terms = self._session_terms(txn, request, now, peer_refreshed=timer is None or not timer.we_refresh)
        if terms is False:
            return True
        assert terms is not None
        dialog.update_target(request)
        dialog.learn_peer(request)
        body = dialog.local_sdp if request.method == "INVITE" or request.body else b""
        contact = self._contact(txn.transport, txn.addr, _secure(dialog.remote_target))
        extra = [("Contact", contact), ("Allow", ALLOW), ("Supported", "timer"), *terms.headers()]
        self.endpoint.respond(txn, make_response(request, 200, extra=extra, body=body,
                                                 content_type="application/sdp" if body else None), now)
        interval = terms.session_expires.interval
        if timer is None:
            dialog.session = SessionTimer.start(interval, terms.we_refresh, now)
        else:
            timer.refreshed(now, interval, terms.we_refresh)
        self.endpoint.schedule(call)
        return True

    def _refresh(self, call: Call, side: Side, now: float) -> None:
        """Our turn to refresh ``side``'s session (RFC 4028 §7.4): UPDATE when the peer allows it, else a
        re-INVITE repeating the SDP we last sent it (unchanged: nothing is renegotiated)."""
        dialog = self._dialog(call, side)
        timer = dialog.session
        assert timer is not None
        timer.refreshing = True
        method = "UPDATE" if dialog.peer_allows_update else "INVITE"
        if method == "INVITE":
            if call.pending_reinvite:  # another re-INVITE is under way (relayed, or ours on the other leg)
                timer.retry(now, 1.0)
                return
            call.pending_reinvite = True  # one INVITE at a time in a dialog (RFC 3261 §14.1)
        transport, addr = dialog.next_hop()
        request = dialog.create_request(method, contact=self._contact(transport, addr, _secure(dialog.remote_target)))
        request.add("Supported", "timer")
        request.add("Session-Expires", f"{int(timer.interval)};refresher=uac")
        if self.session_timers is not None:
            request.add("Min-SE", str(self.session_timers.min_se_s))
        if method == "INVITE" and dialog.local_sdp:
            request.body = dialog.local_sdp
            request.add("Content-Type", "application/sdp")
        client = self.endpoint.send_request(request, transport, addr, now)
        client.user_data = _Refresh(call, side)

    def _refresh_response(self, refresh: _Refresh, txn: ClientTransaction, response: Response, now: float) -> None:
        """The final response to our refresh: 2xx restarts the timer (ACKed for an INVITE); 408/481 mean the
        peer is gone (RFC 3261 §12.2.1.2): the call ends; anything else is retried a little later."""
        status = response.status
        if status < 200:
            return
        call, side = refresh.call, refresh.side
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b is not None else None)
        if dialog is None:
            return
        is_invite = txn.request.method == "INVITE"
        if is_invite:
            call.pending_reinvite = False
            if status < 300:
                dialog.update_target(response)
                transport, addr = dialog.next_hop()
                self.endpoint.send_stateless(dialog.create_request("ACK", cseq=txn.request.cseq[0]), transport, addr)
        timer = dialog.session
        if call.state is not CallState.ANSWERED or timer is None:
            return
        if status < 300:
            timer.refreshed(now, *uac_terms(response.get("Session-Expires"), int(timer.interval)))
        elif status in (408, 481):
            self.hangup(call, now, reason=REFRESH_FAILED)
            return
        else:
            if status == 422 and (wanted := retry_after_422(response.get("Min-SE"), int(timer.interval))):
                timer.interval = wanted
                timer.retry(now, 0.0)
            else:
                timer.retry(now, REFRESH_RETRY_S)
        self.endpoint.schedule(call)

    def _refresh_failed(self, refresh: _Refresh, txn: ClientTransaction, now: float) -> None:
        """Our refresh had no answer at all (timeout, unreachable): the peer is gone."""
        call = refresh.call
        if txn.request.method == "INVITE":
            call.pending_reinvite = False
        if call.state is CallState.ANSWERED:
            self.hangup(call, now, reason=REFRESH_FAILED)

    def _relay_in_dialog(self, call: Call, side: Side, txn: ServerTransaction, request: Request,
                         now: float) -> None:
        """Forward a re-INVITE/UPDATE/INFO to the other leg; its final response comes back the same way."""
        if call.state is not CallState.ANSWERED:
            self.endpoint.respond(txn, make_response(request, 491 if request.method == "INVITE" else 500), now)
            return
        max_forwards = request.get("Max-Forwards")
        if max_forwards is not None and int(max_forwards) <= 0:
            self.endpoint.respond(txn, make_response(request, 483), now)
            return
        if request.method == "INVITE":
            if call.pending_reinvite:
                self.endpoint.respond(txn, make_response(request, 491), now)
                return
            call.pending_reinvite = True
        own = call.a.dialog if side is Side.A else call.b.dialog  # type: ignore[union-attr]
        assert own is not None
        terms: UasTerms | None = None
        refreshes = request.method in ("INVITE", "UPDATE")
        if refreshes:
            # A new offer is relayed, and refreshes both legs' sessions when it succeeds: our 2xx to it states
            # this leg's terms, and the forwarded request offers the other leg's current ones.
            found = self._session_terms(txn, request, now, peer_refreshed=own.session is None
                                        or not own.session.we_refresh)
            if found is False:
                if request.method == "INVITE":
                    call.pending_reinvite = False
                return
            terms = found
            own.update_target(request)
            own.learn_peer(request)
            if request.body:
                own.remote_sdp = request.body
        other = Side.B if side is Side.A else Side.A
        dialog = self._dialog(call, other)
        transport, addr = dialog.next_hop()
        forward = dialog.create_request(request.method,
                                        contact=self._contact(transport, addr, _secure(dialog.remote_target)))
        if max_forwards:
            forward.add("Max-Forwards", str(max(0, int(max_forwards) - 1)))
        if refreshes and dialog.session is not None:
            forward.add("Supported", "timer")
            refresher = "uac" if dialog.session.we_refresh else "uas"
            forward.add("Session-Expires", f"{int(dialog.session.interval)};refresher={refresher}")
        relay = _Relay(call, txn, side, None, terms)
        txn.user_data = relay  # so a CANCEL of a re-INVITE reaches the forwarded one

        def send(body: bytes, now: float) -> None:
            if txn.state not in (State.TRYING, State.PROCEEDING):  # answered meanwhile (CANCEL, call ended)
                if request.method == "INVITE":
                    call.pending_reinvite = False
                return
            if body:
                forward.body = body
                forward.add("Content-Type", request.get("Content-Type") or "application/sdp")
                if refreshes:
                    dialog.local_sdp = body
            relay.forwarded = client = self.endpoint.send_request(forward, transport, addr, now)
            client.user_data = relay

        self._with_sdp(call, side, request.body, True, send, now)

    # -- TransactionUser: responses --------------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        owner = txn.user_data
        if isinstance(owner, OutboundLeg):
            self._leg_response(owner, txn, response, now)
        elif isinstance(owner, _Relay):
            self._relay_response(owner, txn, response, now)
        elif isinstance(owner, _Refresh):
            self._refresh_response(owner, txn, response, now)

    def _leg_response(self, leg: OutboundLeg, txn: ClientTransaction, response: Response, now: float) -> None:
        if txn.request.method != "INVITE":
            return  # responses to our CANCEL/BYE need no action
        if leg.deadline_name == "no_response":  # the destination is alive: it has until the ring timeout
            self._set_leg_timer(leg, "ring", leg.ring_at)
        status = response.status
        call = leg.call
        if status < 200:
            if status == 100:
                return
            leg.provisional = True
            if leg.cancel_pending:
                self._send_cancel(leg, now)
                return
            if leg.finished or not _current(call, leg) or call.state is not CallState.DIALING:
                return
            if call.a.reliable:
                self._send_reliable(call, status, response.reason, now)
                self._events.append(DialProgress(call, status, now))
                return
            relayed = make_response(call.a.request, status, response.reason, to_tag=call.a.local_tag,
                                    extra=[("Contact", self._contact_a(call.a))])

            def send(body: bytes, now: float) -> None:
                if leg.finished or not _current(call, leg) or call.state is not CallState.DIALING:
                    return  # answered, failed or ended while the media plane rewrote it
                if body:
                    relayed.body = body
                    relayed.add("Content-Type", response.get("Content-Type") or "application/sdp")
                self.endpoint.respond(call.a.txn, relayed, now)

            self._with_sdp(call, Side.B, response.body, not call.a.request.body, send, now)
            self._events.append(DialProgress(call, status, now))
        elif status < 300:
            self._leg_answered(leg, response, now)
        elif (status in (401, 407) and self._retry_authorized(leg, txn, response, now)) or (
                status == 422 and self._retry_422(leg, response, now)):
            return  # asked again with credentials, or with the callee's longer session interval
        else:
            self._leg_failed(leg, status, now)

    def _retry_authorized(self, leg: OutboundLeg, txn: ClientTransaction, response: Response, now: float) -> bool:
        """Answer the callee's first challenge once (its transaction ACKs the 401/407): the same INVITE with
        credentials, CSeq + 1, a new branch. False (the leg fails) on a second challenge, no credentials, a leg
        being cancelled or a challenge they cannot answer."""
        call = leg.call
        if (leg.credentials is None or leg.auth_tried or leg.finished or leg.cancel_pending or txn is not leg.txn
                or not _current(call, leg) or call.state is not CallState.DIALING):
            return False
        retry = authorized_retry(leg.request, response, leg.credentials)
        if retry is None:
            return False
        leg.auth_tried = True
        self._reissue(leg, retry, now)
        return True

    def _reissue(self, leg: OutboundLeg, request: Request, now: float) -> None:
        """Send the leg's INVITE asked again (``request``) as its new transaction; the old one (ACKed by itself)
        only absorbs retransmissions now."""
        old = leg.txn
        txn = self.endpoint.send_request(request, old.transport, old.addr, now)
        assert isinstance(txn, ClientInviteTransaction)
        old.user_data = None
        txn.user_data = leg
        leg.txn, leg.request, leg.provisional = txn, request, False

    def _send_reliable(self, call: Call, status: int, reason: str, now: float) -> None:
        """Relay a provisional to a caller that requires 100rel: reliably (Require: 100rel, RSeq), one at a time
        (a later one waits for the PRACK; only the latest is kept). No SDP: the answer comes in our 2xx, so the
        2xx never waits for a PRACK (RFC 3262 §3) and early media is not offered to such a caller."""
        a = call.a
        if a.unacked is not None:
            a.queued = (status, reason)
            return
        a.rseq = a.rseq + 1 if a.rseq else int.from_bytes(os.urandom(2)) + 1  # §7.1: the first one random
        response = make_response(a.request, status, reason, to_tag=a.local_tag, extra=[
            ("Contact", self._contact_a(a)), ("Require", "100rel"), ("RSeq", str(a.rseq))])
        self.endpoint.respond(a.txn, response, now)
        t1 = self.endpoint.timers.t1
        a.unacked = _Reliable1xx(call, response, a.rseq, t1, now + t1, now + self.endpoint.timers.timeout)
        self._early[(a.call_id, a.local_tag, a.request.from_tag or "")] = call
        self.endpoint.schedule(a.unacked)

    def _resend_reliable(self, reliable: _Reliable1xx, now: float) -> None:
        call = reliable.call
        if call.a.unacked is not reliable or call.state is not CallState.DIALING:
            reliable.deadline = None
            return
        if now >= reliable.give_up_at:  # §3: no PRACK in 64*T1: the caller gets a failure, the callee a CANCEL
            reliable.deadline = None
            call.a.unacked = None
            self.hangup(call, now, reason=NO_PRACK)
            return
        self.endpoint.respond(call.a.txn, reliable.response, now)
        reliable.interval *= 2
        reliable.deadline = min(now + reliable.interval, reliable.give_up_at)

    def _prack(self, call: Call, txn: ServerTransaction, request: Request, now: float) -> None:
        """A PRACK: 200 when its RAck names our unacknowledged reliable provisional (then the next one may go),
        else 481 (RFC 3262 §3)."""
        a = call.a
        unacked = a.unacked
        rack = (request.get("RAck") or "").split()
        wanted = [str(unacked.rseq), str(a.request.cseq[0]), "INVITE"] if unacked is not None else None
        if wanted is None or [part.upper() if i == 2 else part for i, part in enumerate(rack)] != wanted:
            self.endpoint.respond(txn, make_response(request, 481), now)
            return
        self.endpoint.respond(txn, make_response(request, 200), now)
        assert unacked is not None
        unacked.deadline = None
        a.unacked = None
        if a.queued is not None and call.state is CallState.DIALING:
            status, reason = a.queued
            a.queued = None
            self._send_reliable(call, status, reason, now)

    def _retry_422(self, leg: OutboundLeg, response: Response, now: float) -> bool:
        """RFC 4028 §7.4: the callee wants a longer session interval: INVITE once more (same Call-ID, CSeq+1)
        with its Min-SE. False when there is nothing to retry (no larger Min-SE, already retried, leg over)."""
        call = leg.call
        if leg.retried_422 or leg.finished or not _current(call, leg) or call.state is not CallState.DIALING:
            return False
        interval = retry_after_422(response.get("Min-SE"), leg.session_expires)
        if interval is None:
            return False
        self._reissue(leg, next_request(leg.request, replace={"Session-Expires": str(interval),
                                                                "Min-SE": str(interval)}), now)
        leg.retried_422, leg.session_expires = True, interval
        return True

    def _leg_answered(self, leg: OutboundLeg, response: Response, now: float) -> None:
        call = leg.call
        if leg.dialog is not None:  # retransmitted 2xx: our ACK was lost (or still waits for the caller's answer)
            if not leg.ack_pending:
                self._send_ack(leg, now)
            return
        leg.dialog = Dialog.as_uac(leg.request, response, leg.txn.transport, leg.txn.addr)
        wanted = not leg.finished and _current(call, leg) and call.state is CallState.DIALING
        # Delayed offer (RFC 3261 §13.2.1): the 2xx carries the offer and our ACK must carry the caller's answer,
        # which comes in the caller's ACK. Until then the ACK waits.
        leg.ack_pending = wanted and not call.a.request.body and bool(response.body)
        if not leg.ack_pending:
            self._send_ack(leg, now)
        if not wanted:
            # The 2xx crossed our CANCEL (or the leg was abandoned): confirm and immediately release it.
            leg.finished = True
            self._send_bye_on(leg.dialog, now, "cancelled")
            self._clear_leg_timer(leg)
            return
        leg.finished = True
        self._clear_leg_timer(leg)
        if call.forks:  # the first answer wins: the other forks are cancelled, their late 2xx ACKed and BYEd
            for other in call.forks:
                if other is not leg and not other.finished:
                    self._cancel_leg(other, now, "cancelled", reason_header=COMPLETED_ELSEWHERE)
            call.forks, call.b = (), leg
        a = call.a
        self._forget_early(call)
        answer = make_response(a.request, 200, to_tag=a.local_tag,
                               extra=[("Contact", self._contact_a(a)), ("Allow", ALLOW)])
        if a.session_terms is not None:
            answer.headers.append(("Supported", "timer"))
            answer.headers.extend(a.session_terms.headers())
        a.dialog = dialog = Dialog.as_uas(a.request, a.local_tag, a.txn.transport, a.txn.addr)
        a.dialog.learn_peer(a.request)
        a.dialog.remote_sdp = a.request.body

        def send(body: bytes, now: float) -> None:
            if body:
                answer.body = body
                answer.add("Content-Type", response.get("Content-Type") or "application/sdp")
            self.endpoint.respond(a.txn, answer, now)
            dialog.local_sdp = answer.body

        self._with_sdp(call, Side.B, response.body, not a.request.body, send, now)
        b = leg.dialog
        b.learn_peer(response)
        b.local_sdp, b.remote_sdp = leg.request.body, response.body
        if a.session_terms is not None:
            terms = a.session_terms.session_expires
            a.dialog.session = SessionTimer.start(terms.interval, a.session_terms.we_refresh, now)
        if leg.session_expires:
            interval, we_refresh = uac_terms(response.get("Session-Expires"), leg.session_expires)
            b.session = SessionTimer.start(interval, we_refresh, now)
        self._dialogs[a.dialog.id] = (call, Side.A)
        self._dialogs[b.id] = (call, Side.B)
        call.state = CallState.ANSWERED
        if call.max_duration is not None:
            call.deadline = now + call.max_duration
        self.endpoint.schedule(call)
        self._events.append(DialAnswered(call, now))

    def _leg_failed(self, leg: OutboundLeg, status: int, now: float, timed_out: bool = False,
                    detail: str = "") -> None:
        if leg.finished:
            return
        leg.finished = True
        self._clear_leg_timer(leg)
        call = leg.call
        if not _current(call, leg) or call.state is not CallState.DIALING:
            return
        if any(not fork.finished for fork in call.forks):
            return  # other forks still ring: the call fails only with the last of them
        if leg.cancel_reason == "no_answer":
            self._events.append(DialFailed(call, 408, "no_answer", now))
        else:
            self._events.append(DialFailed(call, status, _failure_kind(status), now, detail,
                                           failover=timed_out or status == 503))

    def _relay_response(self, relay: _Relay, txn: ClientTransaction, response: Response, now: float) -> None:
        status = response.status
        call = relay.call
        if status < 200:
            return
        other = Side.B if relay.from_side is Side.A else Side.A
        if txn.request.method == "INVITE":
            call.pending_reinvite = False
            if status < 300:
                dialog = self._dialog(call, other)
                dialog.update_target(response)
                transport, addr = dialog.next_hop()
                ack = dialog.create_request("ACK", cseq=txn.request.cseq[0])
                self.endpoint.send_stateless(ack, transport, addr)
        origin = relay.origin
        reply = make_response(origin.request, status, response.reason)
        if 200 <= status < 300 and origin.request.method == "INVITE":
            reply.add("Contact", self._contact(origin.transport, origin.addr, _secure(origin.request.uri)))

        def send(body: bytes, now: float) -> None:
            if body:
                reply.body = body
                reply.add("Content-Type", response.get("Content-Type") or "application/sdp")
            if txn.request.method in ("INVITE", "UPDATE") and call.state is CallState.ANSWERED:
                self._relayed_refresh(relay, other, response, reply, now)
            self.endpoint.respond(origin, reply, now)

        self._with_sdp(call, other, response.body, not txn.request.body, send, now)

    def _relayed_refresh(self, relay: _Relay, other: Side, response: Response, reply: Response, now: float) -> None:
        """A relayed re-INVITE/UPDATE ended: on 2xx both legs' sessions are refreshed (our reply states the
        origin leg's terms); otherwise a refresh of ours that waited for it is due again."""
        call = relay.call
        own, peer = self._dialog(call, relay.from_side), self._dialog(call, other)
        if 200 <= response.status < 300:
            peer.learn_peer(response)
            if response.body:
                peer.remote_sdp, own.local_sdp = response.body, reply.body
            if relay.terms is not None:
                reply.headers.append(("Supported", "timer"))
                reply.headers.extend(relay.terms.headers())
                expires = relay.terms.session_expires
                if own.session is None:
                    own.session = SessionTimer.start(expires.interval, relay.terms.we_refresh, now)
                else:
                    own.session.refreshed(now, expires.interval, relay.terms.we_refresh)
            if peer.session is not None:
                peer.session.refreshed(now, *uac_terms(response.get("Session-Expires"), int(peer.session.interval)))
        else:
            for timer in call.session_timers():
                if timer.refreshing:
                    timer.retry(now, 0.0)
        self.endpoint.schedule(call)

    def on_stray_response(self, response: Response, now: float) -> None:
        # A 2xx retransmitted after the INVITE transaction ended: re-ACK if it is one of our dialogs.
        if response.cseq[1] != "INVITE" or not 200 <= response.status < 300:
            return
        found = self._dialogs.get((response.call_id, response.from_tag or "", response.to_tag or ""))
        if found is not None and found[1] is Side.B and found[0].b is not None:
            self._send_ack(found[0].b, now)

    def on_client_timeout(self, txn: ClientTransaction, now: float) -> None:
        owner = txn.user_data
        if isinstance(owner, _Refresh):
            self._refresh_failed(owner, txn, now)
        elif isinstance(owner, OutboundLeg) and txn.request.method == "INVITE":
            self._leg_failed(owner, 408, now, timed_out=True)  # nothing final within timer B: try the next hop
        elif isinstance(owner, _Relay):
            if txn.request.method == "INVITE":
                owner.call.pending_reinvite = False
            self.endpoint.respond(owner.origin, make_response(owner.origin.request, 408), now)

    def on_transport_error(self, txn: ClientTransaction, now: float, reason: str = "") -> None:
        owner = txn.user_data
        if isinstance(owner, _Refresh):
            self._refresh_failed(owner, txn, now)
        elif isinstance(owner, OutboundLeg) and txn.request.method == "INVITE":
            self._leg_failed(owner, 503, now, detail=reason)  # unreachable: fail over at once
        elif isinstance(owner, _Relay):
            if txn.request.method == "INVITE":
                owner.call.pending_reinvite = False
            self.endpoint.respond(owner.origin, make_response(owner.origin.request, 503), now)

    def on_server_timeout(self, txn: ServerTransaction, now: float) -> None:
        call = txn.user_data
        if isinstance(call, Call) and call.state is CallState.ANSWERED and txn is call.a.txn:
            # The caller never ACKed our 2xx (§13.3.1.4): end the call.
            self.hangup(call, now, reason="no ACK from caller")

    # -- internals -------------------------------------------------------------------------------------
    def _end(self, call: Call, event: CallEnded | CallCancelled) -> None:
        """The one way a call ends: forget it and queue its terminal event for the CallFlow."""
        call.state = CallState.ENDED
        call.deadline = None
        self._forget_early(call)
        if self.calls.pop(call.id, None) is not None:
            self.source_limit.release(call.source)
            if call.trunk is not None and self.admission is not None:
                self.admission.release(call.trunk)
        for dialog in (call.a.dialog, call.b.dialog if call.b else None):
            if dialog is not None:
                self._dialogs.pop(dialog.id, None)
        self._events.append(event)

    def _forget_early(self, call: Call) -> None:
        """The early dialog is over (answered or ended): no more reliable provisionals, no PRACK to wait for."""
        a = call.a
        if a.unacked is not None:
            a.unacked.deadline = None
            a.unacked = None
        a.queued = None
        if a.reliable:
            self._early.pop((a.call_id, a.local_tag, a.request.from_tag or ""), None)

    def _dialog(self, call: Call, side: Side) -> Dialog:
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b else None)
        assert dialog is not None, "leg has no dialog"
        return dialog

    def _send_bye(self, call: Call, side: Side, now: float, reason: str) -> None:
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b else None)
        if dialog is not None:
            if side is Side.B and call.b is not None and call.b.ack_pending:  # the caller never answered the
                call.b.ack_pending = False  # delayed offer: confirm the callee's 2xx before ending its dialog
                self._send_ack(call.b, now)
            self._send_bye_on(dialog, now, reason)

    def _send_bye_on(self, dialog: Dialog, now: float, reason: str) -> None:
        transport, addr = dialog.next_hop()
        bye = dialog.create_request("BYE")
        if reason not in ("hangup", "bye"):
            bye.add("Reason", f'SIP;cause=200;text="{reason}"')
        self.endpoint.send_request(bye, transport, addr, now)

    def _send_ack(self, leg: OutboundLeg, now: float) -> None:
        dialog = leg.dialog
        assert dialog is not None
        transport, addr = dialog.next_hop()
        ack = dialog.create_request("ACK", cseq=leg.request.cseq[0])
        if leg.ack_body:
            ack.body = leg.ack_body
            ack.add("Content-Type", "application/sdp")
        self.endpoint.send_stateless(ack, transport, addr)

    def _cancel_leg(self, leg: OutboundLeg, now: float, reason: str, reason_header: str | None = None) -> None:
        if leg.cancel_reason is None:
            leg.cancel_reason = reason
        if leg.provisional:
            self._send_cancel(leg, now, reason_header)
        else:
            leg.cancel_pending = True  # §9.1: CANCEL only after a provisional response
        if reason != "no_answer":
            leg.finished = True
        self._set_leg_timer(leg, "cancel_guard", now + self.endpoint.timers.timeout)

    def _send_cancel(self, leg: OutboundLeg, now: float, reason_header: str | None = None) -> None:
        leg.cancel_pending = False
        if leg.txn.state in (State.CALLING, State.PROCEEDING):
            client = self.endpoint.cancel(leg.txn, now, reason_header)
            client.user_data = leg

    def _ring_timeout(self, leg: OutboundLeg, now: float) -> None:
        if leg.finished or leg.dialog is not None:
            return
        self._cancel_leg(leg, now, "no_answer")
        if not leg.provisional:
            # Nothing heard at all: give up now rather than wait for timer B.
            self._leg_failed(leg, 408, now)

    def _no_response(self, leg: OutboundLeg, now: float) -> None:
        """Nothing at all answered the INVITE within ``no_response_s``: the leg fails as a timeout (408, another
        next hop may serve). No CANCEL (§9.1: not before a provisional); the INVITE is no longer retransmitted,
        and its transaction stays until timer B so a late 1xx still gets our CANCEL and a late 2xx ACK and BYE."""
        if leg.finished or leg.dialog is not None:
            return
        leg.txn.stop_retransmitting()
        self.endpoint.schedule(leg.txn)
        self._leg_failed(leg, 408, now, timed_out=True, detail=f"no response within {self.no_response_s:g} s")
        leg.cancel_reason, leg.cancel_pending = "no_response", True

    def _give_up_leg(self, leg: OutboundLeg, now: float) -> None:
        """The callee never answered our CANCEL with a final response (§9.1: give up after 64*T1)."""
        self._leg_failed(leg, 408, now)

    def _set_leg_timer(self, leg: OutboundLeg, name: str, deadline: float) -> None:
        leg.deadline_name = name
        leg.deadline = deadline
        self.endpoint.schedule(leg)

    def _clear_leg_timer(self, leg: OutboundLeg) -> None:
        leg.deadline = None
        leg.deadline_name = None

    def _contact(self, transport: str, addr: Address, secure: bool = False) -> str:
        """Our Contact for a message over ``transport`` to ``addr``: ``sips:`` when the request was sips
        (§8.1.1.8), else ``;transport=`` naming a stream transport (``ws`` for WS and WSS, RFC 7118 §5.2)."""
        endpoint = self.endpoint
        if transport not in endpoint.local:
            transport = "udp"
        hostport = endpoint.sent_by(transport, addr)
        if secure and transport == "tls":
            return f"<sips:{hostport}>"
        suffix = f";transport={uri_transport(transport)}" if transport != "udp" else ""
        return f"<sip:{hostport}{suffix}>"

    def _contact_a(self, a: InboundLeg) -> str:
        return self._contact(a.txn.transport, a.txn.addr, _secure(a.request.uri))

    def _with_sdp(self, call: Call, side: Side, body: bytes, offer: bool, then: SdpThen, now: float) -> None:
        """Send a message relaying ``body`` from ``side`` (``offer``: an offer, else an answer): ``then`` gets the
        body rewritten by the call's media plane, now, or once a deferred session hands it back (SdpNeeded)."""
        media = call.media
        if media is None or not body:
            then(body, now)
        elif not getattr(media, "deferred", False):
            try:
                rewritten = media.rewrite_from_a(body) if side is Side.A else media.rewrite_from_b(body)
            except ValueError:
                rewritten = body  # undecodable SDP passes untouched rather than failing the call
            then(rewritten, now)
        elif not body.lstrip().startswith(b"v="):
            then(body, now)  # not SDP (an INFO's DTMF, ...): nothing for the media plane
        else:
            token, self._next_token = self._next_token, self._next_token + 1
            self._held[token] = then
            self._events.append(SdpNeeded(call, side, body, offer, token, now))


def _current(call: Call, leg: OutboundLeg) -> bool:
    """Whether ``leg`` is one the call is ringing now (its B leg, or one of its parallel forks)."""
    return call.b is leg or leg in call.forks


def _secure(uri: str) -> bool:
    return uri[:5].lower() == "sips:"


def _failure_kind(status: int) -> str:
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    return "failed"


def _unsupported(required: list[str], *, timers: bool = True) -> list[str]:
    """The ``required`` option tags we do not support (``timers`` False: session timers are off)."""
    supported = SUPPORTED_OPTIONS if timers else _SUPPORTED_WITHOUT_TIMERS
    return [opt for opt in required if opt not in supported]


def _accepts_sdp(accept: list[str]) -> bool:
    """Whether an Accept header list (empty: no header, SDP implied) admits application/sdp."""
    if not accept:
        return True
    types = {item.partition(";")[0].strip().lower() for item in accept}
    return bool(types & {"application/sdp", "application/*", "*/*"}) or types == {""}


def _options(values: list[str]) -> list[str]:
    return [v.strip().lower() for value in values for v in value.split(",") if v.strip()]


def _with_user(uri: str, user: str) -> str:
    scheme, _, rest = uri.partition(":")
    return f"{scheme}:{user}@{rest}" if user else uri


def _replace_tag(value: str, tag: str) -> str:
    end = value.rfind(">")
    head, tail = (value[: end + 1], value[end + 1 :]) if end >= 0 else ("", value)
    params = [p for p in tail.split(";") if p.strip() and not p.strip().lower().startswith("tag=")]
    if end < 0:
        head, params = params[0], params[1:]
    return ";".join([head, *params, f"tag={tag}"])
