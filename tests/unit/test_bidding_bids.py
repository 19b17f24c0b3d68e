"""parse_bid: amounts as Decimal -> micros, destinations checked, malformed answers named."""

from __future__ import annotations

import pytest

from dce.bidding.bids import MAX_BID_MICROS, MalformedBid, format_amount, parse_amount, parse_bid


def test_amounts_parse_to_micros_without_float_error() -> None:
    assert parse_amount("12.50") == 12_500_000
    assert parse_amount(0.1) == 100_000
    assert parse_amount(3) == 3_000_000
    assert parse_amount("0.0000005") == 0  # half-even to micros
    assert parse_amount("0.0000015") == 2


@pytest.mark.parametrize("value", ["NaN", "inf", "-1", -0.5, True, None, "abc", "1e9", [1], "1" * 40, float("nan")])
def test_bad_amounts_are_rejected(value: object) -> None:
    with pytest.raises(MalformedBid):
        parse_amount(value)


def test_absurd_limit() -> None:
    assert parse_amount(MAX_BID_MICROS // 1_000_000) == MAX_BID_MICROS
    with pytest.raises(MalformedBid, match="absurd"):
        parse_amount("10000.000001")


def test_format_amount() -> None:
    assert format_amount(12_500_000) == "12.50"
    assert format_amount(1) == "0.000001"
    assert format_amount(0) == "0.00"
    assert format_amount(7_000_000) == "7.00"


def test_parse_bid_fields() -> None:
    bid = parse_bid(
        {
            "bidId": "b1",
            "bidAmount": "4.25",
            "sipAddress": "sip:buyer@10.0.0.5:5080",
            "expireInSeconds": 20,
            "minDuration": 90,
        },
        target_id="t1",
        received_at=100.0,
        default_destination="+18005550199",
        latency_ms=12.0,
    )
    assert (bid.bid_id, bid.amount, bid.destination, bid.expires_at, bid.min_duration_s, bid.latency_ms) == (
        "b1",
        4_250_000,
        "sip:buyer@10.0.0.5:5080",
        120.0,
        90,
        12.0,
    )
    bid = parse_bid(
        {"bidAmount": 1, "phoneNumber": "18005550100"}, target_id="t", received_at=0.0, default_destination=None
    )
    assert bid.destination == "+18005550100"
    bid = parse_bid({"amount": 1}, target_id="t", received_at=0.0, default_destination="sip:d@x")
    assert bid.destination == "sip:d@x" and bid.expires_at == 30.0


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        {"bidAmount": "x"},
        {"bidAmount": 1, "sipAddress": "sip:a@b\r\nVia: evil"},
        {"bidAmount": 1, "phoneNumber": "call me"},
        {"bidAmount": 1, "expireInSeconds": -1},
        {"bidAmount": 1, "expireInSeconds": "soon"},
        {"bidAmount": 1, "bidId": {"x": 1}},
    ],
)
def test_malformed_bids(payload: object) -> None:
    with pytest.raises(MalformedBid):
        parse_bid(payload, target_id="t", received_at=0.0, default_destination=None)
