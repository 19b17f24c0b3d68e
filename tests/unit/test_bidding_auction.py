"""Auction rules: highest wins, earliest breaks ties, reserve, expiry, static vs RTB; and the live-auction book."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dce.bidding.auction import Auction, LiveAuctions, PlaceResult
from dce.bidding.bids import Bid, Outcome, RejectReason
from dce.routing.model import Target


def bid(target: str, amount: int, received_at: float = 1.0, expires_at: float = 100.0) -> Bid:
    return Bid(f"b-{target}", target, amount, f"sip:{target}@x", expires_at, 0, received_at)


def test_highest_wins_and_every_bid_is_recorded() -> None:
    auction = Auction(reserve=0, started_at=0.0)
    for b in (bid("a", 3), bid("b", 7), bid("c", 5)):
        auction.add(b, now=1.0)
    result = auction.close(now=2.0)
    assert result.winner is not None and result.winner.target_id == "b"
    assert [b.target_id for b in result.ranked] == ["b", "c", "a"]
    outcomes = {r.target_id: r.outcome for r in result.records}
    assert outcomes == {"b": Outcome.WON, "a": Outcome.LOST, "c": Outcome.LOST}


def test_earliest_breaks_ties_then_first_added() -> None:
    auction = Auction()
    auction.add(bid("late", 5, received_at=3.0), 3.0)
    auction.add(bid("early", 5, received_at=2.0), 3.0)
    auction.add(bid("also-early", 5, received_at=2.0), 3.0)
    assert auction.close(4.0).winner.target_id == "early"  # type: ignore[union-attr]


def test_reserve_and_expiry_reject_with_reason() -> None:
    auction = Auction(reserve=5)
    assert auction.add(bid("low", 4), 1.0) is RejectReason.BELOW_RESERVE
    assert auction.add(bid("stale", 9, expires_at=1.0), 1.0) is RejectReason.EXPIRED
    assert auction.add(bid("expires-before-close", 8, expires_at=2.0), 1.0) is None
    assert auction.add(bid("ok", 6), 1.0) is None
    result = auction.close(2.5)
    assert result.winner is not None and result.winner.target_id == "ok"
    reasons = {r.target_id: r.reject_reason for r in result.records if r.outcome is Outcome.REJECTED}
    assert reasons == {
        "low": RejectReason.BELOW_RESERVE,
        "stale": RejectReason.EXPIRED,
        "expires-before-close": RejectReason.EXPIRED,
    }


def test_no_bids_no_winner() -> None:
    result = Auction(reserve=1).close(0.0)
    assert result.winner is None and result.ranked == () and result.records == ()


def test_static_targets_compete_with_revenue_and_win_ties_as_earliest() -> None:
    static = Target("s", "buyer", "static", "sip:s@x", revenue=5_000_000)
    auction = Auction(started_at=10.0)
    auction.add_static([static], now=10.0)
    auction.add(bid("rtb", 5_000_000, received_at=10.2), 10.2)
    result = auction.close(10.3)
    assert result.winner is not None and result.winner.target_id == "s"
    assert result.winner.destination == "sip:s@x" and result.winner.expires_at == math.inf
    auction = Auction(started_at=10.0)
    auction.add_static([static], now=10.0)
    auction.add(bid("rtb", 5_000_001, received_at=10.2), 10.2)
    assert auction.close(10.3).winner.target_id == "rtb"  # type: ignore[union-attr]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 5)), min_size=1, max_size=30))
def test_winner_is_a_max_amount_bid_with_earliest_time(pairs: list[tuple[int, int]]) -> None:
    auction = Auction()
    for i, (amount, at) in enumerate(pairs):
        auction.add(Bid(str(i), str(i), amount, None, 1e9, 0, float(at)), 0.0)
    winner = auction.close(0.0).winner
    assert winner is not None
    top = max(a for a, _ in pairs)
    earliest = min(t for a, t in pairs if a == top)
    assert winner.amount == top and winner.received_at == earliest
    assert int(winner.bid_id) == min(i for i, (a, t) in enumerate(pairs) if a == top and t == earliest)


def test_live_auction_rules() -> None:
    book = LiveAuctions()
    book.open("c1", reserve=10, window_ends_at=5.0)
    assert book.place("nope", "x", 50, 1.0) is PlaceResult.UNKNOWN_CALL
    assert book.place("c1", "low", 9, 1.0) is PlaceResult.BELOW_RESERVE
    assert book.place("c1", "float", 12.5, 1.0) is PlaceResult.MALFORMED  # type: ignore[arg-type]
    assert book.place("c1", "a", 20, 1.0) is PlaceResult.ACCEPTED
    assert book.place("c1", "b", 20, 2.0) is PlaceResult.ACCEPTED
    assert book.place("c1", "c", 30, 3.0, expires_at=4.0) is PlaceResult.ACCEPTED
    assert book.place("c1", "late", 99, 5.0) is PlaceResult.WINDOW_CLOSED
    assert book.high_bid("c1") == 30
    assert book.due(5.0) == ["c1"]
    result = book.close("c1", now=4.5)  # c's bid expired before the close
    assert result.winner is not None and result.winner.target_id == "a" and result.winner.amount == 20
    assert [b.target_id for b in result.ranked] == ["a", "b"]
    by_bidder = {r.target_id: (r.outcome, r.reject_reason) for r in result.records}
    assert by_bidder == {
        "low": (Outcome.REJECTED, RejectReason.BELOW_RESERVE),
        "float": (Outcome.REJECTED, RejectReason.MALFORMED),
        "late": (Outcome.REJECTED, RejectReason.LATE),
        "c": (Outcome.REJECTED, RejectReason.EXPIRED),
        "a": (Outcome.WON, None),
        "b": (Outcome.LOST, None),
    }
    assert "c1" not in book
    with pytest.raises(KeyError):
        book.close("c1", 6.0)
    with pytest.raises(ValueError):
        book.open("c2", 0, 1.0)
        book.open("c2", 0, 1.0)


@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 4)), max_size=40))
def test_live_winner_is_max_amount_earliest_placed(pairs: list[tuple[int, int]]) -> None:
    book = LiveAuctions()
    book.open("c", reserve=0, window_ends_at=1e9)
    for i, (amount, at) in enumerate(pairs):
        assert book.place("c", str(i), amount, float(at)) is PlaceResult.ACCEPTED
    winner = book.close("c", 0.0).winner
    if not pairs:
        assert winner is None
        return
    assert winner is not None
    top = max(a for a, _ in pairs)
    earliest = min(t for a, t in pairs if a == top)
    assert winner.amount == top and winner.received_at == earliest
    assert int(winner.target_id) == min(i for i, (a, t) in enumerate(pairs) if a == top and t == earliest)
