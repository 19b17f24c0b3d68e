"""Buyers that challenge: a SIPp callee answers the exchange's INVITE with 401 (uas_challenge.xml checks the retried
INVITE's Authorization with SIPp's verifyauth); the target's credentials come from the marketplace API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import fetch_cdrs, run_sipp_uac
from tests.integration.test_marketplace_calls import configure
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    only,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.mark.parametrize("auth", [
    {"username": "buyer-acct", "password": "s3cret"},  # sealed with the key derived from auth.secret
    {"username": "buyer-acct", "password": "s3cret", "realm": "buyer.test"},  # stored as HA1s
])
def test_the_buyers_challenge_is_answered_and_the_call_completes(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, auth: dict[str, str]) -> None:  # noqa: F811
    buyer = uas_factory("uas_challenge", calls=1)
    exchange = exchange_factory({})
    configure(exchange, [{"id": "t1", "name": "Challenging buyer", "destination": buyer.uri, "revenue": "1",
                          "auth": auth}])

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)

    assert_ok(caller, exchange=exchange)
    result = buyer.stop()
    assert_ok(result, exchange=exchange)
    invites = [line for line in result.messages().splitlines() if line.startswith("Authorization:")]
    assert len(invites) == 1 and 'username="buyer-acct"' in invites[0]
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"]) == ("answered", 200)


@pytest.mark.parametrize("auth", [{"username": "buyer-acct", "password": "wrong"}, None],
                         ids=["wrong password", "no credentials"])
def test_wrong_or_missing_credentials_fail_the_leg_with_401(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, auth: dict[str, str] | None) -> None:  # noqa: F811
    # wrong password: uas_challenge checks the retry and challenges again; none: uas_challenge_always (one 401)
    buyer = uas_factory("uas_challenge" if auth else "uas_challenge_always", calls=1)
    exchange = exchange_factory({})
    target = {"id": "t1", "name": "Challenging buyer", "destination": buyer.uri, "revenue": "1"}
    configure(exchange, [{**target, "auth": auth} if auth else target])

    caller = run_sipp_uac("uac_expect_401", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    result = buyer.stop(timeout=3)
    lines = result.messages().splitlines()
    invites = [line for line in lines if line.startswith("INVITE sip:")]
    retries = [line for line in lines if line.startswith("Authorization:")]
    assert (len(invites), len(retries)) == ((2, 1) if auth else (1, 0)), result.describe()  # one answer at most
    assert (result.successful, result.failed) == (1, 0), result.describe()
    assert (cdr["disposition"], cdr["final_code"]) == ("failed", 401)
    assert cdr["reason"] == "last destination: 401 failed"
