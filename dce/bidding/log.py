"""One recorded bid, with where and when it happened (what the bids table stores)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

from dce.bidding.bids import BidRecord


@dataclass(frozen=True, slots=True)
class BidLogEntry:
    """A bid's outcome in a call's auction (``call_id``) or a publisher's ping (``call_id`` None)."""

    at: datetime
    record: BidRecord
    campaign_id: str | None = None
    call_id: str | None = None
    buyer_id: str | None = None  # the buyer behind the bid (the target's owner, or the live bidder)
    id: str = field(default_factory=lambda: os.urandom(12).hex())  # makes re-inserting after a retry a no-op
