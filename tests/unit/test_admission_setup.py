"""Admission from settings: sip.trunks (hashed at load), the nonce secret, merging with the trunks table."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from dce.exchange.admission_setup import build_admission, merge_rules, nonce_secret, static_rule
from dce.exchange.config import ConfigError, load_settings
from dce.http_api.metrics import ExchangeMetrics, label_violations
from dce.sip.admission import Admit, Challenged, Refuse
from dce.sip.digest import NonceSigner, ha1
from dce.sip.message import Request, parse
from dce.sip.trunk_rule import TrunkRule
from tests.unit.sipfactory import request

TRUNKS = [{"name": "acme", "networks": ["203.0.113.0/24", "2001:db8::1"], "username": "acme", "password": "pw",
           "max_cps": 10, "max_concurrent": 20},
          {"name": "open", "networks": ["198.51.100.0/24"], "transport": "tcp"},
          {"name": "legacy", "networks": ["192.0.2.0/24"], "username": "old", "password": "pw", "algorithms": ["MD5"]}]


def invite() -> Request:
    message = parse(request("INVITE", "sip:+15551234567@10.0.0.1"))
    assert isinstance(message, Request)
    return message


def test_defaults_reject_unknown_sources_with_realm_dce() -> None:
    sip = load_settings().sip
    assert (sip.unknown_sources, sip.auth_realm, sip.nonce_secret, sip.nonce_lifetime_s, sip.trunks) == (
        "reject", "dce", None, 300, [])


def test_config_trunks_become_rules_with_hashed_passwords() -> None:
    sip = load_settings(overrides={"sip": {"trunks": TRUNKS, "auth_realm": "edge"}}).sip
    acme = static_rule(sip.trunks[0], sip.auth_realm)
    assert acme.networks == (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::1/128"))
    assert acme.ha1_sha256 == ha1("acme", "edge", "pw", "SHA-256") and acme.ha1_md5 == ha1("acme", "edge", "pw", "MD5")
    assert (acme.max_cps, acme.max_concurrent, acme.realm) == (10, 20, None)
    assert "pw" not in repr(acme)
    open_ = static_rule(sip.trunks[1], sip.auth_realm)
    assert open_.username is None and open_.ha1_md5 is None and open_.transport == "tcp"
    legacy = static_rule(sip.trunks[2], sip.auth_realm)
    assert legacy.ha1_sha256 is None and legacy.ha1_md5 == ha1("old", "edge", "pw", "MD5")


@pytest.mark.parametrize("trunks, key", [
    ([{"name": "x", "networks": ["10.0.0.0/33"]}], "sip.trunks.0.networks"),
    ([{"name": "x", "networks": ["10.0.0.0/8"], "username": "u"}], "sip.trunks.0"),
    ([{"name": "x", "networks": []}], "sip.trunks.0.networks"),
    ([{"name": "x", "networks": ["10.0.0.0/8"]}, {"name": "x", "networks": ["10.1.0.0/16"]}], "sip.trunks"),
])
def test_bad_trunks_name_their_key(trunks: list[dict], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"sip": {"trunks": trunks}})
    assert info.value.key == key, info.value


def test_short_nonce_secret_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"sip": {"nonce_secret": "short"}})
    assert info.value.key == "sip.nonce_secret"


def test_nonce_secret_from_config_then_auth_secret_then_random_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    configured = load_settings(overrides={"sip": {"nonce_secret": "x" * 32}}).sip
    assert nonce_secret(configured, "auth-secret") == b"x" * 32
    sip = load_settings().sip
    derived = nonce_secret(sip, "auth-secret")
    assert derived == nonce_secret(sip, "auth-secret") != nonce_secret(sip, "another")  # the same on every node
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert nonce_secret(sip, None) != nonce_secret(sip, None)
    assert "cannot verify each other's nonces" in caplog.text


def test_nonces_of_two_nodes_sharing_auth_secret_verify_each_other() -> None:
    sip = load_settings().sip
    one, two = NonceSigner(nonce_secret(sip, "s" * 40)), NonceSigner(nonce_secret(sip, "s" * 40))
    assert two.check(one.issue("203.0.113.7", 1000.0), "203.0.113.7", 1001.0) == "fresh"


def test_built_admission_uses_config_trunks_and_counts_by_trunk_name() -> None:
    metrics = ExchangeMetrics()
    sip = load_settings(overrides={"sip": {"trunks": TRUNKS}}).sip
    admission = build_admission(sip, auth_secret="a" * 40, retry_after_s=7, on_outcome=metrics.trunk_call)
    assert isinstance(admission.admit(invite(), "203.0.113.9", "udp", 1e9, 1.0), Challenged)
    assert admission.admit(invite(), "198.51.100.3", "tcp", 1e9, 1.0) == Admit("open")
    assert isinstance(admission.admit(invite(), "198.51.100.3", "udp", 1e9, 1.0), Refuse)  # tcp-only trunk
    text = metrics.render()[0].decode()
    assert 'dce_trunk_calls_total{outcome="challenged",trunk="acme"} 1.0' in text
    assert 'dce_trunk_calls_total{outcome="admitted",trunk="open"} 1.0' in text
    assert 'dce_trunk_calls_total{outcome="refused",trunk="unknown"} 1.0' in text
    assert "198.51.100.3" not in text
    assert label_violations(metrics) == []


def test_merge_puts_config_trunks_first_and_drops_table_duplicates(caplog: pytest.LogCaptureFixture) -> None:
    static = [TrunkRule("acme", None, (ipaddress.ip_network("203.0.113.0/24"),))]
    table = [TrunkRule("acme", None, (ipaddress.ip_network("192.0.2.0/24"),)),
             TrunkRule("beta", None, (ipaddress.ip_network("192.0.2.0/24"),))]
    with caplog.at_level(logging.WARNING):
        merged = merge_rules(static, table)
    assert [(r.name, str(r.networks[0])) for r in merged] == [("acme", "203.0.113.0/24"), ("beta", "192.0.2.0/24")]
    assert "both sip.trunks and the trunks table" in caplog.text
