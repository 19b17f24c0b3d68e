"""Live auctions as a service: offer a call to buyers, take their bids during the window, close, tell them.

``LiveBidding`` wraps the pure ``LiveAuctions`` book with what the outside sees: an offer published to every
subscriber (the ``/ws/v1/bidding`` connections), the buyers allowed to bid on each call (those with an eligible
target), and an ``auction.closed`` message naming the winner. Subscribers are plain callables that must not
block (a WebSocket connection puts the message on its own bounded queue). Time is passed in.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from dce.bidding.auction import AuctionResult, LiveAuctions, PlaceResult
from dce.bidding.rtb import mask_number
from dce.routing.model import CallerContext, Campaign, Micros, format_money

log = logging.getLogger(__name__)

Message = dict[str, Any]
Subscriber = Callable[[Message], None]


class BidStatus(enum.StrEnum):
    """The answer to a live bid: ``LiveAuctions.place``'s results plus a bidder with no eligible target."""

    ACCEPTED = "accepted"
    UNKNOWN_CALL = "unknown_call"
    WINDOW_CLOSED = "window_closed"
    BELOW_RESERVE = "below_reserve"
    MALFORMED = "malformed"
    NOT_ELIGIBLE = "not_eligible"


_STATUS = {result: BidStatus(str(result)) for result in PlaceResult}


@dataclass(frozen=True, slots=True)
class BidAnswer:
    """What a bidder is told: the status, and the highest accepted amount so far (None when none)."""

    status: BidStatus
    call_id: str
    amount: Micros | None = None
    high_bid: Micros | None = None

    def to_json(self) -> Message:
        return {
            "type": "bid.result",
            "status": str(self.status),
            "call_id": self.call_id,
            "amount": format_money(self.amount) if self.amount is not None else None,
            "high_bid": format_money(self.high_bid) if self.high_bid is not None else None,
        }


class LiveBidding:
    """Open live auctions, the buyers allowed in each, and the subscribers who hear about them."""

    def __init__(self) -> None:
        self.auctions = LiveAuctions()
        self._eligible: dict[str, frozenset[str]] = {}  # call id -> buyer ids that may bid
        self._subscribers: list[Subscriber] = []

    def __len__(self) -> int:
        return len(self.auctions)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear every offer and close; returns the function that unsubscribes."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def offer(self, call_id: str, campaign: Campaign, ctx: CallerContext, buyer_ids: Collection[str],
              now: float) -> float:
        """Open the auction for ``call_id`` and publish ``call.offered``; return when the window closes."""
        ends_at = now + campaign.auction_window_ms / 1000.0
        self.auctions.open(call_id, campaign.reserve, ends_at, now=now)
        self._eligible[call_id] = frozenset(buyer_ids)
        self._publish({
            "type": "call.offered",
            "call_id": call_id,
            "campaign_id": campaign.id,
            "buyer_ids": sorted(buyer_ids),
            "reserve": format_money(campaign.reserve),
            "window_ms": campaign.auction_window_ms,
            "closes_at": ends_at,
            "caller": {
                "CID": ctx.ani if campaign.allow_caller_id else mask_number(ctx.ani),
                "state": ctx.state,
                "areaCode": ctx.area_code,
                "zipcode": ctx.zip,
                "tags": dict(ctx.tags),
            },
        })
        return ends_at

    def bid(self, call_id: str, buyer_id: str, amount: Micros, now: float) -> BidAnswer:
        """Place ``buyer_id``'s bid of ``amount`` on ``call_id`` at ``now``."""
        eligible = self._eligible.get(call_id)
        if eligible is None:
            return BidAnswer(BidStatus.UNKNOWN_CALL, call_id, amount)
        if buyer_id not in eligible:
            return BidAnswer(BidStatus.NOT_ELIGIBLE, call_id, amount)
        status = _STATUS[self.auctions.place(call_id, buyer_id, amount, now)]
        return BidAnswer(status, call_id, amount, self.auctions.high_bid(call_id))

    def close(self, call_id: str, now: float) -> AuctionResult:
        """Close the auction, publish ``auction.closed`` with the winner, and return the result."""
        self._eligible.pop(call_id, None)
        result = self.auctions.close(call_id, now)
        winner = result.winner
        self._publish({
            "type": "auction.closed",
            "call_id": call_id,
            "winner": winner.target_id if winner is not None else None,
            "amount": format_money(winner.amount) if winner is not None else None,
            "bids": len(result.ranked),
        })
        return result

    def _publish(self, message: Message) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(message)
            except Exception:  # one broken subscriber must not stop the auction or the others
                log.exception("live bidding subscriber failed")
