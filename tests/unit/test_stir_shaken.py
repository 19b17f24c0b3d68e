"""STIR/SHAKEN verification: parsing the Identity header, the certificate store, verify() and the policy."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dce.compliance.screen import ScreenedCall, Screener
from dce.compliance.stir_shaken import (
    NO_TN_VALIDATION,
    TN_VALIDATION_FAILED,
    CertificateStore,
    CertificateStoreError,
    MalformedIdentity,
    StirCheck,
    StirError,
    StirResult,
    UnknownCertificate,
    UnsupportedPassport,
    UntrustedCertificate,
    parse_identity,
    policy_findings,
    verify,
    x5u_file_name,
)
from dce.compliance.verdict import Action, Finding, ReasonCode, Verdict
from tests.stir_pki import Authority, Signer, StirPki, identity_header, tamper

CALLER = "+15551230000"
DID = "+18005550100"
NOW = 1_750_000_000.0


@pytest.fixture
def pki(tmp_path: Path) -> StirPki:
    return StirPki(tmp_path)


@pytest.fixture
def signer(pki: StirPki) -> Signer:
    return pki.issue("sp-a")


def store_of(pki: StirPki) -> CertificateStore:
    return CertificateStore.load(pki.trust_dir, pki.cert_dir)


def check(header: str | None, store: CertificateStore, *, orig: str | None = CALLER, dest: str = DID,
          now: float = NOW, max_age_s: float = 60.0) -> StirResult:
    return verify(header, orig_tn=orig, dest_tns=[dest], store=store, now=now, max_age_s=max_age_s)


# ------------------------------------------------------------------------------------------- verify


@pytest.mark.parametrize("attest", ["A", "B", "C"])
def test_valid_passport_passes_with_its_attestation(pki: StirPki, signer: Signer, attest: str) -> None:
    header = signer.identity(CALLER, [DID], attest=attest, iat=NOW - 5, origid="abc-123")
    result = check(header, store_of(pki))
    assert result == StirResult(f"TN-Validation-Passed-{attest}", attest, None, "", "abc-123")
    assert result.passed and result.signed


def test_verified_signature_is_cached_but_claims_are_checked_each_call(pki: StirPki, signer: Signer) -> None:
    store = store_of(pki)
    header = signer.identity(CALLER, [DID], iat=NOW)
    assert check(header, store).passed
    assert check(header, store).passed  # second time from the cache
    assert check(header, store, now=NOW + 61).reason is ReasonCode.STIR_STALE
    assert check(header, store, orig="+15559999999").reason is ReasonCode.STIR_MISMATCH


def test_tampered_signature_is_invalid(pki: StirPki, signer: Signer) -> None:
    jws = signer.jws(CALLER, [DID], iat=NOW)
    result = check(identity_header(tamper(jws), signer.x5u), store_of(pki))
    assert (result.verstat, result.attestation, result.reason) == (TN_VALIDATION_FAILED, None,
                                                                   ReasonCode.STIR_INVALID)
    assert "signature" in result.detail


def test_tampered_claims_are_invalid(pki: StirPki, signer: Signer) -> None:
    """A valid signature over other claims: swap in the payload of another PASSporT."""
    good = signer.jws(CALLER, [DID], iat=NOW, attest="C")
    other = signer.jws(CALLER, [DID], iat=NOW, attest="A")
    head, _, sig = good.split(".")
    forged = f"{head}.{other.split('.')[1]}.{sig}"
    assert check(identity_header(forged, signer.x5u), store_of(pki)).reason is ReasonCode.STIR_INVALID


@pytest.mark.parametrize("iat_offset", [-61, -3600, 61])
def test_stale_or_future_iat(pki: StirPki, signer: Signer, iat_offset: int) -> None:
    result = check(signer.identity(CALLER, [DID], iat=NOW + iat_offset), store_of(pki))
    assert (result.verstat, result.reason) == (TN_VALIDATION_FAILED, ReasonCode.STIR_STALE)
    assert "iat" in result.detail


def test_iat_at_the_edge_of_the_window_passes(pki: StirPki, signer: Signer) -> None:
    assert check(signer.identity(CALLER, [DID], iat=NOW - 60), store_of(pki)).passed
    assert check(signer.identity(CALLER, [DID], iat=NOW - 90), store_of(pki), max_age_s=120).passed


def test_certificate_from_another_ca_is_invalid(pki: StirPki) -> None:
    rogue = pki.issue("rogue", ca=Authority.create("Untrusted CA"))
    result = check(rogue.identity(CALLER, [DID], iat=NOW), store_of(pki))
    assert (result.verstat, result.reason) == (TN_VALIDATION_FAILED, ReasonCode.STIR_INVALID)
    assert "not issued by a trusted CA" in result.detail


def test_unknown_x5u_is_invalid(pki: StirPki, signer: Signer) -> None:
    jws = signer.jws(CALLER, [DID], iat=NOW, header={"x5u": "https://elsewhere.example/nope.pem"})
    result = check(identity_header(jws, "https://elsewhere.example/nope.pem"), store_of(pki))
    assert result.reason is ReasonCode.STIR_INVALID and "no signing certificate" in result.detail


def test_signed_by_a_key_that_is_not_the_certificates(pki: StirPki, signer: Signer) -> None:
    other = pki.issue("other")
    impostor = Signer(other.key, signer.cert, signer.x5u)  # claims sp-a's x5u, signs with another key
    assert check(impostor.identity(CALLER, [DID], iat=NOW), store_of(pki)).reason is ReasonCode.STIR_INVALID


def test_expired_certificate_is_invalid(pki: StirPki) -> None:
    old = pki.issue("old", not_before=dt.datetime(2010, 1, 1, tzinfo=dt.UTC),
                    not_after=dt.datetime(2011, 1, 1, tzinfo=dt.UTC))
    result = check(old.identity(CALLER, [DID], iat=NOW), store_of(pki))
    assert result.reason is ReasonCode.STIR_INVALID and "not valid at this time" in result.detail


def test_chain_through_an_intermediate(pki: StirPki) -> None:
    sp = pki.issue("via-int", intermediate=pki.intermediate("Test Intermediate CA"))
    assert check(sp.identity(CALLER, [DID], iat=NOW), store_of(pki)).verstat == "TN-Validation-Passed-A"


def test_wrong_orig_is_a_mismatch(pki: StirPki, signer: Signer) -> None:
    result = check(signer.identity("+15559990000", [DID], iat=NOW), store_of(pki))
    assert (result.verstat, result.reason) == (TN_VALIDATION_FAILED, ReasonCode.STIR_MISMATCH)
    assert "orig" in result.detail


def test_wrong_dest_is_a_mismatch(pki: StirPki, signer: Signer) -> None:
    result = check(signer.identity(CALLER, ["+18005550199"], iat=NOW), store_of(pki))
    assert (result.verstat, result.reason) == (TN_VALIDATION_FAILED, ReasonCode.STIR_MISMATCH)
    assert "dest" in result.detail


def test_numbers_compare_as_digits(pki: StirPki, signer: Signer) -> None:
    store = store_of(pki)
    header = signer.identity(CALLER, ["+18005550100", "+18005550101"], iat=NOW)
    assert check(header, store, orig="15551230000", dest="18005550101").passed
    assert check(header, store, orig="5551230000", dest="+1 800-555-0100").passed  # NANP national form
    assert verify(header, orig_tn=["+15550000000", CALLER], dest_tns=["x", DID], store=store, now=NOW).passed
    assert check(header, store, orig=None).reason is ReasonCode.STIR_MISMATCH
    assert check(header, store, orig="anonymous").reason is ReasonCode.STIR_MISMATCH


@pytest.mark.parametrize("header", [None, "", "   "])
def test_unsigned(pki: StirPki, header: str | None) -> None:
    result = check(header, store_of(pki))
    assert (result.verstat, result.attestation, result.reason) == (NO_TN_VALIDATION, None,
                                                                   ReasonCode.STIR_UNSIGNED)
    assert not result.signed and not result.passed


def test_empty_store_fails_every_signed_call(signer: Signer) -> None:
    store = CertificateStore.load(None, None)
    assert check(signer.identity(CALLER, [DID], iat=NOW), store).reason is ReasonCode.STIR_INVALID


def test_malformed_headers_fail_verification_and_never_raise(pki: StirPki) -> None:
    store = store_of(pki)
    for header in ["garbage", "a.b", "!!!.###.$$$;info=<https://x/y.pem>", "..c2ln;info=<https://x/y.pem>"]:
        result = check(header, store)
        assert (result.verstat, result.reason) == (TN_VALIDATION_FAILED, ReasonCode.STIR_INVALID), header


def test_non_es256_or_non_shaken_is_invalid(pki: StirPki, signer: Signer) -> None:
    store = store_of(pki)
    div = signer.jws(CALLER, [DID], iat=NOW, header={"ppt": "div"})
    result = check(f"{div};info=<{signer.x5u}>;alg=ES256;ppt=div", store)
    assert result.reason is ReasonCode.STIR_INVALID and "shaken" in result.detail


# ------------------------------------------------------------------------------------------- parsing


def test_parse_identity_reads_the_passport_and_parameters(signer: Signer) -> None:
    header = signer.identity(CALLER, [DID, "+18005550101"], attest="B", iat=NOW, origid="o-1")
    identity = parse_identity(header)
    assert (identity.alg, identity.ppt, identity.info, identity.x5u) == ("ES256", "shaken", signer.x5u, signer.x5u)
    assert (identity.attest, identity.iat, identity.origid) == ("B", NOW, "o-1")
    assert (identity.orig_tn, identity.dest_tns) == ("15551230000", ("18005550100", "18005550101"))
    assert identity.header["typ"] == "passport" and len(identity.signature) == 64
    assert parse_identity(header) is identity  # cached per header string


def test_parse_identity_tolerates_missing_info_quotes_spacing_and_order(signer: Signer) -> None:
    jws = signer.jws(CALLER, [DID], iat=NOW)
    for header in [jws, f'"{jws}"', f"{jws} ; ppt=\"shaken\" ; alg=ES256 ; info=<{signer.x5u}>",
                   f"{jws};ppt=shaken"]:
        identity = parse_identity(header)
        assert (identity.x5u, identity.alg, identity.ppt) == (signer.x5u, "ES256", "shaken"), header


@pytest.mark.parametrize(("header", "error", "words"), [
    ("", MalformedIdentity, "empty"),
    (";info=<https://x/a.pem>", MalformedIdentity, "no PASSporT"),
    ("abc.def", MalformedIdentity, "expected 3"),
    ("..c2ln;info=<https://x/a.pem>", UnsupportedPassport, "compact-form"),
    ("e30.e30.;info=<https://x/a.pem>", MalformedIdentity, "empty"),
    ("e30.!!!.c2ln", MalformedIdentity, "base64url"),
    ("bm90IGpzb24.e30.c2ln", MalformedIdentity, "header is not JSON"),
    ("WzFd.e30.c2ln", MalformedIdentity, "not a JSON object"),
    ("eyJhbGciOiJFUzI1NiJ9.e30.c2ln;info=https://x/a.pem", MalformedIdentity, "absolute-URI"),
    ("eyJhbGciOiJFUzI1NiJ9.e30.c2ln;info=<https://x/a.pem", MalformedIdentity, "unclosed"),
    ("eyJhbGciOiJFUzI1NiJ9.e30.c2ln", MalformedIdentity, "no certificate URL"),
])
def test_parse_identity_errors(header: str, error: type[StirError], words: str) -> None:
    with pytest.raises(error, match=words) as caught:
        parse_identity(header)
    assert caught.value.reason is ReasonCode.STIR_INVALID


@pytest.mark.parametrize(("claims", "words"), [
    ({"iat": "soon"}, "iat"),
    ({"orig": {"uri": "sip:alice@example.com"}}, "orig"),
    ({"dest": {"tn": []}}, "dest"),
    ({"attest": "D"}, "attest"),
    ({"origid": 7}, "origid"),
])
def test_parse_identity_claim_errors(signer: Signer, claims: dict[str, object], words: str) -> None:
    with pytest.raises(MalformedIdentity, match=words):
        parse_identity(identity_header(signer.jws(CALLER, [DID], iat=NOW, claims=claims), signer.x5u))


def test_parse_identity_parameter_disagreements(signer: Signer) -> None:
    jws = signer.jws(CALLER, [DID], iat=NOW)
    with pytest.raises(MalformedIdentity, match="differs from the PASSporT's x5u"):
        parse_identity(f"{jws};info=<https://certs.example.test/other.pem>")
    with pytest.raises(MalformedIdentity, match="alg"):
        parse_identity(f"{jws};info=<{signer.x5u}>;alg=RS256")
    with pytest.raises(MalformedIdentity, match="ppt"):
        parse_identity(f"{jws};info=<{signer.x5u}>;ppt=div")
    with pytest.raises(MalformedIdentity, match="typ"):
        parse_identity(signer.jws(CALLER, [DID], iat=NOW, header={"typ": "JWT"}))


# ------------------------------------------------------------------------------------------- the store


def test_x5u_file_name_is_the_last_path_segment() -> None:
    assert x5u_file_name("https://cert.example.org/sp/shaken.pem") == "shaken.pem"
    assert x5u_file_name("https://cert.example.org/sp/my%20cert.pem?v=2#x") == "my cert.pem"
    assert x5u_file_name("https://cert.example.org/") == ""


def test_x5u_index_maps_urls_to_files(pki: StirPki, signer: Signer) -> None:
    url = "https://cdn.example.org/certs/2024/cert.pem"
    (pki.cert_dir / "x5u.json").write_text(json.dumps({url: "sp-a.pem"}))
    jws = signer.jws(CALLER, [DID], iat=NOW, header={"x5u": url})
    assert check(identity_header(jws, url), store_of(pki)).passed


def test_store_lookup_errors(pki: StirPki) -> None:
    store = store_of(pki)
    with pytest.raises(UnknownCertificate):
        store.signer("https://x.example/none.pem", NOW)
    pki.issue("rogue", ca=Authority.create("Untrusted CA"))
    store = store_of(pki)
    for _ in range(2):  # the second answer comes from the per-x5u cache and is the same error
        with pytest.raises(UntrustedCertificate):
            store.signer("https://certs.example.test/rogue.pem", NOW)


def test_store_load_errors(pki: StirPki, tmp_path: Path) -> None:
    with pytest.raises(CertificateStoreError, match="not a PEM file or a directory"):
        CertificateStore.load(tmp_path / "missing", pki.cert_dir)
    with pytest.raises(CertificateStoreError, match="not a directory"):
        CertificateStore.load(pki.trust_dir, tmp_path / "missing")
    (pki.cert_dir / "broken.pem").write_text("not a certificate")
    with pytest.raises(CertificateStoreError, match=r"broken\.pem"):
        store_of(pki)
    (pki.cert_dir / "broken.pem").unlink()
    (pki.cert_dir / "x5u.json").write_text(json.dumps({"https://x/y.pem": "absent.pem"}))
    with pytest.raises(CertificateStoreError, match=r"absent\.pem"):
        store_of(pki)
    (pki.cert_dir / "x5u.json").write_text("[1, 2]")
    with pytest.raises(CertificateStoreError, match="x5u URL -> file name"):
        store_of(pki)


def test_other_files_in_the_directories_are_ignored(pki: StirPki, signer: Signer) -> None:
    (pki.cert_dir / "README.txt").write_text("hello")
    (pki.trust_dir / "notes.md").write_text("hello")
    assert check(signer.identity(CALLER, [DID], iat=NOW), store_of(pki)).passed


def test_signature_cache_is_bounded(pki: StirPki, signer: Signer) -> None:
    store = CertificateStore.load(pki.trust_dir, pki.cert_dir, verified_cache_size=3)
    for i in range(5):
        assert check(signer.identity(CALLER, [DID], iat=NOW - i), store).passed
    assert len(store._verified) == 3


# ------------------------------------------------------------------------------------------- policy

PASSED_A = StirResult("TN-Validation-Passed-A", "A")
PASSED_C = StirResult("TN-Validation-Passed-C", "C")
FAILED = StirResult(TN_VALIDATION_FAILED, None, ReasonCode.STIR_STALE, "iat is 600 s from now")
UNSIGNED = StirResult(NO_TN_VALIDATION, None, ReasonCode.STIR_UNSIGNED, "no Identity header")


@pytest.mark.parametrize(("on_failure", "action"), [("flag", Action.FLAG), ("reject", Action.REJECT)])
def test_attestation_weaker_than_the_minimum(on_failure: str, action: Action) -> None:
    findings = policy_findings(PASSED_C, min_attestation="B", on_failure=on_failure, on_unsigned="allow")
    assert [(f.action, f.code) for f in findings] == [(action, ReasonCode.STIR_LOW_ATTESTATION)]
    assert "attestation C" in findings[0].detail and "B or better" in findings[0].detail
    assert Verdict.of(findings).action is action


def test_attestation_meeting_the_minimum_or_no_minimum() -> None:
    assert policy_findings(PASSED_A, min_attestation="B", on_failure="reject", on_unsigned="reject") == []
    assert policy_findings(PASSED_C, min_attestation="C", on_failure="reject", on_unsigned="reject") == []
    assert policy_findings(PASSED_C, min_attestation=None, on_failure="reject", on_unsigned="reject") == []
    assert policy_findings(PASSED_C, min_attestation="A", on_failure="allow", on_unsigned="reject") == []


def test_failed_verification_gets_the_failure_action() -> None:
    assert policy_findings(FAILED, min_attestation=None, on_failure="reject", on_unsigned="allow") == [
        Finding(Action.REJECT, ReasonCode.STIR_STALE, "iat is 600 s from now")]
    assert policy_findings(FAILED, min_attestation="A", on_failure="flag", on_unsigned="reject") == [
        Finding(Action.FLAG, ReasonCode.STIR_STALE, "iat is 600 s from now")]
    assert policy_findings(FAILED, min_attestation="A", on_failure="allow", on_unsigned="reject") == []


def test_unsigned_gets_the_unsigned_action() -> None:
    assert policy_findings(UNSIGNED, min_attestation="A", on_failure="reject", on_unsigned="allow") == []
    assert policy_findings(UNSIGNED, min_attestation="A", on_failure="allow", on_unsigned="flag") == [
        Finding(Action.FLAG, ReasonCode.STIR_UNSIGNED, "no Identity header")]
    assert policy_findings(UNSIGNED, min_attestation=None, on_failure="allow", on_unsigned="REJECT")[0].action \
        is Action.REJECT


def test_policy_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="on_failure"):
        policy_findings(FAILED, min_attestation=None, on_failure="drop", on_unsigned="allow")
    with pytest.raises(ValueError, match="min_attestation"):
        policy_findings(PASSED_A, min_attestation="Z", on_failure="reject", on_unsigned="allow")


# ------------------------------------------------------------------------------------------- screening check


def test_stir_check_in_a_screener(pki: StirPki, signer: Signer) -> None:
    screener = Screener([StirCheck(store_of(pki), max_age_s=60)])
    good = signer.identity(CALLER, [DID], attest="B", iat=NOW)
    call = ScreenedCall(ani=CALLER, did=DID, identity=good, stir_min_attestation="B", stir_on_failure="reject")
    verdict = screener.screen(call, NOW)
    assert (verdict.action, verdict.verstat, verdict.findings) == (Action.ALLOW, "TN-Validation-Passed-B", ())

    strict = ScreenedCall(ani=CALLER, did=DID, identity=good, stir_min_attestation="A", stir_on_failure="flag")
    verdict = screener.screen(strict, NOW)
    assert (verdict.action, verdict.codes) == (Action.FLAG, (ReasonCode.STIR_LOW_ATTESTATION,))

    asserted = signer.identity("+15557654321", [DID], iat=NOW)  # signed for the P-Asserted-Identity number
    call = ScreenedCall(ani=CALLER, did=DID, identity=asserted, asserted="+15557654321")
    assert screener.screen(call, NOW).verstat == "TN-Validation-Passed-A"

    stale = ScreenedCall(ani=CALLER, did=DID, identity=good, stir_on_failure="reject")
    verdict = screener.screen(stale, NOW + 120)
    assert (verdict.action, verdict.verstat, verdict.codes) == (Action.REJECT, TN_VALIDATION_FAILED,
                                                                (ReasonCode.STIR_STALE,))
    assert verdict.reason.startswith("stir_stale: iat is")

    unsigned = ScreenedCall(ani=CALLER, did=DID, stir_on_unsigned="reject")
    verdict = screener.screen(unsigned, NOW)
    assert (verdict.action, verdict.verstat, verdict.codes) == (Action.REJECT, NO_TN_VALIDATION,
                                                                (ReasonCode.STIR_UNSIGNED,))


# ------------------------------------------------------------------------------------------- cost


def test_repeated_verification_is_cheap(pki: StirPki, signer: Signer) -> None:
    """The cached path stays far below a first verification, measured in the same run (machines vary)."""
    header = signer.identity(CALLER, [DID], iat=NOW)

    def per_check(rounds: int, store_for: Callable[[], Any]) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            assert check(header, store_for()).passed
        return (time.perf_counter() - start) / rounds

    store = store_of(pki)
    cold = per_check(50, lambda: store_of(pki))  # a fresh store: chain check and ES256 verification each time
    warm = per_check(2000, lambda: store)
    assert warm < cold / 5, f"cached {warm * 1e6:.1f} µs vs first {cold * 1e6:.1f} µs"
