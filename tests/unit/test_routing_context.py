"""Caller context: E.164, caller geography, campaign/publisher from the DID, tags from headers and RTB pings."""

from __future__ import annotations

from dce.routing.context import build_context, caller_geo
from tests.unit.routing_fixtures import DID, market, target

SNAP = market(target("t"))


def test_new_york_caller_and_campaign() -> None:
    ctx = build_context(caller_user="2125551234", did="18005550100", headers=(), snapshot=SNAP)
    assert ctx.ani == "+12125551234"
    assert (ctx.state, ctx.area_code, ctx.timezone) == ("NY", "212", "America/New_York")
    assert (ctx.did, ctx.campaign_id, ctx.publisher_id) == (DID, "c", "p")


def test_geo_for_other_regions() -> None:
    assert caller_geo("+14155550100")[:2] == ("CA", "415")
    assert caller_geo("+13055550100")[0] == "FL"
    assert caller_geo("+16475550100")[:2] == ("ON", "647")
    state, _area, tz = caller_geo("+442079460000")
    assert state is None and tz == "Europe/London"


def test_tags_from_headers_and_ping() -> None:
    headers = [
        ("Via", "SIP/2.0/UDP x"),
        ("X-DCE-Source", " web "),
        ("x-dce-ZIP", "10001"),
        ("X-Lead-Id", "42"),
        ("X-DCE-", "ignored"),
    ]
    ctx = build_context(
        caller_user="+12125551234;npdi",
        did=DID,
        headers=headers,
        snapshot=SNAP,
        tag_headers=("x-lead-id",),
        extra_tags=[("Vertical", "auto")],
    )
    assert ctx.tags == (("source", "web"), ("zip", "10001"), ("x-lead-id", "42"), ("vertical", "auto"))
    assert ctx.zip == "10001"


def test_anonymous_caller_and_unknown_did() -> None:
    ctx = build_context(caller_user="anonymous", did="+19995550000", headers=(), snapshot=SNAP)
    assert ctx.ani is None and ctx.state is None and ctx.area_code is None
    assert ctx.campaign_id is None and ctx.publisher_id is None


def test_geo_is_cached_per_number() -> None:
    caller_geo("+12125559876")
    hits = caller_geo.cache_info().hits
    caller_geo("+12125559876")
    assert caller_geo.cache_info().hits == hits + 1
