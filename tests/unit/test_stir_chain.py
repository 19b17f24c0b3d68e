"""STIR certificates: the TNAuthList extension (RFC 8226) and the chain to the STI-CA trust anchors, checked by
cryptography's X.509 path validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dce.compliance.stir_shaken import CertificateStore, StirResult, verify
from dce.compliance.tn_auth_list import TnAuthList, TnAuthListError, parse_tn_auth_list
from dce.compliance.verdict import ReasonCode
from tests.stir_pki import Authority, Signer, StirPki, TnAuth

CALLER = "+15551230000"
DID = "+18005550100"
NOW = 1_750_000_000.0


def check(pki: StirPki, header: str, *, orig: str = CALLER, **store_kwargs: Any) -> StirResult:
    store = CertificateStore.load(pki.trust_dir, pki.cert_dir, **store_kwargs)
    return verify(header, orig_tn=orig, dest_tns=[DID], store=store, now=NOW)


# ------------------------------------------------------------------------------------------- TNAuthList DER


def test_a_shaken_spc_list_as_carriers_encode_it() -> None:
    assert parse_tn_auth_list(bytes.fromhex("3008a006160437303941")) == TnAuthList(spcs=("709A",))


def test_numbers_and_ranges_round_trip_and_cover() -> None:
    tn_auth = parse_tn_auth_list(TnAuth(spcs=(), numbers=("15551230000",), ranges=(("15557000000", 1000),)).der())
    assert tn_auth == TnAuthList((), ("15551230000",), (("15557000000", 1000),))
    assert tn_auth.lists_numbers
    assert tn_auth.covers("15551230000")
    assert tn_auth.covers("15557000999") and tn_auth.covers("15557000000")
    assert not tn_auth.covers("15557001000") and not tn_auth.covers("15551230001")
    assert not tn_auth.covers("155570000001")  # a longer number is not in a range of 11-digit numbers
    assert TnAuthList(spcs=("709A",)).covers("anything")  # an SPC stands for all of the provider's numbers


@pytest.mark.parametrize(("der", "words"), [
    ("3000", "empty"),
    ("", "truncated"),
    ("3008a00616043730", "truncated"),
    ("3108a006160437303941", "not as RFC 8226"),
    ("3008a306160437303941", "unknown tag"),
    ("3008a00604043730394100", "not as RFC 8226"),
    ("3008a206160441424344", "not a telephone number"),
    ("300da10b3009160331323302020001", "below 2"),
    ("3008a00616040001020a", "not printable"),
])
def test_malformed_tn_auth_lists_are_refused(der: str, words: str) -> None:
    with pytest.raises(TnAuthListError, match=words):
        parse_tn_auth_list(bytes.fromhex(der))


# ------------------------------------------------------------------------------------------- in verification


def test_certificate_without_a_tn_auth_list_fails_unless_not_required(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    bare = pki.issue("bare", tn_auth=None)
    header = bare.identity(CALLER, [DID], iat=NOW)
    result = check(pki, header)
    assert (result.verstat, result.reason) == ("TN-Validation-Failed", ReasonCode.STIR_INVALID)
    assert "no TNAuthList" in result.detail
    assert check(pki, header, require_tn_auth_list=False).passed


def test_tn_auth_list_with_numbers_must_cover_orig(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    delegate = pki.issue("delegate", tn_auth=TnAuth(spcs=(), ranges=(("15551230000", 100),)))
    assert check(pki, delegate.identity(CALLER, [DID], iat=NOW)).passed
    assert check(pki, delegate.identity("+15551230099", [DID], iat=NOW), orig="+15551230099").passed
    outside = check(pki, delegate.identity("+15551230100", [DID], iat=NOW), orig="+15551230100")
    assert outside.reason is ReasonCode.STIR_INVALID and "TNAuthList" in outside.detail
    national = pki.issue("national", tn_auth=TnAuth(spcs=(), numbers=("5551230000",)))  # compared as 1555...
    assert check(pki, national.identity(CALLER, [DID], iat=NOW)).passed


def test_malformed_tn_auth_list_fails_even_when_not_required(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    odd = pki.issue("odd", tn_auth=TnAuth(spcs=("",)))  # an empty SPC
    result = check(pki, odd.identity(CALLER, [DID], iat=NOW), require_tn_auth_list=False)
    assert result.reason is ReasonCode.STIR_INVALID and "SPC" in result.detail


# ------------------------------------------------------------------------------------------- chain


def test_intermediate_without_cert_sign_usage_is_not_a_ca(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    not_ca = Authority(key, pki.ca.issue_cert("Not a CA", key, ca=False))  # a signing certificate, as issuer
    sp = pki.issue("via-leaf", intermediate=not_ca)
    result = check(pki, sp.identity(CALLER, [DID], iat=NOW))
    assert result.reason is ReasonCode.STIR_INVALID and "not issued by a trusted CA" in result.detail


def test_signing_certificate_that_is_a_ca_is_refused(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    intermediate = pki.intermediate("Intermediate")
    sp = pki.issue("ok", intermediate=intermediate)
    # sign a call with the intermediate's own key, its CA certificate published as the x5u
    (pki.cert_dir / "ca-as-leaf.pem").write_bytes(sp.pem.split(b"-----END CERTIFICATE-----\n", 1)[1])
    rogue = Signer(intermediate.key, intermediate.cert, "https://certs.example.test/ca-as-leaf.pem")
    result = check(pki, rogue.identity(CALLER, [DID], iat=NOW))
    assert result.reason is ReasonCode.STIR_INVALID and "trusted CA" in result.detail


def test_trust_store_may_be_one_pem_file(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    sp = pki.issue("sp")
    store = CertificateStore.load(pki.trust_dir / "ca.pem", pki.cert_dir)
    assert verify(sp.identity(CALLER, [DID], iat=NOW), orig_tn=CALLER, dest_tns=[DID], store=store,
                  now=NOW).passed
