"""One recorded bid, with where and when it happened (what the bids table stores)."""

from __future__ import annotations

import itertools
import os
from datetime import datetime
from typing import NamedTuple

from dce.bidding.bids import BidRecord

_PREFIX = os.urandom(6).hex()  # per process: ids from two nodes (or restarts) never collide
_SEQUENCE = itertools.count()


def new_entry_id() -> str:
    """A unique id for a bid log entry (24 hex characters): cheap enough to make one per bid on the hot path."""
    return f"{_PREFIX}{next(_SEQUENCE):012x}"


class BidLogEntry(NamedTuple):
    """A bid's outcome in a call's auction (``call_id``) or a publisher's ping (``call_id`` None).

    ``id`` makes re-inserting after a retry a no-op; ``buyer_id`` is the buyer behind the bid (the target's owner,
    or the live bidder).
    """

    at: datetime
    record: BidRecord
    campaign_id: str | None
    call_id: str | None
    buyer_id: str | None
    id: str


def bid_log_entry(at: datetime, record: BidRecord, campaign_id: str | None = None, call_id: str | None = None,
                  buyer_id: str | None = None) -> BidLogEntry:
    """A new entry with a fresh id."""
    return BidLogEntry(at, record, campaign_id, call_id, buyer_id, new_entry_id())
