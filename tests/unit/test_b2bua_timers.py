"""Session timers (RFC 4028), 100rel (RFC 3262) and delayed offer in the sans-IO B2BUA, on a virtual clock."""

from __future__ import annotations

from dce.sip.b2bua import (
    NO_PRACK,
    REFRESH_FAILED,
    SESSION_EXPIRED,
    Call,
    CallEnded,
    DialFailed,
    DialProgress,
    SdpNeeded,
)
from dce.sip.message import Request, Response, parse
from dce.sip.session_timer import TimerPolicy
from tests.unit.sipfactory import SDP_A, SDP_A2, SDP_B, Sent, ack_for, describe, new_branch, request, response_to
from tests.unit.test_b2bua import ALICE, BOB, BOB_CONTACT, FakeMedia, Harness, by_addr

TIMER = ("Supported", "timer")


def answered(h: Harness, call: Call, *, b_extra: list[tuple[str, str]] | None = None) -> Response:
    """Dial B, have it answer (with ``b_extra`` headers on its 200) and A ACK; A's 200."""
    h.dial(call)
    assert h.b_invite is not None
    data = response_to(h.b_invite, 200, to_tag="bob-tag", contact=BOB_CONTACT, body=SDP_B, extra=b_extra or [])
    h.b_ok = parse(data)  # type: ignore[assignment]
    sent = h.feed(data, BOB)
    assert describe(sent) == ["ACK", "200"]
    h.events()
    ok = sent[1].response
    assert h.feed(ack_for(h.a_invite, ok, branch=new_branch())) == []
    return ok


def ended(h: Harness) -> CallEnded:
    [event] = [e for e in h.events() if isinstance(e, CallEnded)]
    return event


def byes(sent: list[Sent]) -> dict[tuple[str, int], Request]:
    return {s.addr: s.request for s in sent if describe([s]) == ["BYE"]}


# -- the carrier's INVITE (we are its UAS) ------------------------------------------------------------
def test_require_timer_is_supported_and_the_carriers_terms_are_answered() -> None:
    h = Harness()
    call = h.offer(extra=[("Require", "timer"), TIMER, ("Session-Expires", "900;refresher=uac"), ("Min-SE", "90")])
    ok = answered(h, call)
    assert ok.get("Session-Expires") == "900;refresher=uac" and "timer" in ok.get_all("Require")
    assert "timer" in ok.get_all("Supported")


def test_supported_timer_only_gets_session_expires_in_our_200() -> None:
    h = Harness()
    call = h.offer(extra=[TIMER])
    ok = answered(h, call)
    assert ok.get("Session-Expires") == "1800;refresher=uac" and ok.get_all("Require") == ["timer"]


def test_a_carrier_without_timer_support_gets_us_as_refresher_and_no_require() -> None:
    h = Harness()
    call = h.offer()
    ok = answered(h, call)
    assert ok.get("Session-Expires") == "1800;refresher=uas" and not ok.has("Require")


def test_too_small_a_session_interval_gets_422_with_our_min_se_and_no_call() -> None:
    h = Harness(TimerPolicy(session_expires_s=1800, min_se_s=120))
    sent = h.feed(request("INVITE", body=SDP_A, extra=[TIMER, ("Session-Expires", "90")]))
    assert describe(sent) == ["100", "422"] and sent[1].response.get("Min-SE") == "120"
    assert h.events() == [] and h.b2bua.active_calls == 0


def test_an_unreadable_session_expires_gets_400_not_a_traceback() -> None:
    h = Harness()
    sent = h.feed(request("INVITE", body=SDP_A, extra=[("Session-Expires", "soon")]))
    assert describe(sent) == ["100", "400"] and h.events() == []


def test_timers_off_nothing_is_offered_or_answered() -> None:
    h = Harness(session_timers=None)
    call = h.offer(extra=[TIMER, ("Session-Expires", "900")])
    invite = h.dial(call)
    assert not invite.has("Session-Expires")
    h.b_says(180)
    ok = h.b_says(200, body=SDP_B)[1].response
    assert not ok.has("Session-Expires") and call.session_timers() == []


def test_timers_off_require_timer_gets_420() -> None:
    h = Harness(session_timers=None)
    sent = h.feed(request("INVITE", body=SDP_A, extra=[("Require", "timer"), ("Session-Expires", "900")]))
    assert describe(sent) == ["100", "420"] and sent[1].response.get("Unsupported") == "timer"


# -- the buyer's INVITE (we are its UAC) -----------------------------------------------------------------
def test_our_invite_offers_session_expires_and_min_se() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    invite = h.dial(h.offer())
    assert invite.get("Session-Expires") == "600" and invite.get("Min-SE") == "90"
    assert "timer" in invite.get_all("Supported") and not invite.has("Require")


def test_a_422_is_retried_once_with_the_larger_min_se_same_call_id_next_cseq() -> None:
    h = Harness()
    call = h.offer()
    first = h.dial(call)
    sent = h.feed(response_to(first, 422, to_tag="b1", extra=[("Min-SE", "3600")]), BOB)
    assert sorted(describe(sent)) == ["ACK", "INVITE"]
    retry = next(s.request for s in sent if describe([s]) == ["INVITE"])
    assert retry.call_id == first.call_id and retry.cseq == (2, "INVITE") and retry.from_tag == first.from_tag
    assert retry.get("Session-Expires") == "3600" and retry.get("Min-SE") == "3600"
    assert retry.body == first.body and h.events() == []
    sent = h.feed(response_to(retry, 422, to_tag="b2", extra=[("Min-SE", "7200")]), BOB)
    assert describe(sent) == ["ACK"]  # a second 422 fails the leg
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.status == 422


def test_the_buyer_answering_with_a_retried_invite_is_answered_normally() -> None:
    h = Harness()
    call = h.offer()
    first = h.dial(call)
    sent = h.feed(response_to(first, 422, to_tag="b1", extra=[("Min-SE", "3600")]), BOB)
    h.b_invite = next(s.request for s in sent if describe([s]) == ["INVITE"])
    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["ACK", "200"] and sent[0].request.cseq == (2, "ACK")


# -- expiry and refreshes -------------------------------------------------------------------------------
def test_no_refresh_from_the_refreshing_carrier_ends_the_call_before_expiry() -> None:
    h = Harness()
    call = h.offer(extra=[TIMER, ("Session-Expires", "90;refresher=uac")])
    answered(h, call, b_extra=[("Session-Expires", "1800;refresher=uas")])
    start = h.now
    assert h.advance(start + 59.9) == []
    sent = h.advance(start + 60.0)  # 90 - min(32, 90/3)
    to = byes(sent)
    assert set(to) == {ALICE, BOB}
    assert all(r.get("Reason") == f'SIP;cause=200;text="{SESSION_EXPIRED}"' for r in to.values())
    event = ended(h)
    assert (event.side, event.reason, event.at) == ("system", SESSION_EXPIRED, start + 60.0)


def test_a_refresh_from_the_carrier_is_answered_locally_and_moves_the_expiry() -> None:
    h = Harness()
    call = h.offer(extra=[TIMER, ("Session-Expires", "90;refresher=uac")])
    ok = answered(h, call, b_extra=[("Session-Expires", "1800;refresher=uas")])
    h.advance(h.now + 40)
    sent = h.feed(h.a_request("UPDATE", call, 2, extra=[TIMER, ("Session-Expires", "90;refresher=uac")]))
    assert describe(sent) == ["200"] and sent[0].addr == ALICE  # not relayed to B
    assert sent[0].response.get("Session-Expires") == "90;refresher=uac" and not sent[0].response.body
    h.advance(h.now + 45)
    sent = h.feed(h.a_request("INVITE", call, 3, body=SDP_A, extra=[TIMER, ("Session-Expires", "90")]))
    assert describe(sent) == ["100", "200"]  # the same SDP again: a refresh, answered with what A has
    assert sent[1].response.body == ok.body and sent[1].response.get("Session-Expires") == "90;refresher=uac"
    refreshed = h.now
    assert byes(h.advance(refreshed + 59.9)) == {}
    assert set(byes(h.advance(refreshed + 60.0))) == {ALICE, BOB}


def test_a_reinvite_without_sdp_is_a_refresh_answered_with_our_last_offer() -> None:
    h = Harness()
    call = h.offer()
    ok = answered(h, call)
    sent = h.feed(h.a_request("INVITE", call, 2))
    assert describe(sent) == ["100", "200"] and sent[1].response.body == ok.body


def test_a_new_offer_is_relayed_and_refreshes_both_legs() -> None:
    h = Harness()
    call = h.offer(extra=[TIMER, ("Session-Expires", "90;refresher=uac")])
    call.media = FakeMedia()
    answered(h, call, b_extra=[("Session-Expires", "1800;refresher=uas")])
    h.advance(h.now + 50)
    sent = h.feed(h.a_request("INVITE", call, 2, body=SDP_A2, extra=[TIMER, ("Session-Expires", "90")]))
    assert describe(sent) == ["100", "INVITE"]
    forwarded = sent[1].request
    assert forwarded.get("Session-Expires") == "1800;refresher=uas"
    sent = h.feed(response_to(forwarded, 200, contact=BOB_CONTACT, body=SDP_B), BOB)
    assert describe(sent) == ["ACK", "200"] and sent[1].response.get("Session-Expires") == "90;refresher=uac"
    refreshed = h.now
    assert byes(h.advance(refreshed + 59.9)) == {}
    assert set(byes(h.advance(refreshed + 60.0))) == {ALICE, BOB}


def test_as_refresher_we_send_update_at_half_the_interval_when_allowed() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    call = h.offer(extra=[("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")])  # no timer support: we refresh A
    answered(h, call, b_extra=[("Session-Expires", "600;refresher=uas")])  # B refreshes its own leg
    start = h.now
    assert h.advance(start + 299.9) == []
    sent = h.advance(start + 300)
    assert describe(sent) == ["UPDATE"] and sent[0].addr == ALICE
    update = sent[0].request
    assert update.get("Session-Expires") == "600;refresher=uac" and not update.body
    assert update.to_tag == "alice-tag" and update.cseq == (1, "UPDATE")
    assert h.feed(response_to(update, 200, extra=[("Session-Expires", "600;refresher=uac")])) == []
    refreshed = h.now
    h.advance(refreshed + 10)
    # B (the refresher of its leg) refreshes it: answered here, not sent on to A
    sent = h.feed(h.b_request("UPDATE", 1, extra=[TIMER, ("Session-Expires", "600;refresher=uac")]), BOB)
    assert describe(sent) == ["200"] and sent[0].addr == BOB
    assert sent[0].response.get("Session-Expires") == "600;refresher=uac"
    assert h.advance(refreshed + 299.9) == []
    assert describe(h.advance(refreshed + 300)) == ["UPDATE"]


def test_as_refresher_we_send_a_reinvite_repeating_our_sdp_and_ack_its_200() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    call = h.offer()
    call.media = FakeMedia()
    answered(h, call)  # B's 200 has no Session-Expires: we refresh B too
    ok_to_a = call.a.dialog.local_sdp  # type: ignore[union-attr]
    sent = h.advance(h.now + 300)
    assert describe(sent) == ["INVITE"] and sent[0].addr == ALICE  # one INVITE at a time
    to_a = sent[0].request
    assert to_a.body == ok_to_a and to_a.cseq == (1, "INVITE")
    sent = h.feed(response_to(to_a, 200, body=SDP_A), ALICE)
    assert describe(sent) == ["ACK"] and sent[0].addr == ALICE
    sent = h.advance(h.now + 1)  # then B's
    assert describe(sent) == ["INVITE"] and sent[0].addr == BOB
    to_b = sent[0].request
    assert to_b.body == FakeMedia().rewrite_from_a(SDP_A) and to_b.cseq == (2, "INVITE")
    sent = h.feed(response_to(to_b, 200, contact=BOB_CONTACT, body=SDP_B), BOB)
    assert describe(sent) == ["ACK"] and sent[0].request.cseq == (2, "ACK")
    assert call.pending_reinvite is False
    assert h.advance(h.now + 290) == []


def test_while_our_reinvite_refresh_is_pending_a_reinvite_gets_491_and_an_update_is_still_answered() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    call = h.offer()  # no timer support: we refresh A, with a re-INVITE (no UPDATE in its Allow)
    answered(h, call, b_extra=[("Session-Expires", "600;refresher=uas")])
    sent = h.advance(h.now + 300)
    assert describe(sent) == ["INVITE"] and sent[0].addr == ALICE
    assert describe(h.feed(h.a_request("INVITE", call, 2, body=SDP_A))) == ["100", "491"]
    sent = h.feed(h.a_request("UPDATE", call, 3))
    assert describe(sent) == ["200"] and sent[0].addr == ALICE


def test_a_refresh_answered_481_ends_the_call() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    call = h.offer(extra=[TIMER, ("Session-Expires", "600;refresher=uac")])
    answered(h, call)  # we refresh B only
    sent = h.advance(h.now + 300)
    assert describe(sent) == ["INVITE"]
    sent = h.feed(response_to(sent[0].request, 481), BOB)
    assert set(byes(sent)) == {ALICE, BOB}
    assert ended(h).reason == REFRESH_FAILED


def test_a_refresh_nobody_answers_ends_the_call() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    call = h.offer(extra=[TIMER, ("Session-Expires", "600;refresher=uac")])
    answered(h, call)
    h.advance(h.now + 300)
    sent = h.advance(h.now + 40)  # timer B: 64*T1
    assert set(byes(sent)) == {ALICE, BOB}
    assert ended(h).reason == REFRESH_FAILED


def test_a_refresh_refused_with_491_is_retried() -> None:
    h = Harness(TimerPolicy(session_expires_s=600, min_se_s=90))
    call = h.offer(extra=[TIMER, ("Session-Expires", "600;refresher=uac")])
    answered(h, call)
    first = h.advance(h.now + 300)[0].request
    h.feed(response_to(first, 491), BOB)
    sent = h.advance(h.now + 4)
    assert describe(sent) == ["INVITE"] and sent[0].request.cseq[0] == first.cseq[0] + 1
    assert h.events() == []


# -- 100rel ---------------------------------------------------------------------------------------------
def test_supported_100rel_is_never_420_and_provisionals_are_relayed() -> None:
    h = Harness()
    call = h.offer(extra=[("Supported", "100rel, timer")])
    invite = h.dial(call)
    assert "100rel" not in invite.get_all("Require")
    assert describe(h.b_says(180)) == ["180"]


def reliable_call(h: Harness) -> tuple[Call, Response]:
    """A caller requiring 100rel, B ringing: the reliable 180 A got."""
    call = h.offer(extra=[("Require", "100rel"), ("Supported", "100rel")])
    invite = h.dial(call)
    assert not invite.has("Require") and "100rel" not in invite.get_all("Supported")  # never passed on
    sent = h.b_says(180)
    assert describe(sent) == ["180"] and sent[0].addr == ALICE
    ringing = sent[0].response
    assert ringing.get_all("Require") == ["100rel"] and ringing.get("RSeq", "").isdigit() and not ringing.body
    return call, ringing


def prack(h: Harness, call: Call, rack: str, cseq: int = 2) -> bytes:
    return h.a_request("PRACK", call, cseq, extra=[("RAck", rack)])


def test_require_100rel_gets_reliable_provisionals_resent_until_their_prack() -> None:
    h = Harness()
    call, ringing = reliable_call(h)
    rseq = int(ringing.get("RSeq") or 0)
    assert [s.response.get("RSeq") for s in h.advance(h.now + 0.5)] == [str(rseq)]  # T1
    assert describe(h.advance(h.now + 0.9)) == []
    assert describe(h.advance(h.now + 0.1)) == ["180"]  # 2*T1 later
    assert h.b_says(183, body=SDP_B) == []  # waits for the 180's PRACK
    assert describe(h.feed(prack(h, call, f"{rseq + 5} 1 INVITE"))) == ["481"]  # not ours
    sent = h.feed(prack(h, call, f"{rseq} 1 INVITE", cseq=3))
    assert describe(sent) == ["200", "183"]  # the PRACK answered; the 183 waited for it
    progress = sent[1].response
    assert progress.get("RSeq") == str(rseq + 1) and not progress.body  # the answer comes in the 2xx
    assert describe(h.feed(prack(h, call, f"{rseq + 1} 1 INVITE", cseq=4))) == ["200"]
    assert describe(h.advance(h.now + 10)) == []  # nothing left to resend
    assert [type(e) for e in h.events()] == [DialProgress, DialProgress]
    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["ACK", "200"] and sent[1].response.body == SDP_B


def test_a_2xx_before_the_prack_stops_the_resends_and_a_late_prack_gets_481() -> None:
    h = Harness()
    call, ringing = reliable_call(h)
    h.events()
    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["ACK", "200"]  # no SDP was in the 180: the 2xx need not wait (RFC 3262 §3)
    assert h.feed(ack_for(h.a_invite, sent[1].response, branch=new_branch())) == []
    assert "180" not in describe(h.advance(h.now + 5))
    assert describe(h.feed(prack(h, call, f"{ringing.get('RSeq')} 1 INVITE"))) == ["481"]


def test_no_prack_within_64_t1_ends_the_call() -> None:
    h = Harness()
    reliable_call(h)
    h.events()
    sent = h.advance(h.now + 32.0)
    assert describe(sent).count("180") == 6  # at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s
    assert sorted(describe([s for s in sent if s.addr == ALICE and describe([s]) != ["180"]])) == ["480"]
    assert describe(by_addr(sent, BOB)) == ["CANCEL"]
    assert ended(h).reason == NO_PRACK


# -- delayed offer --------------------------------------------------------------------------------------
def test_delayed_offer_the_callers_answer_in_its_ack_goes_to_the_callee_in_ours() -> None:
    h = Harness()
    h.a_branch = new_branch()
    h.a_invite = request("INVITE", branch=h.a_branch)  # no SDP
    assert describe(h.feed(h.a_invite)) == ["100"]
    call = h.events()[0].call  # type: ignore[union-attr]
    call.media = FakeMedia()
    invite = h.dial(call)
    assert not invite.body
    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["200"]  # B's offer to A; B's ACK waits for A's answer
    ok = sent[0].response
    assert ok.body == FakeMedia().rewrite_from_b(SDP_B)
    assert describe(h.b_says(200, body=SDP_B)) == []  # a retransmitted 2xx: still waiting, nothing sent
    ack = ack_for(h.a_invite, ok, branch=new_branch()).replace(b"Content-Length: 0\r\n\r\n", (
        b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP_A)) + SDP_A)
    sent = h.feed(ack)
    assert describe(sent) == ["ACK"] and sent[0].addr == BOB
    assert sent[0].request.body == FakeMedia().rewrite_from_a(SDP_A)
    assert sent[0].request.get("Content-Type") == "application/sdp"
    again = h.b_says(200, body=SDP_B)  # our ACK lost: the same answer again
    assert describe(again) == ["ACK"] and again[0].request.body == sent[0].request.body


def test_delayed_offer_the_caller_never_acks_b_is_acked_and_byed() -> None:
    h = Harness()
    h.a_invite = request("INVITE", branch=new_branch())
    h.feed(h.a_invite)
    call = h.events()[0].call  # type: ignore[union-attr]
    h.dial(call)
    h.b_says(200, body=SDP_B)
    sent = h.advance(h.now + 40)
    to_bob = describe(by_addr(sent, BOB))
    assert to_bob[:2] == ["ACK", "BYE"] and to_bob.count("ACK") == 1, to_bob
    assert ended(h).reason == "no ACK from caller"


# -- a deferred media plane (rtpengine): the message waits for its rewritten body ------------------------
class DeferredMedia(FakeMedia):
    """A session whose rewrites come back later (SdpNeeded -> sdp_ready)."""

    deferred = True


def sdp_needed(h: Harness) -> list[SdpNeeded]:
    return [e for e in h.events() if isinstance(e, SdpNeeded)]


def test_deferred_media_the_callees_answer_waits_for_the_media_plane() -> None:
    h = Harness()
    call = h.offer()
    call.media = DeferredMedia()
    h.dial(call)  # the caller's offer: rewrite_from_a at dial (the CallFlow prepared it)
    assert describe(h.b_says(183, body=SDP_B)) == []  # held
    sent = h.b_says(200, body=SDP_B)
    assert describe(sent) == ["ACK"]  # B is ACKed at once; A's 200 waits for its body
    early, final = sdp_needed(h)
    assert (early.side, early.offer, final.side, final.offer) == ("b", False, "b", False)
    h.b2bua.sdp_ready(call, early.token, b"stale", h.now)
    assert describe(h.take()) == []  # the 183 came back after the answer: dropped
    h.b2bua.sdp_ready(call, final.token, b"v=0 rewritten", h.now)
    [ok] = h.take()
    assert ok.response.status == 200 and ok.response.body == b"v=0 rewritten"
    assert call.a.dialog is not None and call.a.dialog.local_sdp == b"v=0 rewritten"


def test_deferred_media_delayed_offer_the_ack_waits_for_the_callers_rewritten_answer() -> None:
    h = Harness()
    h.a_invite = request("INVITE", branch=new_branch())
    h.feed(h.a_invite)
    call = h.events()[0].call  # type: ignore[union-attr]
    call.media = DeferredMedia()
    h.dial(call)
    assert describe(h.b_says(200, body=SDP_B)) == []  # no ACK (delayed offer) and A's 200 waits
    [offer] = sdp_needed(h)
    assert (offer.side, offer.offer) == ("b", True)
    h.b2bua.sdp_ready(call, offer.token, b"v=0 offer to A", h.now)
    [ok] = h.take()
    ack = ack_for(h.a_invite, ok.response, branch=new_branch()).replace(b"Content-Length: 0\r\n\r\n", (
        b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP_A)) + SDP_A)
    assert h.feed(ack) == []
    assert describe(h.b_says(200, body=SDP_B)) == []  # B's retransmitted 2xx: the ACK still waits
    [answer] = sdp_needed(h)
    assert (answer.side, answer.offer, answer.body) == ("a", False, SDP_A)
    h.b2bua.sdp_ready(call, answer.token, b"v=0 answer to B", h.now)
    [to_b] = h.take()
    assert describe([to_b]) == ["ACK"] and to_b.addr == BOB and to_b.request.body == b"v=0 answer to B"
