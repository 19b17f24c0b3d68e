"""Digest authentication values: RFC 7616's published vectors, header round trips, stateless nonces, nonce
counts."""

from __future__ import annotations

import pytest

from dce.sip.digest import (
    Challenge,
    Credentials,
    NonceCounts,
    NonceSigner,
    authorization,
    ha1,
    parse_header,
    response,
    verify,
)

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


def test_every_nonce_is_unique_even_for_one_source_in_one_second():
    signer = NonceSigner(b"0123456789abcdef0123")
    nonces = {signer.issue("192.0.2.1", now=1_000_000.0) for _ in range(100)}
    assert len(nonces) == 100  # else two calls challenged at once would share one nc sequence
    assert all(signer.check(nonce, "192.0.2.1", now=1_000_000.5) == "fresh" for nonce in nonces)
    with pytest.raises(ValueError):
        NonceSigner(b"short")


@pytest.mark.parametrize("nc", ["1", "0000000g", "0x000001", "000000001"])
def test_an_nc_that_is_not_8_hex_digits_is_a_value_error(nc: str) -> None:
    with pytest.raises(ValueError, match="nc"):
        Credentials.parse(f'Digest username="u", realm="r", nonce="n", uri="sip:x", response="00", qop=auth, '
                          f'nc={nc}, cnonce="c"')


def test_nonce_counts_accept_only_a_growing_nc_per_nonce() -> None:
    counts = NonceCounts(lifetime_s=300)
    assert counts.advance("n1", 1, 0.0)
    assert not counts.advance("n1", 1, 1.0)  # the same request again: a replay
    assert counts.advance("n1", 3, 2.0)
    assert not counts.advance("n1", 2, 3.0)  # below the highest: refused, and it does not lower it
    assert not counts.advance("n1", 3, 4.0)
    assert counts.advance("n2", 1, 5.0)  # each nonce counts on its own


def test_nonce_counts_forget_a_nonce_after_its_lifetime_and_hold_a_bounded_number() -> None:
    counts = NonceCounts(lifetime_s=300, max_nonces=3)
    assert counts.advance("old", 1, 0.0)
    assert counts.advance("a", 1, 299.0)
    assert len(counts) == 2
    assert counts.advance("b", 1, 300.0)  # "old" is past its lifetime (stale: the signer refuses it anyway)
    assert len(counts) == 2
    for index in range(10):
        assert counts.advance(f"n{index}", 1, 301.0)
    assert len(counts) == 3  # the least recently used dropped first
    assert not counts.advance("n9", 1, 302.0)
