"""LiveBidding: offers published to subscribers, bids from eligible buyers only, the window and reserve kept."""

from __future__ import annotations

from typing import Any

import pytest

from dce.bidding.live import BidStatus, LiveBidding
from dce.routing.model import CallerContext, Campaign

CAMPAIGN = Campaign("c1", "Auto", reserve=2_000_000, live_auction=True, auction_window_ms=500)
CTX = CallerContext(ani="+12125550123", did="+18005550100", state="NY", area_code="212", campaign_id="c1",
                    tags=(("source", "tv"),))


def opened(heard: list[dict[str, Any]] | None = None) -> LiveBidding:
    live = LiveBidding()
    if heard is not None:
        live.subscribe(heard.append)
    live.offer("call-1", CAMPAIGN, CTX, ["b1", "b2"], now=100.0)
    return live


def test_an_offer_is_published_with_the_window_reserve_and_a_masked_caller():
    heard: list[dict[str, Any]] = []
    live = LiveBidding()
    live.subscribe(heard.append)
    ends_at = live.offer("call-1", CAMPAIGN, CTX, ["b2", "b1"], now=100.0)
    assert ends_at == pytest.approx(100.5)
    (offer,) = heard
    assert offer["type"] == "call.offered" and offer["call_id"] == "call-1" and offer["campaign_id"] == "c1"
    assert offer["buyer_ids"] == ["b1", "b2"] and offer["reserve"] == "2.00" and offer["window_ms"] == 500
    assert offer["caller"]["CID"] == "+1212555****" and offer["caller"]["state"] == "NY"
    assert offer["caller"]["tags"] == {"source": "tv"}


def test_the_highest_bid_wins_and_ties_go_to_the_earliest():
    heard: list[dict[str, Any]] = []
    live = opened(heard)
    assert live.bid("call-1", "b1", 5_000_000, 100.1).status is BidStatus.ACCEPTED
    answer = live.bid("call-1", "b2", 5_000_000, 100.2)
    assert (answer.status, answer.high_bid) == (BidStatus.ACCEPTED, 5_000_000)
    result = live.close("call-1", 100.5)
    assert result.winner is not None and (result.winner.target_id, result.winner.amount) == ("b1", 5_000_000)
    assert [b.target_id for b in result.ranked] == ["b1", "b2"]
    closed = heard[-1]
    assert closed == {"type": "auction.closed", "call_id": "call-1", "winner": "b1", "amount": "5.00", "bids": 2}


def test_refusals_say_why():
    live = opened()
    assert live.bid("nope", "b1", 5_000_000, 100.1).status is BidStatus.UNKNOWN_CALL
    assert live.bid("call-1", "stranger", 5_000_000, 100.1).status is BidStatus.NOT_ELIGIBLE
    assert live.bid("call-1", "b1", 1_999_999, 100.1).status is BidStatus.BELOW_RESERVE
    assert live.bid("call-1", "b1", 9_000_000, 100.5).status is BidStatus.WINDOW_CLOSED
    result = live.close("call-1", 100.5)
    assert result.winner is None
    assert {(r.target_id, str(r.reject_reason)) for r in result.records} == {("b1", "below_reserve"), ("b1", "late")}
    assert live.bid("call-1", "b1", 9_000_000, 100.6).status is BidStatus.UNKNOWN_CALL  # closed: forgotten
    assert len(live) == 0


def test_a_failing_subscriber_does_not_stop_the_others_and_unsubscribe_works():
    heard: list[dict[str, Any]] = []

    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    live = LiveBidding()
    live.subscribe(broken)
    unsubscribe = live.subscribe(heard.append)
    live.offer("call-1", CAMPAIGN, CTX, ["b1"], now=0.0)
    assert [m["type"] for m in heard] == ["call.offered"]
    unsubscribe()
    live.close("call-1", 1.0)
    assert len(heard) == 1 and live.subscribers == 1
