"""Mutated INVITEs over real UDP and TCP sockets against a real ``dce serve``: the process stays up, logs no
traceback and no ERROR, and places a normal call afterwards (SIPp caller -> exchange -> SIPp callee).

The mutants are those of the sans-IO fuzz (``tests/unit/test_sip_fuzz.py``), from a seeded generator: 1000 over
UDP and 1000 over TCP by default (``DCE_SOAK=1``: 10000 each). The flood guard is off here (its own tests ban
a flooder): this run is about what the parser and the core make of the bytes.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import pytest

from tests.externals import require_binary
from tests.integration.sipp import DID, HOST, ExchangeProcess, SippUas, run_sipp_uac
from tests.unit.test_sip_fuzz import mutate, random_program

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

PER_TRANSPORT = 10_000 if os.environ.get("DCE_SOAK") == "1" else 1000


def send_udp(port: int, rng: random.Random, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        for n in range(count):
            data = mutate(n, "udp", random_program(rng))
            sock.sendto(data[:65000], (HOST, port))
            if n % 50 == 49:
                time.sleep(0.01)  # within the socket buffers: the point is the bytes, not a flood


def send_tcp(port: int, rng: random.Random, count: int) -> int:
    """Each mutant on its own connection (the exchange closes one whose framing is garbage); returns how many
    connections the exchange answered or closed."""
    closed_or_answered = 0
    for n in range(count):
        data = mutate(n, "tcp", random_program(rng))
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.settimeout(0.05)
            try:
                sock.sendall(data)
                if sock.recv(4096) is not None:
                    closed_or_answered += 1
            except (TimeoutError, ConnectionError):
                pass
    return closed_or_answered


def test_mutated_invites_over_udp_and_tcp_leave_the_exchange_serving(tmp_path: Path,
                                                                     migrated_database_url: str) -> None:
    require_binary("sipp")
    with SippUas("uas_answer", tmp_path, name="callee") as callee:
        exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url, {DID: [callee.uri]},
                                   extra_config={"sip": {"flood": {"enabled": False}}})
        with exchange:
            rng = random.Random(4475)
            started = time.monotonic()
            send_udp(exchange.sip_port, rng, PER_TRANSPORT)
            send_tcp(exchange.sip_port, rng, PER_TRANSPORT)
            print(f"fuzz live: {2 * PER_TRANSPORT} mutants in {time.monotonic() - started:.1f} s")
            time.sleep(1.0)
            assert exchange.alive()
            result = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, calls=3, rate=3, timeout=30)
            assert result.successful == 3, result.describe()
            assert exchange.alive()
            log = exchange.log(2_000_000)
            assert "Traceback" not in log, log[-4000:]
            assert " ERROR " not in log and "CRITICAL" not in log, log[-4000:]
