"""What the exchange shows to anyone who can reach it: metric series a caller cannot multiply, a cheap and
optionally authenticated ``/metrics``, no software versions in headers, and the newcomer's first requests."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dce.http_api.metrics import SIP_METHODS
from tests.integration.sipp import HOST, ExchangeProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def exchange(tmp_path: Path, migrated_database_url: str) -> Iterator[ExchangeProcess]:
    process = ExchangeProcess(tmp_path / "dce", migrated_database_url, {"+18005550100": ["sip:127.0.0.1:9"]})
    process.start()
    try:
        yield process
    finally:
        alive = process.alive()
        process.stop()
        assert alive, f"the exchange died during the test:\n{process.log()}"


def _flood(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            method = f"X{i:05d}FLOOD"
            data = (
                f"{method} sip:bob@{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:9;branch=z9hG4bK-flood-{i}\r\n"
                f"From: <sip:flood@{HOST}>;tag=f{i}\r\nTo: <sip:bob@{HOST}>\r\n"
                f"Call-ID: flood-{i}@{HOST}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            sock.sendto(data.encode(), (HOST, port))
            if i % 100 == 99:
                time.sleep(0.01)  # a flood, not a buffer overflow of the test's own socket


def test_unknown_sip_methods_over_udp_make_no_new_series(exchange: ExchangeProcess) -> None:
    """1000 distinct unknown methods over real UDP: /metrics keeps a fixed label set and about its size."""
    before = exchange.metrics()
    _flood(exchange.sip_port, 1000)
    deadline = time.monotonic() + 15
    text = before
    while time.monotonic() < deadline:
        time.sleep(1.1)  # past the scrape cache
        text = exchange.metrics()
        found = re.search(r'^dce_sip_messages_total\{direction="in",method="other"\} (\d+)', text, re.M)
        if found and int(found.group(1)) >= 900:  # UDP on loopback may drop a few
            break
    else:
        raise AssertionError(f"the flood was not counted as method=other:\n{text[-3000:]}")
    methods = set(re.findall(r'^dce_sip_messages_total\{direction="\w+",method="([^"]*)"\}', text, re.M))
    assert methods <= SIP_METHODS | {"other"}, methods
    assert "FLOOD" not in text
    print(f"/metrics bytes before={len(before)} after={len(text)}")
    assert len(text) < len(before) + 4000
