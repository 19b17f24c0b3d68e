"""RFC 4475 torture messages through the real core: the B2BUA over the SIP endpoint, driven by the SIP driver
with fake sockets and a virtual clock (what ``dce serve`` runs, minus the sockets).

Each message gets the answer an exchange owes it: a valid INVITE is offered to the call flow and can be dialled
out (the outbound INVITE parses), other valid requests get their proper final answer (200 to OPTIONS, 405 to
REGISTER and methods we do not serve, 416 to a scheme we do not serve, 420/415/406 for what we cannot honour,
481 for a dialog we do not have), invalid ones get 400 or are dropped when no response can be routed, and no
message raises or logs an ERROR. The parser-level view of the same files is in ``test_sip_message.py``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dce.clock import VirtualClock
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import ALLOW, B2BUA, CallEvent, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.flood import FloodGuard
from dce.sip.message import Response, SipParseError, parse
from tests.unit.sipfactory import SDP_A, Sent, describe, request
from tests.unit.test_callflow import RecordedSockets, VirtualTimer

TORTURE = Path(__file__).parent / "data" / "rfc4475"
SOURCE = ("192.0.2.99", 5060)
CALLEE = "sip:127.0.0.1:5080"
OFFERED = "offered"  # an INVITE handed to the call flow (after our 100 Trying)

# What the exchange answers to each message (status codes in order; OFFERED: a CallOffered event).
EXPECTED: dict[str, list[str]] = {
    # 3.1.1 valid
    "wsinv": ["100", "481"],  # an INVITE with a To tag: a re-INVITE for a dialog we do not have
    "intmeth": ["405"],  # an extension method we do not serve
    "esc01": ["100", OFFERED],
    "escnull": ["405"],  # REGISTER: no registrar (the same answer whatever the user)
    "esc02": ["405"],  # RE%47IST%45R is a method of its own, not REGISTER
    "lwsdisp": ["200"],
    "longreq": ["100", OFFERED],
    "dblreq": ["405"],  # the REGISTER; the INVITE after it in the datagram is ignored
    "semiuri": ["200"],
    "transports": ["200"],
    "mpart01": ["405"],  # MESSAGE
    "unreason": [],  # responses matching no transaction: absorbed
    "noreason": [],
    # 3.1.2 invalid: 400, or dropped when no response can be routed, or accepted where RFC 4475 allows it
    "badinv01": ["400"],
    "clerr": ["400"],
    "ncl": ["400"],
    "scalar02": ["400"],
    "scalarlg": [],  # a response: never answered
    "quotbal": ["400"],
    "ltgtruri": ["400"],
    "lwsruri": ["400"],
    "lwsstart": ["400"],
    "trws": ["400"],
    "escruri": ["400"],
    "baddate": ["100", OFFERED],  # a bad Date is not ours to judge (RFC 4475 3.1.2.12 lets it through)
    "regbadct": ["405"],  # REGISTER: its Contact is not read
    "badaspec": ["200"],  # OPTIONS: To is not read (a proxy would not either)
    "baddn": ["200"],  # OPTIONS: display names are checked on initial INVITEs only (see test_sip_message)
    "badvers": [],  # SIP/7.0 everywhere, even its Via: no SIP/2.0 path for a 505
    "mismatch01": ["400"],
    "mismatch02": ["400"],
    "bigcode": [],
    # 3.2 transaction layer
    "badbranch": ["200"],
    # 3.3 application layer
    "insuf": [],  # no Call-ID, From, To: a 400 could not be matched, dropped and counted
    "unkscm": ["416"],
    "novelsc": ["416"],
    "unksm2": ["405"],
    "bext01": ["420"],  # Require: nothingSupportedHere (Proxy-Require is for proxies: not read)
    "invut": ["100", "415"],  # a body we cannot read
    "regaut01": ["405"],
    "multi01": ["400"],
    "mcl01": ["400"],
    "bcast": [],  # a 200 matching no transaction
    "zeromf": ["200"],  # Max-Forwards 0 matters to OPTIONS only when forwarding; we answer it
    "cparam01": ["405"],
    "cparam02": ["405"],
    "regescrt": ["405"],
    "sdp01": ["100", "406"],  # Accept: text/nobodyKnowsThis, while our answer would be SDP
    # 3.4 backward compatibility
    "inv2543": ["100", OFFERED],  # RFC 2543 INVITE: no branch magic, no Max-Forwards, no Content-Length
}
ALL = sorted([*TORTURE.glob("valid/*.sip"), *TORTURE.glob("invalid/*.sip")], key=lambda p: p.stem)


class Rig:
    """The core as ``dce serve`` runs it: a driver (flood guard on) over a B2BUA over an endpoint."""

    def __init__(self) -> None:
        self.clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
        self.wire = RecordedSockets()
        self.drops: list[str] = []
        endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060), "tcp": ("10.0.0.1", 5060)})
        self.core = B2BUA(endpoint)
        self.driver = SipDriver(self.core, clock=self.clock, sockets=self.wire, timers=VirtualTimer(),
                                on_error=self.drops.append, flood=FloodGuard())
        self.events: list[CallEvent] = []
        self.driver.deliver_to(self.events.append)

    def feed(self, data: bytes) -> list[Sent]:
        self.driver.receive(data, "udp", SOURCE)
        return outbox(self.wire.take())


def outbox(datagrams: list[tuple[bytes, str, tuple[str, int]]]) -> list[Sent]:
    """What we sent, parsed; a 400 echoes the malformed CSeq/Via it refuses (RFC 3261 §8.2.6.2), so it is read
    by its status line and Call-ID only."""
    sent = []
    for data, transport, addr in datagrams:
        try:
            message = parse(data)
        except SipParseError:
            assert data.startswith(b"SIP/2.0 400 "), data[:200]
            message = Response(status=400, reason="Bad Request")
            message.headers = [(k, v) for k, _, v in (line.decode().partition(": ") for line in
                                                      data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:])]
        sent.append(Sent(message, transport, addr, data))
    return sent


def test_every_rfc4475_message_has_an_expectation() -> None:
    assert {p.stem for p in ALL} == set(EXPECTED)
    assert len(ALL) == 49  # every message of RFC 4475's archive, bar its stray "test" file


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_rfc4475_message_gets_the_right_answer(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    with caplog.at_level(logging.DEBUG):
        sent = rig.feed(path.read_bytes())
        labels = describe(sent)
        offered = [e for e in rig.events if isinstance(e, CallOffered)]
        if offered:
            labels.append(OFFERED)
            # routed: the call can be dialled out, and what goes out is a well-formed INVITE
            rig.driver.dial(offered[0].call, CALLEE, ring_timeout=30, max_duration=None)
            out = outbox(rig.wire.take())
            assert describe(out) == ["INVITE"]
            invite = out[0].request
            assert invite.uri.startswith("sip:") and invite.top_via.sent_by == ("10.0.0.1", 5060)
            rig.driver.hangup(offered[0].call, reason="test over")
    assert labels == EXPECTED[path.stem]
    for item in sent:
        if isinstance(item.message, Response):
            assert item.addr[0] == SOURCE[0]  # answered to where it came from (no Via host lookup)
            if item.message.status in (400, 415, 406, 420):  # a refusal says why
                assert any(item.message.get(name) for name in ("Warning", "Unsupported", "Accept"))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()
    assert "core_exception" not in rig.drops


def test_specific_answers_say_what_is_missing() -> None:
    rig = Rig()
    [unsupported] = [s for s in rig.feed((TORTURE / "valid" / "bext01.sip").read_bytes())]
    assert [tag.lower() for tag in unsupported.response.get_all("Unsupported")] == ["nothingsupportedhere"]
    sent = rig.feed((TORTURE / "valid" / "invut.sip").read_bytes())
    assert sent[-1].response.get("Accept") == "application/sdp"
    sent = rig.feed((TORTURE / "valid" / "sdp01.sip").read_bytes())
    assert sent[-1].response.get("Accept") == "application/sdp"


def test_register_gets_the_same_answer_whoever_the_user() -> None:
    """No registrar yet: a REGISTER for any user, known or not, with or without credentials, gets the same
    405 (nothing to learn about which users exist)."""
    rig = Rig()
    answers = set()
    for name in ("escnull", "dblreq", "regbadct", "regaut01", "cparam01", "cparam02", "regescrt"):
        folder = "invalid" if name == "regbadct" else "valid"
        [answer] = rig.feed((TORTURE / folder / f"{name}.sip").read_bytes())
        response = answer.response
        answers.add((response.status, response.reason, ", ".join(response.get_all("Allow")),
                     response.get("WWW-Authenticate")))
    assert answers == {(405, "Method Not Allowed", ALLOW, None)}



@pytest.mark.parametrize(("extra", "offered"), [
    ([("Accept", "application/sdp, text/plain")], True),
    ([("Accept", "application/*")], True),
    ([("Accept", "text/plain")], False),
    ([("Content-Type", "multipart/mixed;boundary=x")], True),  # SIP-I bodies pass, as before
    ([("Content-Type", "")], True),  # no Content-Type: read as SDP, as before
])
def test_what_an_invite_may_accept_and_carry(extra: list[tuple[str, str]], offered: bool) -> None:
    data = request("INVITE", body=SDP_A, extra=extra)
    if any(name == "Content-Type" for name, _ in extra):
        data = data.replace(b"Content-Type: application/sdp\r\n", b"").replace(b"Content-Type: \r\n", b"")
    rig = Rig()
    labels = describe(rig.feed(data))
    assert (labels == ["100"]) is offered and bool(rig.events) is offered
    if not offered:
        assert labels == ["100", "406"]
