"""The B2BUA's outbound leg: an explicit next hop (RFC 3263, resolved above it) and one answer to a 401/407."""

from __future__ import annotations

import pytest

from dce.sip.b2bua import CallState, DialAnswered, DialFailed
from dce.sip.digest import Challenge, Credentials, ha1, verify
from dce.sip.outbound_auth import OutboundCredentials
from tests.unit.sipfactory import SDP_B, describe, response_to
from tests.unit.test_b2bua import Harness

NAME_URI = "sip:buyer@buyer.example"
HOP = ("udp", "198.51.100.20", 5070)
HOP_ADDR = ("198.51.100.20", 5070)
CHALLENGE = Challenge("buyer.example", "nonce-1", "MD5", ("auth",), opaque="op")
PROXY_CHALLENGE = Challenge("proxy.example", "nonce-p", "SHA-256", ())


def dial(h: Harness, call, *, credentials: OutboundCredentials | None = None, hop=HOP, uri: str = NAME_URI):
    h.b2bua.dial(call, uri, h.now, ring_timeout=60.0, next_hop=hop, credentials=credentials)
    sent = h.take()
    assert describe(sent) == ["INVITE"]
    h.b_invite = sent[0].request
    return sent[0]


def challenge(h: Harness, status: int = 401, value: Challenge = CHALLENGE):
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    assert h.b_invite is not None
    return h.feed(response_to(h.b_invite, status, to_tag="t1", extra=[(header, str(value))]), HOP_ADDR)


def test_next_hop_is_where_the_invite_goes_while_the_request_uri_keeps_the_name() -> None:
    h = Harness()
    call = h.offer()
    sent = dial(h, call)
    assert sent.addr == HOP_ADDR and sent.transport == "udp"
    assert sent.request.uri == NAME_URI


def test_tls_next_hop_without_a_tls_listener_fails_the_leg_never_downgrading() -> None:
    h = Harness()
    call = h.offer()
    h.events()
    assert h.b2bua.dial(call, NAME_URI, h.now, ring_timeout=60.0, next_hop=("tls", "198.51.100.20", 5061)) is None
    assert h.take() == []  # nothing goes out over udp
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.status == 503 and "no tls: SIP listener" in failed.detail


@pytest.mark.parametrize("status", [401, 407])
def test_a_challenge_is_answered_once_with_credentials(status: int) -> None:
    h = Harness()
    call = h.offer()
    first = dial(h, call, credentials=OutboundCredentials("acct", password="s3cret")).request
    value = CHALLENGE if status == 401 else PROXY_CHALLENGE
    sent = challenge(h, status, value)
    assert describe(sent) == ["ACK", "INVITE"]  # the challenged transaction ACKs; the retry goes out
    ack, retry = sent[0].request, sent[1].request
    assert ack.cseq == (1, "ACK") and sent[1].addr == HOP_ADDR
    assert retry.call_id == first.call_id and retry.from_tag == first.from_tag and retry.to_tag is None
    assert retry.cseq == (2, "INVITE") and retry.uri == first.uri and retry.body == first.body
    assert retry.top_via.branch != first.top_via.branch
    assert h.events() == []  # no failure: the leg goes on
    header = "Authorization" if status == 401 else "Proxy-Authorization"
    credentials = Credentials.parse(retry.get(header) or "")
    assert credentials.username == "acct" and credentials.realm == value.realm and credentials.uri == NAME_URI
    assert verify(credentials, method="INVITE", ha1_hex=ha1("acct", value.realm, "s3cret", value.algorithm))
    if status == 401:
        assert credentials.qop == "auth" and credentials.opaque == "op"

    h.b_invite = retry
    sent = h.b_says(200, body=SDP_B, addr=HOP_ADDR)
    assert describe(sent) == ["ACK", "200"]
    assert sent[0].request.cseq == (2, "ACK")  # the dialog continues from the retried INVITE
    assert [type(e) for e in h.events()] == [DialAnswered]
    assert call.state is CallState.ANSWERED


def test_ha1_for_the_realm_answers_and_another_realm_fails() -> None:
    h = Harness()
    call = h.offer()
    creds = OutboundCredentials("acct", realm="buyer.example", ha1={"MD5": ha1("acct", "buyer.example", "pw", "MD5")})
    dial(h, call, credentials=creds)
    sent = challenge(h)
    assert describe(sent) == ["ACK", "INVITE"]
    assert verify(Credentials.parse(sent[1].request.get("Authorization") or ""), method="INVITE",
                  ha1_hex=ha1("acct", "buyer.example", "pw", "MD5"))

    h2 = Harness()
    call2 = h2.offer()
    dial(h2, call2, credentials=creds)
    assert describe(challenge(h2, value=Challenge("elsewhere", "n", "MD5"))) == ["ACK"]
    [failed] = h2.events()
    assert isinstance(failed, DialFailed) and failed.status == 401


def test_a_second_challenge_fails_the_leg_with_its_status() -> None:
    h = Harness()
    call = h.offer()
    dial(h, call, credentials=OutboundCredentials("acct", password="wrong"))
    sent = challenge(h)
    h.b_invite = sent[1].request
    sent = challenge(h, value=Challenge("buyer.example", "nonce-2", "MD5", ("auth",)))
    assert describe(sent) == ["ACK"]  # not answered twice
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and (failed.status, failed.reason) == (401, "failed")
    assert not failed.failover
    assert call.state is CallState.DIALING  # the caller waits for the next target


def test_a_challenge_without_credentials_fails_the_leg() -> None:
    h = Harness()
    call = h.offer()
    dial(h, call)
    assert describe(challenge(h, 407, PROXY_CHALLENGE)) == ["ACK"]
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.status == 407


def test_cancel_of_the_retried_invite_uses_its_branch() -> None:
    h = Harness()
    call = h.offer()
    dial(h, call, credentials=OutboundCredentials("acct", password="pw"))
    retry = challenge(h)[1].request
    h.b_invite = retry
    h.b_says(180, addr=HOP_ADDR)
    h.events()
    h.b2bua.cancel_dial(call, h.now)
    [cancel] = h.take()
    assert cancel.request.method == "CANCEL" and cancel.request.top_via.branch == retry.top_via.branch
    assert cancel.request.cseq == (2, "CANCEL")


def test_503_timer_b_and_unreachable_say_another_hop_may_serve_but_busy_does_not() -> None:
    h = Harness()
    call = h.offer()
    dial(h, call)
    h.feed(response_to(h.b_invite, 503, to_tag="t"), HOP_ADDR)  # type: ignore[arg-type]
    [failed] = h.events()
    assert failed.failover and failed.status == 503

    dial(h, call)
    h.feed(response_to(h.b_invite, 486, to_tag="t"), HOP_ADDR)  # type: ignore[arg-type]
    [failed] = h.events()
    assert not failed.failover

    dial(h, call)
    h.b2bua.transport_error("udp", HOP_ADDR, h.now)
    [failed] = h.events()
    assert failed.failover and failed.status == 503

    h.b2bua.dial(call, NAME_URI, h.now, ring_timeout=100.0, next_hop=HOP)
    assert describe(h.take()) == ["INVITE"]
    h.advance(h.now + 40)  # nothing heard: timer B (64*T1 = 32 s) fires before the ring timeout
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.failover and failed.status == 408
    assert failed.reason == "no_answer"  # the caller's answer is unchanged when it is the last hop


def test_ring_timeout_is_not_a_failover() -> None:
    h = Harness()
    call = h.offer()
    h.b2bua.dial(call, NAME_URI, h.now, ring_timeout=5.0, next_hop=HOP)
    h.take()
    h.advance(6)
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and not failed.failover


def silent_dial(h: Harness, *, no_response_s: float = 5.0, ring_timeout: float = 30.0):
    h.b2bua.no_response_s = no_response_s
    call = h.offer()
    h.b2bua.dial(call, NAME_URI, h.now, ring_timeout=ring_timeout, next_hop=HOP)
    [invite] = h.take()
    h.b_invite = invite.request
    return call


def test_an_invite_nothing_answers_fails_over_at_the_no_response_timer_without_cancel() -> None:
    h = Harness()
    call = silent_dial(h)
    sent = h.advance(4.9)
    assert set(describe(sent)) == {"INVITE"} and h.events() == []  # timer A retransmissions until then
    sent = h.advance(5.0)
    assert "CANCEL" not in describe(sent)  # RFC 3261 §9.1: nothing provisional, no CANCEL
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and failed.failover and failed.status == 408
    assert "no response within 5 s" in failed.detail
    assert call.state is CallState.DIALING  # the caller waits for the next hop
    assert h.advance(40.0) == []  # no more retransmissions, and timer B adds nothing
    assert h.events() == []


def test_a_late_provisional_after_the_no_response_timer_gets_our_cancel_and_a_late_2xx_ack_and_bye() -> None:
    h = Harness()
    silent_dial(h)
    h.advance(5.0)
    h.events()
    sent = h.feed(response_to(h.b_invite, 180, to_tag="late"), HOP_ADDR)  # type: ignore[arg-type]
    assert describe(sent) == ["CANCEL"] and h.events() == []

    h2 = Harness()
    silent_dial(h2)
    h2.advance(5.0)
    h2.events()
    sent = h2.feed(response_to(h2.b_invite, 200, to_tag="late", contact="<sip:b@198.51.100.20:5070>",  # type: ignore[arg-type]
                               body=SDP_B), HOP_ADDR)
    assert describe(sent) == ["ACK", "BYE"] and h2.events() == []


def test_any_response_hands_the_leg_to_the_ring_timeout() -> None:
    h = Harness()
    call = silent_dial(h)
    h.feed(response_to(h.b_invite, 100), HOP_ADDR)  # type: ignore[arg-type]
    assert h.advance(29.0) == [] and h.events() == []  # alive: no failover at 5 s
    h.advance(30.0)
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and not failed.failover and failed.reason == "no_answer"
    assert call.state is CallState.DIALING


def test_a_no_response_timer_not_shorter_than_the_ring_timeout_leaves_it_to_the_ring_timeout() -> None:
    h = Harness()
    silent_dial(h, no_response_s=10.0, ring_timeout=8.0)
    h.advance(8.0)
    [failed] = h.events()
    assert isinstance(failed, DialFailed) and not failed.failover
