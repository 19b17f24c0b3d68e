"""Composition of the outbound side: the RFC 3263 resolver and the box that seals targets' SIP passwords, from
the configuration."""

from __future__ import annotations

from dce.clock import Clock
from dce.exchange.config import Settings, SipDnsConfig
from dce.sip.resolver import SipResolver
from dce.sip.secret_box import SecretBox


def resolver_from(config: SipDnsConfig, clock: Clock) -> SipResolver | None:
    """The exchange's resolver (None when ``sip.dns.enabled`` is false); its cache reads the exchange's clock."""
    if not config.enabled:
        return None
    return SipResolver(nameservers=config.nameservers, timeout_s=config.timeout_s, lifetime_s=config.lifetime_s,
                       max_entries=config.cache_size, max_ttl_s=config.max_ttl_s,
                       negative_ttl_s=config.negative_ttl_s, ipv6=config.ipv6, monotonic=clock.monotonic)


def credentials_box(settings: Settings) -> SecretBox | None:
    """``secrets.target_credentials_key``, else one derived from ``auth.secret``; None when neither is set."""
    key = settings.secrets.target_credentials_key or settings.auth.secret
    if key is None or not key.get_secret_value():
        return None
    return SecretBox.from_secret(key.get_secret_value())
