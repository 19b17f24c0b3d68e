"""The compliance gate end to end: lists edited through the API screen SIPp calls to a real ``dce serve``.

A caller on the national DNC list, the litigator list or the blocked-ANI list gets 603 with a Q.850 Reason and a
``blocked`` CDR naming the list; once on a buyer's suppression list only, the call skips that buyer's target and
goes to the next buyer. Each change is made through the API and must apply within 1 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import CALLER, DID, ExchangeProcess, fetch_cdrs, run_sipp_uac
from tests.integration.test_marketplace_calls import api
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def two_buyers(exchange: ExchangeProcess, first_uri: str, second_uri: str) -> None:
    """Buyer b1's target first (priority 1), buyer b2's second, in one campaign on the test DID."""
    api(exchange, "POST", "/publishers", {"id": "p1", "name": "Publisher"})
    for buyer, uri, priority in (("b1", first_uri, 1), ("b2", second_uri, 2)):
        api(exchange, "POST", "/buyers", {"id": buyer, "name": buyer})
        api(exchange, "POST", "/targets", {"id": f"t-{buyer}", "buyer_id": buyer, "name": buyer,
                                           "destination": uri, "revenue": "5.00", "priority": priority})
    api(exchange, "POST", "/campaigns", {"id": "c1", "name": "Screened", "publisher_ids": ["p1"],
                                         "target_ids": ["t-b1", "t-b2"]})
    api(exchange, "POST", "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})


def latest_cdr(exchange: ExchangeProcess, count: int) -> dict[str, Any]:
    cdrs = fetch_cdrs(exchange.http_base, count)
    return max(cdrs, key=lambda c: c["invite_at"])


def test_listed_callers_are_blocked_and_suppressed_buyers_skipped_within_a_second_of_each_change(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    first = uas_factory("uas_answer")
    second = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({})
    two_buyers(exchange, first.uri, second.uri)
    lists = {kind: api(exchange, "POST", "/lists", {"kind": kind, "name": kind, **extra})["id"]
             for kind, extra in (("dnc_national", {}), ("litigator", {}), ("blocked_ani", {}),
                                 ("suppression", {"scope": "b1"}))}
    calls = 0
    on_list: str | None = None
    for kind in ("dnc_national", "litigator", "blocked_ani"):
        if on_list is not None:
            api(exchange, "DELETE", f"/lists/{lists[on_list]}/numbers/{CALLER}")
        api(exchange, "POST", f"/lists/{lists[kind]}/numbers", {"numbers": [CALLER]})
        on_list = kind
        time.sleep(1.0)  # the bound for API changes to reach the call path

        blocked = run_sipp_uac("uac_expect_603", exchange.sip_target, tmp_path, timeout=30, name=f"blocked_{kind}")
        calls += 1
        assert_ok(blocked, exchange=exchange)
        cdr = latest_cdr(exchange, calls)
        assert (cdr["disposition"], cdr["final_code"]) == ("blocked", 603)
        assert cdr["reason"].startswith(kind) and kind in cdr["extra"]["compliance_codes"]

    assert on_list is not None
    api(exchange, "DELETE", f"/lists/{lists[on_list]}/numbers/{CALLER}")
    api(exchange, "POST", f"/lists/{lists['suppression']}/numbers", {"numbers": [CALLER]})
    time.sleep(1.0)
    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=300, timeout=30)
    calls += 1
    assert_ok(caller, exchange=exchange)
    assert_ok(second.stop(), exchange=exchange)
    assert first.stop().created == 0, "buyer b1 suppresses this caller: its target must not be dialled"
    cdr = latest_cdr(exchange, calls)
    assert (cdr["disposition"], cdr["extra"]["target_id"]) == ("answered", "t-b2")
    check = api(exchange, "GET", f"/lists/check/{CALLER}")
    assert [hit["kind"] for hit in check["hits"]] == ["suppression"]
