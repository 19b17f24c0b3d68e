"""STIR/SHAKEN end to end: SIPp callers send INVITEs with Identity headers signed by a test PKI to a real
``dce serve`` whose ``compliance.stir`` trusts that PKI; a campaign requires attestation A and rejects failures.

- a valid A-attested call is answered and its CDR carries ``TN-Validation-Passed-A``;
- a tampered signature, a stale ``iat``, a certificate from an untrusted CA, a wrong ``orig`` and a B
  attestation each get 603 and a ``blocked`` CDR with the reason code (and ``TN-Validation-Failed`` where
  verification failed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import CALLER, DID, ExchangeProcess, fetch_cdrs, run_sipp_uac
from tests.integration.test_marketplace_calls import configure
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    only,
    uas_factory,
)
from tests.stir_pki import Authority, StirPki, tamper

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def stir_exchange(exchange_factory: Any, pki: StirPki) -> ExchangeProcess:  # noqa: F811
    return exchange_factory({}, extra_config={"compliance": {"stir": {
        "enabled": True, "trust_store": str(pki.trust_dir), "certificates": str(pki.cert_dir), "max_age_s": 60}}})


def injection_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A SIPp injection file for uac_identity*: one ``<jws>;<x5u>`` line per call, in order."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{jws};{x5u}\n" for jws, x5u in rows))
    return path


def call_number(cdr: dict[str, Any]) -> int:
    """SIPp's Call-ID is ``<call number>-<pid>@<ip>``: the call number is the injection file row (from 1)."""
    return int(cdr["a_leg_call_id"].split("-", 1)[0])


def test_valid_a_attested_call_is_answered_with_verstat_passed_a(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    pki = StirPki(tmp_path / "pki")
    signer = pki.issue("sp-a")
    callee = uas_factory("uas_answer", calls=1)
    exchange = stir_exchange(exchange_factory, pki)
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}],
              stir_min_attestation="A", stir_action="reject")

    rows = [(signer.jws(CALLER, [DID], attest="A", iat=time.time()), signer.x5u)]
    inf = injection_file(tmp_path / "valid.csv", rows)
    caller = run_sipp_uac("uac_identity", exchange.sip_target, tmp_path, hold_ms=500, timeout=30,
                          extra=("-inf", str(inf)))

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"]) == ("answered", 200)
    assert cdr["verstat"] == "TN-Validation-Passed-A"


def test_failing_identities_get_603_and_a_blocked_cdr_with_the_reason(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    pki = StirPki(tmp_path / "pki")
    signer = pki.issue("sp-a")
    rogue = pki.issue("rogue", ca=Authority.create("Untrusted CA"))  # in certs/, but no trusted CA issued it
    callee = uas_factory("uas_answer")
    exchange = stir_exchange(exchange_factory, pki)
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}],
              stir_min_attestation="A", stir_action="reject")

    now = time.time()
    cases = [  # (name, jws, x5u, reason code, verstat)
        ("tampered signature", tamper(signer.jws(CALLER, [DID], iat=now)), signer.x5u,
         "stir_invalid", "TN-Validation-Failed"),
        ("stale iat", signer.jws(CALLER, [DID], iat=now - 600), signer.x5u, "stir_stale", "TN-Validation-Failed"),
        ("unknown certificate", rogue.jws(CALLER, [DID], iat=now), rogue.x5u, "stir_invalid",
         "TN-Validation-Failed"),
        ("wrong orig", signer.jws("+15559990000", [DID], iat=now), signer.x5u, "stir_mismatch",
         "TN-Validation-Failed"),
        ("attestation B under a minimum of A", signer.jws(CALLER, [DID], attest="B", iat=now), signer.x5u,
         "stir_low_attestation", "TN-Validation-Passed-B"),
    ]
    inf = injection_file(tmp_path / "failing.csv", [(jws, x5u) for _, jws, x5u, _, _ in cases])
    caller = run_sipp_uac("uac_identity_expect_603", exchange.sip_target, tmp_path, calls=len(cases),
                          timeout=30, extra=("-inf", str(inf)))

    assert_ok(caller, calls=len(cases), exchange=exchange)
    assert callee.stop(timeout=1).created == 0, "a blocked call must not reach a target"
    cdrs = {call_number(cdr): cdr for cdr in fetch_cdrs(exchange.http_base, len(cases))}
    assert sorted(cdrs) == list(range(1, len(cases) + 1)), cdrs
    for number, (name, _, _, code, verstat) in enumerate(cases, start=1):
        cdr = cdrs[number]
        assert (cdr["disposition"], cdr["final_code"]) == ("blocked", 603), (name, cdr)
        assert (cdr["reason"] or "").startswith(code), (name, cdr)
        assert cdr["verstat"] == verstat, (name, cdr)
