"""The demo exchange: its configuration, a small marketplace to seed, and how to call it.

``dce demo --seed`` (what ``make run`` does) writes :func:`demo_config`, brings the database to the latest schema
and stores :data:`DEMO_MARKETPLACE` through :mod:`dce.db.marketplace_repository`, the same path the API writes
through. Seeding is idempotent: an entity whose id (or DID) is already stored is left as it is, so edits made
through the API survive a second ``make run``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db import marketplace_repository as repo
from dce.routing.model import (
    MICROS_PER_UNIT,
    Buyer,
    Campaign,
    Caps,
    PayoutRule,
    Publisher,
    RoutingStrategy,
    Target,
    TrackingNumber,
)

log = logging.getLogger(__name__)

DEMO_DID = "+18005550100"  # "Auto insurance": target on :5080 first, then :5081
DEMO_RTB_DID = "+18005550101"  # "Home warranty": publishers may ping first with the campaign key
DEMO_RTB_KEY = "demo-key"
# Demo callers: valid US numbers in the 555-01xx range set aside for fiction. (The uac_* scenarios' own caller,
# +15551230000, is not a valid number: the fraud gate flags it as an invalid ANI.)
DEMO_CALLERS = ("+12125550123", "+12125550124", "+12125550125")
DEMO_CALLER = DEMO_CALLERS[0]
DEMO_CALLERS_FILE = "demo-callers.csv"  # SIPp injection file: each call takes the next caller (-inf)

_DEMO_CONFIG = f"""\
# Demo exchange. The marketplace (campaigns, targets, numbers) lives in the database: `dce demo --seed` stores the
# demo one, and marketplace DIDs take precedence over static_routes. The static route below only answers while
# {DEMO_DID} is not a marketplace number (e.g. a database that was never seeded).
# unknown_sources: allow lets any caller in (a lab); production rejects INVITEs from sources no trunk names.
sip:   {{listen: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"], public_address: null, unknown_sources: allow,
        flood: {{trusted: ["127.0.0.1/32"]}}}}  # SIPp load from this host is not a flood (README "Edge")
http:  {{listen: "127.0.0.1:8080"}}
media: {{mode: relay, ports: "16384-32767", rtp_timeout_s: 60}}
database: {{url: "sqlite+aiosqlite:///./dce.db"}}
routing: {{ring_timeout_s: 30}}
static_routes:
  "{DEMO_DID}": ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]
# The side API wants credentials on every route but health, metrics, docs, login and RTB pings. Both secrets were
# generated for this file: send the admin key as `X-API-Key`, create users and keys with it (README "Auth").
auth:
  secret: "{{secret}}"
  bootstrap_admin_key: "{{admin_key}}"
"""

_CALLERS_LINE = "\\n".join(("SEQUENTIAL", *DEMO_CALLERS))
_UAC = f"sipp -sf sip-test-scenarios/uac_basic_callers.xml -inf {DEMO_CALLERS_FILE}"

_DEMO_HOWTO = f"""\
Demo marketplace (2 publishers, 2 buyers, 3 targets, 2 campaigns):
  {DEMO_DID}  "Auto insurance": rings sip:127.0.0.1:5080 (priority 1, 12.00), then sip:127.0.0.1:5081
                (priority 2, 8.00) on busy/no answer; a call converts after 60 s; at most 5 calls per target.
  {DEMO_RTB_DID}  "Home warranty": publishers ping first with the key {DEMO_RTB_KEY!r}; the winning bid is
                held for that caller's next call.

  The side API's admin key (from the config):  KEY={{admin_key}}
  1. start the callees:  sipp -sn uas -i 127.0.0.1 -p 5080 -bg ; sipp -sn uas -i 127.0.0.1 -p 5081 -bg
                         (-bg detaches and prints each PID: `kill PID` stops it; with a plain `&` an interactive
                         shell stops SIPp at its first screen output, and nothing answers)
  2. the demo callers:   printf '{_CALLERS_LINE}\\n' > {DEMO_CALLERS_FILE}
  3. place a call:       {_UAC} -s {DEMO_DID} 127.0.0.1:5060 -m 1
  4. see the CDR:        curl -s -H "X-API-Key: $KEY" localhost:8080/api/v1/calls
  5. the marketplace:    curl -s -H "X-API-Key: $KEY" localhost:8080/api/v1/campaigns
  6. a publisher ping:   curl -s -XPOST localhost:8080/api/v1/rtb/{DEMO_RTB_KEY}/ping -d '{{"CID":"{DEMO_CALLER}"}}'
     then its call:      {_UAC} -s {DEMO_RTB_DID} 127.0.0.1:5060 -m 1
  Repeats: every run calls from {DEMO_CALLER} first (-m 3 takes the file's numbers in turn). The fraud gate
  counts calls per caller: a sixth call from one number within a minute (or the 21st within an hour) is rejected
  603 with a blocked CDR; wait a minute or call from another number.
  API docs:              http://localhost:8080/swagger (Authorize with the key)
  health and metrics:    curl -s localhost:8080/health ; curl -s localhost:8080/metrics
"""


def demo_config() -> str:
    """The demo configuration, with a fresh token secret and admin key (written once; kept across runs)."""
    admin_key = f"demo-admin-{secrets.token_urlsafe(32)}"
    return _DEMO_CONFIG.replace("{secret}", secrets.token_urlsafe(48)).replace("{admin_key}", admin_key)


def demo_howto(admin_key: str | None) -> str:
    """How to call the demo exchange, quoting the config's admin key."""
    return _DEMO_HOWTO.replace("{admin_key}", admin_key or "(auth.bootstrap_admin_key is unset in the config)")


def _money(units: str) -> int:
    """Decimal currency units as micros, without a float: "12.50" -> 12_500_000."""
    whole, _, frac = units.partition(".")
    return int(whole) * MICROS_PER_UNIT + int((frac + "000000")[:6])


@dataclass(frozen=True, slots=True)
class DemoMarketplace:
    """What the demo seeds, in dependency order."""

    publishers: tuple[Publisher, ...]
    buyers: tuple[Buyer, ...]
    targets: tuple[Target, ...]
    campaigns: tuple[Campaign, ...]
    numbers: tuple[TrackingNumber, ...]


DEMO_MARKETPLACE = DemoMarketplace(
    publishers=(
        Publisher(id="pub-leadsrus", name="Leads R Us"),
        Publisher(id="pub-callnet", name="CallNet Media"),
    ),
    buyers=(
        Buyer(id="buyer-acme", name="Acme Insurance", timezone="America/New_York"),
        Buyer(id="buyer-pacific", name="Pacific Coverage", timezone="America/Los_Angeles"),
    ),
    targets=(
        Target(
            id="t-acme-auto",
            buyer_id="buyer-acme",
            name="Acme auto desk",
            destination="sip:127.0.0.1:5080",
            revenue=_money("12.00"),
            conversion_duration_s=60,
            priority=1,
            caps=Caps(concurrency=5),
        ),
        Target(
            id="t-pacific-auto",
            buyer_id="buyer-pacific",
            name="Pacific auto desk",
            destination="sip:127.0.0.1:5081",
            revenue=_money("8.00"),
            conversion_duration_s=60,
            priority=2,
            caps=Caps(concurrency=5),
        ),
        Target(
            id="t-acme-warranty",
            buyer_id="buyer-acme",
            name="Acme home warranty",
            destination="sip:127.0.0.1:5080",
            revenue=_money("15.00"),
            conversion_duration_s=90,
            priority=1,
            caps=Caps(concurrency=5),
        ),
    ),
    campaigns=(
        Campaign(
            id="auto-insurance",
            name="Auto insurance",
            vertical="insurance",
            publisher_ids=("pub-leadsrus", "pub-callnet"),
            target_ids=("t-acme-auto", "t-pacific-auto"),
            strategy=RoutingStrategy.PRIORITY_WEIGHTED,
            payouts=(
                ("pub-callnet", PayoutRule(revenue_share_bp=5000)),
                (repo.ANY_PUBLISHER, PayoutRule(fixed=_money("4.00"))),
            ),
        ),
        Campaign(
            id="home-warranty",
            name="Home warranty",
            vertical="home services",
            publisher_ids=("pub-callnet",),
            target_ids=("t-acme-warranty", "t-pacific-auto"),
            strategy=RoutingStrategy.PRIORITY_WEIGHTED,
            payouts=((repo.ANY_PUBLISHER, PayoutRule(revenue_share_bp=4000)),),
            ping_timeout_ms=500,
            reserve=_money("5.00"),
            key=DEMO_RTB_KEY,
        ),
    ),
    numbers=(
        TrackingNumber(did=DEMO_DID, campaign_id="auto-insurance", publisher_id="pub-leadsrus"),
        TrackingNumber(did=DEMO_RTB_DID, campaign_id="home-warranty", publisher_id="pub-callnet"),
    ),
)


@dataclass(slots=True)
class SeedResult:
    """Per kind ("publishers", ...): the keys stored now, those already there, and those refused (with why)."""

    created: dict[str, list[str]] = field(default_factory=dict)
    existing: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        def count(part: dict[str, list[str]]) -> str:
            return ", ".join(f"{len(keys)} {kind}" for kind, keys in part.items() if keys) or "nothing"

        text = f"demo marketplace: created {count(self.created)}; already there: {count(self.existing)}"
        if any(self.failed.values()):
            text += "; refused: " + "; ".join(msg for msgs in self.failed.values() for msg in msgs)
        return text


async def _seed_kind(
    result: SeedResult,
    kind: str,
    items: tuple[Any, ...],
    key: Callable[[Any], str],
    get: Callable[[AsyncEngine, str], Awaitable[Any]],
    create: Callable[[AsyncEngine, Any], Awaitable[Any]],
    engine: AsyncEngine,
) -> None:
    created, existing, failed = (part.setdefault(kind, []) for part in (result.created, result.existing, result.failed))
    for item in items:
        name = key(item)
        try:
            await get(engine, name)
        except repo.NotFound:
            pass
        else:
            existing.append(name)
            continue
        try:
            await create(engine, item)
        except repo.Conflict as exc:
            # stored meanwhile by someone else counts as there; any other clash (a key or DID taken) is reported
            try:
                await get(engine, name)
            except repo.NotFound:
                failed.append(f"{kind[:-1]} {name!r}: {exc}")
                log.warning("demo seed: %s %r not stored: %s", kind[:-1], name, exc)
            else:
                existing.append(name)
        except repo.MarketplaceError as exc:  # e.g. it refers to something refused above
            failed.append(f"{kind[:-1]} {name!r}: {exc}")
            log.warning("demo seed: %s %r not stored: %s", kind[:-1], name, exc)
        else:
            created.append(name)


async def seed_demo(engine: AsyncEngine, marketplace: DemoMarketplace = DEMO_MARKETPLACE) -> SeedResult:
    """Store the demo marketplace in the (migrated) database behind ``engine``; idempotent.

    Entities already stored under the demo's ids and DIDs are left untouched (never duplicated nor overwritten).
    A clash with other data (say the campaign key taken by another campaign) skips that entity, and whatever
    depends on it, with a warning: seeding never stops the demo from starting.
    """
    result = SeedResult()
    m = marketplace
    await _seed_kind(result, "publishers", m.publishers, lambda p: p.id, repo.get_publisher,
                     repo.create_publisher, engine)
    await _seed_kind(result, "buyers", m.buyers, lambda b: b.id, repo.get_buyer, repo.create_buyer, engine)
    await _seed_kind(result, "targets", m.targets, lambda t: t.id, repo.get_target, repo.create_target, engine)
    await _seed_kind(result, "campaigns", m.campaigns, lambda c: c.id, repo.get_campaign, repo.create_campaign,
                     engine)
    await _seed_kind(result, "numbers", m.numbers, lambda n: n.did, repo.get_tracking_number,
                     repo.create_tracking_number, engine)
    return result


async def seed_demo_url(url: str) -> SeedResult:
    """:func:`seed_demo` into the database at ``url`` (already migrated), with an engine of its own."""
    from dce.db.engine import create_engine

    engine = create_engine(url)
    try:
        return await seed_demo(engine)
    finally:
        await engine.dispose()
