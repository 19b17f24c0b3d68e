"""The running exchange holds the enabled trunks in memory for the INVITE path: loaded at start, reloaded when the
side API writes one (its ``trunks`` change hook) or when the database changes under it (the poll), and handed to
the ``on_trunk_rules`` hook the admission step connects to."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dce.db import trunk_repository as repo
from dce.db.engine import create_engine
from dce.db.trunk_watcher import TrunkWatcher
from dce.exchange import service
from dce.exchange.config import Settings, load_settings
from dce.exchange.service import Exchange
from dce.sip.trunk_rule import TrunkRule
from tests.integration.sipp import free_port
from tests.redis_server import redis_test_url

pytestmark = pytest.mark.integration

ADMIN_KEY = "trunks-service-admin-key-0123456789abcdef"


async def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def _settings(database_url: str, spool: Path, **extra: Any) -> Settings:
    return load_settings(None, {
        "database": {"url": database_url, "spool_path": str(spool)},
        "sip": {"listen": [f"udp:127.0.0.1:{free_port()}"]},
        "http": {"listen": f"127.0.0.1:{free_port('tcp')}"},
        "media": {"mode": "passthrough"},
        "auth": {"bootstrap_admin_key": ADMIN_KEY},
        **extra,
    })


@pytest.fixture
async def exchange(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Exchange, list[Any]]]:
    engine = create_engine(migrated_database_url)
    try:  # one trunk stored before start: it is there from the first call on
        await repo.create_trunk(engine, repo.Trunk(id="t0", name="before-start", networks=("192.0.2.0/24",)))
    finally:
        await engine.dispose()
    exchange = Exchange(_settings(migrated_database_url, tmp_path / "cdr.spool"))
    heard: list[tuple[TrunkRule, ...]] = []
    exchange.on_trunk_rules = heard.append  # type: ignore[method-assign]  # what the admission step will hook
    await exchange.start()
    try:
        yield exchange, heard
    finally:
        await exchange.stop(grace_s=0.1)


async def test_trunks_are_loaded_at_start_and_follow_api_writes(exchange: tuple[Exchange, list[Any]]) -> None:
    node, heard = exchange
    assert [r.name for r in node.trunk_rules] == ["before-start"]
    assert node.trunk_rules[0].networks == (ipaddress.ip_network("192.0.2.0/24"),)
    assert heard == [node.trunk_rules]

    assert node.http_address is not None
    base = "http://{}:{}/api/v1/trunks".format(*node.http_address)
    async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as http:
        async with http.post(base, json={"id": "t1", "name": "carrier-a", "networks": ["2001:db8::/32"],
                                         "username": "acme", "password": "carrier-secret"}) as response:
            assert response.status == 201, await response.text()
        await _wait_for(lambda: len(node.trunk_rules) == 2)
        rule = next(r for r in node.trunk_rules if r.name == "carrier-a")
        assert rule.username == "acme" and rule.ha1_sha256 is not None and heard[-1] == node.trunk_rules

        async with http.patch(f"{base}/t0", json={"enabled": False}) as response:
            assert response.status == 200, await response.text()
        await _wait_for(lambda: [r.name for r in node.trunk_rules] == ["carrier-a"])  # disabled: not admitted


async def test_writes_made_elsewhere_arrive_by_polling(exchange: tuple[Exchange, list[Any]]) -> None:
    node, _ = exchange
    engine = create_engine(node.settings.database.url)
    try:  # as `dce trunks add` or another node would: nobody tells this node
        await repo.create_trunk(engine, repo.Trunk(id="t2", name="by-cli", networks=("10.0.0.0/8",)))
    finally:
        await engine.dispose()
    await _wait_for(lambda: "by-cli" in {r.name for r in node.trunk_rules})


async def test_an_api_write_on_one_node_reloads_the_other_through_redis(
        migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoPolling(TrunkWatcher):  # only a notification reloads: the poll cannot be what delivers
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "interval_s": 3600})

    monkeypatch.setattr(service, "TrunkWatcher", NoPolling)
    redis = {"url": redis_test_url(), "key_prefix": f"dce-test-{uuid.uuid4().hex[:8]}:"}
    nodes = [Exchange(_settings(migrated_database_url, tmp_path / f"cdr-{n}.spool", redis=redis)) for n in (1, 2)]
    for node in nodes:
        await node.start()
    try:
        first, second = nodes
        assert first.http_address is not None
        await asyncio.sleep(0.2)  # both subscribed
        async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as http, http.post(
                "http://{}:{}/api/v1/trunks".format(*first.http_address),
                json={"name": "carrier-a", "networks": ["192.0.2.0/24"]}) as response:
            assert response.status == 201, await response.text()
        await _wait_for(lambda: [r.name for r in second.trunk_rules] == ["carrier-a"], timeout_s=5)
    finally:
        for node in reversed(nodes):
            await node.stop(grace_s=0.1)
