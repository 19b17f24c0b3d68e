"""The SIP edge of a real ``dce serve``: a destination it cannot send to fails over cleanly, and one source
cannot hold more calls than ``sip.max_calls_per_source``."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.externals import require_binary
from tests.integration.sipp import (
    DID,
    HOST,
    ExchangeProcess,
    SippUas,
    fetch_cdrs,
    free_port,
    run_sipp_uac,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def invite(sock: socket.socket, exchange: ExchangeProcess, scheme: str = "sip") -> list[bytes]:
    """Send a new INVITE from ``sock`` (UDP, or a connected TCP socket); what comes back within a second."""
    host, port = sock.getsockname()
    branch = f"z9hG4bK-{uuid.uuid4().hex[:12]}"
    uri = f"{scheme}:{DID}@{HOST}:{exchange.sip_port}"
    tcp = sock.type == socket.SOCK_STREAM
    data = (
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/{'TCP' if tcp else 'UDP'} {host}:{port};branch={branch};rport\r\n"
        f"From: <sip:+12025550123@{host}>;tag={uuid.uuid4().hex[:8]}\r\nTo: <{uri}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{host}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{host}:{port}>\r\n"
        f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    if tcp:
        sock.sendall(data)
    else:
        sock.sendto(data, (HOST, exchange.sip_port))
    replies: list[bytes] = []
    deadline = time.monotonic() + 1.0
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            replies.append(sock.recv(65535))
        except TimeoutError:
            continue
    return replies


def status_lines(replies: list[bytes]) -> list[bytes]:
    """Distinct status lines in order (a final response is retransmitted until ACKed: we never ACK)."""
    return list(dict.fromkeys(reply.split(b"\r\n", 1)[0] for reply in replies))


def test_calls_over_the_per_source_limit_get_503_with_retry_after(tmp_path: Path,
                                                                   migrated_database_url: str) -> None:
    silent = f"sip:{HOST}:{free_port('udp')}"  # nobody answers: the first call waits (no_response_timeout_s)
    exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url, {DID: [silent]}, ring_timeout_s=60,
                               extra_config={"sip": {"max_calls_per_source": 1, "source_retry_after_s": 9}})
    with exchange, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
        first.bind((HOST, 0))
        second.bind((HOST, 0))
        elsewhere.bind(("127.0.0.2", 0))  # another source address on the loopback network
        assert status_lines(invite(first, exchange)) == [b"SIP/2.0 100 Trying"]
        refused = invite(second, exchange)  # same IP, another port: the same source
        assert status_lines(refused) == [b"SIP/2.0 100 Trying", b"SIP/2.0 503 Service Unavailable"], refused
        assert b"\r\nRetry-After: 9\r\n" in refused[1] and b"Q.850;cause=34" in refused[1]
        assert status_lines(invite(elsewhere, exchange)) == [b"SIP/2.0 100 Trying"]
        assert exchange.alive()


def test_a_hostname_destination_fails_over_to_the_next(tmp_path: Path, migrated_database_url: str) -> None:
    require_binary("sipp")
    with SippUas("uas_answer", tmp_path, calls=1) as callee:
        exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url,
                                   {DID: ["sip:callee.invalid:5080", callee.uri]})
        with exchange:
            caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)
            assert caller.returncode == 0, caller.describe() + exchange.log(6000)
            assert callee.stop().returncode == 0
            (cdr,) = fetch_cdrs(exchange.http_base, 1)
            assert (cdr["disposition"], cdr["final_code"], cdr["destination"]) == ("answered", 200, callee.uri)
            assert "Traceback" not in exchange.log(100_000)


def test_a_sips_invite_over_udp_or_tcp_is_refused_480_sips_not_allowed(tmp_path: Path,
                                                                      migrated_database_url: str) -> None:
    """RFC 3261 §26.2.2: sips: asks for TLS on every hop; RFC 5630's Warning 380 says why it was refused."""
    exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url, {DID: [f"sip:{HOST}:{free_port('udp')}"]})
    with exchange, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.create_connection((HOST, exchange.sip_port)) as tcp:
        udp.bind((HOST, 0))
        for sock, transport in ((udp, "udp"), (tcp, "tcp")):
            wire = b"".join(invite(sock, exchange, scheme="sips"))  # TCP may bring 100 and 480 in one read
            refusal = wire[wire.index(b"SIP/2.0 480 Temporarily Unavailable\r\n"):]
            assert b'\r\nWarning: 380 dce "SIPS Not Allowed"\r\n' in refusal
            assert f'text="sips: Request-URI over {transport}, not TLS"'.encode() in refusal
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:  # (udp still hears the 480 resent)
            plain.bind((HOST, 0))
            assert status_lines(invite(plain, exchange)) == [b"SIP/2.0 100 Trying"]  # a sip: one goes through
        assert exchange.alive()
