"""The CallFlow over the real SIP driver and B2BUA, with a virtual clock and fake sockets: routing, failover, CDRs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from dce.billing.cdr import CallDetailRecord, Disposition, HangupSide, SaleTerms
from dce.billing.postback import PostbackEvent
from dce.clock import VirtualClock
from dce.compliance.screen import ScreenedCall, Screener, Screening
from dce.compliance.verdict import Action, Finding, ReasonCode, Verdict
from dce.exchange.call_events import CallEvents
from dce.exchange.callflow import CallFlow
from dce.exchange.router import CallLimits, OutboundTrunk, Refusal, Routed, StaticRouter
from dce.exchange.screening import CallGate
from dce.exchange.sip_driver import SipDriver
from dce.media.relay import PassthroughMedia
from dce.routing.model import CallerContext, PlannedTarget, RoutingPlan
from dce.routing.static import StaticRoutes
from dce.sip.b2bua import B2BUA, Call
from dce.sip.endpoint import SipEndpoint
from tests.unit.sipfactory import SDP_A, Sent, ack_for, new_branch, parse_outbox, request, response_to

DID = "+18005550100"
CALLER = ("192.0.2.10", 5060)
T0 = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


class RecordedSockets:
    """Fake sockets for the driver: keep what it sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, tuple[str, int]]] = []
        self.tls_names: dict[tuple[str, int], str] = {}

    def send(self, data: bytes, transport: str, addr: tuple[str, int]) -> None:
        self.sent.append((data, transport, addr))

    def expect_tls_name(self, addr: tuple[str, int], name: str) -> None:
        self.tls_names[addr] = name

    def take(self) -> list[tuple[bytes, str, tuple[str, int]]]:
        out, self.sent = self.sent, []
        return out


class VirtualTimer:
    """The driver's one timer on the virtual clock: it fires when the test moves time past its deadline."""

    class Handle:
        def __init__(self, when: float, callback: Callable[[], object]) -> None:
            self.when, self.callback, self.cancelled = when, callback, False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.armed: VirtualTimer.Handle | None = None

    def call_at(self, when: float, callback: Callable[[], object]) -> Handle:
        self.armed = self.Handle(when, callback)
        return self.armed

    def fire_due(self, now: float) -> None:
        armed = self.armed
        if armed is not None and not armed.cancelled and armed.when <= now:
            self.armed = None
            armed.callback()


class Harness:
    def __init__(self, routes: dict[str, list[str]], ring_timeout_s: float = 20.0) -> None:
        self.endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)})
        self.b2bua = B2BUA(self.endpoint)
        self.clock = VirtualClock(T0 + timedelta(seconds=100), monotonic=100.0)
        self.wire = RecordedSockets()
        self.timer = VirtualTimer()
        self.sip = SipDriver(self.b2bua, clock=self.clock, sockets=self.wire, timers=self.timer)
        self.cdrs: list[CallDetailRecord] = []
        self.flow = CallFlow(sip=self.sip, router=StaticRouter(StaticRoutes(routes), ring_timeout_s),
                             media=PassthroughMedia(), cdrs=self, observer=self,
                             clock=self.clock)
        self.sip.deliver_to(self.flow.dispatch)
        self.delays: list[float] = []
        self.routing_times: list[float] = []
        self.active = self.reaped = 0

    # CdrSink / CallObserver
    def submit(self, cdr: CallDetailRecord) -> None:
        self.cdrs.append(cdr)

    def call_started(self) -> None:
        self.active += 1

    def call_finished(self, cdr: CallDetailRecord) -> None:
        self.active -= 1

    def call_reaped(self) -> None:
        self.reaped += 1

    def routed(self, seconds: float) -> None:
        self.routing_times.append(seconds)

    def dialled(self, delay_s: float) -> None:
        self.delays.append(delay_s)

    async def pump(self) -> None:
        """Let the call tasks run (the driver pumps the SIP side itself, after every input and command)."""
        for _ in range(5):
            await asyncio.sleep(0)

    async def feed(self, data: bytes, addr: tuple[str, int] = CALLER) -> list[Sent]:
        self.sip.receive(data, "udp", addr)
        await self.pump()
        return self.out()

    async def advance(self, seconds: float) -> list[Sent]:
        self.clock.advance(seconds)
        self.timer.fire_due(self.clock.monotonic())
        await self.pump()
        return self.out()

    def out(self) -> list[Sent]:
        return parse_outbox(self.wire.take())


def invite(uri: str = f"sip:{DID}@10.0.0.1") -> bytes:
    return request("INVITE", uri, body=SDP_A, from_uri="sip:+13125550199@192.0.2.10")


def requests_of(sent: list[Sent], method: str) -> list[Sent]:
    return [s for s in sent if s.message.__class__.__name__ == "Request" and s.request.method == method]


def statuses(sent: list[Sent], to: tuple[str, int] = CALLER) -> list[int]:
    return [s.response.status for s in sent if s.addr == to and s.message.__class__.__name__ == "Response"]


async def test_unknown_did_is_answered_404_with_a_reason_and_a_rejected_cdr():
    h = Harness({})
    sent = await h.feed(invite("sip:+18885550000@10.0.0.1"))
    assert statuses(sent) == [100, 404]
    assert "unallocated" in (sent[-1].response.get("Reason") or "")
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.did) == (Disposition.REJECTED, 404, "+18885550000")
    assert cdr.b_leg_call_id is None


async def test_busy_first_destination_fails_over_to_the_second_which_answers():
    h = Harness({DID: ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]})
    a_invite = invite()
    sent = await h.feed(a_invite)
    [first] = requests_of(sent, "INVITE")
    assert first.addr == ("127.0.0.1", 5080)
    assert first.request.uri == f"sip:{DID}@127.0.0.1:5080"

    h.clock.advance(0.5)
    sent = await h.feed(response_to(first.request, 486, to_tag="b1"), addr=first.addr)
    [second] = requests_of(sent, "INVITE")
    assert second.addr == ("127.0.0.1", 5081)
    assert requests_of(sent, "ACK"), "the 486 must be ACKed"

    h.clock.advance(1)
    sent = await h.feed(response_to(second.request, 180, to_tag="b2"), addr=second.addr)
    assert statuses(sent) == [180]
    h.clock.advance(2)
    sent = await h.feed(response_to(second.request, 200, to_tag="b2", contact="<sip:b@127.0.0.1:5081>",
                                    body=b"v=0\r\n"), addr=second.addr)
    assert statuses(sent) == [200]
    ok = sent[-1] if sent[-1].addr == CALLER else next(s for s in sent if s.addr == CALLER)
    await h.feed(ack_for(a_invite, ok.response, branch=new_branch()))

    h.clock.advance(30)
    bye = request("BYE", "sip:10.0.0.1:5060", call_id="call-1@192.0.2.10", to_tag=ok.response.to_tag,
                  cseq=2, from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")
    sent = await h.feed(bye)
    assert statuses(sent) == [200]
    assert [s.addr for s in requests_of(sent, "BYE")] == [("127.0.0.1", 5081)]
    await h.pump()

    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.ANSWERED
    assert cdr.destination == "sip:127.0.0.1:5081"
    assert cdr.caller == "+13125550199" and cdr.did == DID
    assert cdr.hangup_side is HangupSide.CALLER
    assert cdr.ring_at == T0 + timedelta(seconds=101.5)
    assert cdr.answer_at == T0 + timedelta(seconds=103.5)
    assert cdr.billable_s == 30 and cdr.duration_s == 34
    assert h.delays == [0.0]


async def test_every_destination_busy_gives_486_and_a_busy_cdr():
    h = Harness({DID: ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]})
    sent = await h.feed(invite())
    for port in (5080, 5081):
        [leg] = requests_of(sent, "INVITE")
        assert leg.addr == ("127.0.0.1", port)
        sent = await h.feed(response_to(leg.request, 486, to_tag=f"b{port}"), addr=leg.addr)
    assert statuses(sent) == [486]
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.hangup_side) == (Disposition.BUSY, 486, HangupSide.SYSTEM)


async def test_ring_timeout_cancels_the_leg_and_the_caller_gets_480():
    h = Harness({DID: ["sip:127.0.0.1:5080"]}, ring_timeout_s=5)
    sent = await h.feed(invite())
    [leg] = requests_of(sent, "INVITE")
    await h.feed(response_to(leg.request, 180, to_tag="b"), addr=leg.addr)
    sent = await h.advance(5)
    [cancel] = requests_of(sent, "CANCEL")
    assert cancel.addr == leg.addr
    sent = await h.feed(response_to(cancel.request, 200, to_tag="b"), addr=leg.addr)
    sent = await h.feed(response_to(leg.request, 487, to_tag="b"), addr=leg.addr)
    assert statuses(sent) == [480]
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code) == (Disposition.NO_ANSWER, 480)


async def test_caller_cancel_while_ringing_gives_a_cancelled_cdr():
    h = Harness({DID: ["sip:127.0.0.1:5080"]})
    a_invite = invite()
    sent = await h.feed(a_invite)
    [leg] = requests_of(sent, "INVITE")
    await h.feed(response_to(leg.request, 180, to_tag="b"), addr=leg.addr)
    via_branch = a_invite.split(b"branch=")[1].split(b"\r\n")[0].decode()
    cancel = request("CANCEL", f"sip:{DID}@10.0.0.1", branch=via_branch, cseq=1,
                     from_uri="sip:+13125550199@192.0.2.10")
    sent = await h.feed(cancel)
    assert sorted(statuses(sent)) == [200, 487]
    assert requests_of(sent, "CANCEL")[0].addr == leg.addr
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.hangup_side) == (Disposition.CANCELLED, 487, HangupSide.CALLER)


@pytest.mark.parametrize("body", [b"this is not sdp"])
async def test_unreadable_offer_in_relay_terms_is_488(body):
    class Strict(PassthroughMedia):
        async def allocate(self, call_id, on_timeout):
            session = await super().allocate(call_id, on_timeout)

            def refuse(sdp: bytes) -> bytes:
                raise ValueError("no v= line")

            session.rewrite_from_a = refuse  # type: ignore[method-assign]
            return session

    h = Harness({DID: ["sip:127.0.0.1:5080"]})
    h.flow.media = Strict()
    sent = await h.feed(request("INVITE", f"sip:{DID}@10.0.0.1", body=body))
    assert statuses(sent) == [100, 488]
    assert not requests_of(sent, "INVITE")
    assert h.cdrs[0].disposition is Disposition.REJECTED


async def test_finished_calls_leave_no_cyclic_garbage():
    """The GC policy (dce.exchange.gc_policy) relies on calls being freed by reference counting alone."""
    import gc

    from dce.sip.b2bua import OutboundLeg
    from dce.sip.transaction import Transaction

    h = Harness({DID: ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]}, ring_timeout_s=5)
    gc.collect()
    gc.disable()
    try:
        for n in range(3):
            a_invite = request("INVITE", f"sip:{DID}@10.0.0.1", body=SDP_A, call_id=f"c{n}@192.0.2.10")
            sent = await h.feed(a_invite)
            [first] = requests_of(sent, "INVITE")
            sent = await h.feed(response_to(first.request, 486, to_tag="b1"), addr=first.addr)
            [second] = requests_of(sent, "INVITE")
            sent = await h.feed(response_to(second.request, 200, to_tag="b2", contact="<sip:b@127.0.0.1:5081>",
                                            body=b"v=0\r\n"), addr=second.addr)
            ok = next(s for s in sent if s.addr == CALLER and s.message.__class__.__name__ == "Response")
            await h.feed(ack_for(a_invite, ok.response, branch=new_branch()))
            bye = request("BYE", "sip:10.0.0.1:5060", call_id=f"c{n}@192.0.2.10", to_tag=ok.response.to_tag,
                          cseq=2, from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")
            await h.feed(bye)
        await h.advance(40)  # every lingering transaction ends (64*T1)
        assert len(h.cdrs) == 3 and not h.b2bua.calls
        del sent, first, second, ok, a_invite, bye
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, Call | OutboundLeg | Transaction)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []


class Emitted:
    """A postback dispatcher stand-in that keeps what it is given."""

    def __init__(self, into: list) -> None:
        self.into = into

    def emit(self, event) -> int:
        self.into.append(event)
        return 1


class PlannedRouter:
    """A router with a fixed plan whose first target's concurrency slot is already taken."""

    def __init__(self, plan: RoutingPlan, full: set[str] = frozenset()) -> None:
        self.routed = Routed(plan, CallerContext(ani=None, did=DID, campaign_id="c1", publisher_id="p1"))
        self.full = full
        self.log: list[str] = []
        self.call_limits = CallLimits()

    def plan(self, request, now):
        return self.routed

    async def acquire(self, routed, target, now):
        if target.target_id in self.full:
            return False
        routed.held.add(target.target_id)
        self.log.append(f"acquire {target.target_id}")
        return True

    def release(self, routed, target):
        routed.held.discard(target.target_id)
        self.log.append(f"release {target.target_id}")

    def connected(self, routed, target, now):
        self.log.append(f"connected {target.target_id}")

    def completed(self, routed, target, billable_s, now):
        self.log.append(f"completed {target.target_id} {billable_s}s")

    def needs_auction(self, routed):
        return False

    async def auction(self, routed, call_id):
        return routed

    def without_buyers(self, routed, buyer_ids):
        return routed

    def limits(self, routed):
        return self.call_limits

    def terms(self, routed, target):
        if target is None:
            return SaleTerms("c1", "p1")
        return SaleTerms("c1", "p1", "b1", target.target_id, target.revenue, 60, payout_fixed=2_000_000)


async def test_a_known_did_with_no_eligible_target_gets_480_and_a_no_route_cdr():
    h = Harness({})
    h.flow.router = PlannedRouter(RoutingPlan((), reason="no eligible target: 2 closed, 1 capped"))
    sent = await h.feed(invite())
    assert statuses(sent) == [100, 480]
    assert "2 closed" in (sent[-1].response.get("Reason") or "")
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.reason) == (Disposition.NO_ROUTE, "no eligible target: 2 closed, 1 capped")
    assert cdr.terms == SaleTerms("c1", "p1")  # reports count the campaign's call even though nobody bought it
    assert cdr.extra == {"campaign_id": "c1", "publisher_id": "p1"}


async def test_a_refused_call_gets_the_refusal_status_with_a_reason_and_a_rejected_cdr():
    h = Harness({})
    router = PlannedRouter(RoutingPlan(()))
    router.routed.refusal = Refusal(403, "caller ID matches no RTB ping")
    h.flow.router = router
    sent = await h.feed(invite())
    assert statuses(sent) == [100, 403]
    assert 'text="caller ID matches no RTB ping"' in (sent[-1].response.get("Reason") or "")
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.reason) == (Disposition.REJECTED, 403, "caller ID matches no RTB ping")


async def test_a_target_at_capacity_is_skipped_and_slots_follow_the_legs():
    plan = RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 5_000_000, 20),
                        PlannedTarget("t2", "sip:127.0.0.1:5081", 4_000_000, 7),
                        PlannedTarget("t3", "sip:127.0.0.1:5082", 3_000_000, 20)))
    router = PlannedRouter(plan, full={"t1"})
    h = Harness({})
    h.flow.router = router
    emitted: list[PostbackEvent] = []
    h.flow.events = CallEvents(Emitted(emitted))
    sent = await h.feed(invite())
    [leg] = requests_of(sent, "INVITE")
    assert leg.addr == ("127.0.0.1", 5081)
    await h.feed(response_to(leg.request, 180, to_tag="b"), addr=leg.addr)
    sent = await h.advance(7)  # t2's own ring timeout, not the default
    [cancel] = requests_of(sent, "CANCEL")
    await h.feed(response_to(cancel.request, 200, to_tag="b"), addr=leg.addr)
    sent = await h.feed(response_to(leg.request, 487, to_tag="b"), addr=leg.addr)
    [third] = requests_of(sent, "INVITE")
    assert third.addr == ("127.0.0.1", 5082)
    sent = await h.feed(response_to(third.request, 200, to_tag="c", contact="<sip:c@127.0.0.1:5082>",
                                    body=b"v=0\r\n"), addr=third.addr)
    ok = next(s for s in sent if s.addr == CALLER and s.message.__class__.__name__ == "Response")
    bye = request("BYE", "sip:10.0.0.1:5060", call_id="call-1@192.0.2.10", to_tag=ok.response.to_tag, cseq=2,
                  from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")
    await h.feed(bye)
    assert router.log == ["acquire t2", "release t2", "acquire t3", "connected t3", "release t3", "completed t3 0s"]
    [cdr] = h.cdrs
    assert cdr.extra["target_id"] == "t3" and cdr.extra["revenue_micros"] == "3000000"
    assert cdr.terms == SaleTerms("c1", "p1", "b1", "t3", 3_000_000, 60, payout_fixed=2_000_000)
    assert [(e.name, e.campaign_id, e.target_id) for e in emitted] == [
        ("incoming", "c1", None), ("connected", "c1", "t3"), ("completed", "c1", "t3")]
    assert emitted[1].revenue == 3_000_000 and emitted[2].disposition == "answered"
    assert cdr.dial_at == cdr.invite_at  # the first INVITE out left at once (virtual clock)


async def test_an_unreachable_destination_fails_over_at_once():
    h = Harness({DID: ["sip:127.0.0.1:5080;transport=tcp", "sip:127.0.0.1:5081"]})
    h.endpoint.local["tcp"] = ("10.0.0.1", 5060)
    sent = await h.feed(invite())
    [first] = requests_of(sent, "INVITE")
    assert (first.transport, first.addr) == ("tcp", ("127.0.0.1", 5080))
    h.sip.transport_error("tcp", ("127.0.0.1", 5080))  # the connect was refused
    await h.pump()
    [second] = requests_of(h.out(), "INVITE")
    assert second.addr == ("127.0.0.1", 5081)


async def test_number_destinations_are_dialled_through_the_outbound_trunk():
    plan = RoutingPlan((PlannedTarget("t1", "+12125550123", 1_000_000, 20),))
    h = Harness({})
    h.flow.router = PlannedRouter(plan)
    h.flow.trunk = OutboundTrunk("sip:203.0.113.5:5070")
    sent = await h.feed(invite())
    [leg] = requests_of(sent, "INVITE")
    assert leg.addr == ("203.0.113.5", 5070)
    assert leg.request.uri == "sip:+12125550123@203.0.113.5:5070"


async def test_a_number_destination_without_a_trunk_is_skipped():
    plan = RoutingPlan((PlannedTarget("t1", "+12125550123", 1_000_000, 20),
                        PlannedTarget("t2", "sip:127.0.0.1:5081", 1_000_000, 20)))
    h = Harness({})
    h.flow.router = PlannedRouter(plan)
    sent = await h.feed(invite())
    [leg] = requests_of(sent, "INVITE")
    assert leg.addr == ("127.0.0.1", 5081)


class Screened(Harness):
    """A harness whose calls pass a gate of given checks; records what the gate saw and the verdicts."""

    def __init__(self, routes: dict[str, list[str]], *checks, reject_status: int = 603,
                 caller_reason: str = "generic") -> None:
        super().__init__(routes)
        self.seen: list[ScreenedCall] = []
        self.verdicts: list[Verdict] = []

        def spy(call: ScreenedCall, now: float, out: Screening) -> None:
            self.seen.append(call)

        self.flow.gate = CallGate(Screener([spy, *checks]), reject_status=reject_status, caller_reason=caller_reason)

    def screened(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)


def finding(action: Action, code: ReasonCode, detail: str = ""):
    def check(call: ScreenedCall, now: float, out: Screening) -> None:
        out.add(Finding(action, code, detail))
        out.verstat = "TN-Validation-Passed-A"
        out.risk = 0.25

    return check


@pytest.mark.parametrize("status", [603, 403])
async def test_a_rejected_caller_gets_the_configured_status_a_q850_reason_and_a_blocked_cdr(status):
    h = Screened({DID: ["sip:127.0.0.1:5080"]}, finding(Action.REJECT, ReasonCode.DNC_NATIONAL, "national DNC"),
                 reject_status=status)
    sent = await h.feed(invite())
    assert statuses(sent) == [100, status]
    assert not requests_of(sent, "INVITE"), "a blocked call must not be dialled"
    assert sent[-1].response.get("Reason") == 'Q.850;cause=21;text="call rejected"'  # the details: CDR and API
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.reason) == (Disposition.BLOCKED, status, "dnc_national: national DNC")
    assert cdr.extra["compliance"] == "reject" and cdr.extra["compliance_codes"] == "dnc_national"
    assert cdr.verstat == "TN-Validation-Passed-A" and cdr.extra["fraud_risk"] == "0.250"
    [seen] = h.seen
    assert (seen.ani, seen.did, seen.identity) == ("+13125550199", DID, None)
    assert h.verdicts[0].action is Action.REJECT


@pytest.mark.parametrize(("caller_reason", "text"), [
    ("generic", "call rejected"), ("detailed", "fraud_risk: risk 0.91 (velocity_ani, invalid_ani)")])
async def test_a_fraud_reject_tells_the_caller_its_score_only_when_configured(caller_reason, text):
    h = Screened({DID: ["sip:127.0.0.1:5080"]},
                 finding(Action.REJECT, ReasonCode.FRAUD_RISK, "risk 0.91 (velocity_ani, invalid_ani)"),
                 caller_reason=caller_reason)
    sent = await h.feed(invite())
    assert sent[-1].response.get("Reason") == f'Q.850;cause=21;text="{text}"'
    [cdr] = h.cdrs
    assert cdr.reason == "fraud_risk: risk 0.91 (velocity_ani, invalid_ani)"


async def test_a_flagged_call_is_routed_and_carries_the_flag_into_its_cdr():
    h = Screened({DID: ["sip:127.0.0.1:5080"]}, finding(Action.FLAG, ReasonCode.VELOCITY_ANI))
    sent = await h.feed(invite())
    [out] = requests_of(sent, "INVITE")
    await h.feed(response_to(out.request, 486, to_tag="b1"), addr=out.addr)
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.BUSY
    assert (cdr.extra["compliance"], cdr.extra["compliance_codes"]) == ("flag", "velocity_ani")


async def test_the_gate_reads_the_identity_and_asserted_identity_headers():
    h = Screened({DID: ["sip:127.0.0.1:5080"]})
    data = request("INVITE", f"sip:{DID}@10.0.0.1", body=SDP_A, from_uri="sip:+13125550199@192.0.2.10",
                   extra=[("Identity", "eyJ.a.b;info=<https://cert.example/sp.pem>;alg=ES256;ppt=shaken"),
                                  ("P-Asserted-Identity", "<sip:+13125550100@192.0.2.10>")])
    await h.feed(data)
    [seen] = h.seen
    assert seen.identity is not None and seen.identity.startswith("eyJ.a.b;info=")
    assert seen.asserted == "+13125550100"
