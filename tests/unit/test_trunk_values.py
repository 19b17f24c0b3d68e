"""Trunk values without a database: source networks read as the API and CLI read them, credentials kept as HA1s
only, and the :class:`TrunkRule` the INVITE path gets."""

from __future__ import annotations

import ipaddress

import pytest

from dce.db.trunk_repository import Trunk, network
from dce.http_api.trunks import DEFAULT_REALM, hashed, with_password
from dce.sip.digest import ha1
from dce.sip.trunk_rule import TrunkRule


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.0/24", "192.0.2.0/24"),
    (" 10.0.0.0/8 ", "10.0.0.0/8"),
    ("198.51.100.7", "198.51.100.7/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("2001:DB8:0::/32", "2001:db8::/32"),
    ("::1", "::1/128"),
    ("::/0", "::/0"),
])
def test_networks_are_read_and_normalised(text: str, expected: str) -> None:
    assert str(network(text)) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("192.0.2.1/24", "host bits set: did you mean 192.0.2.0/24?"),
    ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
    ("300.0.0.0/8", "not an IPv4 or IPv6 network"),
    ("10.0.0.0/33", "not an IPv4 or IPv6 network"),
    ("carrier.example.com", "not an IPv4 or IPv6 network"),
    ("", "expected a CIDR string"),
])
def test_bad_networks_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("?", r"\?")):
        network(text)


def test_credentials_are_kept_as_ha1s_for_both_algorithms() -> None:
    trunk = with_password(Trunk(id="t1", name="carrier", networks=("192.0.2.0/24",)), "acme", None, "pa55word!")
    assert trunk.realm == DEFAULT_REALM and trunk.has_credentials
    assert (trunk.ha1_sha256, trunk.ha1_md5) == hashed("acme", DEFAULT_REALM, "pa55word!")
    assert trunk.ha1_sha256 == ha1("acme", "dce", "pa55word!", "SHA-256") and len(trunk.ha1_sha256) == 64
    assert trunk.ha1_md5 == ha1("acme", "dce", "pa55word!", "MD5") and len(trunk.ha1_md5) == 32
    assert "pa55word!" not in repr(trunk)
    cleared = trunk.without_credentials()
    assert not cleared.has_credentials and (cleared.username, cleared.realm, cleared.ha1_md5) == (None, None, None)


def test_the_rule_the_invite_path_gets() -> None:
    trunk = with_password(Trunk(id="t1", name="carrier", networks=("192.0.2.0/24", "2001:db8::/32"), publisher_id="p1",
                                transport="tls", max_cps=2.5, max_concurrent=10), "acme", "sip.example", "pa55word!")
    assert trunk.rule() == TrunkRule(
        name="carrier", publisher_id="p1",
        networks=(ipaddress.IPv4Network("192.0.2.0/24"), ipaddress.IPv6Network("2001:db8::/32")),
        username="acme", realm="sip.example", ha1_sha256=trunk.ha1_sha256, ha1_md5=trunk.ha1_md5, transport="tls",
        max_cps=2.5, max_concurrent=10)
    bare = Trunk(id="t2", name="open", networks=("10.0.0.0/8",)).rule()
    assert (bare.username, bare.ha1_sha256, bare.transport, bare.max_cps, bare.max_concurrent) == (None, None, None,
                                                                                                    0, 0)
