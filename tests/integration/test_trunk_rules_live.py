"""``Exchange.on_trunk_rules`` (what the trunks table's watcher calls) changes who may call a running exchange."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

import pytest

from dce.exchange.config import load_settings
from dce.exchange.service import Exchange
from dce.sip.message import Response, parse
from dce.sip.trunk_rule import TrunkRule
from tests.integration.sipp import free_port, free_port_range
from tests.unit.sipfactory import request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _final_status(sock: socket.socket, target: tuple[str, int], call_id: str) -> int:
    """Send an INVITE from ``sock`` and return the final status the exchange answers (ACKs not needed here)."""
    port = sock.getsockname()[1]
    data = request("INVITE", f"sip:+18005550100@{target[0]}:{target[1]}", via_host="127.0.0.1", via_port=port,
                   call_id=call_id, from_uri="sip:+13125550199@127.0.0.1")
    sock.sendto(data, target)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        try:
            message = parse(sock.recv(65535))
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        if isinstance(message, Response) and message.status >= 200 and message.call_id == call_id:
            return message.status
    raise AssertionError("no final response")


async def test_table_trunks_swap_in_after_config_ones(migrated_database_url: str, tmp_path: Path) -> None:
    sip_port = free_port()
    settings = load_settings(None, {
        "database": {"url": migrated_database_url, "spool_path": str(tmp_path / "cdr.spool")},
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}"], "unknown_sources": "reject",
                "trunks": [{"name": "config", "networks": ["192.0.2.0/24"]}]},
        "http": {"listen": f"127.0.0.1:{free_port('tcp')}"},
        "media": {"mode": "passthrough", "ports": "{}-{}".format(*free_port_range(10))},
    })
    exchange = Exchange(settings)
    await exchange.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            target = ("127.0.0.1", sip_port)
            assert await _final_status(sock, target, "before@x") == 403  # 127.0.0.1 is no trunk's
            exchange.on_trunk_rules([TrunkRule("table", None, (ipaddress.ip_network("127.0.0.0/8"),))])
            assert [rule.name for rule in exchange.admission.rules] == ["config", "table"]
            assert await _final_status(sock, target, "after@x") == 404  # admitted: routed (no route for the DID)
            exchange.on_trunk_rules([])
            assert await _final_status(sock, target, "removed@x") == 403
    finally:
        await exchange.stop(grace_s=0.5)


async def test_trunk_networks_are_trusted_by_the_flood_guard_and_bad_passwords_strike(
        migrated_database_url: str, tmp_path: Path) -> None:
    sip_port = free_port()
    settings = load_settings(None, {
        "database": {"url": migrated_database_url, "spool_path": str(tmp_path / "cdr.spool")},
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}"], "unknown_sources": "reject",
                "flood": {"strikes_to_ban": 2},
                "trunks": [{"name": "config", "networks": ["192.0.2.0/24"]},
                           {"name": "open", "networks": ["0.0.0.0/0"], "username": "u", "password": "p"}]},
        "http": {"listen": f"127.0.0.1:{free_port('tcp')}"},
        "media": {"mode": "passthrough", "ports": "{}-{}".format(*free_port_range(10))},
    })
    exchange = Exchange(settings)
    await exchange.start()
    try:
        flood = exchange.sip_driver.flood
        assert flood is not None
        assert flood.is_trusted("192.0.2.7") and not flood.is_trusted("198.51.100.1")  # /0 is too wide to trust
        exchange.on_trunk_rules([TrunkRule("table", None, (ipaddress.ip_network("2001:db8::/48"),))])
        assert flood.is_trusted("2001:db8::1") and flood.is_trusted("192.0.2.7")
        exchange.on_trunk_rules([])
        assert not flood.is_trusted("2001:db8::1")
        # every wrong password is a strike: two ban the source
        now = exchange.clock.monotonic()
        for _ in range(2):
            exchange.admission.on_auth_failure("198.51.100.1", now)
        assert flood.is_banned("198.51.100.1", now)
    finally:
        await exchange.stop(grace_s=0.5)
