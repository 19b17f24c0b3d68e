"""Admission of new INVITEs by trunk (source CIDR, digest, CPS and concurrency), on a virtual clock."""

from __future__ import annotations

import ipaddress

import pytest

from dce.sip.admission import Admission, AdmissionSettings, Admit, Challenged, Refuse
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.message import Request, parse
from dce.sip.trunk_rule import TrunkRule
from tests.unit.sipfactory import request

WALL = 1_767_600_000.0  # epoch seconds (nonces)
MONO = 1000.0
SECRET = b"0123456789abcdef0123456789abcdef"
CARRIER = "203.0.113.7"
URI = "sip:+15551234567@10.0.0.1"


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def trunk(name: str, *networks: str, password: str | None = None, username: str = "carrier",
          realm: str | None = None, md5: bool = True, sha256: bool = True, **kw: object) -> TrunkRule:
    hashes: dict[str, str | None] = {}
    if password is not None:
        r = realm or "dce"
        hashes = {"ha1_sha256": ha1(username, r, password, "SHA-256") if sha256 else None,
                  "ha1_md5": ha1(username, r, password, "MD5") if md5 else None}
    return TrunkRule(name, None, tuple(_net(n) for n in networks), username=username if password else None,
                     realm=realm, **hashes, **kw)  # type: ignore[arg-type]


def invite(*extra: tuple[str, str], uri: str = URI, cseq: int = 1) -> Request:
    message = parse(request("INVITE", uri, cseq=cseq, extra=extra))
    assert isinstance(message, Request)
    return message


def make(*rules: TrunkRule, unknown: str = "reject", **kw: object) -> Admission:
    return Admission(rules, NonceSigner(SECRET, lifetime_s=300),
                     AdmissionSettings(unknown_sources=unknown), **kw)  # type: ignore[arg-type]


def answer(decision: Challenged, password: str = "s3cret", *, username: str = "carrier", uri: str = URI,
           index: int = 0) -> tuple[str, str]:
    challenge = Challenge.parse(decision.headers[index][1])
    credentials = authorization(challenge, username=username, password=password, method="INVITE", uri=uri,
                                cnonce="abc123")
    return ("Authorization", str(credentials))


# -- matching ----------------------------------------------------------------------------------------------
def test_longest_prefix_wins_ipv4_and_ipv6() -> None:
    admission = make(trunk("wide", "203.0.113.0/24", "2001:db8::/32"), trunk("narrow", "203.0.113.0/28"),
                     trunk("host6", "2001:db8::5/128"))
    assert admission.admit(invite(), "203.0.113.7", "udp", WALL, MONO) == Admit("narrow")
    assert admission.admit(invite(), "203.0.113.200", "udp", WALL, MONO) == Admit("wide")
    assert admission.admit(invite(), "2001:db8::5", "udp", WALL, MONO) == Admit("host6")
    assert admission.admit(invite(), "2001:db8::6", "udp", WALL, MONO) == Admit("wide")
    assert admission.admit(invite(), "::ffff:203.0.113.7", "udp", WALL, MONO) == Admit("narrow")


def test_unknown_source_is_refused_403_or_allowed_by_setting() -> None:
    outcomes: list[tuple[str, str]] = []
    rejecting = make(trunk("a", "203.0.113.0/24"), on_outcome=lambda t, o: outcomes.append((t, o)))
    refused = rejecting.admit(invite(), "198.51.100.1", "udp", WALL, MONO)
    assert isinstance(refused, Refuse) and refused.status == 403 and refused.trunk is None
    assert ("Reason", 'SIP;cause=403;text="unknown source"') in refused.headers
    assert outcomes == [("unknown", "refused")]  # never the raw address as a label
    assert rejecting.admit(invite(), "not-an-address", "udp", WALL, MONO).status == 403  # type: ignore[union-attr]
    allowing = make(trunk("a", "203.0.113.0/24"), unknown="allow")
    assert allowing.admit(invite(), "198.51.100.1", "udp", WALL, MONO) == Admit(None)


def test_transport_restriction_falls_back_to_a_shorter_prefix() -> None:
    admission = make(trunk("tls-only", "203.0.113.7/32", transport="tls"), trunk("any", "203.0.113.0/24"))
    assert admission.admit(invite(), CARRIER, "tls", WALL, MONO) == Admit("tls-only")
    assert admission.admit(invite(), CARRIER, "udp", WALL, MONO) == Admit("any")
    only = make(trunk("tls-only", "203.0.113.7/32", transport="tls"))
    assert isinstance(only.admit(invite(), CARRIER, "udp", WALL, MONO), Refuse)


def test_many_trunks_match_fast_enough() -> None:
    rules = [trunk(f"t{i}", f"10.{i // 256}.{i % 256}.0/24") for i in range(5000)]
    admission = make(*rules)
    assert admission.admit(invite(), "10.3.7.9", "udp", WALL, MONO) == Admit(f"t{3 * 256 + 7}")


# -- digest ------------------------------------------------------------------------------------------------
def test_challenge_then_answer_is_admitted_with_sha256_first() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"))
    for index in (0, 1):  # either algorithm proves the password
        first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
        assert isinstance(first, Challenged) and first.trunk == "carrier"
        algorithms = [Challenge.parse(value).algorithm for _, value in first.headers]
        assert algorithms == ["SHA-256", "MD5"]
        assert all(Challenge.parse(v).qop == ("auth",) and not Challenge.parse(v).stale for _, v in first.headers)
        assert admission.admit(invite(answer(first, index=index), cseq=2), CARRIER, "udp", WALL + 1,
                               MONO + 1) == Admit("carrier")


def test_md5_only_trunk_offers_only_md5() -> None:
    admission = make(trunk("old", "203.0.113.0/24", password="s3cret", sha256=False))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    assert [Challenge.parse(v).algorithm for _, v in first.headers] == ["MD5"]


def test_stale_nonce_is_challenged_again_with_stale_true() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    later = admission.admit(invite(answer(first)), CARRIER, "udp", WALL + 400, MONO + 400)
    assert isinstance(later, Challenged)
    assert all(Challenge.parse(v).stale for _, v in later.headers)
    assert admission.admit(invite(answer(later)), CARRIER, "udp", WALL + 401, MONO + 401) == Admit("carrier")


@pytest.mark.parametrize("case", ["password", "username", "nonce", "source"])
def test_bad_credentials_get_403_and_are_reported(case: str) -> None:
    failures: list[tuple[str, float]] = []
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"),
                     on_auth_failure=lambda source, now: failures.append((source, now)))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    source = CARRIER
    header = answer(first)
    if case == "password":
        header = answer(first, "wrong")
    elif case == "username":
        header = answer(first, username="mallory")
    elif case == "nonce":
        header = (header[0], header[1].replace(first.headers[0][1].split('nonce="')[1].split('"')[0],
                                               f"{int(WALL)}.forgedforgedforgedforged"))
    else:
        source = "203.0.113.8"  # the nonce was bound to another host
    refused = admission.admit(invite(header), source, "udp", WALL + 1, MONO + 1)
    assert isinstance(refused, Refuse) and refused.status == 403 and refused.trunk == "carrier"
    assert ("Reason", 'SIP;cause=403;text="bad credentials"') in refused.headers
    assert failures == [(source, MONO + 1)]


def test_unreadable_credentials_get_400_and_other_schemes_are_ignored() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"))
    bad = admission.admit(invite(("Authorization", 'Digest username="x", realm="dce"')), CARRIER, "udp", WALL, MONO)
    assert isinstance(bad, Refuse) and bad.status == 400
    basic = admission.admit(invite(("Authorization", "Basic Zm9vOmJhcg==")), CARRIER, "udp", WALL, MONO)
    assert isinstance(basic, Challenged)


def test_digest_uri_may_differ_from_the_request_uri() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    host_only = answer(first, uri="sip:10.0.0.1:5060")  # what SIPp puts in uri=
    assert admission.admit(invite(host_only), CARRIER, "udp", WALL, MONO) == Admit("carrier")


def test_a_replayed_nonce_count_is_challenged_again_with_a_fresh_nonce_and_a_growing_one_is_admitted() -> None:
    failures: list[tuple[str, float]] = []
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"),
                     on_auth_failure=lambda source, now: failures.append((source, now)))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    header = answer(first)
    assert admission.admit(invite(header, cseq=2), CARRIER, "udp", WALL + 1, MONO + 1) == Admit("carrier")

    replayed = admission.admit(invite(header, cseq=2), CARRIER, "udp", WALL + 2, MONO + 2)  # the same nc again
    assert isinstance(replayed, Challenged)  # not admitted, and nothing to ban: a client may have slipped
    challenges = [Challenge.parse(v) for _, v in replayed.headers]
    assert all(not c.stale and c.nonce != Challenge.parse(first.headers[0][1]).nonce for c in challenges)
    assert failures == []

    challenge = Challenge.parse(first.headers[0][1])  # the same nonce, the next count: a client reusing it
    again = authorization(challenge, username="carrier", password="s3cret", method="INVITE", uri=URI,
                          cnonce="abc124", nc=2)
    assert admission.admit(invite(("Authorization", str(again)), cseq=3), CARRIER, "udp", WALL + 3,
                           MONO + 3) == Admit("carrier")
    assert isinstance(admission.admit(invite(("Authorization", str(again)), cseq=3), CARRIER, "udp", WALL + 4,
                                      MONO + 4), Challenged)


def test_a_bad_attempt_does_not_spend_the_nonce_count_of_the_real_client() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret"))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    challenge = Challenge.parse(first.headers[0][1])
    forged = authorization(challenge, username="carrier", password="guess", method="INVITE", uri=URI, cnonce="x",
                           nc=0xFFFFFFFF)
    assert admission.admit(invite(("Authorization", str(forged))), CARRIER, "udp", WALL, MONO).status == 403  # type: ignore[union-attr]
    assert admission.admit(invite(answer(first), cseq=2), CARRIER, "udp", WALL + 1, MONO + 1) == Admit("carrier")


# -- limits --------------------------------------------------------------------------------------------------
def test_cps_bucket_refuses_503_with_retry_after_and_refills() -> None:
    outcomes: list[tuple[str, str]] = []
    admission = make(trunk("carrier", "203.0.113.0/24", max_cps=2),
                     on_outcome=lambda t, o: outcomes.append((t, o)))
    results = [admission.admit(invite(), CARRIER, "udp", WALL, MONO) for _ in range(3)]
    assert results[:2] == [Admit("carrier")] * 2
    limited = results[2]
    assert isinstance(limited, Refuse) and limited.status == 503 and limited.outcome == "limited"
    assert ("Retry-After", "1") in limited.headers
    assert outcomes[-1] == ("carrier", "limited")
    assert admission.admit(invite(), CARRIER, "udp", WALL, MONO + 0.5) == Admit("carrier")  # 0.5 s: one token


def test_fractional_cps_retry_after_rounds_up() -> None:
    admission = make(trunk("slow", "203.0.113.0/24", max_cps=0.25))
    assert admission.admit(invite(), CARRIER, "udp", WALL, MONO) == Admit("slow")
    limited = admission.admit(invite(), CARRIER, "udp", WALL, MONO + 1)
    assert isinstance(limited, Refuse) and ("Retry-After", "3") in limited.headers


def test_concurrency_is_held_until_release() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", max_concurrent=2))
    assert [admission.admit(invite(), CARRIER, "udp", WALL, MONO) for _ in range(2)] == [Admit("carrier")] * 2
    full = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(full, Refuse) and full.status == 503 and ("Retry-After", "5") in full.headers
    admission.release("carrier")
    assert admission.active("carrier") == 1
    assert admission.admit(invite(), CARRIER, "udp", WALL, MONO) == Admit("carrier")
    admission.release("nobody")  # harmless


def test_replace_rules_keeps_counts_of_remaining_trunks() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", max_concurrent=1, max_cps=1))
    assert admission.admit(invite(), CARRIER, "udp", WALL, MONO) == Admit("carrier")
    admission.replace_rules([trunk("carrier", "203.0.113.0/24", max_concurrent=1, max_cps=1),
                             trunk("new", "198.51.100.0/24")])
    again = admission.admit(invite(), CARRIER, "udp", WALL, MONO + 5)  # bucket refilled, slot still held
    assert isinstance(again, Refuse) and again.reason == "trunk concurrent call limit"
    assert admission.admit(invite(), "198.51.100.9", "udp", WALL, MONO) == Admit("new")
    admission.replace_rules([])
    admission.release("carrier")  # a removed trunk's call still gives its slot back
    assert admission.active("carrier") == 0
    assert isinstance(admission.admit(invite(), CARRIER, "udp", WALL, MONO), Refuse)


def test_auth_happens_before_limits_so_a_challenge_spends_no_token() -> None:
    admission = make(trunk("carrier", "203.0.113.0/24", password="s3cret", max_cps=1))
    first = admission.admit(invite(), CARRIER, "udp", WALL, MONO)
    assert isinstance(first, Challenged)
    assert admission.admit(invite(answer(first)), CARRIER, "udp", WALL, MONO) == Admit("carrier")
