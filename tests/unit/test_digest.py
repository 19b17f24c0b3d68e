"""Digest authentication values: RFC 7616's published vectors, header round trips, stateless nonces."""

from __future__ import annotations

import pytest

from dce.sip.digest import Challenge, Credentials, NonceSigner, authorization, ha1, parse_header, response, verify

# RFC 7616 §3.9.1 (the same computation SIP uses, RFC 8760 for SHA-256)
USER, REALM, PASSWORD = "Mufasa", "http-auth@example.org", "Circle of Life"
NONCE, CNONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_vectors(algorithm, expected):
    secret = ha1(USER, REALM, PASSWORD, algorithm)
    assert response(secret, method="GET", uri="/dir/index.html", nonce=NONCE, algorithm=algorithm, qop="auth",
                    nc="00000001", cnonce=CNONCE) == expected


def test_challenge_round_trip_keeps_a_quoted_qop_list():
    challenge = Challenge.parse('Digest realm="sip.example.com", nonce="abc,def", qop="auth,auth-int", '
                                'algorithm=SHA-256, opaque="o", stale=TRUE')
    assert challenge == Challenge("sip.example.com", "abc,def", "SHA-256", ("auth", "auth-int"), "o", True)
    assert Challenge.parse(str(challenge)) == challenge


@pytest.mark.parametrize("value", [
    "Basic dXNlcjpwYXNz", 'Digest realm="x"', 'Digest realm="x", nonce="n", algorithm=SHA-512-256',
    "Digest", 'Digest realm="x" nonce="n"',
])
def test_bad_challenges_are_value_errors(value):
    with pytest.raises(ValueError):
        Challenge.parse(value)


def test_client_answer_verifies_on_the_server_side_for_both_algorithms():
    for algorithm in ("SHA-256", "MD5"):
        challenge = Challenge("dce", "n1", algorithm, ("auth",))
        answer = authorization(challenge, username="trunk1", method="INVITE", uri="sip:+18005550100@dce",
                               cnonce="c1", password="s3cret")
        parsed = Credentials.parse(str(answer))
        assert parsed == answer
        assert 'qop=auth' in str(answer) and 'nc=00000001' in str(answer)
        assert verify(parsed, method="INVITE", ha1_hex=ha1("trunk1", "dce", "s3cret", algorithm))
        assert not verify(parsed, method="INVITE", ha1_hex=ha1("trunk1", "dce", "wrong", algorithm))
        assert not verify(parsed, method="BYE", ha1_hex=ha1("trunk1", "dce", "s3cret", algorithm))


def test_answer_without_qop_when_the_challenge_offers_none():
    answer = authorization(Challenge("r", "n"), username="u", method="INVITE", uri="sip:a@b", cnonce="c",
                           ha1_hex=ha1("u", "r", "p", "MD5"))
    assert answer.qop is None and answer.cnonce is None
    assert verify(Credentials.parse(str(answer)), method="INVITE", ha1_hex=ha1("u", "r", "p", "MD5"))


def test_credentials_missing_fields_are_value_errors():
    with pytest.raises(ValueError, match="missing"):
        Credentials.parse('Digest username="u", realm="r", nonce="n"')
    with pytest.raises(ValueError, match="qop"):
        Credentials.parse('Digest username="u", realm="r", nonce="n", uri="sip:a", response="x", qop=auth')


def test_parse_header_unescapes_quoted_pairs():
    assert parse_header(r'Digest username="a\"b", realm="r"')[1] == {"username": 'a"b', "realm": "r"}


def test_nonces_are_bound_to_source_and_time():
    signer = NonceSigner(b"0123456789abcdef0123", lifetime_s=60)
    nonce = signer.issue("192.0.2.1", now=1_000_000.0)
    assert signer.check(nonce, "192.0.2.1", now=1_000_030.0) == "fresh"
    assert signer.check(nonce, "192.0.2.1", now=1_000_061.0) == "stale"
    assert signer.check(nonce, "192.0.2.2", now=1_000_001.0) == "invalid"
    assert NonceSigner(b"another-secret-of-20b").check(nonce, "192.0.2.1", now=1_000_001.0) == "invalid"
    assert signer.check("garbage", "192.0.2.1", now=1_000_001.0) == "invalid"
    assert signer.check(nonce.replace(".", ".x", 1), "192.0.2.1", now=1_000_001.0) == "invalid"
    with pytest.raises(ValueError):
        NonceSigner(b"short")
