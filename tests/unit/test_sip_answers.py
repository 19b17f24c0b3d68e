"""Answer what can be answered: lenient text, 400 with a reason for every malformed shape that can be routed,
416 for a Request-URI scheme we do not serve (RFC 3261 §8.2.2.1), 480 for a sips: one that came over no TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from dce.sip.b2bua import B2BUA, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, parse
from tests.unit.sipfactory import Sent, describe, parse_outbox, request

TORTURE = Path(__file__).parent / "data" / "rfc4475"
SOURCE = ("192.0.2.99", 5060)
INVITE = request("INVITE")


class Drops:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def message(self, direction: str, method: str) -> None:
        pass

    def dropped(self, reason: str) -> None:
        self.reasons.append(reason)


def exchange() -> tuple[B2BUA, Drops]:
    drops = Drops()
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060), "tcp": ("10.0.0.1", 5060)}, observer=drops)
    return B2BUA(endpoint), drops


def feed(data: bytes) -> tuple[list[Sent], list[object], list[str]]:
    b2bua, drops = exchange()
    b2bua.receive(data, "udp", SOURCE, 0.0)
    events = []
    while (event := b2bua.next_event()) is not None:
        events.append(event)
    return parse_outbox(b2bua.datagrams_to_send()), events, drops.reasons


def storable(text: str) -> bool:
    """Valid UTF-8 (no lone surrogates) and no NUL."""
    text.encode("utf-8")
    return "\x00" not in text


# -- lenient text ----------------------------------------------------------------------------------------
def test_latin1_display_name_is_accepted_and_decoded_as_latin1() -> None:
    data = INVITE.replace(b"From: <sip:alice", b'From: "Jos\xe9 N\xfa\xf1ez" <sip:alice')
    sent, events, _ = feed(data)
    assert describe(sent) == ["100"]
    assert len(events) == 1 and isinstance(events[0], CallOffered)
    from_value = events[0].call.a.request.get("From") or ""
    assert from_value.startswith('"José Núñez" <sip:alice@192.0.2.10>')
    assert storable(from_value)


def test_valid_utf8_beside_a_stray_byte_is_kept() -> None:
    data = INVITE.replace(b"From: <sip:alice", 'From: "Zoë'.encode() + b'\xff" <sip:alice')
    message = parse(data)
    assert (message.get("From") or "").startswith('"Zoëÿ" <sip:alice')


def test_every_parsed_header_is_storable_whatever_the_bytes() -> None:
    for byte in (0x80, 0xC3, 0xED, 0xF4, 0xFE, 0xFF):
        data = INVITE.replace(b"From: <sip:alice", b'From: "a' + bytes([byte]) + b'b" <sip:alice')
        message = parse(data)
        assert all(storable(value) for _, value in message.headers)
        assert parse(message.serialize()).get("From") == message.get("From")  # and it re-serializes


def test_escaped_nul_in_a_quoted_string_is_accepted_and_dropped() -> None:
    message = parse((TORTURE / "valid" / "intmeth.sip").read_bytes())  # To: "BEL:\\^G NUL:\\^@ DEL:\\^?"
    assert all(storable(value) for _, value in message.headers)
    assert (message.get("To") or "").startswith('"BEL:\\\x07 NUL: DEL:\\\x7f"')


def test_nul_in_a_header_is_answered_400_with_a_reason() -> None:
    sent, events, _ = feed(INVITE.replace(b"Max-Forwards: 70", b"X-Account: a\x00b\r\nMax-Forwards: 70"))
    assert describe(sent) == ["400"] and not events
    assert "NUL" in (sent[0].response.get("Warning") or "")


# -- 400 whenever a response can be routed -----------------------------------------------------------------
MALFORMED = {
    "extra word after the version": (b" SIP/2.0\r\n", b" SIP/2.0 extra\r\n", "request line"),
    "header line without a colon": (b"Max-Forwards: 70", b"Max-Forwards 70", "header line"),
    "space inside a header name": (b"Max-Forwards: 70", b"Max Forwards: 70", "header line"),
    "empty header name": (b"Max-Forwards: 70", b": 70", "header line"),
    "non-token byte in a header name": (b"Max-Forwards: 70", b"X-F\xffoo: 70", "header line"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_but_routable_requests_get_400_with_a_warning(case: str) -> None:
    old, new, what = MALFORMED[case]
    sent, events, drops = feed(INVITE.replace(old, new, 1))
    assert describe(sent) == ["400"], drops
    assert not events
    response = sent[0].response
    assert response.call_id == "call-1@192.0.2.10" and response.cseq == (1, "INVITE")
    assert sent[0].addr == SOURCE
    assert what in (response.get("Warning") or "")
    assert drops == ["malformed_answered"]


def test_malformed_ack_is_never_answered() -> None:
    ack = request("ACK", to_tag="x").replace(b"Max-Forwards: 70", b"Max-Forwards 70")
    sent, _, drops = feed(ack)
    assert sent == [] and drops == ["malformed"]


def test_malformed_header_without_call_id_is_dropped() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70").replace(b"Call-ID: call-1@192.0.2.10\r\n", b"")
    sent, _, drops = feed(data)
    assert sent == [] and drops == ["malformed"]


# -- 416 for a scheme we do not serve ------------------------------------------------------------------------
def test_invite_with_an_unknown_uri_scheme_gets_416_before_any_work() -> None:
    sent, events, _ = feed(request("INVITE", uri="nobodyKnowsThisScheme:totallyopaquecontent",
                                   to_uri="sip:bob@10.0.0.1"))
    assert describe(sent) == ["100", "416"]
    assert not events  # never offered to the CallFlow (which would answer 404)


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_rfc4475_unknown_scheme_options_get_416(name: str) -> None:
    sent, _, _ = feed((TORTURE / "valid" / f"{name}.sip").read_bytes())
    assert describe(sent) == ["416"]


@pytest.mark.parametrize("uri", ["sip:+18005550100@10.0.0.1", "tel:+18005550100"])
def test_understood_schemes_are_offered(uri: str) -> None:
    sent, events, _ = feed(request("INVITE", uri=uri))
    assert describe(sent) == ["100"] and isinstance(events[0], CallOffered)
    assert isinstance(events[0].call.a.request, Request)


# -- sips: needs TLS on every hop ---------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_a_sips_request_over_a_transport_that_is_not_tls_gets_480_sips_not_allowed(transport: str,
                                                                                   method: str) -> None:
    b2bua, _ = exchange()
    b2bua.receive(request(method, uri="sips:+18005550100@10.0.0.1", transport=transport.upper()), transport,
                  SOURCE, 0.0)
    sent = parse_outbox(b2bua.datagrams_to_send())
    assert describe(sent)[-1] == "480"
    refusal = sent[-1].response
    assert refusal.get("Warning") == '380 dce "SIPS Not Allowed"'  # RFC 5630's warn-code
    assert refusal.get("Reason") == f'SIP;cause=480;text="sips: Request-URI over {transport}, not TLS"'
    assert b2bua.next_event() is None  # never offered to the CallFlow


def test_a_sips_invite_over_tls_is_offered() -> None:
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060), "tls": ("10.0.0.1", 5061)})
    b2bua = B2BUA(endpoint)
    b2bua.receive(request("INVITE", uri="sips:+18005550100@10.0.0.1", transport="TLS"), "tls", SOURCE, 0.0,
                  stream=True)
    assert describe(parse_outbox(b2bua.datagrams_to_send())) == ["100"]
    assert isinstance(b2bua.next_event(), CallOffered)
