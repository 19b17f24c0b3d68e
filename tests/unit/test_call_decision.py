"""decide() and exhausted(): what a call's facts lead to, as plain values (no loop, no SIP, no clock)."""

from __future__ import annotations

import pytest

from dce.billing.cdr import Disposition, HangupSide
from dce.compliance.screen import Screener
from dce.compliance.verdict import ALLOW, Action, Finding, ReasonCode, Verdict
from dce.exchange.decision import (
    FAILURE_RESPONSES,
    REFUSALS,
    Dial,
    Gone,
    Outcome,
    Reject,
    decide,
    ended,
    exhausted,
)
from dce.exchange.router import Refusal, Routed
from dce.exchange.screening import CallGate
from dce.routing.model import PlannedTarget, RoutingPlan
from dce.sip.b2bua import Call, CallCancelled, CallEnded, DialFailed

TARGET = PlannedTarget("t1", "sip:127.0.0.1:5080", 0, 20.0)
PLANNED = Routed(RoutingPlan((TARGET,)))
CALL: Call = None  # type: ignore[assignment]  # events only carry it: decide never reads it
BLOCKED = Verdict(Action.REJECT, (Finding(Action.REJECT, ReasonCode.DNC_NATIONAL, 'on the "national" list'),))


def gate(*, status: int = 603, caller_reason: str = "generic") -> CallGate:
    return CallGate(Screener([]), reject_status=status, caller_reason=caller_reason)


def test_a_planned_call_is_dialled_with_its_plan():
    assert decide(PLANNED, ALLOW, None, None) == Dial(PLANNED)


def test_a_call_that_ended_meanwhile_is_gone_whatever_else_holds():
    bye = CallEnded(CALL, "caller", "caller hung up", 101.0)
    assert decide(None, BLOCKED, gate(), bye) == Gone(bye)
    cancel = CallCancelled(CALL, 101.0)
    assert decide(PLANNED, ALLOW, None, cancel) == Gone(cancel)


def test_an_unknown_did_is_404_unallocated_with_no_hangup_side():
    decision = decide(None, ALLOW, None, None)
    assert decision == Reject(404, Disposition.REJECTED, 'Q.850;cause=1;text="unallocated number"',
                              "no route for DID", None)
    assert decision.outcome == Outcome(Disposition.REJECTED, 404, None, "no route for DID")


@pytest.mark.parametrize(("caller_reason", "text"), [
    ("generic", "call rejected"), ("detailed", "dnc_national: on the 'national' list")])
def test_a_gate_rejection_uses_the_gates_status_and_tells_its_reason_only_when_detailed(caller_reason, text):
    decision = decide(PLANNED, BLOCKED, gate(status=403, caller_reason=caller_reason), None)
    assert decision == Reject(403, Disposition.BLOCKED, f'Q.850;cause=21;text="{text}"', BLOCKED.reason,
                              HangupSide.SYSTEM)


def test_the_gate_goes_before_a_campaign_refusal_and_a_refusal_before_an_empty_plan():
    refused = Routed(RoutingPlan((), "caller ID matches no RTB ping"), refusal=Refusal(403, 'no "ping"'))
    assert decide(refused, BLOCKED, gate(), None).disposition is Disposition.BLOCKED  # type: ignore[union-attr]
    assert decide(refused, ALLOW, None, None) == Reject(
        403, Disposition.REJECTED, """Q.850;cause=21;text="no 'ping'\"""", 'no "ping"', HangupSide.SYSTEM)


@pytest.mark.parametrize(("reason", "told"), [
    ("no eligible target: 2 closed, 1 capped", "no eligible target: 2 closed, 1 capped"), (None, "no eligible target")])
def test_an_empty_plan_is_480_no_route_with_the_plans_reason(reason, told):
    decision = decide(Routed(RoutingPlan((), reason)), ALLOW, None, None)
    assert decision == Reject(480, Disposition.NO_ROUTE, f'Q.850;cause=3;text="{told}"', told, HangupSide.SYSTEM)


@pytest.mark.parametrize(("kind", "status", "disposition", "header"), [
    ("busy", 486, Disposition.BUSY, 'Q.850;cause=17;text="user busy"'),
    ("no_answer", 480, Disposition.NO_ANSWER, 'Q.850;cause=19;text="no answer"'),
    ("timeout", 408, Disposition.FAILED, 'Q.850;cause=102;text="destination timeout"'),
    ("failed", 503, Disposition.FAILED, 'Q.850;cause=38;text="destination failed"'),
])
def test_the_last_failure_decides_the_callers_answer(kind, status, disposition, header):
    last = DialFailed(CALL, 599 if kind == "failed" else status, kind, 130.0)
    assert exhausted(last) == Reject(status, disposition, header, f"last destination: {last.status} {kind}",
                                     HangupSide.SYSTEM)


def test_a_definite_client_error_from_the_destination_is_passed_on():
    assert exhausted(DialFailed(CALL, 404, "failed", 130.0)).status == 404
    assert exhausted(DialFailed(CALL, 502, "failed", 130.0)).status == 503


def test_no_target_dialled_at_all_is_480_no_route():
    reject = exhausted(None)
    assert (reject.status, reject.disposition, reject.reason_header.split(";text=")[0]) == (
        480, Disposition.NO_ROUTE, "Q.850;cause=34")
    assert reject.reason.startswith("no target could be dialled")


def test_every_reason_header_is_a_quoted_q850_cause():
    for response in (*REFUSALS.values(), *FAILURE_RESPONSES.values()):
        header = response.reject('a "quoted" \\reason').reason_header
        assert header.startswith(f"Q.850;cause={response.cause};text=\"") and header.endswith('"')
        assert header.count('"') == 2 and "\\" not in header


def test_a_terminal_event_gives_the_outcome_of_its_ending():
    assert ended(CallCancelled(CALL, 1.0), answered=False) == Outcome(
        Disposition.CANCELLED, 487, HangupSide.CALLER, "caller cancelled")
    bye = CallEnded(CALL, "callee", "callee hung up", 1.0)
    assert ended(bye, answered=True) == Outcome(Disposition.ANSWERED, 200, HangupSide.CALLEE, "callee hung up")
    assert ended(bye, answered=False) == Outcome(Disposition.FAILED, 480, HangupSide.SYSTEM, "callee hung up")
