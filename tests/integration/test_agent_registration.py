"""Agents register on a real ``dce serve``: a SIPp device (UDP, TCP) and a pjsua2 UA (TLS) answer the digest
challenge, the side API shows their binding, and their unregister (``Contact: *``/``Expires: 0``) removes it; a
wrong password gets 401 then 403, and an unknown username the very same answers. With Redis, a second node sees
the binding made on the first."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.externals import require, require_binary
from tests.integration.sipp import HOST, ExchangeProcess, admin_headers, free_port, http_get, run_sipp_uac
from tests.integration.test_sipp_calls import exchange_factory  # noqa: F401 (a pytest fixture)
from tests.redis_server import redis_test_url
from tests.tls_pki import TlsPki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD = "agent-secret-123"


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **admin_headers(url)})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _registrations(process: ExchangeProcess, agent_id: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{process.http_base}/api/v1/agents/{agent_id}/registrations")
    assert status == 200, body
    return json.loads(body)["items"]  # type: ignore[no-any-return]


PJSUA2_SCRIPT = Path(__file__).with_name("pjsua2_register.py")


def _start(process: ExchangeProcess) -> Iterator[ExchangeProcess]:
    process.start()
    try:
        _post(f"{process.http_base}/api/v1/buyers", {"id": "b1", "name": "Call centre"})
        _post(f"{process.http_base}/api/v1/agents", {"id": "a1", "buyer_id": "b1", "username": "alice",
                                                     "password": PASSWORD})
        yield process
    finally:
        alive = process.alive()
        process.stop()
        assert alive, f"the exchange died during the test:\n{process.log()}"


@pytest.fixture
def exchange(tmp_path: Path, migrated_database_url: str) -> Iterator[ExchangeProcess]:
    """An exchange with one buyer and its agent ``alice`` (stored through the API, after start)."""
    require_binary("sipp")
    yield from _start(ExchangeProcess(tmp_path / "dce", migrated_database_url,  # SIPp 3.6 answers MD5 only
                                      extra_config={"sip": {"registrar": {"algorithms": ["MD5"]}}}))


@pytest.fixture
def tls_exchange(tmp_path: Path, migrated_database_url: str) -> Iterator[tuple[ExchangeProcess, int, Path]]:
    """The same with a tls: listener (a certificate for 127.0.0.1 from a test CA), challenging SHA-256 and MD5."""
    require(importlib.util.find_spec("pjsua2") is not None, "pjsua2 (pip install pjsua2-python)")
    pki = TlsPki(tmp_path / "pki")
    ours = pki.issue("dce", ips=[HOST])
    process = ExchangeProcess(tmp_path / "dce", migrated_database_url, transports=("udp",))
    tls_port = free_port("tcp")
    process.extra_config = {"sip": {"listen": [f"udp:{HOST}:{process.sip_port}", f"tls:{HOST}:{tls_port}"],
                                    "tls": {"cert_file": str(ours.cert_file), "key_file": str(ours.key_file)}}}
    for started in _start(process):
        yield started, tls_port, pki.ca_file


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_register_shows_the_binding_and_unregister_removes_it(
        tmp_path: Path, exchange: ExchangeProcess, transport: str) -> None:
    process = exchange
    with ThreadPoolExecutor(1) as pool:
        device = pool.submit(run_sipp_uac, "uac_register", process.sip_target, tmp_path, service="alice",
                             hold_ms=4000, timeout=30, transport=transport, extra=["-au", "alice", "-ap", PASSWORD])
        deadline = time.monotonic() + 10
        bindings: list[dict[str, Any]] = []
        while not bindings and time.monotonic() < deadline and not device.done():
            time.sleep(0.1)
            bindings = _registrations(process, "a1")
        result = device.result()
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), result.describe() + process.log(6000)
    (binding,) = bindings
    assert binding["uri"].startswith("sip:alice@127.0.0.1:") and binding["user_agent"] == "sipp-agent"
    assert binding["transport"] == ("udp" if transport == "u1" else "tcp")
    assert 590 <= binding["expires_in"] <= 600 and binding["source"].startswith("127.0.0.1:")
    messages = result.messages()
    assert "401 Unauthorized" in messages and "Authorization: Digest" in messages
    assert _registrations(process, "a1") == []  # unregistered
    metrics = process.metrics()
    for outcome in ("challenged", "registered", "unregistered"):
        assert f'dce_registrations_total{{outcome="{outcome}"}} 1.0' in metrics, outcome
    assert "dce_registered_bindings 0.0" in metrics


def test_wrong_password_and_unknown_user_get_the_same_401_then_403(
        tmp_path: Path, exchange: ExchangeProcess) -> None:
    process = exchange
    answers = []
    for user, password in (("alice", "not-the-password"), ("mallory", PASSWORD)):
        result = run_sipp_uac("uac_register", process.sip_target, tmp_path, service=user, timeout=15,
                              extra=["-au", user, "-ap", password], name=f"register-{user}")
        assert result.failed == 1, result.describe()
        messages = result.messages()
        assert "401 Unauthorized" in messages and "403 Forbidden" in messages, messages
        answers.append([line.split("nonce=")[0] for line in messages.splitlines()
                        if line.startswith(("WWW-Authenticate", "Reason", "SIP/2.0 4"))])
    assert answers[0] == answers[1]  # nothing tells which username exists
    assert _registrations(process, "a1") == []


def test_a_pjsua2_agent_registers_over_tls_and_unregisters(
        tmp_path: Path, tls_exchange: tuple[ExchangeProcess, int, Path]) -> None:
    process, tls_port, ca_file = tls_exchange
    args = [sys.executable, str(PJSUA2_SCRIPT), "--registrar", f"{HOST}:{tls_port}", "--transport", "tls",
            "--ca-file", str(ca_file), "--username", "alice", "--password", PASSWORD, "--expires", "300"]
    with subprocess.Popen(args, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as agent:
        assert agent.stdin is not None and agent.stdout is not None
        try:
            lines: list[str] = []
            while not any(line.startswith('{"step": "registered"') for line in lines):
                line = agent.stdout.readline()
                assert line, "".join(lines[-80:]) + process.log(6000)
                lines.append(line)
            registered = json.loads(lines[-1])
            assert registered["status"] == 200, "".join(lines[-80:]) + process.log(6000)
            (binding,) = _registrations(process, "a1")
            assert binding["transport"] == "tls" and 290 <= binding["expires_in"] <= 300, binding
            agent.stdin.write("unregister\n")
            agent.stdin.flush()
            rest = agent.stdout.read()
            assert agent.wait(timeout=30) == 0, rest + process.log(6000)
        finally:
            if agent.poll() is None:
                agent.kill()
    assert '"step": "unregistered", "status": 200' in rest
    assert _registrations(process, "a1") == []


def test_a_second_node_sees_the_binding_through_redis(
        tmp_path: Path, exchange_factory: Any) -> None:  # noqa: F811
    require_binary("sipp")
    config = {"redis": {"url": redis_test_url(), "key_prefix": f"dce-test-{uuid.uuid4().hex[:12]}:",
                        "timeout_ms": 1000},
              "sip": {"registrar": {"algorithms": ["MD5"]}}}
    node_a, node_b = exchange_factory({}, extra_config=config), exchange_factory({}, extra_config=config)
    _post(f"{node_a.http_base}/api/v1/buyers", {"id": "b1", "name": "Call centre"})
    _post(f"{node_a.http_base}/api/v1/agents", {"id": "a1", "buyer_id": "b1", "username": "alice",
                                                "password": PASSWORD})
    with ThreadPoolExecutor(1) as pool:
        device = pool.submit(run_sipp_uac, "uac_register", node_a.sip_target, tmp_path, service="alice",
                             hold_ms=4000, timeout=30, extra=["-au", "alice", "-ap", PASSWORD])
        deadline = time.monotonic() + 10
        seen: list[dict[str, Any]] = []
        while not seen and time.monotonic() < deadline and not device.done():
            time.sleep(0.1)
            seen = _registrations(node_b, "a1")
        result = device.result()
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), result.describe() + node_a.log(6000)
    (binding,) = seen
    assert binding["uri"].startswith("sip:alice@127.0.0.1:") and 590 <= binding["expires_in"] <= 600
    deadline = time.monotonic() + 5
    while _registrations(node_b, "a1") and time.monotonic() < deadline:  # the unregister made on A
        time.sleep(0.1)
    assert _registrations(node_b, "a1") == []
