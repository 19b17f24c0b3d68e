"""Admission from settings: the config file's trunks as rules (passwords hashed here), the nonce secret, and the
merge of config trunks with the trunks table's."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable

from dce.exchange.config import SipConfig, StaticTrunkConfig
from dce.sip.admission import Admission, AdmissionSettings, Outcome
from dce.sip.digest import NonceSigner, ha1
from dce.sip.trunk_rule import TrunkRule

log = logging.getLogger(__name__)


def static_rule(trunk: StaticTrunkConfig, default_realm: str) -> TrunkRule:
    """One ``sip.trunks`` entry as a rule: the password kept only as its SHA-256 and MD5 HA1."""
    networks = tuple(ipaddress.ip_network(network, strict=False) for network in trunk.networks)
    sha256 = md5 = None
    if trunk.username is not None and trunk.password is not None:
        realm, password = trunk.realm or default_realm, trunk.password.get_secret_value()
        if "SHA-256" in trunk.algorithms:
            sha256 = ha1(trunk.username, realm, password, "SHA-256")
        if "MD5" in trunk.algorithms:
            md5 = ha1(trunk.username, realm, password, "MD5")
    return TrunkRule(trunk.name, trunk.publisher_id, networks, username=trunk.username, realm=trunk.realm,
                     ha1_sha256=sha256, ha1_md5=md5, transport=trunk.transport, max_cps=trunk.max_cps,
                     max_concurrent=trunk.max_concurrent)


def merge_rules(static: Iterable[TrunkRule], loaded: Iterable[TrunkRule]) -> list[TrunkRule]:
    """Config trunks first, then the table's; a table trunk named like a config one is left out (logged)."""
    rules = list(static)
    names = {rule.name for rule in rules}
    for rule in loaded:
        if rule.name in names:
            log.warning("trunk %r is in both sip.trunks and the trunks table: the config file's is used", rule.name)
            continue
        rules.append(rule)
    return rules


def nonce_secret(sip: SipConfig, auth_secret: str | None) -> bytes:
    """``sip.nonce_secret``; else one derived from the side API's ``auth.secret`` (the same on every node); else
    a random one for this process (logged: nodes then cannot verify each other's nonces)."""
    if sip.nonce_secret is not None:
        return sip.nonce_secret.get_secret_value().encode()
    if auth_secret:
        return hmac.new(auth_secret.encode(), b"dce sip digest nonces", hashlib.sha256).digest()
    log.warning("sip.nonce_secret and auth.secret are unset: digest nonces use a random per-process secret, so "
                "nodes cannot verify each other's nonces (and a restart makes outstanding ones invalid)")
    return secrets.token_bytes(32)


def build_admission(sip: SipConfig, *, auth_secret: str | None, retry_after_s: int,
                    on_outcome: Callable[[str, Outcome], None] | None = None,
                    on_auth_failure: Callable[[str, float], None] | None = None) -> Admission:
    """The exchange's admission: ``sip.trunks`` in force until the trunks table adds its own; every bad password
    or forged nonce is reported to ``on_auth_failure(source, now)`` (the flood guard's strike)."""
    rules = [static_rule(trunk, sip.auth_realm) for trunk in sip.trunks]
    settings = AdmissionSettings(unknown_sources=sip.unknown_sources, realm=sip.auth_realm,
                                 retry_after_s=retry_after_s)
    signer = NonceSigner(nonce_secret(sip, auth_secret), lifetime_s=sip.nonce_lifetime_s)
    return Admission(rules, signer, settings, on_outcome=on_outcome, on_auth_failure=on_auth_failure)
