"""What happens to a call, decided from what is known about it: pure values and tables, no I/O, no clock.

The CallFlow gathers the facts (plan, verdict, auction, whether the caller is still there), asks :func:`decide`
and then acts on the answer: :class:`Gone` (nothing left to do), :class:`Reject` (a final response to the caller)
or :class:`Dial` (the targets in order). When every target was tried, :func:`exhausted` says what the caller is
answered. Every final response the exchange gives of its own comes from one of the two tables below.
"""

from __future__ import annotations

from dataclasses import dataclass

from dce.billing.cdr import Disposition, HangupSide
from dce.compliance.screen import rejected
from dce.compliance.verdict import Verdict
from dce.exchange.router import Routed
from dce.exchange.screening import CallGate
from dce.sip.b2bua import CallCancelled, CallEnded, DialFailed


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended, as its CDR tells it."""

    disposition: Disposition
    final_code: int
    hangup_side: HangupSide | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the caller with a final failure: ``status`` with a Reason header; the CDR keeps ``reason`` whole."""

    status: int
    disposition: Disposition
    reason_header: str
    reason: str
    hangup_side: HangupSide | None = HangupSide.SYSTEM

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.disposition, self.status, self.hangup_side, self.reason)


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial the plan's targets in order until one answers."""

    routed: Routed


@dataclass(frozen=True, slots=True)
class Gone:
    """The call already ended (the caller left, or the exchange hung up) before anything was done."""

    event: CallEnded | CallCancelled


Decision = Gone | Reject | Dial


@dataclass(frozen=True, slots=True)
class Response:
    """One row of a table: the final response, the CDR's disposition, the Reason header's Q.850 cause and text
    (None: the call's own reason, quoted) and who the CDR says hung up."""

    status: int
    disposition: Disposition
    cause: int
    text: str | None = None
    hangup_side: HangupSide | None = HangupSide.SYSTEM

    def reject(self, reason: str, *, status: int | None = None, text: str | None = None) -> Reject:
        """This response for a call refused for ``reason`` (``status`` and ``text`` override the row's)."""
        shown = _quoted(text or self.text or reason)
        return Reject(status or self.status, self.disposition, f'Q.850;cause={self.cause};text="{shown}"', reason,
                      self.hangup_side)


NOT_DIALLED = "no target could be dialled (at capacity, or a number with no outbound trunk)"

# Refusals before any dial, in the order decide() checks them; then the ways setting up a call can fail.
REFUSALS = {
    "unallocated": Response(404, Disposition.REJECTED, 1, "unallocated number", hangup_side=None),
    "blocked": Response(603, Disposition.BLOCKED, 21, "call rejected"),  # the gate's status; its reason if detailed
    "refused": Response(403, Disposition.REJECTED, 21),  # a campaign rule; the refusal gives its own status
    "no_route": Response(480, Disposition.NO_ROUTE, 3),
    "not_dialled": Response(480, Disposition.NO_ROUTE, 34),
    "bad_offer": Response(488, Disposition.REJECTED, 88, "unreadable SDP offer"),
    "no_media": Response(503, Disposition.FAILED, 47, hangup_side=None),
    "error": Response(500, Disposition.FAILED, 41, "exchange error"),
}

# Final responses to the caller when every destination failed, by the last failure's kind.
FAILURE_RESPONSES = {
    "busy": Response(486, Disposition.BUSY, 17, "user busy"),
    "no_answer": Response(480, Disposition.NO_ANSWER, 19, "no answer"),
    "timeout": Response(408, Disposition.FAILED, 102, "destination timeout"),
    "failed": Response(503, Disposition.FAILED, 38, "destination failed"),
}


def decide(routed: Routed | None, verdict: Verdict, gate: CallGate | None,
           ended: CallEnded | CallCancelled | None) -> Decision:
    """What to do with a call once it is planned, screened and auctioned, checked in this order: the call ended
    meanwhile; no source knows the DID; the gate rejects it; a campaign rule refuses it; no target is left."""
    if ended is not None:
        return Gone(ended)
    if routed is None:
        return REFUSALS["unallocated"].reject("no route for DID")
    if rejected(verdict):
        assert gate is not None, "only a gate rejects"
        return REFUSALS["blocked"].reject(verdict.reason, status=gate.reject_status,
                                          text=verdict.reason if gate.caller_reason == "detailed" else None)
    if routed.refusal is not None:
        return REFUSALS["refused"].reject(routed.refusal.reason, status=routed.refusal.status)
    if not routed.plan.targets:
        return REFUSALS["no_route"].reject(routed.plan.reason or "no eligible target")
    return Dial(routed)


def exhausted(failure: DialFailed | None) -> Reject:
    """The caller's answer once no target took the call: by the last failure's kind (a definite client error from
    the destination is passed on as is), or 480 when no target could be dialled at all."""
    if failure is None:
        return REFUSALS["not_dialled"].reject(NOT_DIALLED)
    response = FAILURE_RESPONSES[failure.reason]
    passed_on = failure.reason == "failed" and 400 <= failure.status < 500
    detail = f" ({failure.detail})" if failure.detail else ""
    return response.reject(f"last destination: {failure.status} {failure.reason}{detail}",
                           status=failure.status if passed_on else None)


def ended(event: CallEnded | CallCancelled, *, answered: bool) -> Outcome:
    """The outcome of a call ended by its terminal event."""
    if isinstance(event, CallCancelled):
        return Outcome(Disposition.CANCELLED, 487, HangupSide.CALLER, "caller cancelled")
    if answered:
        return Outcome(Disposition.ANSWERED, 200, HangupSide(event.side), event.reason)
    return Outcome(Disposition.FAILED, 480, HangupSide.SYSTEM, event.reason)  # the exchange hung up first


def _quoted(text: str) -> str:
    """``text`` safe inside a Reason header's quoted string."""
    return text.replace("\\", "").replace('"', "'")
