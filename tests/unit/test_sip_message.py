"""SIP message parsing, serialization, framing and RFC 4475 torture messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dce.sip.endpoint import SipEndpoint
from dce.sip.message import (
    Request,
    Response,
    SipParseError,
    StreamFramer,
    Via,
    header_tag,
    header_uri,
    make_response,
    parse,
    split_list,
    uri_hostport,
    uri_user,
)
from tests.unit.sipfactory import SDP_A, request

TORTURE = Path(__file__).parent / "data" / "rfc4475"
VALID = sorted((TORTURE / "valid").glob("*.sip"))
INVALID = sorted((TORTURE / "invalid").glob("*.sip"))

# RFC 4475 invalid messages our parser accepts, each with the reason we accept it (not skipped: asserted).
ACCEPTED_INVALID = {
    # From/To grammar is checked with sipmessage only on the dialog-creating INVITE (a per-packet cost
    # budget decision, see message.py); an OPTIONS with an unquoted comma in a display name passes.
    "baddn": "display names are validated on initial INVITEs only",
    # RFC 4475 3.1.2.12-14 allow an element to be liberal with these: nothing we act on is malformed.
    "baddate": "the Date header is not read",
    "regbadct": "a REGISTER's Contact is not read (no registrar: every REGISTER gets 405)",
    "badaspec": "To/From grammar is checked on initial INVITEs only; an OPTIONS passes",
}
# RFC 4475 invalid messages we drop instead of answering 400, with the reason.
DROPPED_INVALID = {
    "insuf": "no Call-ID/From/To: a 400 could not be matched by the client, so it is dropped and counted",
    "badvers": "its Via is SIP/7.0 too, so there is no SIP/2.0 Via to route a 505 by",
    "bigcode": "a response: never answered",
    "scalarlg": "a response: never answered",
}


# -- basic parsing ---------------------------------------------------------------------------------------
def test_parse_request_fields_and_roundtrip() -> None:
    data = request("INVITE", body=SDP_A, extra=[("X-Account", "42")])
    message = parse(data)
    assert isinstance(message, Request)
    assert (message.method, message.uri) == ("INVITE", "sip:bob@10.0.0.1")
    assert message.call_id == "call-1@192.0.2.10"
    assert message.cseq == (1, "INVITE")
    assert message.from_tag == "alice-tag"
    assert message.to_tag is None
    assert message.top_via.branch is not None and message.top_via.sent_by == ("192.0.2.10", 5060)
    assert message.body == SDP_A
    assert message.get("x-account") == "42"
    again = parse(message.serialize())
    assert again.headers == message.headers  # Content-Length is re-emitted from the body
    assert again.body == SDP_A


def test_parse_response() -> None:
    data = (b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
            b"To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n")
    message = parse(data)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (486, "Busy Here")
    assert message.to_tag == "2"
    assert message.cseq == (7, "INVITE")


def test_compact_forms_expand_to_canonical_names() -> None:
    data = (b"OPTIONS sip:b@x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@x>;tag=1\r\n"
            b"t: <sip:b@x>\r\ni: cid\r\nCSeq: 1 OPTIONS\r\nm: <sip:a@h>\r\nk: timer\r\nc: text/plain\r\n"
            b"s: hi\r\nl: 2\r\n\r\nok")
    message = parse(data)
    names = [name for name, _ in message.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Content-Type",
                     "Subject", "Content-Length"]
    assert message.call_id == "cid"
    assert message.body == b"ok"
    assert message.get("Content-Type") == "text/plain"


def test_folded_headers_are_joined() -> None:
    data = (b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>\r\n"
            b" ;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1\r\n\tOPTIONS\r\nSubject: one\r\n   two\r\n"
            b"Content-Length: 0\r\n\r\n")
    message = parse(data)
    assert message.from_tag == "1"
    assert message.cseq == (1, "OPTIONS")
    assert message.get("Subject") == "one two"


def test_lf_only_line_endings_are_accepted() -> None:
    data = request("OPTIONS").replace(b"\r\n", b"\n")
    assert parse(data).cseq == (1, "OPTIONS")


def test_multi_value_headers_split_on_commas_outside_quotes_and_brackets() -> None:
    data = (b"INVITE sip:b@x SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP p1:5060;branch=z9hG4bKa, SIP/2.0/TCP p2;branch=z9hG4bKb\r\n"
            b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKc\r\n"
            b"Route: <sip:r1;lr>, \"Proxy, two\" <sip:r2;lr>\r\nRoute: <sip:r3?x=a,b;lr>\r\n"
            b"From: \"Smith, John\" <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
            b"Subject: hello, world\r\nContent-Length: 0\r\n\r\n")
    message = parse(data)
    vias = message.get_all("Via")
    assert [Via.parse(v).host for v in vias] == ["p1", "p2", "a.example.com"]
    assert message.get("Via") == "SIP/2.0/UDP p1:5060;branch=z9hG4bKa"
    assert message.get_all("Route") == ["<sip:r1;lr>", '"Proxy, two" <sip:r2;lr>', "<sip:r3?x=a,b;lr>"]
    assert message.get_all("From") == ['"Smith, John" <sip:a@x>;tag=1']  # not a list header
    assert message.get("Subject") == "hello, world"
    assert message.pop_first("Via") == "SIP/2.0/UDP p1:5060;branch=z9hG4bKa"
    assert message.top_via.host == "p2"


def test_split_list_escaped_quote() -> None:
    assert split_list(r'"a \" , b" <sip:x>, <sip:y>') == [r'"a \" , b" <sip:x>', "<sip:y>"]
    assert split_list("a,,b, ") == ["a", "b"]


def test_via_parsing() -> None:
    via = Via.parse("SIP / 2.0 / tcp  [2001:db8::1]:5070 ; branch = z9hG4bKx ;rport;received=1.2.3.4")
    assert (via.transport, via.host, via.port) == ("TCP", "[2001:db8::1]", 5070)
    assert via.params == {"branch": "z9hG4bKx", "rport": None, "received": "1.2.3.4"}
    assert Via.parse("SIP/2.0/UDP host").sent_by == ("host", 5060)
    for bad in ("SIP/2.0 host", "SIP/3.0/UDP host", "SIP/2.0/UDP", "SIP/2.0/UDP host:0", "SIP/2.0/UDP h:x",
                "SIP/2.0/UDP [::1", "SIP/2.0/UDP h:²"):
        with pytest.raises(ValueError):
            Via.parse(bad)


def test_tag_and_uri_helpers() -> None:
    assert header_tag('"a;tag=no" <sip:a@x;tag=no>;tag=yes') == "yes"
    assert header_tag("sip:a@x;tag=t1") == "t1"
    assert header_tag("<sip:a@x>") is None
    assert header_uri('"Bob" <sip:bob@h:5062;transport=tcp>;tag=1') == "sip:bob@h:5062;transport=tcp"
    assert header_uri("sip:bob@h;tag=1") == "sip:bob@h"
    assert uri_user("sip:+4930123:pw@gw;user=phone") == "+4930123"
    assert uri_user("tel:+1555;phone-context=x") == "+1555"
    assert uri_user("sip:gw.example.com") == ""
    assert uri_hostport("sip:u@[2001:db8::2]:5080;transport=TCP") == ("[2001:db8::2]", 5080, {"transport": "TCP"})
    assert uri_hostport("sip:gw?X=1") == ("gw", None, {})


# -- Content-Length and framing ------------------------------------------------------------------------
def test_udp_body_truncated_to_content_length() -> None:
    data = request("OPTIONS", content_length=2) + b"okEXTRA"
    assert parse(data).body == b"ok"


def test_udp_content_length_larger_than_body_is_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse(request("INVITE", body=SDP_A)[:-5])
    assert info.value.status == 400
    assert isinstance(info.value.request, Request)


def test_missing_content_length_udp_takes_rest_stream_requires_it() -> None:
    data = request("OPTIONS").replace(b"Content-Length: 0\r\n", b"") + b"body"
    assert parse(data).body == b"body"
    with pytest.raises(SipParseError):
        parse(data, stream=True)


@pytest.mark.parametrize("value", ["-1", "abc", "1 2", "²", "0x10"])
def test_bad_content_length(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse(request("OPTIONS", content_length=value))
    assert info.value.request is not None


@pytest.mark.parametrize(("header", "value"), [("CSeq", "² OPTIONS"), ("Max-Forwards", "²"),
                                               ("Max-Forwards", "256"), ("CSeq", "2147483648 OPTIONS")])
def test_non_ascii_or_overlarge_numbers_are_parse_errors(header: str, value: str) -> None:
    data = request("OPTIONS").decode().replace(f"{header}: ", f"{header}: {value}\r\nX-Old-{header}: ", 1)
    with pytest.raises(SipParseError):
        parse(data.encode())


def test_status_code_with_non_ascii_digits() -> None:
    with pytest.raises(SipParseError):
        parse("SIP/2.0 ²00 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n".encode())


def test_stream_framer_split_across_feeds() -> None:
    message = request("INVITE", body=SDP_A)
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(0, len(message), 7):
        out += framer.feed(message[i : i + 7])
    assert out == [message]


def test_stream_framer_several_messages_and_keepalives() -> None:
    one, two = request("OPTIONS", cseq=1), request("INVITE", cseq=2, body=SDP_A)
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + one + b"\r\n" + two + two[:10]) == [one, two]
    assert framer.feed(two[10:]) == [two]  # the partial third message was kept
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n\r\n") == []
    assert framer.feed(one) == [one]


def test_stream_framer_compact_content_length() -> None:
    message = request("OPTIONS", body=b"hello").replace(b"Content-Length:", b"l:")
    assert StreamFramer().feed(message) == [message]
    assert parse(message, stream=True).body == b"hello"


@pytest.mark.parametrize("garbage", [
    b"GARBAGE\r\n\r\n",  # no Content-Length
    b"OPTIONS sip:x SIP/2.0\r\nContent-Length: lots\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n",
    b"A" * (StreamFramer().max_message_bytes + 1),
])
def test_stream_framer_garbage_raises(garbage: bytes) -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(garbage)


# -- make_response -------------------------------------------------------------------------------------
def test_make_response_copies_headers_and_adds_to_tag() -> None:
    req = parse(request("INVITE", extra=[("Record-Route", "<sip:p1;lr>"), ("Subject", "x")],
                        body=SDP_A))
    assert isinstance(req, Request)
    ringing = make_response(req, 180, to_tag="ours")
    names = [name for name, _ in ringing.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Record-Route"]
    assert ringing.to_tag == "ours"
    assert ringing.reason == "Ringing"
    assert ringing.get("Via") == req.get("Via")
    trying = make_response(req, 100, to_tag="ours")
    assert trying.to_tag is None  # no tag on 100 (§8.2.6.2)
    busy = make_response(req, 486, to_tag="ours")
    assert not busy.has("Record-Route")  # only 101-299 copy Record-Route
    assert busy.serialize().startswith(b"SIP/2.0 486 Busy Here\r\n")
    assert busy.body == b""


def test_make_response_keeps_existing_to_tag_and_adds_extras() -> None:
    req = parse(request("BYE", to_tag="theirs"))
    assert isinstance(req, Request)
    ok = make_response(req, 200, to_tag="other", extra=[("Allow", "INVITE")], body=b"x",
                       content_type="text/plain")
    assert ok.to_tag == "theirs"
    assert ok.get("Allow") == "INVITE"
    assert parse(ok.serialize()).body == b"x"


# -- RFC 4475 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_rfc4475_valid_messages_parse(path: Path) -> None:
    message = parse(path.read_bytes())
    assert message.call_id
    message.top_via  # noqa: B018 - must be readable
    assert parse(message.serialize()).call_id == message.call_id  # and survive a round trip


def test_rfc4475_wsinv_details() -> None:
    message = parse((TORTURE / "valid" / "wsinv.sip").read_bytes())
    assert isinstance(message, Request)
    assert message.cseq == (9, "INVITE")
    assert message.get("Max-Forwards") == "0068"
    assert message.to_tag == "1918181833n" and message.from_tag == "98asjd8"
    assert [Via.parse(v).host for v in message.get_all("Via")] == [
        "192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert Via.parse(message.get_all("Via")[2]).branch == "z9hG4bK30239"
    assert message.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.body.startswith(b"v=0\r\n")


def test_rfc4475_dblreq_ignores_the_second_request() -> None:
    message = parse((TORTURE / "valid" / "dblreq.sip").read_bytes())
    assert isinstance(message, Request) and message.method == "REGISTER"
    assert message.body == b""


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_rfc4475_invalid_messages_are_rejected(path: Path) -> None:
    data = path.read_bytes()
    if path.stem in ACCEPTED_INVALID:
        parse(data)  # documented leniency: see ACCEPTED_INVALID
        return
    with pytest.raises(SipParseError) as info:
        parse(data)
    if path.stem in DROPPED_INVALID:
        assert info.value.request is None, DROPPED_INVALID[path.stem]
    else:
        assert isinstance(info.value.request, Request), "a 400 can be formed for this request"
        assert info.value.status == 400


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_rfc4475_invalid_requests_get_400_from_the_endpoint(path: Path) -> None:
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060), "tcp": ("10.0.0.1", 5060)})
    endpoint.receive(path.read_bytes(), "udp", ("192.0.2.99", 5060), 0.0)
    out = endpoint.datagrams_to_send()
    if path.stem in DROPPED_INVALID or path.stem in ACCEPTED_INVALID:
        assert all(not data.startswith(b"SIP/2.0 400") for data, _, _ in out)
        return
    assert len(out) == 1
    data, transport, addr = out[0]
    assert data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b"\r\nWarning: 399 dce " in data
    assert data.count(b"\r\nVia: ") == 1  # only the top Via, the one we could read
    assert (transport, addr[0]) == ("udp", "192.0.2.99")


def test_wrong_version_with_routable_headers_gets_505() -> None:
    data = request("OPTIONS").replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1)
    with pytest.raises(SipParseError) as info:
        parse(data)
    assert info.value.status == 505
    assert info.value.request is not None and info.value.request.call_id == "call-1@192.0.2.10"


# -- fuzzing: parse and SipEndpoint.receive never raise anything unexpected ---------------------------
SEEDS = [request("INVITE", body=SDP_A), request("BYE", to_tag="x"), request("CANCEL"),
         request("ACK", to_tag="x"), *(p.read_bytes() for p in VALID[:6])]


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for pos, kind, payload in edits:
        pos %= len(buf) + 1
        if kind == 0:
            buf[pos:pos] = payload
        elif kind == 1:
            del buf[pos : pos + len(payload) + 1]
        else:
            buf[pos : pos + len(payload)] = payload
    return bytes(buf)


TOKENS = st.sampled_from([b"\r\n", b"\n", b" ", b":", b";", b",", b"<", b">", b'"', b"\\", b"SIP/2.0",
                          b"Via: ", b"CSeq: ", b"Content-Length: ", b"99999", b"-1", b"\xff", b"\x00",
                          b"\xc2\xb2", b"\r\n\r\n", b"tag=", b"branch=z9hG4bK", b";rport", b"INVITE", b"[::1"])
EDITS = st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 2), st.one_of(TOKENS, st.binary(max_size=8))),
                 min_size=1, max_size=6)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_parse_error(data: bytes, stream: bool = False) -> None:
    try:
        message = parse(data, stream=stream)
    except SipParseError:
        return
    message.serialize()
    message.top_via  # noqa: B018 - a parsed message always has a readable top Via
    message.cseq  # noqa: B018


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_parse_arbitrary_bytes(data: bytes) -> None:
    _parse_or_parse_error(data)
    _parse_or_parse_error(data, stream=True)


@FUZZ
@given(st.sampled_from(SEEDS), EDITS)
def test_fuzz_parse_mutated_messages(seed: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    _parse_or_parse_error(_mutate(seed, edits))


@FUZZ
@given(st.sampled_from(SEEDS), EDITS, st.sampled_from(["udp", "tcp"]))
def test_fuzz_endpoint_receive_never_raises(seed: bytes, edits: list[tuple[int, int, bytes]],
                                            transport: str) -> None:
    from dce.sip.b2bua import B2BUA

    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060), "tcp": ("10.0.0.1", 5060)})
    b2bua = B2BUA(endpoint)
    endpoint.receive(seed, transport, ("192.0.2.10", 5060), 0.0)  # some state for the mutant to hit
    endpoint.receive(_mutate(seed, edits), transport, ("192.0.2.10", 5060), 1.0)
    endpoint.handle_timer(100.0)
    for data, _, _ in endpoint.datagrams_to_send():
        try:
            parse(data)  # whatever we send must itself be well-formed...
        except SipParseError:
            # ...except a 400 echoing the sender's own unparseable CSeq/From/To (it has nothing better)
            assert data.startswith((b"SIP/2.0 400 ", b"SIP/2.0 505 ")), data
    while b2bua.next_event() is not None:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_fuzz_stream_framer(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for message in framer.feed(chunk):
                _parse_or_parse_error(message, stream=True)
    except SipParseError:
        pass


def test_a_list_header_of_only_commas_reads_as_empty_not_as_a_crash() -> None:
    """Found by the fuzz: ``Via: ,`` beside a bad Content-Length made answering the 400 raise IndexError."""
    data = (b"INVITE sip:+18005550100@10.0.0.1 SIP/2.0\r\nVia: ,\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
            b"Call-ID: x@y\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: x\r\n\r\n")
    with pytest.raises(SipParseError) as raised:
        parse(data)
    request = raised.value.request
    assert request is not None and request.get("Via") == ""
    with pytest.raises(ValueError):
        request.top_via  # noqa: B018 (the property is what is tested)


def test_a_list_header_line_of_only_commas_before_a_real_one_is_passed_over() -> None:
    """Found by the fuzz: ``Via: ,`` then a valid Via passed validation (which reads the list as a whole) but the
    top Via read the empty line and raised, a traceback in the core instead of an answer."""
    data = (b"INVITE sip:+18005550100@10.0.0.1 SIP/2.0\r\nVia: ,\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            b"Content-Length: 0\r\n\r\n")
    request = parse(data)
    assert isinstance(request, Request)
    assert request.top_via.host == "192.0.2.10" and request.get_all("Via") == [request.get("Via")]
    assert request.pop_first("Via") == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx"
    assert not request.has("Via")
