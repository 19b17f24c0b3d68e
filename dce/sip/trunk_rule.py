"""One inbound trunk as the INVITE path sees it (loaded from the trunks table)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrunkRule:
    """Who may send us calls: a named trunk, its source networks, optional digest credentials and limits."""
    name: str
    publisher_id: str | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    username: str | None = None
    realm: str | None = None
    ha1_sha256: str | None = None
    ha1_md5: str | None = None
    transport: str | None = None
    max_cps: float = 0
    max_concurrent: int = 0
