"""Agents register on a real ``dce serve``: a SIPp device answers the digest challenge, the side API shows its
binding, and its unregister (``Contact: *``, ``Expires: 0``) removes it; a wrong password gets 401 then 403, and an
unknown username the very same answers."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.externals import require_binary
from tests.integration.sipp import ExchangeProcess, admin_headers, http_get, run_sipp_uac

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


@pytest.fixture
def exchange(tmp_path: Path, migrated_database_url: str) -> Iterator[ExchangeProcess]:
    """An exchange with one buyer and its agent ``alice`` (stored through the API, after start)."""
    require_binary("sipp")
    process = ExchangeProcess(tmp_path / "dce", migrated_database_url,
                              extra_config={"sip": {"registrar": {"algorithms": ["MD5"]}}})  # SIPp 3.6: MD5 only
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
