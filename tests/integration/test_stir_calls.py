"""STIR/SHAKEN end to end: SIPp callers send INVITEs with Identity headers signed by a test PKI to a real
``dce serve`` whose ``compliance.stir`` trusts that PKI; a campaign requires attestation A and rejects failures.

- a valid A-attested call is answered and its CDR carries ``TN-Validation-Passed-A``;
- a tampered signature, a stale ``iat``, a certificate from an untrusted CA, a wrong ``orig`` and a B
  attestation each get 603 and a ``blocked`` CDR with the reason code (and ``TN-Validation-Failed`` where
  verification failed);
- with ``stir.fetch``, certificates come from a local HTTPS server: a call whose certificate is slower than
  ``pending_wait_ms`` gets the pending policy (603 ``stir_pending``, ``No-TN-Validation``), the next call with
  the same x5u is answered from the cache (one request in all), a fetched untrusted chain and an http: x5u get
  603 ``stir_invalid``.
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
from tests.x5u_server import ThreadedX5uServer, TlsPki

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


def test_fetched_certificates_pending_then_cached_and_refused_chains(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    pki = StirPki(tmp_path / "pki")
    tls = TlsPki.create(tmp_path / "tls")
    server = ThreadedX5uServer(tls).start_thread()
    try:
        slow = pki.issue("slow", write=False, x5u=server.url("/slow.pem"))
        server.serve("/slow.pem", slow.pem, delay_s=1.0, headers={"Cache-Control": "max-age=3600"})
        rogue = pki.issue("rogue", write=False, x5u=server.url("/rogue.pem"), ca=Authority.create("Untrusted CA"))
        server.serve("/rogue.pem", rogue.pem)
        callee = uas_factory("uas_answer", calls=1)
        exchange = exchange_factory({}, extra_config={"compliance": {"stir": {
            "enabled": True, "trust_store": str(pki.trust_dir), "max_age_s": 60, "fetch": True,
            "fetch_ca_file": str(tls.ca_file), "pending_wait_ms": 200, "pending": "reject"}}})
        configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}],
                  stir_min_attestation="A", stir_action="reject", stir_unsigned="allow")

        def call(name: str, jws: str, x5u: str, scenario: str) -> dict[str, Any]:
            inf = injection_file(tmp_path / f"{name}.csv", [(jws, x5u)])
            result = run_sipp_uac(scenario, exchange.sip_target, tmp_path, hold_ms=200, timeout=30, name=name,
                                  extra=("-inf", str(inf)))
            assert_ok(result, exchange=exchange)
            cdrs = fetch_cdrs(exchange.http_base, len(seen) + 1)
            new = [cdr for cdr in cdrs if cdr["a_leg_call_id"] not in seen]
            assert len(new) == 1, new
            seen.add(new[0]["a_leg_call_id"])
            return new[0]

        seen: set[str] = set()
        first = call("pending", slow.jws(CALLER, [DID], iat=time.time()), slow.x5u, "uac_identity_expect_603")
        assert (first["disposition"], first["verstat"]) == ("blocked", "No-TN-Validation"), first
        assert first["reason"].startswith("stir_pending"), first
        time.sleep(1.2)  # the fetch completes in the background
        second = call("cached", slow.jws(CALLER, [DID], iat=time.time()), slow.x5u, "uac_identity")
        assert (second["disposition"], second["verstat"]) == ("answered", "TN-Validation-Passed-A"), second
        assert server.requests["/slow.pem"] == 1

        untrusted = call("rogue", rogue.jws(CALLER, [DID], iat=time.time()), rogue.x5u, "uac_identity_expect_603")
        assert (untrusted["verstat"], untrusted["reason"].split(":")[0]) == ("TN-Validation-Failed", "stir_invalid")
        assert "trusted CA" in untrusted["reason"], untrusted
        plain = slow.x5u.replace("https:", "http:")
        refused = call("plain", slow.jws(CALLER, [DID], iat=time.time(), header={"x5u": plain}), plain,
                       "uac_identity_expect_603")
        assert refused["reason"].startswith("stir_invalid") and "https" in refused["reason"], refused
        assert_ok(callee.stop(), exchange=exchange)
    finally:
        server.stop_thread()
