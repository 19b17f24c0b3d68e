"""The sans-IO B2BUA against a scripted caller (A) and callee (B), on a virtual clock."""

from __future__ import annotations

import pytest

from dce.sip.b2bua import (
    B2BUA,
    Call,
    CallCancelled,
    CallEnded,
    CallEvent,
    CallOffered,
    CallState,
    DialAnswered,
    DialFailed,
    DialProgress,
)
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, Response, parse
from dce.sip.session_timer import TimerPolicy
from tests.unit.sipfactory import (
    SDP_A,
    SDP_A2,
    SDP_B,
    Sent,
    ack_for,
    describe,
    new_branch,
    parse_outbox,
    request,
    response_to,
)

ALICE = ("192.0.2.10", 5060)
BOB = ("198.51.100.20", 5060)
BOB_URI = "sip:bob@198.51.100.20"
CAROL = ("198.51.100.30", 5060)
BOB_CONTACT = "<sip:bob@198.51.100.20:5060>"


class FakeMedia:
    """An SdpRewriter that marks which side an SDP came from."""

    def rewrite_from_a(self, sdp: bytes) -> bytes:
        return sdp.replace(b"192.0.2.10", b"10.0.0.1")

    def rewrite_from_b(self, sdp: bytes) -> bytes:
        return sdp.replace(b"198.51.100.20", b"10.0.0.1")


class Harness:
    """One B2BUA on a virtual clock, with helpers to play A and B."""

    def __init__(self, session_timers: TimerPolicy | None = TimerPolicy()) -> None:
        self.endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)})
        self.b2bua = B2BUA(self.endpoint, session_timers=session_timers)
        self.now = 0.0
        self.a_invite = b""
        self.a_branch = ""
        self.b_invite: Request | None = None
        self.b_ok: Response | None = None

    # wire
    def feed(self, data: bytes, addr: tuple[str, int] = ALICE) -> list[Sent]:
        self.b2bua.receive(data, "udp", addr, self.now)
        return self.take()

    def take(self) -> list[Sent]:
        return parse_outbox(self.b2bua.datagrams_to_send())

    def advance(self, until: float) -> list[Sent]:
        sent: list[Sent] = []
        while (deadline := self.b2bua.next_timer()) is not None and deadline <= until:
            self.now = deadline
            self.b2bua.handle_timer(deadline)
            sent += self.take()
        self.now = until
        return sent

    def events(self) -> list[CallEvent]:
        out = []
        while (event := self.b2bua.next_event()) is not None:
            out.append(event)
        return out

    # A side
    def offer(self, **kw: object) -> Call:
        self.a_branch = new_branch()
        self.a_invite = request("INVITE", branch=self.a_branch, body=SDP_A, **kw)  # type: ignore[arg-type]
        sent = self.feed(self.a_invite)
        assert describe(sent) == ["100"]
        events = self.events()
        assert len(events) == 1 and isinstance(events[0], CallOffered)
        return events[0].call

    def a_request(self, method: str, call: Call, cseq: int, **kw: object) -> bytes:
        return request(method, uri="sip:10.0.0.1:5060", to_uri=BOB_URI.replace("198.51.100.20", "10.0.0.1"),
                       to_tag=call.a.local_tag, cseq=cseq, **kw)  # type: ignore[arg-type]

    # B side
    def dial(self, call: Call, destination: str = BOB_URI, ring_timeout: float = 60.0,
             max_duration: float | None = None) -> Request:
        self.b2bua.dial(call, destination, self.now, ring_timeout=ring_timeout, max_duration=max_duration)
        sent = self.take()
        assert describe(sent) == ["INVITE"]
        self.b_invite = sent[0].request
        return sent[0].request

    def b_says(self, status: int, *, to_tag: str = "bob-tag", body: bytes = b"",
               addr: tuple[str, int] = BOB) -> list[Sent]:
        assert self.b_invite is not None
        data = response_to(self.b_invite, status, to_tag=to_tag if status > 100 else None,
                           contact=BOB_CONTACT if status < 300 else None, body=body)
        if 200 <= status < 300:
            self.b_ok = parse(data)  # type: ignore[assignment]
        return self.feed(data, addr)

    def b_request(self, method: str, cseq: int, body: bytes = b"",
                  extra: list[tuple[str, str]] | None = None) -> bytes:
        """An in-dialog request from B, built from our INVITE to B and B's 200."""
        assert self.b_invite is not None and self.b_ok is not None
        lines = [
            f"{method} {self.b_invite.get('Contact', '')[1:-1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 198.51.100.20:5060;branch={new_branch()}",
            "Max-Forwards: 70",
            f"From: {self.b_ok.get('To')}",
            f"To: {self.b_invite.get('From')}",
            f"Call-ID: {self.b_invite.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: {BOB_CONTACT}",
            *(f"{name}: {value}" for name, value in extra or ()),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def answer(self, call: Call, max_duration: float | None = None) -> None:
        """Dial B, ring, answer, and have A ACK: a confirmed call."""
        self.dial(call, max_duration=max_duration)
        self.b_says(180)
        sent = self.b_says(200, body=SDP_B)
        assert describe(sent) == ["ACK", "200"]
        self.events()
        ok_to_a = sent[1].response
        assert self.feed(ack_for(self.a_invite, ok_to_a, branch=new_branch())) == []


def by_addr(sent: list[Sent], addr: tuple[str, int]) -> list[Sent]:
    return [s for s in sent if s.addr == addr]


# -- basic call ---------------------------------------------------------------------------------------------
def test_basic_call_caller_hangs_up() -> None:
    h = Harness()
    call = h.offer()
    assert (call.caller_user, call.called_user) == ("alice", "bob")
    b_invite = h.dial(call)
    assert b_invite.uri == BOB_URI and b_invite.body == SDP_A
    assert b_invite.call_id != call.a.call_id and b_invite.from_tag != "alice-tag"
    assert b_invite.get("Max-Forwards") == "69"  # copied from A (70) and decremented

    assert h.b_says(100) == []  # a 100 from B is not relayed
    sent = h.b_says(180)
    assert describe(sent) == ["180"] and sent[0].addr == ALICE
    assert sent[0].response.to_tag == call.a.local_tag  # A's dialog uses our tag, not B's
    assert sent[0].response.call_id == "call-1@192.0.2.10"
    progress = h.events()
    assert len(progress) == 1 and isinstance(progress[0], DialProgress) and progress[0].status == 180

    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["ACK", "200"]
    ack, ok = sent[0].request, sent[1].response
    assert sent[0].addr == BOB and ack.uri == "sip:bob@198.51.100.20:5060"
    assert ack.to_tag == "bob-tag" and ack.cseq == (1, "ACK")
    assert sent[1].addr == ALICE and ok.to_tag == call.a.local_tag
    assert ok.get("Contact") == "<sip:10.0.0.1:5060>"
    assert ok.body == SDP_B
    assert [type(e) for e in h.events()] == [DialAnswered]
    assert call.state is CallState.ANSWERED

    # A's ACK is absorbed (B was ACKed already)
    assert h.feed(ack_for(h.a_invite, ok, branch=new_branch())) == []

    sent = h.feed(h.a_request("BYE", call, 2))
    assert sorted(describe(sent)) == ["200", "BYE"]
    (ok_bye,) = by_addr(sent, ALICE)
    (bye,) = by_addr(sent, BOB)
    assert ok_bye.response.status == 200 and ok_bye.response.cseq == (2, "BYE")
    assert bye.request.uri == "sip:bob@198.51.100.20:5060"
    assert bye.request.to_tag == "bob-tag" and bye.request.call_id == b_invite.call_id
    assert bye.request.cseq == (2, "BYE")
    ended = h.events()
    assert len(ended) == 1 and isinstance(ended[0], CallEnded) and ended[0].side == "caller"
    assert h.b2bua.active_calls == 0
    assert h.feed(response_to(bye.request, 200), BOB) == []  # B's 200 to our BYE needs nothing


def test_callee_hangs_up() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    sent = h.feed(h.b_request("BYE", 1), BOB)
    assert sorted(describe(sent)) == ["200", "BYE"]
    (bye,) = by_addr(sent, ALICE)
    assert bye.request.uri == "sip:alice@192.0.2.10:5060"  # A's Contact
    assert bye.request.from_tag == call.a.local_tag and bye.request.to_tag == "alice-tag"
    assert bye.request.call_id == "call-1@192.0.2.10"
    assert by_addr(sent, BOB)[0].response.status == 200
    ended = h.events()
    assert isinstance(ended[0], CallEnded) and ended[0].side == "callee"


# -- failures and retries ----------------------------------------------------------------------------------
def test_busy_then_second_destination_answers() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    sent = h.b_says(486)
    assert describe(sent) == ["ACK"] and sent[0].addr == BOB  # the transaction ACKs the 486; A hears nothing
    failed = h.events()
    assert len(failed) == 1 and isinstance(failed[0], DialFailed)
    assert (failed[0].status, failed[0].reason) == (486, "busy")
    assert call.state is CallState.DIALING  # A still waiting

    first = h.b_invite
    second = h.dial(call, "sip:carol@198.51.100.30")
    assert second.call_id != first.call_id and second.uri == "sip:carol@198.51.100.30"
    sent = h.b_says(200, body=SDP_B, addr=CAROL)
    assert describe(sent) == ["ACK", "200"]
    assert sent[0].addr == BOB  # ACK to the Contact Carol's 200 gave (our scripted peer reuses Bob's)
    assert [type(e) for e in h.events()] == [DialAnswered]
    assert call.attempts == 2


def test_ring_timeout_cancels_after_provisional_then_487_is_no_answer() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call, ring_timeout=10.0)
    h.b_says(180)
    h.events()
    assert h.advance(9.9) == []
    sent = h.advance(10.0)
    assert describe(sent) == ["CANCEL"] and sent[0].addr == BOB
    cancel = sent[0].request
    assert cancel.top_via.branch == h.b_invite.top_via.branch and cancel.cseq == (1, "CANCEL")
    assert h.feed(response_to(cancel, 200), BOB) == []
    sent = h.b_says(487)
    assert describe(sent) == ["ACK"]
    failed = h.events()
    assert len(failed) == 1 and isinstance(failed[0], DialFailed) and failed[0].reason == "no_answer"
    assert call.state is CallState.DIALING


def test_ring_timeout_without_any_response_fails_at_once() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call, ring_timeout=5.0)
    sent = h.advance(5.0)
    assert "CANCEL" not in describe(sent)  # §9.1: no CANCEL before a provisional
    failed = h.events()
    assert len(failed) == 1 and isinstance(failed[0], DialFailed) and failed[0].reason == "no_answer"


def test_caller_cancel_while_ringing() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.b_says(180)
    h.events()
    sent = h.feed(request("CANCEL", branch=h.a_branch))
    labels = describe(sent)
    assert sorted(labels) == ["200", "487", "CANCEL"]
    ok_cancel, terminated = by_addr(sent, ALICE)
    assert ok_cancel.response.cseq == (1, "CANCEL") and ok_cancel.response.status == 200
    assert terminated.response.status == 487 and terminated.response.to_tag == call.a.local_tag
    assert by_addr(sent, BOB)[0].request.method == "CANCEL"
    assert [type(e) for e in h.events()] == [CallCancelled]
    # A ACKs the 487 (same branch): absorbed by the server transaction
    assert h.feed(ack_for(h.a_invite, terminated.response)) == []
    assert h.b_says(487) and h.events() == []  # B's 487: ACKed, no further event


def test_callee_200_crossing_cancel_gets_ack_and_bye_and_a_only_487() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.b_says(180)
    sent = h.feed(request("CANCEL", branch=h.a_branch))
    assert sorted(describe(sent)) == ["200", "487", "CANCEL"]
    h.events()
    sent = h.b_says(200, body=SDP_B)  # B answered before it saw our CANCEL
    assert describe(sent) == ["ACK", "BYE"]
    assert all(s.addr == BOB for s in sent)
    assert sent[1].request.to_tag == "bob-tag"
    assert h.events() == []
    assert call.state is CallState.ENDED


def test_max_forwards_zero_answered_483() -> None:
    h = Harness()
    sent = h.feed(request("INVITE", max_forwards=0, body=SDP_A))
    assert describe(sent) == ["100", "483"]
    assert sent[1].response.to_tag is not None
    assert h.events() == [] and h.b2bua.active_calls == 0


def test_unsupported_require_gets_420() -> None:
    h = Harness()
    sent = h.feed(request("INVITE", extra=[("Require", "100rel, timer, foo")], body=SDP_A))
    assert describe(sent) == ["100", "420"]
    assert sent[1].response.get_all("Unsupported") == ["foo"]  # 100rel and timer are supported
    assert h.events() == []


def test_out_of_dialog_bye_gets_481() -> None:
    h = Harness()
    sent = h.feed(request("BYE"))
    assert describe(sent) == ["481"]


# -- re-INVITE ----------------------------------------------------------------------------------------------
def test_reinvite_from_a_relayed_with_sdp_rewritten() -> None:
    h = Harness()
    call = h.offer()
    call.media = FakeMedia()
    b_invite = h.dial(call)
    assert b"10.0.0.1" in b_invite.body and b"192.0.2.10" not in b_invite.body
    h.b_says(180)
    sent = h.b_says(200, body=SDP_B)
    ok = sent[1].response
    assert b"198.51.100.20" not in ok.body  # B's SDP rewritten towards A
    h.events()
    h.feed(ack_for(h.a_invite, ok, branch=new_branch()))

    hold = SDP_A.replace(b"a=rtpmap", b"a=sendonly\r\na=rtpmap")
    sent = h.feed(h.a_request("INVITE", call, 2, body=hold))
    assert describe(sent) == ["100", "INVITE"]
    reinvite = sent[1].request
    assert sent[1].addr == BOB and reinvite.uri == "sip:bob@198.51.100.20:5060"
    assert reinvite.to_tag == "bob-tag" and reinvite.call_id == b_invite.call_id
    assert reinvite.cseq == (2, "INVITE") and reinvite.get("Max-Forwards") == "69"
    assert reinvite.body == FakeMedia().rewrite_from_a(hold)

    ok_b = response_to(reinvite, 200, contact=BOB_CONTACT, body=SDP_B)
    sent = h.feed(ok_b, BOB)
    assert describe(sent) == ["ACK", "200"]
    assert sent[0].addr == BOB and sent[0].request.cseq == (2, "ACK")
    relayed = sent[1].response
    assert sent[1].addr == ALICE and relayed.cseq == (2, "INVITE")
    assert relayed.body == FakeMedia().rewrite_from_b(SDP_B)
    assert relayed.get("Contact") == "<sip:10.0.0.1:5060>"
    assert h.feed(ack_for(h.a_request("INVITE", call, 2), relayed, branch=new_branch())) == []
    assert call.pending_reinvite is False


def test_second_reinvite_while_one_pending_gets_491() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    sent = h.feed(h.a_request("INVITE", call, 2, body=SDP_A2))  # a new offer: relayed
    assert describe(sent) == ["100", "INVITE"]
    sent = h.feed(h.b_request("INVITE", 1, body=SDP_B), BOB)
    assert describe(sent) == ["100", "491"]
    assert all(s.addr == BOB for s in sent)


def test_reinvite_failure_relayed_back() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    reinvite = h.feed(h.a_request("INVITE", call, 2, body=SDP_A2))[1].request
    sent = h.feed(response_to(reinvite, 488), BOB)
    assert describe(sent) == ["ACK", "488"]  # the transaction ACKs B's 488; A gets the 488
    assert sent[1].addr == ALICE
    assert call.pending_reinvite is False
    assert call.state is CallState.ANSWERED


# -- exchange-initiated ------------------------------------------------------------------------------------
def test_hangup_sends_bye_to_both() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    h.b2bua.hangup(call, h.now)
    sent = h.take()
    assert describe(sent) == ["BYE", "BYE"]
    assert {s.addr for s in sent} == {ALICE, BOB}
    ended = h.events()
    assert isinstance(ended[0], CallEnded) and ended[0].side == "system"


def test_reject_before_dial() -> None:
    h = Harness()
    call = h.offer()
    h.b2bua.reject(call, 404, h.now)
    sent = h.take()
    assert describe(sent) == ["404"] and sent[0].response.to_tag == call.a.local_tag
    assert h.b2bua.active_calls == 0


@pytest.mark.parametrize("status", [408, 480, 503])
def test_failure_kinds(status: int) -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.b_says(status)
    (event,) = h.events()
    assert isinstance(event, DialFailed)
    assert event.reason == ("no_answer" if status in (408, 480) else "failed")


# -- retransmissions and timeouts ----------------------------------------------------------------------------
def test_retransmitted_2xx_from_callee_is_acked_again_even_after_the_transaction_ended() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    ok = response_to(h.b_invite, 200, to_tag="bob-tag", contact=BOB_CONTACT, body=SDP_B)  # type: ignore[arg-type]
    assert describe(h.feed(ok, BOB)) == ["ACK"]  # within timer M: through the transaction
    h.advance(h.now + 40.0)  # the INVITE client transaction is gone (timer M)
    sent = h.feed(ok, BOB)
    assert describe(sent) == ["ACK"] and sent[0].request.to_tag == "bob-tag"  # stray 2xx: still re-ACKed
    assert h.events() == []


def test_caller_never_acks_our_2xx_call_is_hung_up() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.b_says(200, body=SDP_B)
    h.events()
    sent = h.advance(31.0)
    assert set(describe(sent)) == {"200"}  # our 2xx to A is retransmitted while unACKed
    sent = h.advance(32.0)  # timer L = 64*T1: A never ACKed
    byes = [s for s in sent if describe([s]) == ["BYE"]]
    assert {s.addr for s in byes} == {ALICE, BOB} and len(byes) == 2
    ended = h.events()
    assert isinstance(ended[0], CallEnded) and ended[0].side == "system"
    assert h.b2bua.active_calls == 0


def test_caller_cancel_before_callee_provisional_defers_our_cancel() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    sent = h.feed(request("CANCEL", branch=h.a_branch))
    assert sorted(describe(sent)) == ["200", "487"]  # no CANCEL to B before it answered anything (§9.1)
    assert [type(e) for e in h.events()] == [CallCancelled]
    sent = h.b_says(180)
    assert describe(sent) == ["CANCEL"] and sent[0].addr == BOB
    assert call.state is CallState.ENDED


def test_cancel_before_dial() -> None:
    h = Harness()
    h.offer()
    sent = h.feed(request("CANCEL", branch=h.a_branch))
    assert sorted(describe(sent)) == ["200", "487"]
    assert [type(e) for e in h.events()] == [CallCancelled]
    assert h.b2bua.active_calls == 0


def test_hangup_while_dialing_cancels_b_and_480s_a() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.b_says(180)
    h.events()
    h.b2bua.hangup(call, h.now)
    sent = h.take()
    assert sorted(describe(sent)) == ["480", "CANCEL"]
    assert by_addr(sent, ALICE)[0].response.get("Reason", "").startswith("Q.850;cause=41")
    [ended] = h.events()  # the CallFlow waiting on this call hears that it is over
    assert isinstance(ended, CallEnded) and (ended.side, ended.reason) == ("system", "hangup")
    h.advance(h.now + 60.0)
    assert h.events() == []  # B's leg ending later adds nothing


def test_info_from_callee_relayed_to_caller_and_answer_relayed_back() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    sent = h.feed(h.b_request("INFO", 1), BOB)
    assert describe(sent) == ["INFO"] and sent[0].addr == ALICE
    info = sent[0].request
    assert info.from_tag == call.a.local_tag and info.to_tag == "alice-tag"
    sent = h.feed(response_to(info, 200), ALICE)
    assert describe(sent) == ["200"] and sent[0].addr == BOB and sent[0].response.cseq == (1, "INFO")


def test_in_dialog_request_with_old_cseq_gets_500() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    sent = h.feed(h.a_request("OPTIONS", call, 1))  # INVITE used CSeq 1
    assert describe(sent) == ["500"]
    sent = h.feed(h.a_request("OPTIONS", call, 5))
    assert describe(sent) == ["200"]


def test_cancel_of_a_pending_reinvite_gets_487_and_cancels_the_forwarded_one() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    branch = new_branch()
    forwarded = h.feed(h.a_request("INVITE", call, 2, body=SDP_A2, branch=branch))[1].request
    assert h.feed(response_to(forwarded, 180), BOB) == []  # not relayed, but now the CANCEL may go out
    sent = h.feed(h.a_request("CANCEL", call, 2, branch=branch))
    assert sorted(describe(sent)) == ["200", "487", "CANCEL"]
    to_bob = [s for s in sent if s.addr == BOB]
    assert describe(to_bob) == ["CANCEL"] and to_bob[0].request.top_via.branch == forwarded.top_via.branch
    assert sorted(s.response.status for s in sent if s.addr == ALICE) == [200, 487]
    assert call.state is CallState.ANSWERED


# -- every way a call ends -----------------------------------------------------------------------------------
def _ringing(h: Harness, call: Call) -> None:
    h.dial(call)
    h.b_says(180)


ENDINGS = {
    # name: (setup, how it ends) -> the terminal event type
    "reject before dial": (lambda h, c: None, lambda h, c: h.b2bua.reject(c, 404, h.now)),
    "hangup before dial": (lambda h, c: None, lambda h, c: h.b2bua.hangup(c, h.now, reason="media timeout")),
    "hangup before any provisional": (lambda h, c: h.dial(c), lambda h, c: h.b2bua.hangup(c, h.now)),
    "hangup while ringing": (_ringing, lambda h, c: h.b2bua.hangup(c, h.now, reason="media timeout")),
    "hangup after answer": (lambda h, c: h.answer(c), lambda h, c: h.b2bua.hangup(c, h.now)),
    "caller BYE": (lambda h, c: h.answer(c), lambda h, c: h.feed(h.a_request("BYE", c, 2))),
    "callee BYE": (lambda h, c: h.answer(c), lambda h, c: h.feed(h.b_request("BYE", 1), BOB)),
    "caller CANCEL while ringing": (_ringing, lambda h, c: h.feed(request("CANCEL", branch=h.a_branch))),
    "caller CANCEL before dial": (lambda h, c: None, lambda h, c: h.feed(request("CANCEL", branch=h.a_branch))),
    "caller never ACKs the 2xx": (lambda h, c: (h.dial(c), h.b_says(200, body=SDP_B)),
                                  lambda h, c: h.advance(h.now + 40.0)),
    "max call duration": (lambda h, c: h.answer(c, max_duration=30.0), lambda h, c: h.advance(h.now + 31.0)),
}


@pytest.mark.parametrize("name", list(ENDINGS))
def test_every_way_a_call_ends_queues_exactly_one_terminal_event(name: str) -> None:
    """The CallFlow waits for CallEnded/CallCancelled: each ending must send exactly one, whatever ends it."""
    setup, end = ENDINGS[name]
    h = Harness()
    call = h.offer()
    setup(h, call)
    h.events()
    end(h, call)
    h.advance(h.now + 120.0)  # every leg, retransmission and guard timer runs out
    terminal = [e for e in h.events() if isinstance(e, CallEnded | CallCancelled)]
    assert len(terminal) == 1, terminal
    assert call.state is CallState.ENDED and h.b2bua.active_calls == 0
    # Ending again (a late hangup or reject from the CallFlow, a watchdog) sends nothing and queues nothing.
    h.b2bua.hangup(call, h.now)
    h.b2bua.reject(call, 500, h.now)
    assert h.take() == [] and h.events() == []


def test_max_call_duration_ends_both_legs_with_a_reason_naming_the_limit() -> None:
    h = Harness(session_timers=None)  # nobody here answers session refreshes
    call = h.offer()
    h.dial(call, ring_timeout=300.0, max_duration=3600.0)
    h.b_says(180)
    h.advance(h.now + 100.0)  # ringing does not count: the limit runs from the answer
    sent = h.b_says(200, body=SDP_B)
    answered_at = h.now
    h.events()
    assert h.feed(ack_for(h.a_invite, sent[1].response, branch=new_branch())) == []
    assert not [s for s in h.advance(answered_at + 3599.0) if describe([s]) == ["BYE"]]
    sent = h.advance(answered_at + 3600.0)
    byes = [s for s in sent if describe([s]) == ["BYE"]]
    assert {s.addr for s in byes} == {ALICE, BOB}
    assert all(s.request.get("Reason") == 'SIP;cause=200;text="max call duration"' for s in byes)
    [ended] = h.events()
    assert isinstance(ended, CallEnded) and (ended.side, ended.reason) == ("system", "max call duration")


@pytest.mark.parametrize("ending", ["caller CANCEL", "exchange hangup"])
def test_a_callee_2xx_after_the_call_was_recorded_and_released_is_still_acked_and_byed(ending: str) -> None:
    """The CallFlow records and releases a call as soon as it ended; B's 2xx crossing our CANCEL comes later."""
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.b_says(180)
    if ending == "caller CANCEL":
        h.feed(request("CANCEL", branch=h.a_branch))
    else:
        h.b2bua.hangup(call, h.now)
        h.take()
    h.events()
    h.b2bua.release(call)
    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["ACK", "BYE"] and all(s.addr == BOB for s in sent)
    assert h.events() == []


def test_a_deferred_cancel_is_still_sent_after_the_call_was_released() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    h.feed(request("CANCEL", branch=h.a_branch))  # before B's first provisional: our CANCEL waits (§9.1)
    h.events()
    h.b2bua.release(call)
    sent = h.b_says(180)
    assert describe(sent) == ["CANCEL"] and sent[0].addr == BOB
