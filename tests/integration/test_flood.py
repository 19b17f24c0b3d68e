"""The flood guard in a real ``dce serve``: a flood from one source beside legitimate calls from another
(bench/flood.py, bounded to 5 s) gets the flooder banned and dropped unread and loses not one legitimate call; a
scanner gets no answer and is banned, on UDP and at TCP accept."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from pathlib import Path

import pytest

from bench.flood import run
from tests.externals import require_binary
from tests.integration.sipp import HOST, ExchangeProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

DURATION = 30.0 if os.environ.get("DCE_SOAK") == "1" else 5.0


def test_a_flooder_is_banned_and_no_legitimate_call_is_lost(tmp_path: Path, migrated_database_url: str) -> None:
    require_binary("sipp")
    result = run(duration=DURATION, flood_rps=5000, cps=50, workdir=tmp_path, database_url=migrated_database_url)
    print(result.line())
    assert result.exchange_alive
    assert result.flood_rps > 4000
    assert result.legit_placed == int(50 * DURATION)
    assert result.legit_failed == 0
    assert result.banned == 1
    assert result.flood_dropped > result.flood_rps * DURATION * 0.8  # most of the flood never reached the parser


def _options(sock: socket.socket, port: int, ua: str) -> bytes:
    """Send an OPTIONS from ``sock``; the first reply within a second (b"" when none)."""
    host, local = sock.getsockname()[:2]
    branch = f"z9hG4bK-{uuid.uuid4().hex[:12]}"
    sock.sendto((f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{local};branch={branch}\r\n"
                 f"From: <sip:100@{host}>;tag={uuid.uuid4().hex[:8]}\r\nTo: <sip:100@{HOST}>\r\n"
                 f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: {ua}\r\n"
                 "Content-Length: 0\r\n\r\n").encode(), (HOST, port))
    sock.settimeout(1.0)
    try:
        return sock.recv(65535)
    except TimeoutError:
        return b""


def test_a_scanner_is_dropped_unanswered_and_banned_on_udp_and_tcp(tmp_path: Path,
                                                                   migrated_database_url: str) -> None:
    scanner_ip = "127.0.0.3"
    with ExchangeProcess(tmp_path / "dce", migrated_database_url, {}) as exchange, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scanner, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        scanner.bind((scanner_ip, 0))
        other.bind((HOST, 0))
        assert _options(scanner, exchange.sip_port, "friendly-scanner") == b""  # no answer at all
        assert _options(scanner, exchange.sip_port, "Linphone/5.2") == b""  # banned: whatever it sends next
        assert _options(other, exchange.sip_port, "Linphone/5.2").startswith(b"SIP/2.0 200 OK\r\n")
        with socket.socket() as tcp:  # its TCP connections are closed at accept
            tcp.bind((scanner_ip, 0))
            tcp.settimeout(2.0)
            tcp.connect((HOST, exchange.sip_port))
            with contextlib.suppress(ConnectionError):  # closed (b"") or reset: either way not served
                assert tcp.recv(100) == b""
        metrics = exchange.metrics()
        assert 'dce_sip_bans_total{reason="scanner"} 1.0' in metrics
        assert "dce_sip_banned_sources 1.0" in metrics
        assert re.search(r'dce_sip_dropped_total\{reason="flood_banned"\} [1-9]', metrics)
        assert 'dce_sip_dropped_total{reason="scanner"} 1.0' in metrics
        log = exchange.log()
        assert log.count("banned for 300 s: scanner") == 1 and scanner_ip in log
