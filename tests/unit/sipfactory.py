"""Builders for SIP test traffic: request/response bytes and a virtual-clock harness around the sans-IO stack.

Tests build what a peer would put on the wire with :func:`request` and :func:`response_to`, feed it to a
``SipEndpoint``/``B2BUA`` and read back what it queued with :meth:`Wire.take` (parsed, with the address).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dce.sip.message import Request, Response, parse, reason_phrase

_branches = itertools.count(1)

SDP_A = (
    b"v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
# A new offer from A (version 2, on hold)
SDP_A2 = SDP_A.replace(b"o=alice 1 1", b"o=alice 1 2").replace(b"PCMU/8000", b"PCMU/8000\r\na=sendonly")
SDP_B = (
    b"v=0\r\no=bob 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n"
    b"m=audio 50000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def new_branch() -> str:
    """A fresh RFC 3261 branch for a test peer."""
    return f"z9hG4bKtest{next(_branches)}"


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@10.0.0.1",
    *,
    branch: str | None = None,
    via_host: str = "192.0.2.10",
    via_port: int | None = 5060,
    transport: str = "UDP",
    rport: bool = False,
    call_id: str = "call-1@192.0.2.10",
    from_uri: str = "sip:alice@192.0.2.10",
    from_tag: str | None = "alice-tag",
    to_uri: str | None = None,
    to_tag: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    max_forwards: int | None = 70,
    contact: str | None = "<sip:alice@192.0.2.10:5060>",
    body: bytes = b"",
    content_type: str = "application/sdp",
    extra: Iterable[tuple[str, str]] = (),
    content_length: int | str | None = None,
) -> bytes:
    """The bytes of a request as a UA at ``via_host:via_port`` would send it."""
    branch = branch if branch is not None else new_branch()
    hostport = via_host if via_port is None else f"{via_host}:{via_port}"
    via = f"SIP/2.0/{transport} {hostport};branch={branch}" + (";rport" if rport else "")
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines.append(f"From: <{from_uri}>" + (f";tag={from_tag}" if from_tag else ""))
    lines.append(f"To: <{to_uri or uri}>" + (f";tag={to_tag}" if to_tag else ""))
    lines.append(f"Call-ID: {call_id}")
    lines.append(f"CSeq: {cseq} {cseq_method or method}")
    if contact is not None and method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
        lines.append(f"Contact: {contact}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_to(
    req: Request,
    status: int,
    *,
    reason: str | None = None,
    to_tag: str | None = None,
    contact: str | None = None,
    body: bytes = b"",
    extra: Iterable[tuple[str, str]] = (),
    record_route: Sequence[str] = (),
) -> bytes:
    """The bytes of a response a UAS would send to ``req`` (a request we captured from the stack)."""
    lines = [f"SIP/2.0 {status} {reason or reason_phrase(status)}"]
    lines.extend(f"Via: {via}" for via in req.get_all("Via"))
    lines.extend(f"Record-Route: {rr}" for rr in record_route)
    lines.append(f"From: {req.get('From')}")
    to = req.get("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {req.call_id}")
    lines.append(f"CSeq: {req.get('CSeq')}")
    if contact:
        lines.append(f"Contact: {contact}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ack_for(invite: bytes | Request, response: Response, *, branch: str | None = None) -> bytes:
    """The ACK a UAC sends for ``response`` (non-2xx: same branch; 2xx: a new branch, pass ``branch``)."""
    req = parse(invite) if isinstance(invite, bytes) else invite
    via = req.get("Via") or ""
    if branch is not None:
        via = via.split(";branch=")[0] + f";branch={branch}"
    lines = [
        f"ACK {req.uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {req.get('From')}",
        f"To: {response.get('To')}",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.cseq[0]} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(slots=True)
class Sent:
    """One message the stack queued for the wire, parsed."""

    message: Request | Response
    transport: str
    addr: tuple[str, int]
    raw: bytes

    @property
    def request(self) -> Request:
        assert isinstance(self.message, Request), f"expected a request, got {self.message!r}"
        return self.message

    @property
    def response(self) -> Response:
        assert isinstance(self.message, Response), f"expected a response, got {self.message!r}"
        return self.message


def parse_outbox(datagrams: list[tuple[bytes, str, tuple[str, int]]]) -> list[Sent]:
    """Parse what ``datagrams_to_send()`` returned (our own output must always parse)."""
    return [Sent(parse(data), transport, addr, data) for data, transport, addr in datagrams]


def describe(sent: Iterable[Sent]) -> list[str]:
    """Short labels for assertions: 'INVITE', '100', '487', ..."""
    out = []
    for item in sent:
        message = item.message
        out.append(message.method if isinstance(message, Request) else str(message.status))
    return out
