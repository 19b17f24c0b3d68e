"""Auth on a real ``dce serve`` with ``auth.enabled``: the bootstrap key creates a buyer's user, the buyer logs in,
sees only its own calls, cannot write the marketplace, and nothing answers without credentials."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import ExchangeProcess, run_sipp_uac
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
BOOTSTRAP = "bootstrap-admin-key-for-the-tests-0123456789"
AUTH = {"enabled": True, "secret": "a-test-signing-secret-of-32-bytes-or-more", "bootstrap_admin_key": BOOTSTRAP}


def call(exchange: ExchangeProcess, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"{exchange.http_base}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_a_buyer_logs_in_and_sees_only_its_own_calls(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({}, extra_config={"auth": AUTH})
    admin = {"X-API-Key": BOOTSTRAP}
    assert call(exchange, "GET", "/campaigns")[0] == 401
    for path, body in (("/publishers", {"id": "p1", "name": "P"}), ("/buyers", {"id": "b1", "name": "B1"}),
                       ("/buyers", {"id": "b2", "name": "B2"}),
                       ("/targets", {"id": "t1", "buyer_id": "b1", "name": "T", "destination": callee.uri}),
                       ("/campaigns", {"id": "c1", "name": "C", "publisher_ids": ["p1"], "target_ids": ["t1"]}),
                       ("/numbers", {"did": "+18005550100", "campaign_id": "c1", "publisher_id": "p1"}),
                       ("/auth/users", {"username": "acme", "password": "correct horse battery", "role": "buyer",
                                        "buyer_id": "b1"}),
                       ("/auth/users", {"username": "other", "password": "correct horse battery", "role": "buyer",
                                        "buyer_id": "b2"})):
        status, answer = call(exchange, "POST", path, body, admin)
        assert status == 201, answer
    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=300, timeout=30)
    assert_ok(caller, exchange=exchange)
    deadline = time.monotonic() + 5
    while not call(exchange, "GET", "/calls", headers=admin)[1]["items"] and time.monotonic() < deadline:
        time.sleep(0.1)  # the CDR leaves through the batching writer

    status, tokens = call(exchange, "POST", "/auth/login", {"username": "acme", "password": "correct horse battery"})
    assert status == 200 and tokens["access_token"]
    acme = {"Authorization": f"Bearer {tokens['access_token']}"}
    status, calls = call(exchange, "GET", "/calls", headers=acme)
    assert status == 200 and [c["buyer_id"] for c in calls["items"]] == ["b1"]
    assert call(exchange, "POST", "/campaigns", {"name": "mine now"}, acme)[0] == 403
    status, tokens = call(exchange, "POST", "/auth/login", {"username": "other", "password": "correct horse battery"})
    other = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert call(exchange, "GET", "/calls", headers=other)[1]["items"] == []  # b2 bought nothing
    bad = call(exchange, "POST", "/auth/login", {"username": "acme", "password": "wrong password!!"})
    assert bad[0] == 401
