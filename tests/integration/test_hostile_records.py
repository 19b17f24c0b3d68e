"""Hostile bytes from the wire never stop CDR persistence: an INVITE whose Call-ID holds a NUL and one whose
Request-URI user is longer than any column reach a real ``dce serve``; their CDRs are stored (escaped, bounded)
and so is every later call's. On the old code PostgreSQL refused the batch and the writer retried it forever."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import DID, HOST, fetch_cdrs, run_sipp_uac
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

UNKNOWN_DID = "+18005550199"


def raw_invite(target: tuple[str, int], user: str, call_id: bytes) -> int:
    """Send one INVITE over UDP, ACK its final answer; return the final status code."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        branch = f"z9hG4bK-{uuid.uuid4().hex}"
        head = (
            f"INVITE sip:{user}@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch={branch}\r\n"
            f"From: <sip:+13125550199@{HOST}>;tag=raw1\r\n"
            f"To: <sip:{user}@{target[0]}>\r\n"
        ).encode()
        tail = (f"CSeq: 1 INVITE\r\nContact: <sip:raw@{HOST}:{port}>\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n").encode()
        sock.sendto(head + b"Call-ID: " + call_id + b"\r\n" + tail, target)
        while True:
            data, _ = sock.recvfrom(65535)
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                break
        to = next(line for line in data.split(b"\r\n") if line.lower().startswith(b"to:"))
        ack = (f"ACK sip:{user}@{target[0]}:{target[1]} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {HOST}:{port};branch={branch}\r\n"
               f"From: <sip:+13125550199@{HOST}>;tag=raw1\r\n").encode()
        ack += to + b"\r\nCall-ID: " + call_id + b"\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        sock.sendto(ack, target)
        return status


def test_hostile_text_from_the_wire_does_not_stop_cdr_persistence(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]})
    target = (HOST, exchange.sip_port)

    nul = raw_invite(target, UNKNOWN_DID, b"nul\x00in-" + uuid.uuid4().hex.encode() + b"@evil")
    huge = raw_invite(target, "9" * 400, uuid.uuid4().hex.encode() + b"@long")
    recorded = [status for status in (nul, huge) if status != 400]  # 400: refused at the edge, never a call
    assert huge != 400

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=200, timeout=30)
    assert_ok(caller, exchange=exchange)

    cdrs = fetch_cdrs(exchange.http_base, len(recorded) + 1, timeout=15)
    assert len(cdrs) == len(recorded) + 1
    assert "answered" in {cdr["disposition"] for cdr in cdrs}
    long_one = next(cdr for cdr in cdrs if cdr["called"].startswith("999"))
    assert len(long_one["called"]) == 64  # bounded to its column, with a digest of the whole
    if nul != 400:
        assert any("\\x00" in cdr["a_leg_call_id"] for cdr in cdrs)  # the NUL kept visible, as evidence
    assert "Traceback" not in exchange.log()
