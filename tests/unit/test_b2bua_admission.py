"""The B2BUA's admission hook: 401 challenges and refusals through transactions, trunk slots held by calls."""

from __future__ import annotations

import ipaddress

from dce.sip.admission import Admission, AdmissionSettings
from dce.sip.b2bua import CallEnded, CallOffered, CallRefused
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.message import parse
from dce.sip.trunk_rule import TrunkRule
from tests.unit.sipfactory import SDP_A, ack_for, describe, new_branch, request
from tests.unit.test_b2bua import ALICE, Harness

SECRET = b"0123456789abcdef0123456789abcdef"
URI = "sip:bob@10.0.0.1"


def carrier(**kw: object) -> TrunkRule:
    return TrunkRule("carrier", None, (ipaddress.ip_network("192.0.2.0/24"),), username="acme", realm="dce",
                     ha1_sha256=ha1("acme", "dce", "pw", "SHA-256"), ha1_md5=ha1("acme", "dce", "pw", "MD5"),
                     **kw)  # type: ignore[arg-type]


def harness(*rules: TrunkRule, unknown: str = "reject") -> Harness:
    h = Harness()
    h.b2bua.admission = Admission(rules, NonceSigner(SECRET), AdmissionSettings(unknown_sources=unknown))  # type: ignore[arg-type]
    h.b2bua.wall_offset = 1_767_600_000.0
    return h


def test_challenge_then_authenticated_invite_creates_the_call_and_the_401_absorbs_the_ack() -> None:
    h = harness(carrier())
    first = request("INVITE", URI, branch=new_branch(), body=SDP_A, cseq=1)
    sent = h.feed(first)
    assert describe(sent) == ["100", "401"]
    challenge_response = sent[-1].response
    assert challenge_response.status == 401 and challenge_response.to_tag
    assert [Challenge.parse(v).algorithm for v in challenge_response.get_all("WWW-Authenticate")] == [
        "SHA-256", "MD5"]
    assert h.events() == [] and h.b2bua.active_calls == 0  # no Call, no CDR for a challenge
    assert describe(h.feed(first)) == ["401"]  # a retransmission gets the same answer from the transaction
    assert h.events() == []
    assert h.feed(ack_for(first, challenge_response)) == []  # the ACK ends in the 401's transaction
    h.advance(h.now + 40)  # the 401's transaction ends without retransmitting (it was ACKed)

    challenge = Challenge.parse(challenge_response.get_all("WWW-Authenticate")[1])  # answer the MD5 one
    credentials = authorization(challenge, username="acme", password="pw", method="INVITE", uri=URI, cnonce="c1")
    second = request("INVITE", URI, branch=new_branch(), body=SDP_A, cseq=2,
                     extra=[("Authorization", str(credentials))])
    assert describe(h.feed(second)) == ["100"]
    (offered,) = h.events()
    assert isinstance(offered, CallOffered) and offered.call.trunk == "carrier"
    assert h.b2bua.admission is not None and h.b2bua.admission.active("carrier") == 1
    h.b2bua.reject(offered.call, 404, h.now)
    assert isinstance(h.events()[0], CallEnded)
    assert h.b2bua.admission.active("carrier") == 0  # the call's end gives the trunk slot back


def test_wrong_password_gets_403_and_a_refused_event() -> None:
    h = harness(carrier())
    sent = h.feed(request("INVITE", URI, body=SDP_A))
    challenge = Challenge.parse(sent[-1].response.get_all("WWW-Authenticate")[0])
    credentials = authorization(challenge, username="acme", password="nope", method="INVITE", uri=URI, cnonce="c")
    sent = h.feed(request("INVITE", URI, body=SDP_A, cseq=2, extra=[("Authorization", str(credentials))]))
    assert describe(sent)[-1] == "403"
    assert sent[-1].response.get("Reason") == 'SIP;cause=403;text="bad credentials"'
    (refused,) = h.events()
    assert isinstance(refused, CallRefused)
    assert (refused.source, refused.status, refused.trunk, refused.transport) == ("192.0.2.10", 403, "carrier",
                                                                                  "udp")
    assert refused.request.call_id == "call-1@192.0.2.10" and refused.id


def test_unknown_source_gets_403_with_reason_or_is_let_in_when_allowed() -> None:
    h = harness(carrier())
    sent = h.feed(request("INVITE", URI, body=SDP_A), ("198.51.100.99", 5060))
    assert sent[-1].response.status == 403
    assert sent[-1].response.get("Reason") == 'SIP;cause=403;text="unknown source"'
    (refused,) = h.events()
    assert isinstance(refused, CallRefused) and refused.trunk is None and refused.source == "198.51.100.99"
    allowing = harness(carrier(), unknown="allow")
    allowing.feed(request("INVITE", URI, body=SDP_A), ("198.51.100.99", 5060))
    (offered,) = allowing.events()
    assert isinstance(offered, CallOffered) and offered.call.trunk is None


def test_trunk_concurrency_503_with_retry_after_until_a_call_ends() -> None:
    h = harness(TrunkRule("open", None, (ipaddress.ip_network("192.0.2.0/24"),), max_concurrent=1))
    call = h.offer()
    assert call.trunk == "open"
    sent = h.feed(request("INVITE", URI, call_id="second@x", body=SDP_A), ALICE)
    assert describe(sent)[-1] == "503" and sent[-1].response.get("Retry-After") == "5"
    refused = h.events()
    assert isinstance(refused[0], CallRefused) and refused[0].status == 503
    h.b2bua.reject(call, 486, h.now)
    h.events()
    h.feed(request("INVITE", URI, call_id="third@x", body=SDP_A), ALICE)
    assert isinstance(h.events()[0], CallOffered)


def test_source_limit_after_admission_gives_the_trunk_slot_back() -> None:
    h = harness(TrunkRule("open", None, (ipaddress.ip_network("192.0.2.0/24"),), max_concurrent=5))
    h.b2bua.source_limit.limit = 1
    h.offer()
    sent = h.feed(request("INVITE", URI, call_id="second@x", body=SDP_A))
    assert describe(sent)[-1] == "503"
    assert h.b2bua.admission is not None and h.b2bua.admission.active("open") == 1


def test_parsed_401_carries_our_to_tag_and_no_call_remains() -> None:
    h = harness(carrier())
    sent = h.feed(request("INVITE", URI, body=SDP_A))
    response = parse(sent[-1].raw)
    assert response.to_tag is not None  # type: ignore[union-attr]
    assert h.b2bua.calls == {}


def test_a_retransmitted_authenticated_invite_is_absorbed_but_a_new_transaction_replaying_it_is_challenged() -> None:
    h = harness(carrier())
    sent = h.feed(request("INVITE", URI, body=SDP_A))
    challenge = Challenge.parse(sent[-1].response.get_all("WWW-Authenticate")[0])
    credentials = authorization(challenge, username="acme", password="pw", method="INVITE", uri=URI, cnonce="c1")
    authorized = request("INVITE", URI, branch=new_branch(), body=SDP_A, cseq=2,
                         extra=[("Authorization", str(credentials))])
    assert describe(h.feed(authorized)) == ["100"]
    (offered,) = h.events()
    assert isinstance(offered, CallOffered)
    assert describe(h.feed(authorized)) == ["100"]  # a UDP retransmission: the transaction answers, no admission
    assert h.events() == [] and h.b2bua.active_calls == 1

    replay = request("INVITE", URI, branch=new_branch(), body=SDP_A, cseq=2, call_id="replayed@192.0.2.10",
                     extra=[("Authorization", str(credentials))])  # the captured INVITE sent again as a new one
    sent = h.feed(replay)
    assert describe(sent) == ["100", "401"]
    fresh = [Challenge.parse(v) for v in sent[-1].response.get_all("WWW-Authenticate")]
    assert all(not c.stale and c.nonce != challenge.nonce for c in fresh)
    assert h.events() == [] and h.b2bua.active_calls == 1
