"""SDP parse/serialize/rewrite."""

from __future__ import annotations

import pytest

from dce.media.sdp import SdpError, parse_sdp, rewrite_sdp

OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 10.0.0.5\r\n"
    "s=call\r\n"
    "c=IN IP4 10.0.0.5\r\n"
    "t=0 0\r\n"
    "a=tool:softphone 1.0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=x-unknown-thing:42 foo\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

ME = "192.0.2.10"


def lines(data: bytes) -> list[str]:
    text = data.decode()
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    return text.split("\r\n")[:-1]


def test_roundtrip_preserves_every_line() -> None:
    assert parse_sdp(OFFER.encode()).serialize() == OFFER.encode()


def test_lf_in_crlf_out() -> None:
    assert parse_sdp(OFFER.replace("\r\n", "\n").encode()).serialize() == OFFER.encode()


def test_parse_fields() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.connection_address == "10.0.0.5"
    (m,) = sdp.media
    assert (m.media, m.port, m.proto, m.formats) == ("audio", 49170, "RTP/AVP", ["0", "8", "101"])
    assert m.direction == "sendrecv"
    assert m.rtcp is None
    assert m.attribute("ptime") == "20"
    assert sdp.media_address(0) == "10.0.0.5"


def test_rewrite_session_level_c_and_origin() -> None:
    out = lines(rewrite_sdp(parse_sdp(OFFER), ME, [20000]).serialize())
    assert "c=IN IP4 192.0.2.10" in out
    assert "o=alice 2890844526 2890844526 IN IP4 192.0.2.10" in out
    assert "m=audio 20000 RTP/AVP 0 8 101" in out
    assert "a=x-unknown-thing:42 foo" in out
    assert not any("10.0.0.5" in line for line in out)
    assert len(out) == len(lines(OFFER.encode()))


def test_rewrite_does_not_touch_original() -> None:
    sdp = parse_sdp(OFFER)
    rewrite_sdp(sdp, ME, [20000])
    assert sdp.serialize() == OFFER.encode()


MULTI = (
    "v=0\n"
    "o=- 1 1 IN IP4 10.1.1.1\n"
    "s=-\n"
    "t=0 0\n"
    "m=audio 5004 RTP/AVP 0\n"
    "c=IN IP4 10.1.1.1\n"
    "a=rtcp:5005\n"
    "a=sendonly\n"
    "m=video 0 RTP/AVP 96\n"
    "c=IN IP4 10.1.1.1\n"
    "m=video 6000 RTP/AVP 97\n"
    "c=IN IP4 10.1.1.2/127\n"
    "a=rtcp:6011 IN IP4 10.1.1.3\n"
    "a=inactive\n"
)


def test_multiple_m_lines_port_zero_rtcp_and_hold() -> None:
    sdp = parse_sdp(MULTI)
    assert [m.port for m in sdp.media] == [5004, 0, 6000]
    assert sdp.media[0].rtcp == (5005, None)
    assert sdp.media[2].rtcp == (6011, "10.1.1.3")
    assert sdp.media_address(2) == "10.1.1.2"
    assert [m.direction for m in sdp.media] == ["sendonly", None, "inactive"]
    out = lines(rewrite_sdp(sdp, ME, [30000, None, 30010]).serialize())
    assert out[4:] == [
        "m=audio 30000 RTP/AVP 0",
        "c=IN IP4 192.0.2.10",
        "a=rtcp:30001",
        "a=sendonly",
        "m=video 0 RTP/AVP 96",
        "c=IN IP4 192.0.2.10",
        "m=video 30010 RTP/AVP 97",
        "c=IN IP4 192.0.2.10",
        "a=rtcp:30011 IN IP4 192.0.2.10",
        "a=inactive",
    ]


def test_port_zero_stays_zero_even_if_port_given() -> None:
    sdp = parse_sdp(MULTI)
    out = rewrite_sdp(sdp, ME, [30000, 40000, None])
    assert out.media[1].port == 0


def test_null_address_hold_is_kept() -> None:
    sdp = parse_sdp(OFFER.replace("c=IN IP4 10.0.0.5", "c=IN IP4 0.0.0.0"))
    out = lines(rewrite_sdp(sdp, ME, [20000]).serialize())
    assert "c=IN IP4 0.0.0.0" in out


def test_port_count_dropped_on_rewrite() -> None:
    sdp = parse_sdp(OFFER.replace("m=audio 49170 ", "m=audio 49170/2 "))
    assert sdp.media[0].port_count == 2
    assert rewrite_sdp(sdp, ME, [20000]).media[0].m_line().startswith("audio 20000 RTP/AVP")


def test_no_media() -> None:
    sdp = parse_sdp("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n")
    assert sdp.media == []
    assert b"IN IP4 192.0.2.10" in rewrite_sdp(sdp, ME, []).serialize()


def test_missing_connection_address() -> None:
    sdp = parse_sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n")
    with pytest.raises(SdpError, match="no c= address"):
        sdp.media_address(0)


def test_set_origin_bumps_fields() -> None:
    sdp = parse_sdp(OFFER)
    sdp.set_origin("-", 7, 3, ME)
    assert sdp.lines[1] == ("o", "- 7 3 IN IP4 192.0.2.10")


def test_wrong_port_list_length() -> None:
    with pytest.raises(ValueError, match="ports for"):
        rewrite_sdp(parse_sdp(OFFER), ME, [])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "must start with 'v=0'"),
        (b"v=1\r\n", "must start with 'v=0'"),
        (b"v=0\r\nthis is not sdp\r\n", "line 2"),
        (b"v=0\r\n=x\r\n", "line 2"),
        (b"v=0\r\nm=audio\r\n", "expected 'm="),
        (b"v=0\r\nm=audio abc RTP/AVP 0\r\n", "bad port"),
        (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
        (b"v=0\r\nc=IN IP4\r\n", "c=IN IP4"),
        (b"v=0\r\nc=XX IP4 1.2.3.4\r\n", "c=IN IP4"),
        (b"v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", "6 fields"),
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n", "a=rtcp"),
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN\r\n", "a=rtcp"),
    ],
)
def test_bad_sdp(body: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse_sdp(body)


def test_sdp_error_is_value_error() -> None:
    assert issubclass(SdpError, ValueError)


def test_non_utf8_bytes_survive() -> None:
    body = OFFER.encode().replace(b"s=call", b"s=caf\xe9")
    assert parse_sdp(body).serialize() == body
