"""Two exchange nodes on one database and one Redis: a concurrency cap of 1 and a daily cap of 2 hold across both,
a change made through node A routes on node B within a second, and a node whose Redis is away (from the start or
going away mid-test) keeps routing on its own counts. Each test keeps to Redis keys of its own (``key_prefix``)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.integration.sipp import DID, fetch_cdrs, free_port, http_get, run_sipp_uac
from tests.integration.test_marketplace_calls import api
from tests.integration.test_outage import CuttableProxy
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)
from tests.redis_server import redis_test_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def redis_url() -> str:
    return redis_test_url()


@pytest.fixture
def redis(redis_url: str) -> dict[str, Any]:
    """The ``redis`` config section of this test's nodes: the test Redis, under keys of this test's own, with a
    budget (1 s, not 50 ms) that a loaded CI machine does not exceed: these tests prove sharing, not speed."""
    return {"url": redis_url, "key_prefix": f"dce-test-{uuid.uuid4().hex[:12]}:", "timeout_ms": 1000}


def setup_capped(node: Any, callee_uri: str, target_id: str, caps: dict[str, int] | None = None) -> None:
    api(node, "POST", "/publishers", {"id": "p1", "name": "P"})
    api(node, "POST", "/buyers", {"id": "b1", "name": "B"})
    api(node, "POST", "/targets", {"id": target_id, "buyer_id": "b1", "name": "Capped", "destination": callee_uri,
                                   "caps": caps or {"concurrency": 1}})
    api(node, "POST", "/campaigns", {"id": "c1", "name": "Shared", "publisher_ids": ["p1"], "target_ids": [target_id]})
    api(node, "POST", "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})


def test_a_concurrency_cap_holds_across_nodes_and_changes_on_one_reach_the_other(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, redis: dict[str, Any]) -> None:  # noqa: F811
    callee = uas_factory("uas_answer")
    node_a = exchange_factory({}, extra_config={"redis": redis})
    node_b = exchange_factory({}, extra_config={"redis": redis})
    setup_capped(node_a, callee.uri, "t-capped")
    time.sleep(1.0)  # the change, made on A, must route on B within 1 s

    results: dict[str, Any] = {}
    held = threading.Thread(target=lambda: results.setdefault("a", run_sipp_uac(
        "uac_basic", node_a.sip_target, tmp_path, hold_ms=4000, timeout=30, name="held_on_a")))
    held.start()
    time.sleep(1.5)  # A's call is connected and holds the target's only slot
    refused = run_sipp_uac("uac_expect_480", node_b.sip_target, tmp_path, timeout=30, name="refused_on_b")
    held.join(30)
    assert_ok(results["a"], exchange=node_a)
    assert_ok(refused, exchange=node_b)
    cdrs = fetch_cdrs(node_b.http_base, 2)
    dispositions = sorted((c["disposition"], c["final_code"]) for c in cdrs)
    assert dispositions == [("answered", 200), ("no_route", 480)]
    (capped,) = [c for c in cdrs if c["disposition"] == "no_route"]
    assert "at capacity" in capped["reason"]

    after = run_sipp_uac("uac_basic", node_b.sip_target, tmp_path, hold_ms=300, timeout=30, name="after_on_b")
    assert_ok(after, exchange=node_b)  # A's slot was given back on both nodes

    api(node_a, "PATCH", "/campaigns/c1", {"enabled": False})
    time.sleep(1.0)
    disabled = run_sipp_uac("uac_expect_480", node_b.sip_target, tmp_path, timeout=30, name="disabled_on_b")
    assert_ok(disabled, exchange=node_b)


def test_a_node_whose_redis_is_away_keeps_routing_on_its_own_count(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    nobody = f"redis://127.0.0.1:{free_port('tcp')}/0"  # nothing listens there
    node = exchange_factory({}, extra_config={"redis": {"url": nobody}})
    setup_capped(node, callee.uri, "t-alone")
    time.sleep(1.0)
    caller = run_sipp_uac("uac_basic", node.sip_target, tmp_path, hold_ms=300, timeout=30)
    assert_ok(caller, exchange=node)
    assert_ok(callee.stop(), exchange=node)
    assert "redis slots unavailable" in node.log()


def test_a_daily_cap_holds_across_nodes_though_each_node_plans_on_its_own_counts(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, redis: dict[str, Any]) -> None:  # noqa: F811
    callee = uas_factory("uas_answer")
    node_a = exchange_factory({}, extra_config={"redis": redis})
    node_b = exchange_factory({}, extra_config={"redis": redis})
    setup_capped(node_a, callee.uri, "t-daily", {"daily": 2})
    time.sleep(1.0)
    for node, name in ((node_a, "first_on_a"), (node_b, "second_on_b")):  # one connect each: 1 of 2 on each node
        assert_ok(run_sipp_uac("uac_basic", node.sip_target, tmp_path, hold_ms=200, timeout=30, name=name),
                  exchange=node)
    for node, name in ((node_a, "third_on_a"), (node_b, "fourth_on_b")):  # 2 of 2 across both
        assert_ok(run_sipp_uac("uac_expect_480", node.sip_target, tmp_path, timeout=30, name=name), exchange=node)
    cdrs = fetch_cdrs(node_b.http_base, 4)
    assert sorted((c["disposition"], c["final_code"]) for c in cdrs) == [("answered", 200)] * 2 + [
        ("no_route", 480)] * 2
    assert all("at capacity" in c["reason"] for c in cdrs if c["disposition"] == "no_route")


def test_calls_keep_routing_when_redis_goes_away_mid_test_and_share_again_when_it_is_back(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, redis: dict[str, Any]) -> None:  # noqa: F811
    upstream = urlparse(redis["url"])
    proxy = CuttableProxy((upstream.hostname or "127.0.0.1", upstream.port or 6379))
    try:
        proxied = {**redis, "url": upstream._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()}
        callee = uas_factory("uas_answer")
        node = exchange_factory({}, extra_config={"redis": proxied})
        setup_capped(node, callee.uri, "t-outage", {"concurrency": 1, "daily": 100})
        time.sleep(1.0)
        before = run_sipp_uac("uac_basic", node.sip_target, tmp_path, hold_ms=200, timeout=30, name="before")
        assert_ok(before, exchange=node)
        assert "unavailable" not in node.log()

        proxy.cut()
        during = run_sipp_uac("uac_basic", node.sip_target, tmp_path, calls=2, rate=1, limit=1, hold_ms=200,
                              timeout=30, name="during")
        assert_ok(during, calls=2, exchange=node)  # this node's own counts decide
        log = node.log()
        assert "redis slots unavailable" in log and "redis velocity unavailable" in log
        metrics = scrape(node.http_base)
        assert 'dce_redis_up{component="slots"} 0.0' in metrics
        assert 'dce_redis_failures_total{component="slots"} 0.0' not in metrics

        proxy.restore()
        time.sleep(1.2)  # past the back-off
        after = run_sipp_uac("uac_basic", node.sip_target, tmp_path, hold_ms=200, timeout=30, name="after")
        assert_ok(after, exchange=node)
        assert "redis slots available again" in node.log()
        assert 'dce_redis_up{component="slots"} 1.0' in scrape(node.http_base)
        assert len(fetch_cdrs(node.http_base, 4)) == 4
    finally:
        proxy.close()


def scrape(http_base: str) -> str:
    status, body = http_get(f"{http_base}/metrics")
    assert status == 200, body
    return body.decode()


def status_of(url: str) -> int:
    request = urllib.request.Request(url, method="POST", data=b"{}", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_two_nodes_share_one_rate_limit_bucket_per_caller(
        exchange_factory: Any, redis: dict[str, Any]) -> None:  # noqa: F811
    config = {"redis": redis, "rate_limits": {"enabled": True}}
    nodes = [exchange_factory({}, extra_config=config), exchange_factory({}, extra_config=config)]
    started = time.monotonic()
    statuses = [status_of(f"{nodes[i % 2].http_base}/api/v1/auth/login") for i in range(40)]
    elapsed = time.monotonic() - started
    allowed = sum(status != 429 for status in statuses)
    # The seed's auth rule, 10/s burst 20, for this caller on both nodes together (alone, each node would allow 20).
    assert 20 <= allowed <= 20 + int(10 * elapsed) + 1, (allowed, elapsed)
    assert 429 not in statuses[:20]  # the burst first, whichever node answers
