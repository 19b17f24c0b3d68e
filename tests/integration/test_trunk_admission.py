"""Admission by trunk on a real ``dce serve``: a SIPp caller answers the digest challenge (401 -> authenticated
INVITE -> call), and an INVITE from a source no trunk names gets 403 and a rejected CDR naming that source."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.externals import require_binary
from tests.integration.sipp import DID, HOST, ExchangeProcess, SippUas, fetch_cdrs, free_port, run_sipp_uac

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

OTHER_HOST = "127.0.0.2"  # a loopback address no trunk names


@pytest.fixture
def exchange(tmp_path: Path, migrated_database_url: str) -> Iterator[tuple[ExchangeProcess, SippUas]]:
    """An exchange rejecting unknown sources, with one trunk (127.0.0.1, digest credentials) in its config."""
    require_binary("sipp")
    callee = SippUas("uas_answer", tmp_path, calls=1, name="callee").start()
    trunk = {"name": "lab-carrier", "networks": [f"{HOST}/32"], "username": "acme", "password": "s3cret",
             "algorithms": ["MD5"]}  # SIPp 3.6 answers only the first challenge, and only MD5
    process = ExchangeProcess(tmp_path / "dce", migrated_database_url, {DID: [callee.uri]},
                              extra_config={"sip": {"unknown_sources": "reject", "trunks": [trunk]}})
    process.start()
    try:
        yield process, callee
    finally:
        alive = process.alive()
        process.stop()
        callee.__exit__(None, None, None)
        assert alive, f"the exchange died during the test:\n{process.log()}"


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_digest_trunk_call_completes_and_its_cdr_names_the_trunk(
        tmp_path: Path, exchange: tuple[ExchangeProcess, SippUas], transport: str) -> None:
    process, callee = exchange
    caller = run_sipp_uac("uac_auth", process.sip_target, tmp_path, hold_ms=500, timeout=30, transport=transport,
                          extra=["-au", "acme", "-ap", "s3cret"])
    assert (caller.returncode, caller.successful, caller.failed) == (0, 1, 0), caller.describe() + process.log(6000)
    messages = caller.messages()
    assert "401 Unauthorized" in messages and "Authorization: Digest" in messages
    answered = callee.stop()
    assert (answered.successful, answered.failed) == (1, 0), answered.describe()
    (cdr,) = fetch_cdrs(process.http_base, 1)
    assert (cdr["disposition"], cdr["final_code"]) == ("answered", 200), cdr
    assert cdr["trunk"] == "lab-carrier", cdr
    metrics = process.metrics()
    assert re.search(r'^dce_trunk_calls_total\{outcome="challenged",trunk="lab-carrier"\} 1\.0$', metrics, re.M)
    assert re.search(r'^dce_trunk_calls_total\{outcome="admitted",trunk="lab-carrier"\} 1\.0$', metrics, re.M)


def test_wrong_password_gets_403(tmp_path: Path, exchange: tuple[ExchangeProcess, SippUas]) -> None:
    process, _ = exchange
    caller = run_sipp_uac("uac_auth", process.sip_target, tmp_path, timeout=15,
                          extra=["-au", "acme", "-ap", "wrong"])
    assert caller.failed == 1, caller.describe()
    assert "403 Forbidden" in caller.messages() and 'text="bad credentials"' in caller.messages()
    (cdr,) = fetch_cdrs(process.http_base, 1)
    assert (cdr["disposition"], cdr["final_code"]) == ("rejected", 403), cdr
    assert (cdr["extra"], cdr["trunk"]) == ({"source": HOST, "transport": "udp"}, "lab-carrier"), cdr


def test_unknown_source_gets_403_and_a_rejected_cdr_naming_it(
        tmp_path: Path, exchange: tuple[ExchangeProcess, SippUas]) -> None:
    process, _ = exchange
    caller = run_sipp_uac("uac_expect_403", process.sip_target, tmp_path, timeout=30,
                          extra=["-i", OTHER_HOST, "-p", str(free_port("udp", OTHER_HOST))])
    assert (caller.returncode, caller.successful, caller.failed) == (0, 1, 0), caller.describe() + process.log(6000)
    assert 'Reason: SIP;cause=403;text="unknown source"' in caller.messages()
    (cdr,) = fetch_cdrs(process.http_base, 1)
    assert (cdr["disposition"], cdr["final_code"]) == ("rejected", 403), cdr
    assert cdr["extra"]["source"] == OTHER_HOST and cdr["trunk"] is None, cdr
    assert OTHER_HOST in cdr["reason"]
    metrics = process.metrics()
    assert re.search(r'^dce_trunk_calls_total\{outcome="refused",trunk="unknown"\} 1\.0$', metrics, re.M)
    assert OTHER_HOST not in metrics  # never a raw address as a label
