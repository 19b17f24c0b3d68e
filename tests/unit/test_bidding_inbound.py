"""Inbound pings answered from the auction, and reservations claimed by the same CID within the expiry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dce.bidding.auction import Auction
from dce.bidding.bids import Bid, BidRecord, Outcome, RejectReason
from dce.bidding.inbound import InboundPings, Reservations, context_from_ping, static_auction
from dce.routing.model import CallerContext, Campaign, Target

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
T0 = NOW.timestamp()
CAMPAIGN = Campaign("camp", "Auto", reserve=2_000_000, key="k")


class StubPinger:
    """Answers with fixed bids, as if the buyers had answered within the timeout."""

    def __init__(self, bids: list[Bid], records: list[BidRecord] | None = None) -> None:
        self.bids = bids
        self.records = records or []
        self.calls: list[dict[str, Any]] = []

    async def ping_all(self, targets: Sequence[Target], ctx: CallerContext, **kw: Any) -> Any:
        self.calls.append({"targets": [t.id for t in targets], "ctx": ctx, **kw})
        return list(self.records), list(self.bids)


def make(eligible: list[Target], pinger: StubPinger, reservations: Reservations | None = None) -> InboundPings:
    return InboundPings(
        lambda ctx, now: eligible,
        pinger,
        reservations if reservations is not None else Reservations(),  # type: ignore[arg-type]
        now_fn=lambda: T0 + 0.1,
    )


def rtb_bid(target: str, amount: int, dest: str, expires_in: float = 20.0) -> Bid:
    return Bid("buyer-id", target, amount, dest, T0 + 0.05 + expires_in, 0, T0 + 0.05, 50.0)


async def test_rtb_bid_beats_static_and_is_reserved() -> None:
    static = Target("s", "b", "s", "+18005550122", revenue=3_000_000)
    rtb = Target("r", "b", "r", "sip:r@x", bid_url="http://buyer/bid")
    pinger = StubPinger([rtb_bid("r", 7_250_000, "sip:r@10.0.0.1")])
    reservations = Reservations()
    answer = await make([static, rtb], pinger, reservations).handle(CAMPAIGN, {"CID": "+12125551234"}, NOW)
    assert answer["bidAmount"] == "7.25" and answer["sipAddress"] == "sip:r@10.0.0.1"
    assert answer["expireInSeconds"] == 19  # floor of what remains of the bid's own expiry
    assert pinger.calls[0]["timeout_s"] == 2.0 and pinger.calls[0]["allow_caller_id"] is False
    bid = reservations.claim("camp", "+12125551234", T0 + 5)
    assert bid is not None and bid.bid_id == answer["bidId"] and bid.amount == 7_250_000
    assert reservations.claim("camp", "+12125551234", T0 + 6) is None  # claimed once


async def test_static_wins_with_phone_number_and_expiry_capped() -> None:
    static = Target("s", "b", "s", "+18005550122", revenue=3_000_000)
    answer = await make([static], StubPinger([])).handle(CAMPAIGN, {"CID": "12125551234", "zipcode": 10001}, NOW)
    assert answer["phoneNumber"] == "+18005550122" and answer["bidAmount"] == "3.00"
    assert answer["expireInSeconds"] == 60


async def test_declines() -> None:
    below = Target("s", "b", "s", "+18005550122", revenue=1_000_000)  # under the 2.00 reserve
    h = make([below], StubPinger([]))
    assert await h.handle(CAMPAIGN, {"CID": "+12125551234"}, NOW) == {
        "bidAmount": 0,
        "rejectReason": "no_bid",
        "code": 1004,
    }
    assert (await h.handle(CAMPAIGN, {"zipcode": "10001"}, NOW))["rejectReason"] == "malformed_ping"
    assert (await h.handle(CAMPAIGN, {"CID": "hello"}, NOW))["rejectReason"] == "malformed_ping"
    assert (await h.handle(CAMPAIGN, ["x"], NOW))["rejectReason"] == "malformed_ping"
    off = Campaign("c", "x", enabled=False)
    assert (await h.handle(off, {"CID": "+12125551234"}, NOW))["rejectReason"] == "campaign_disabled"
    assert (await make([], StubPinger([])).handle(CAMPAIGN, {"CID": "+12125551234"}, NOW))["code"] == 1003


async def test_records_reach_the_sink() -> None:
    rtb = Target("r", "b", "r", "sip:r@x", bid_url="http://buyer/bid")
    late = BidRecord("slow", 0, Outcome.REJECTED, RejectReason.LATE, 2000.0)
    got: list[BidRecord] = []
    h = make([rtb], StubPinger([rtb_bid("r", 5_000_000, "sip:r@x")], [late]))
    h.on_records = lambda records, _campaign_id: got.extend(records)
    await h.handle(CAMPAIGN, {"CID": "+12125551234"}, NOW)
    assert [(r.target_id, r.outcome) for r in got] == [("slow", Outcome.REJECTED), ("r", Outcome.WON)]


def test_context_from_ping() -> None:
    ctx = context_from_ping(
        CAMPAIGN, {"CID": "2125551234", "zipcode": "10001", "source": "web", "n": 3, "nested": {"x": 1}}
    )
    assert ctx is not None
    assert (ctx.ani, ctx.area_code, ctx.zip, ctx.campaign_id) == ("+12125551234", "212", "10001", "camp")
    assert ctx.tags == (("source", "web"), ("n", "3"))


def res_bid(n: int, received_at: float) -> Bid:
    return Bid(str(n), "t", 1, "sip:t@x", received_at + 10, 0, received_at)


def test_reservation_claim_rules() -> None:
    r = Reservations()
    r.reserve("camp", "+1", res_bid(1, 0.0), expires_at=10.0)
    assert r.claim("camp", "+2", 1.0) is None  # another CID
    assert r.claim("other", "+1", 1.0) is None  # another campaign
    assert r.claim("camp", "+1", 10.0) is None  # expired (expiry is exclusive)
    r.reserve("camp", "+1", res_bid(2, 20.0), expires_at=30.0)
    r.reserve("camp", "+1", res_bid(3, 21.0), expires_at=31.0)  # replaces
    claimed = r.claim("camp", "+1", 25.0)
    assert claimed is not None and claimed.bid_id == "3"


def test_expired_reservations_are_evicted() -> None:
    r = Reservations()
    for n in range(1000):
        r.reserve("camp", f"+{n}", res_bid(n, float(n)), expires_at=n + 10.0, now=float(n))
    assert len(r) <= 11  # only the unexpired ones stay
    r.evict(2000.0)
    assert len(r) == 0 and len(r._fifo) == 0


@given(
    revenues=st.lists(st.integers(0, 6).map(lambda n: n * 1_000_000), max_size=8),
    reserve=st.integers(0, 5).map(lambda n: n * 1_000_000),
)
def test_static_auction_decides_as_the_auction(revenues: list[int], reserve: int) -> None:
    """The static-only fast path gives the same winner and the same records, in order, as ``Auction``."""
    targets = [Target(f"t{n}", "b", f"t{n}", f"+1800555{n:04d}", revenue=r) for n, r in enumerate(revenues)]
    targets += targets[:1]  # the same target twice: only the first of equals wins
    auction = Auction(reserve=reserve, started_at=T0)
    auction.add_static(targets, T0)
    expected = auction.close(T0 + 0.1)
    winner, records = static_auction(targets, reserve, T0)
    assert winner == expected.winner
    assert records == list(expected.records)
    assert all(type(r) is BidRecord for r in records)


async def test_static_only_ping_answer_and_records() -> None:
    targets = [
        Target("low", "b", "low", "+18005550100", revenue=1_000_000),  # below the reserve
        Target("a", "b", "a", "sip:a@buyer.example", revenue=4_000_000),
        Target("b", "b", "b", "+18005550101", revenue=4_000_000),  # equal amount, added later: loses
    ]
    got: list[BidRecord] = []
    reservations = Reservations()
    h = make(targets, StubPinger([]), reservations)
    h.on_records = lambda records, _campaign_id: got.extend(records)
    answer = await h.handle(CAMPAIGN, {"CID": "+12125551234"}, NOW)
    assert answer["bidAmount"] == "4.00" and answer["sipAddress"] == "sip:a@buyer.example"
    assert answer["expireInSeconds"] == 60 and len(answer["bidId"]) == 32
    assert [(r.target_id, r.outcome, r.reject_reason, r.bid_id) for r in got] == [
        ("low", Outcome.REJECTED, RejectReason.BELOW_RESERVE, "static:low"),
        ("a", Outcome.WON, None, "static:a"),
        ("b", Outcome.LOST, None, "static:b"),
    ]
    claimed = reservations.claim("camp", "+12125551234", T0 + 1)
    assert claimed is not None and claimed.bid_id == answer["bidId"] and claimed.expires_at == T0 + 0.1 + 60
