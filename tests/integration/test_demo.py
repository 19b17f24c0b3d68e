"""The demo marketplace: seeded through the repository, idempotent, routable, and `dce demo --seed` on the CLI."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.bidding.inbound import InboundPings, Reservations
from dce.clock import SystemClock
from dce.db import marketplace_repository as repo
from dce.db.engine import create_engine
from dce.db.marketplace_repository import MarketplaceData, load_marketplace
from dce.exchange.cli import main
from dce.exchange.config import load_settings
from dce.exchange.demo import DEMO_CALLER, DEMO_DID, DEMO_MARKETPLACE, DEMO_RTB_DID, DEMO_RTB_KEY, seed_demo
from dce.exchange.marketplace_router import MarketplaceRouter
from dce.exchange.router import CallRequest, StaticRouter
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import Campaign
from dce.routing.snapshot import MarketplaceSnapshot
from dce.routing.static import StaticRoutes
from tests.databases import run_coroutine, sqlite_url

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def assert_is_the_demo(data: MarketplaceData) -> None:
    assert {p.id for p in data.publishers} == {"pub-leadsrus", "pub-callnet"}
    assert {(b.id, b.timezone) for b in data.buyers} == {
        ("buyer-acme", "America/New_York"),
        ("buyer-pacific", "America/Los_Angeles"),
    }
    assert len({b.timezone for b in data.buyers}) == 2
    campaigns = {c.id: c for c in data.campaigns}
    assert set(campaigns) == {"auto-insurance", "home-warranty"}
    auto = campaigns["auto-insurance"]
    assert auto.name == "Auto insurance"
    assert auto.target_ids == ("t-acme-auto", "t-pacific-auto")
    assert campaigns["home-warranty"].key == DEMO_RTB_KEY
    targets = {t.id: t for t in data.targets}
    assert set(targets) == {"t-acme-auto", "t-pacific-auto", "t-acme-warranty"}
    first, second = targets["t-acme-auto"], targets["t-pacific-auto"]
    assert (first.destination, first.priority, first.revenue) == ("sip:127.0.0.1:5080", 1, 12_000_000)
    assert (second.destination, second.priority, second.revenue) == ("sip:127.0.0.1:5081", 2, 8_000_000)
    assert first.conversion_duration_s == second.conversion_duration_s == 60
    assert first.caps.concurrency is not None and second.caps.concurrency is not None
    assert {(n.did, n.campaign_id) for n in data.tracking_numbers} == {
        (DEMO_DID, "auto-insurance"),
        (DEMO_RTB_DID, "home-warranty"),
    }


async def test_seeding_twice_stores_the_demo_once(engine: AsyncEngine) -> None:
    first = await seed_demo(engine)
    assert first.created["campaigns"] == ["auto-insurance", "home-warranty"]
    assert not any(first.failed.values())
    after_first = await load_marketplace(engine)

    second = await seed_demo(engine)
    assert not any(second.created.values()) and not any(second.failed.values())
    assert second.existing["numbers"] == [DEMO_DID, DEMO_RTB_DID]
    after_second = await load_marketplace(engine)

    assert_is_the_demo(after_second)
    assert after_second.version == after_first.version  # the second run wrote nothing
    assert after_second == after_first


async def test_seeding_keeps_edits_and_skips_what_clashes(engine: AsyncEngine) -> None:
    await repo.create_publisher(engine, DEMO_MARKETPLACE.publishers[0])
    await repo.create_campaign(engine, Campaign(id="mine", name="Mine", key=DEMO_RTB_KEY))  # the demo's key

    result = await seed_demo(engine)

    assert result.existing["publishers"] == ["pub-leadsrus"]
    assert result.created["campaigns"] == ["auto-insurance"]
    assert [m.split(":")[0] for m in result.failed["campaigns"]] == ["campaign 'home-warranty'"]
    assert [m.split(":")[0] for m in result.failed["numbers"]] == [f"number '{DEMO_RTB_DID}'"]
    assert "refused" in result.summary()
    data = await load_marketplace(engine)
    assert {n.did for n in data.tracking_numbers} == {DEMO_DID}
    assert (await repo.get_campaign(engine, "mine")).key == DEMO_RTB_KEY


async def test_the_seeded_marketplace_routes_and_answers_pings(engine: AsyncEngine) -> None:
    await seed_demo(engine)
    data = await load_marketplace(engine)
    snapshot = MarketplaceSnapshot.build(data.publishers, data.buyers, data.campaigns, data.targets,
                                         data.tracking_numbers)
    counters, duplicates = InMemoryCounters(), DuplicateLedger()
    routing = RoutingEngine(snapshot, counters, duplicates, random.Random(0))
    router = MarketplaceRouter(routing, counters, duplicates, StaticRouter(StaticRoutes({}), 30), clock=SystemClock())

    routed = router.plan(CallRequest(DEMO_DID, DEMO_CALLER), NOW)
    assert routed is not None
    assert [(p.destination, p.revenue) for p in routed.plan.targets] == [
        ("sip:127.0.0.1:5080", 12_000_000),
        ("sip:127.0.0.1:5081", 8_000_000),
    ]

    campaign = snapshot.by_key[DEMO_RTB_KEY].campaign
    pings = InboundPings(routing.eligible, None, Reservations())  # type: ignore[arg-type]  # nothing bids live
    answer = await pings.handle(campaign, {"CID": DEMO_CALLER}, NOW)
    assert answer["bidAmount"] == "15.00" and answer["sipAddress"] == "sip:127.0.0.1:5080"


def test_dce_demo_seed_writes_migrates_and_seeds_idempotently(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "demo.yaml"
    url = sqlite_url(tmp_path)

    assert main(["demo", "--write", str(config), "--seed", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert f"wrote {config}" in out
    assert "created 2 publishers, 2 buyers, 3 targets, 2 campaigns, 2 numbers" in out
    assert DEMO_RTB_KEY in out and "/api/v1/campaigns" in out

    assert main(["demo", "--config", str(config), "--seed", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "wrote" not in out and "created nothing" in out

    async def load() -> MarketplaceData:
        engine = create_engine(url)
        try:
            return await load_marketplace(engine)
        finally:
            await engine.dispose()

    assert_is_the_demo(run_coroutine(load()))
    # the written config still loads, and its static route does not shadow the marketplace DID (it is a fallback)
    assert load_settings(config).static_routes[DEMO_DID][0] == "sip:127.0.0.1:5080"


def test_dce_demo_without_seed_touches_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "demo.yaml"
    url = sqlite_url(tmp_path)
    assert main(["demo", "--write", str(config), "--database-url", url]) == 0
    assert "demo marketplace: created" not in capsys.readouterr().out
    assert not Path(url.removeprefix("sqlite+aiosqlite:///")).exists()
