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
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from dce.sip.admission import Admission, Admit, Challenged, Refuse
from dce.sip.dialog import Dialog
from dce.sip.endpoint import SipEndpoint, default_port, new_token
from dce.sip.message import (
    Request,
    Response,
    header_uri,
    make_response,
    uri_hostport,
    uri_user,
)
from dce.sip.outbound_auth import OutboundCredentials, authorized_retry
from dce.sip.source_limit import SourceLimit
from dce.sip.transaction import (
    Address,
    ClientInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    State,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
COPIED_HEADERS = ("P-Asserted-Identity", "Privacy", "Identity", "Subject")
PASS_THROUGH_METHODS = ("UPDATE", "INFO")  # forwarded end to end inside a dialog, like re-INVITE
SUPPORTED_OPTIONS: frozenset[str] = frozenset()  # no 100rel/timer yet: a Require for them is answered 420
URI_SCHEMES = frozenset({"sip", "sips", "tel"})  # Request-URI schemes we serve; any other is answered 416
# RFC 3398: Q.850 cause 34 maps to 503. Not 486: that says the callee is busy, and a carrier would not advance
# its route; a 503 with Retry-After tells this source alone to back off or try another route.
SOURCE_LIMIT_REASON = 'Q.850;cause=34;text="no circuit/channel available"'


class SdpRewriter(Protocol):
    """The media plane's view of a call (relay or passthrough)."""

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


CallEvent = CallOffered | DialProgress | DialAnswered | DialFailed | CallCancelled | CallEnded | CallRefused


# -- legs and calls ------------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class InboundLeg:
    """The caller's side: the INVITE we are serving."""

    txn: ServerInviteTransaction
    request: Request
    local_tag: str
    dialog: Dialog | None = None

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


@dataclass(slots=True, eq=False, weakref_slot=True)
class Call:
    """A call through the B2BUA. Its one timer is the maximum call duration, armed at answer."""

    id: str
    b2bua: B2BUA
    a: InboundLeg
    invite_at: float
    state: CallState = CallState.OFFERED
    b: OutboundLeg | None = None
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
        return uri_user(header_uri(self.a.request.get("From") or ""))

    @property
    def called_user(self) -> str:
        return uri_user(self.a.request.uri)

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.b2bua.hangup(self, now, reason="max call duration")


@dataclass(slots=True, eq=False)
class _Relay:
    """An in-dialog request forwarded to the other leg, awaiting its final response."""

    call: Call
    origin: ServerTransaction
    from_side: Side
    forwarded: ClientTransaction | None = None


class B2BUA:
    """Transaction user that pairs legs into calls. Drive it through its endpoint; read ``next_event()``."""

    def __init__(self, endpoint: SipEndpoint, *, max_calls_per_source: int = 0, retry_after_s: int = 5) -> None:
        self.endpoint = endpoint
        endpoint.tu = self
        self.source_limit = SourceLimit(max_calls_per_source)
        self.retry_after_s = retry_after_s
        self.calls: dict[str, Call] = {}
        self._dialogs: dict[tuple[str, str, str], tuple[Call, Side]] = {}
        self._events: deque[CallEvent] = deque()
        self.admission: Admission | None = None  # set: each new INVITE must pass it (trunk, digest, limits)
        self.wall_offset = 0.0  # wall-clock epoch seconds minus ``now`` (set by the driver; for digest nonces)

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
                          ring_timeout=ring_timeout, credentials=credentials)
        txn.user_data = leg
        call.b = leg
        call.state = CallState.DIALING
        call.attempts += 1
        call.max_duration = max_duration
        self._set_leg_timer(leg, "ring", now + ring_timeout)
        return leg

    def cancel_dial(self, call: Call, now: float, *, reason: str = "cancelled") -> None:
        """Stop ringing the current B leg (the caller keeps waiting unless the CallFlow rejects it)."""
        leg = call.b
        if leg is not None and not leg.finished and leg.dialog is None:
            self._cancel_leg(leg, now, reason)

    def hangup(self, call: Call, now: float, *, reason: str = "hangup") -> None:
        """End a call from the exchange's side: BYE both legs when answered, else CANCEL B and 480 A."""
        if call.state is CallState.ANSWERED:
            for side in (Side.A, Side.B):
                self._send_bye(call, side, now, reason)
        elif call.state in (CallState.OFFERED, CallState.DIALING):
            leg = call.b
            if leg is not None and not leg.finished and leg.dialog is None:
                self._cancel_leg(leg, now, "hangup")
            response = make_response(call.a.request, 480, to_tag=call.a.local_tag,
                                     extra=[("Reason", f'Q.850;cause=41;text="{reason}"')])
            self.endpoint.respond(call.a.txn, response, now)
        else:
            return
        self._end(call, CallEnded(call, "system", reason, now))

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
        leg, call.b = call.b, None
        if leg is not None and leg.txn.state is State.TERMINATED:
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
        elif method == "INVITE":
            self._new_call(txn, request, now)  # type: ignore[arg-type]
        elif unsupported := _unsupported(request):  # RFC 3261 §8.2.2.3 (RFC 4475 bext01)
            self.endpoint.respond(txn, make_response(request, 420, to_tag=new_token(), extra=[
                ("Unsupported", ", ".join(unsupported))]), now)
        elif method == "OPTIONS":
            self.endpoint.respond(txn, make_response(request, 200, to_tag=new_token(), extra=[
                ("Allow", ALLOW), ("Accept", "application/sdp")]), now)
        elif method == "BYE":
            self.endpoint.respond(txn, make_response(request, 481, to_tag=new_token()), now)
        else:
            self.endpoint.respond(txn, make_response(request, 405, to_tag=new_token(),
                                                     extra=[("Allow", ALLOW)]), now)

    def on_ack(self, request: Request, now: float) -> None:
        # A's ACK for our 2xx: the B leg was ACKed when its 2xx arrived, so there is nothing to forward.
        return

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
        if call.b is not None and not call.b.finished:
            self._cancel_leg(call.b, now, "cancelled", reason_header=reason)
        self._end(call, CallCancelled(call, now))

    def _new_call(self, txn: ServerInviteTransaction, request: Request, now: float) -> None:
        local_tag = new_token()
        max_forwards = request.get("Max-Forwards")
        if max_forwards is not None and int(max_forwards) <= 0:
            self.endpoint.respond(txn, make_response(request, 483, to_tag=local_tag), now)
            return
        unsupported = _unsupported(request)
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
        call = Call(id=new_token() + new_token(), b2bua=self, a=InboundLeg(txn, request, local_tag),
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

    def _in_dialog_request(self, txn: ServerTransaction, request: Request, now: float) -> None:
        found = self._dialogs.get((request.call_id, request.to_tag or "", request.from_tag or ""))
        if found is None:
            self.endpoint.respond(txn, make_response(request, 481), now)
            return
        call, side = found
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b else None)
        assert dialog is not None
        if not dialog.accept_remote_cseq(request):
            self.endpoint.respond(txn, make_response(request, 500, "CSeq out of order"), now)
            return
        method = request.method
        if method == "BYE":
            self.endpoint.respond(txn, make_response(request, 200), now)
            other = Side.B if side is Side.A else Side.A
            self._send_bye(call, other, now, "hangup")
            self._end(call, CallEnded(call, "caller" if side is Side.A else "callee", "bye", now))
        elif method == "OPTIONS":
            self.endpoint.respond(txn, make_response(request, 200, extra=[("Allow", ALLOW)]), now)
        elif method == "INVITE" or method in PASS_THROUGH_METHODS:
            self._relay_in_dialog(call, side, txn, request, now)
        else:
            self.endpoint.respond(txn, make_response(request, 405, extra=[("Allow", ALLOW)]), now)

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
        if request.method in ("INVITE", "UPDATE"):
            own.update_target(request)
        other = Side.B if side is Side.A else Side.A
        dialog = self._dialog(call, other)
        transport, addr = dialog.next_hop()
        forward = dialog.create_request(request.method,
                                        contact=self._contact(transport, addr, _secure(dialog.remote_target)))
        if max_forwards:
            forward.add("Max-Forwards", str(max(0, int(max_forwards) - 1)))
        if request.body:
            forward.body = self._rewrite(call, side, request.body)
            forward.add("Content-Type", request.get("Content-Type") or "application/sdp")
        client = self.endpoint.send_request(forward, transport, addr, now)
        relay = _Relay(call, txn, side, client)
        client.user_data = relay
        txn.user_data = relay  # so a CANCEL of a re-INVITE reaches the forwarded one

    # -- TransactionUser: responses --------------------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        owner = txn.user_data
        if isinstance(owner, OutboundLeg):
            self._leg_response(owner, txn, response, now)
        elif isinstance(owner, _Relay):
            self._relay_response(owner, txn, response, now)

    def _leg_response(self, leg: OutboundLeg, txn: ClientTransaction, response: Response, now: float) -> None:
        if txn.request.method != "INVITE":
            return  # responses to our CANCEL/BYE need no action
        status = response.status
        call = leg.call
        if status < 200:
            if status == 100:
                return
            leg.provisional = True
            if leg.cancel_pending:
                self._send_cancel(leg, now)
                return
            if leg.finished or call.b is not leg or call.state is not CallState.DIALING:
                return
            relayed = make_response(call.a.request, status, response.reason, to_tag=call.a.local_tag,
                                    extra=[("Contact", self._contact_a(call.a))])
            if response.body:
                relayed.body = self._rewrite(call, Side.B, response.body)
                relayed.add("Content-Type", response.get("Content-Type") or "application/sdp")
            self.endpoint.respond(call.a.txn, relayed, now)
            self._events.append(DialProgress(call, status, now))
        elif status < 300:
            self._leg_answered(leg, response, now)
        elif status in (401, 407) and self._retry_authorized(leg, txn, response, now):
            return
        else:
            self._leg_failed(leg, status, now)

    def _retry_authorized(self, leg: OutboundLeg, txn: ClientTransaction, response: Response, now: float) -> bool:
        """Answer the callee's first challenge once (its transaction ACKs the 401/407): the same INVITE with
        credentials, CSeq + 1, a new branch. False (the leg fails) on a second challenge, no credentials, a leg
        being cancelled or a challenge they cannot answer."""
        call = leg.call
        if (leg.credentials is None or leg.auth_tried or leg.finished or leg.cancel_pending or txn is not leg.txn
                or call.b is not leg or call.state is not CallState.DIALING):
            return False
        retry = authorized_retry(leg.request, response, leg.credentials)
        if retry is None:
            return False
        leg.auth_tried = True
        retried = self.endpoint.send_request(retry, txn.transport, txn.addr, now)
        assert isinstance(retried, ClientInviteTransaction)
        txn.user_data = None  # the challenged transaction only absorbs retransmissions now
        retried.user_data = leg
        leg.txn, leg.request, leg.provisional = retried, retry, False
        return True

    def _leg_answered(self, leg: OutboundLeg, response: Response, now: float) -> None:
        call = leg.call
        if leg.dialog is not None:  # retransmitted 2xx: our ACK was lost
            self._send_ack(leg, now)
            return
        leg.dialog = Dialog.as_uac(leg.request, response, leg.txn.transport, leg.txn.addr)
        self._send_ack(leg, now)
        wanted = not leg.finished and call.b is leg and call.state is CallState.DIALING
        if not wanted:
            # The 2xx crossed our CANCEL (or the leg was abandoned): confirm and immediately release it.
            leg.finished = True
            self._send_bye_on(leg.dialog, now, "cancelled")
            self._clear_leg_timer(leg)
            return
        leg.finished = True
        self._clear_leg_timer(leg)
        a = call.a
        answer = make_response(a.request, 200, to_tag=a.local_tag,
                               extra=[("Contact", self._contact_a(a)), ("Allow", ALLOW)])
        if response.body:
            answer.body = self._rewrite(call, Side.B, response.body)
            answer.add("Content-Type", response.get("Content-Type") or "application/sdp")
        self.endpoint.respond(a.txn, answer, now)
        a.dialog = Dialog.as_uas(a.request, a.local_tag, a.txn.transport, a.txn.addr)
        self._dialogs[a.dialog.id] = (call, Side.A)
        self._dialogs[leg.dialog.id] = (call, Side.B)
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
        if call.b is not leg or call.state is not CallState.DIALING:
            return
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
        if response.body:
            reply.body = self._rewrite(call, other, response.body)
            reply.add("Content-Type", response.get("Content-Type") or "application/sdp")
        self.endpoint.respond(origin, reply, now)

    def on_stray_response(self, response: Response, now: float) -> None:
        # A 2xx retransmitted after the INVITE transaction ended: re-ACK if it is one of our dialogs.
        if response.cseq[1] != "INVITE" or not 200 <= response.status < 300:
            return
        found = self._dialogs.get((response.call_id, response.from_tag or "", response.to_tag or ""))
        if found is not None and found[1] is Side.B and found[0].b is not None:
            self._send_ack(found[0].b, now)

    def on_client_timeout(self, txn: ClientTransaction, now: float) -> None:
        owner = txn.user_data
        if isinstance(owner, OutboundLeg) and txn.request.method == "INVITE":
            self._leg_failed(owner, 408, now, timed_out=True)  # nothing final within timer B: try the next hop
        elif isinstance(owner, _Relay):
            if txn.request.method == "INVITE":
                owner.call.pending_reinvite = False
            self.endpoint.respond(owner.origin, make_response(owner.origin.request, 408), now)

    def on_transport_error(self, txn: ClientTransaction, now: float, reason: str = "") -> None:
        owner = txn.user_data
        if isinstance(owner, OutboundLeg) and txn.request.method == "INVITE":
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
        if self.calls.pop(call.id, None) is not None:
            self.source_limit.release(call.source)
            if call.trunk is not None and self.admission is not None:
                self.admission.release(call.trunk)
        for dialog in (call.a.dialog, call.b.dialog if call.b else None):
            if dialog is not None:
                self._dialogs.pop(dialog.id, None)
        self._events.append(event)

    def _dialog(self, call: Call, side: Side) -> Dialog:
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b else None)
        assert dialog is not None, "leg has no dialog"
        return dialog

    def _send_bye(self, call: Call, side: Side, now: float, reason: str) -> None:
        dialog = call.a.dialog if side is Side.A else (call.b.dialog if call.b else None)
        if dialog is not None:
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
        (§8.1.1.8), else ``;transport=`` naming a stream transport."""
        endpoint = self.endpoint
        if transport not in endpoint.local:
            transport = "udp"
        hostport = endpoint.sent_by(transport, addr)
        if secure and transport == "tls":
            return f"<sips:{hostport}>"
        suffix = f";transport={transport}" if transport != "udp" else ""
        return f"<sip:{hostport}{suffix}>"

    def _contact_a(self, a: InboundLeg) -> str:
        return self._contact(a.txn.transport, a.txn.addr, _secure(a.request.uri))

    def _rewrite(self, call: Call, side: Side, body: bytes) -> bytes:
        media = call.media
        if media is None:
            return body
        try:
            return media.rewrite_from_a(body) if side is Side.A else media.rewrite_from_b(body)
        except ValueError:
            return body  # undecodable SDP passes untouched rather than failing the call


def _secure(uri: str) -> bool:
    return uri[:5].lower() == "sips:"


def _failure_kind(status: int) -> str:
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    return "failed"


def _unsupported(request: Request) -> list[str]:
    """The option tags ``request`` requires that we do not support."""
    return [opt for opt in _options(request.get_all("Require")) if opt not in SUPPORTED_OPTIONS]


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
