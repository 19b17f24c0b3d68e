"""Parallel forking in the sans-IO B2BUA (an agent's devices, a ring-all group): several B legs for one A leg, the
first 2xx wins, the others get CANCEL, a 2xx crossing that CANCEL is ACKed and BYEd, one failure once all failed."""

from __future__ import annotations

from dce.sip.b2bua import COMPLETED_ELSEWHERE, Call, CallCancelled, CallState, DialAnswered, DialFailed, DialProgress
from dce.sip.message import Request
from tests.unit.sipfactory import SDP_B, Sent, describe, request, response_to
from tests.unit.test_b2bua import ALICE, Harness, by_addr

DESK = ("198.51.100.41", 5062)
BROWSER = ("198.51.100.42", 5064)
URIS = ["sip:alice@198.51.100.41:5062", "sip:alice@198.51.100.42:5064"]
DESTINATIONS = [(uri, None) for uri in URIS]


def _fork(h: Harness, ring_timeout: float = 30.0) -> tuple[Call, dict[tuple[str, int], Request]]:
    call = h.offer()
    legs = h.b2bua.fork(call, DESTINATIONS, h.now, ring_timeout=ring_timeout)
    assert len(legs) == 2 and call.forks == tuple(legs)
    sent = h.take()
    assert describe(sent) == ["INVITE", "INVITE"]
    invites = {s.addr: s.request for s in sent}
    assert set(invites) == {DESK, BROWSER}
    assert invites[DESK].call_id != invites[BROWSER].call_id
    return call, invites


def _says(h: Harness, invite: Request, addr: tuple[str, int], status: int, tag: str) -> list[Sent]:
    data = response_to(invite, status, to_tag=tag, contact=f"<sip:alice@{addr[0]}:{addr[1]}>" if status < 300
                       else None, body=SDP_B if status == 200 else b"")
    return h.feed(data, addr)


def _request_of(sent: list[Sent], method: str, addr: tuple[str, int]) -> Request:
    [one] = [s.request for s in by_addr(sent, addr) if s.message.__class__.__name__ == "Request"
             and s.request.method == method]
    return one


def test_the_first_answer_wins_and_the_other_device_is_cancelled_completed_elsewhere() -> None:
    h = Harness()
    call, invites = _fork(h)
    assert describe(_says(h, invites[DESK], DESK, 180, "desk")) == ["180"]
    assert describe(_says(h, invites[BROWSER], BROWSER, 180, "web")) == ["180"]  # both ring: the caller hears it
    assert [type(e) for e in h.events()] == [DialProgress, DialProgress]

    sent = _says(h, invites[BROWSER], BROWSER, 200, "web")
    assert sorted(describe(sent)) == ["200", "ACK", "CANCEL"]
    cancel = _request_of(sent, "CANCEL", DESK)
    assert cancel.get("Reason") == COMPLETED_ELSEWHERE
    assert by_addr(sent, ALICE)[0].response.status == 200
    assert [type(e) for e in h.events()] == [DialAnswered]
    assert call.state is CallState.ANSWERED and call.b is not None and call.b.destination == URIS[1]
    assert call.forks == ()

    h.feed(response_to(cancel, 200, to_tag="desk"), DESK)
    sent = _says(h, invites[DESK], DESK, 487, "desk")
    assert describe(sent) == ["ACK"] and h.events() == []  # the loser's 487: nothing for the call


def test_a_2xx_crossing_the_cancel_is_acked_and_byed() -> None:
    h = Harness()
    call, invites = _fork(h)
    _says(h, invites[DESK], DESK, 180, "desk")
    _says(h, invites[BROWSER], BROWSER, 180, "web")
    h.events()
    _says(h, invites[DESK], DESK, 200, "desk")
    assert [type(e) for e in h.events()] == [DialAnswered]
    sent = _says(h, invites[BROWSER], BROWSER, 200, "web")  # answered too, before our CANCEL reached it
    assert sorted(describe(sent)) == ["ACK", "BYE"] and {s.addr for s in sent} == {BROWSER}
    assert h.events() == [] and call.b is not None and call.b.destination == URIS[0]


def test_the_call_fails_once_with_the_last_leg_and_not_before() -> None:
    h = Harness()
    call, invites = _fork(h)
    sent = _says(h, invites[DESK], DESK, 486, "desk")
    assert describe(sent) == ["ACK"] and h.events() == [], "the other device still rings"
    _says(h, invites[BROWSER], BROWSER, 480, "web")
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.status == 480
    assert call.state is CallState.DIALING  # the CallFlow decides what next (the next agent, or an answer)


def test_the_ring_timeout_cancels_every_device() -> None:
    h = Harness()
    _, invites = _fork(h, ring_timeout=20)
    _says(h, invites[DESK], DESK, 180, "desk")
    h.events()
    sent = h.advance(20)  # (the silent browser's INVITE was retransmitted meanwhile, UDP)
    [cancel] = [s for s in sent if describe([s]) == ["CANCEL"]]
    assert cancel.addr == DESK  # the browser never answered anything: given up at once, no CANCEL (§9.1)
    assert h.events() == []
    h.feed(response_to(cancel.request, 200, to_tag="desk"), DESK)
    _says(h, invites[DESK], DESK, 487, "desk")
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.reason == "no_answer"


def test_the_caller_cancelling_cancels_every_ringing_device() -> None:
    h = Harness()
    _, invites = _fork(h)
    _says(h, invites[DESK], DESK, 180, "desk")
    _says(h, invites[BROWSER], BROWSER, 183, "web")
    h.events()
    sent = h.feed(request("CANCEL", branch=h.a_branch))
    assert sorted(describe(sent)) == ["200", "487", "CANCEL", "CANCEL"]
    assert {s.addr for s in sent if s.message.__class__.__name__ == "Request"} == {DESK, BROWSER}
    assert [type(e) for e in h.events()] == [CallCancelled]


def test_a_single_destination_forks_as_a_plain_dial() -> None:
    h = Harness()
    call = h.offer()
    [leg] = h.b2bua.fork(call, DESTINATIONS[:1], h.now, ring_timeout=30)
    assert call.b is leg and call.forks == ()
    assert describe(h.take()) == ["INVITE"]


def test_each_fork_goes_to_its_own_next_hop_with_the_contact_as_request_uri() -> None:
    h = Harness()
    call = h.offer()
    behind_nat = [("sip:alice@10.1.1.5:5062", ("udp", "203.0.113.7", 40001)),
                  ("sip:alice@10.1.1.6:5064", ("udp", "203.0.113.8", 40002))]
    h.b2bua.fork(call, behind_nat, h.now, ring_timeout=30)
    sent = h.take()
    assert {(s.addr, s.request.uri) for s in sent} == {
        (("203.0.113.7", 40001), "sip:alice@10.1.1.5:5062"), (("203.0.113.8", 40002), "sip:alice@10.1.1.6:5064")}
