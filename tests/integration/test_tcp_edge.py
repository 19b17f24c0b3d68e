"""The SIP edge of a real ``dce serve`` under TCP resets: open descriptors return to where they started.

Slow-marked fault run: ``RESETS`` connections (500 by default, 5000 with ``DCE_SOAK=1``) are opened and reset
(SO_LINGER 0) at once, most before the server's handler has run. Before the fix each such connection raised a
TypeError in the handler (no peer name) and kept its descriptor until a full garbage collection; a few thousand
exhausted the process. The exchange must end where it began and still answer.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.integration.sipp import HOST, ExchangeProcess
from tests.unit.sipfactory import new_branch, request

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

RESETS = 5000 if os.environ.get("DCE_SOAK") == "1" else 500
SLACK = 2  # descriptors the exchange may open meanwhile on its own (a database connection, a log file)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def options_over_tcp(port: int) -> bytes:
    """The status line of the exchange's answer to an OPTIONS sent over a fresh TCP connection."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        local = sock.getsockname()
        sock.sendall(request("OPTIONS", uri=f"sip:{HOST}:{port}", transport="TCP", via_host=local[0],
                             via_port=local[1], branch=new_branch(), call_id=f"{new_branch()}@{HOST}"))
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]


def reset_connections(port: int, count: int) -> None:
    for i in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.setblocking(False)
        sock.connect_ex((HOST, port))
        sock.close()  # RST
        if i % 100 == 99:
            time.sleep(0.01)  # stay within the listen backlog


def test_tcp_resets_leave_no_descriptor_behind(tmp_path: Path, migrated_database_url: str) -> None:
    with ExchangeProcess(tmp_path / "dce", migrated_database_url, {}) as exchange:
        assert options_over_tcp(exchange.sip_port) == b"SIP/2.0 200 OK"
        time.sleep(0.5)
        before = open_fds(exchange.pid)

        reset_connections(exchange.sip_port, RESETS)

        deadline = time.monotonic() + 20
        while open_fds(exchange.pid) > before + SLACK and time.monotonic() < deadline:
            time.sleep(0.2)
        after = open_fds(exchange.pid)
        print(f"resets={RESETS} fds_before={before} fds_after={after}")
        assert after <= before + SLACK, f"{after - before} descriptors left after {RESETS} resets"
        assert options_over_tcp(exchange.sip_port) == b"SIP/2.0 200 OK"  # still serving
        assert exchange.alive()
        log = exchange.log(200_000)
        assert "Traceback" not in log and "TypeError" not in log, log[-3000:]
