"""CallFlow and SIP driver with admission installed: refused INVITEs leave a rejected CDR naming the source,
admitted ones carry their trunk to the CDR."""

from __future__ import annotations

import ipaddress

from dce.billing.cdr import Disposition, HangupSide
from dce.sip.admission import Admission, AdmissionSettings
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.trunk_rule import TrunkRule
from tests.unit.sipfactory import SDP_A, ack_for, request, response_to
from tests.unit.test_callflow import CALLER, DID, Harness, invite, requests_of, statuses

SECRET = b"0123456789abcdef0123456789abcdef"
CALLEE = "sip:198.51.100.20:5060"
TRUNK = TrunkRule("acme", None, (ipaddress.ip_network("192.0.2.0/24"),), username="acme",
                  ha1_md5=ha1("acme", "dce", "pw", "MD5"))


def admitting(*rules: TrunkRule) -> Harness:
    h = Harness({DID: [CALLEE]})
    h.b2bua.admission = Admission(rules, NonceSigner(SECRET), AdmissionSettings(unknown_sources="reject"))
    return h


async def test_unknown_source_gets_403_and_a_rejected_cdr_naming_the_source() -> None:
    h = admitting(TRUNK)
    sent = await h.feed(invite(), ("198.51.100.99", 5060))
    assert statuses(sent, ("198.51.100.99", 5060)) == [100, 403]
    (cdr,) = h.cdrs
    assert cdr.disposition is Disposition.REJECTED and cdr.final_code == 403
    assert cdr.hangup_side is HangupSide.SYSTEM and cdr.did == DID and cdr.caller == "+13125550199"
    assert cdr.extra["source"] == "198.51.100.99" and cdr.trunk is None
    assert cdr.reason == "unknown source (198.51.100.99)"
    assert cdr.invite_at == h.clock.now() and h.active == 0
    assert cdr.a_leg_call_id == "call-1@192.0.2.10"


async def test_challenge_leaves_no_cdr_and_the_admitted_call_names_its_trunk() -> None:
    h = admitting(TRUNK)
    sent = await h.feed(invite())
    assert statuses(sent) == [100, 401] and h.cdrs == []
    challenge = Challenge.parse(sent[-1].response.get("WWW-Authenticate") or "")
    issued = int(challenge.nonce.partition(".")[0])
    assert issued == int(h.clock.now().timestamp())  # the driver gives the core wall time for nonces
    await h.feed(ack_for(invite(), sent[-1].response))
    uri = f"sip:{DID}@10.0.0.1"
    credentials = authorization(challenge, username="acme", password="pw", method="INVITE", uri=uri, cnonce="x")
    second = request("INVITE", uri, body=SDP_A, from_uri="sip:+13125550199@192.0.2.10", cseq=2,
                     extra=[("Authorization", str(credentials))])
    sent = await h.feed(second)
    (out,) = requests_of(sent, "INVITE")
    assert out.request.get("Authorization") is None  # the caller's credentials stay with us
    sent = await h.feed(response_to(out.request, 486, to_tag="b"), ("198.51.100.20", 5060))
    assert 486 in statuses(sent)
    (cdr,) = h.cdrs
    assert cdr.trunk == "acme" and cdr.disposition is Disposition.BUSY
    assert h.b2bua.admission is not None and h.b2bua.admission.active("acme") == 0


async def test_trunk_limit_gets_503_and_a_rejected_cdr_naming_the_trunk() -> None:
    h = admitting(TrunkRule("busy", None, (ipaddress.ip_network("192.0.2.0/24"),), max_cps=1))
    await h.feed(invite())
    second = request("INVITE", f"sip:{DID}@10.0.0.1", call_id="two@x", body=SDP_A)
    sent = await h.feed(second, CALLER)
    assert statuses(sent)[-1] == 503
    refused = [c for c in h.cdrs if c.final_code == 503]
    assert len(refused) == 1 and refused[0].trunk == "busy" and refused[0].extra["source"] == "192.0.2.10"
