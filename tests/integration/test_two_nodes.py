"""Two exchange nodes on one database and one Redis: a concurrency cap of 1 holds across both, a change made
through node A routes on node B within a second, and a node whose Redis is away keeps routing on its own count."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import DID, fetch_cdrs, free_port, run_sipp_uac
from tests.integration.test_marketplace_calls import api
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


def setup_capped(node: Any, callee_uri: str, target_id: str) -> None:
    api(node, "POST", "/publishers", {"id": "p1", "name": "P"})
    api(node, "POST", "/buyers", {"id": "b1", "name": "B"})
    api(node, "POST", "/targets", {"id": target_id, "buyer_id": "b1", "name": "Capped", "destination": callee_uri,
                                   "caps": {"concurrency": 1}})
    api(node, "POST", "/campaigns", {"id": "c1", "name": "Shared", "publisher_ids": ["p1"], "target_ids": [target_id]})
    api(node, "POST", "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})


def test_a_concurrency_cap_holds_across_nodes_and_changes_on_one_reach_the_other(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, redis_url: str) -> None:  # noqa: F811
    callee = uas_factory("uas_answer")
    node_a = exchange_factory({}, extra_config={"redis": {"url": redis_url}})
    node_b = exchange_factory({}, extra_config={"redis": {"url": redis_url}})
    target_id = "t-" + uuid.uuid4().hex[:12]  # its Redis slot key is this test's own
    setup_capped(node_a, callee.uri, target_id)
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
