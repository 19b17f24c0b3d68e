"""The call detail record: what one finished call leaves behind."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from dce.billing.storable import storable, storable_json

# The longest text each field may hold: the storage columns' lengths (a test holds them equal). Text fields not
# named here (free text such as ``reason``) are bounded by TEXT_LIMIT; ``extra`` keys and values by EXTRA_LIMIT.
TEXT_LIMITS: dict[str, int] = {
    "call_id": 128, "a_leg_call_id": 255, "b_leg_call_id": 255, "caller": 255, "called": 64, "did": 64,
    "destination": 1024, "verstat": 32, "trunk": 64,
    # SaleTerms
    "campaign_id": 64, "publisher_id": 64, "buyer_id": 64, "target_id": 64, "duplicate_after": 16, "bid_id": 128,
}
TEXT_LIMIT = 4096
EXTRA_LIMIT = 1024


class Disposition(enum.StrEnum):
    """How a call ended, from the caller's point of view."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NO_ROUTE = "no_route"  # the DID is known but no target was eligible (closed, capped, criteria, ...)
    BLOCKED = "blocked"  # refused by the compliance and fraud gate (reason codes in ``reason``)


class HangupSide(enum.StrEnum):
    """Which party ended the call."""

    CALLER = "caller"
    CALLEE = "callee"
    SYSTEM = "system"


class ConversionFrom(enum.StrEnum):
    """Where a call's conversion duration is timed from."""

    ANSWER = "answer"  # the buyer answered (default)
    DIAL = "dial"  # the first outbound INVITE
    INCOMING = "incoming"  # the caller's INVITE


@dataclass(frozen=True, slots=True)
class SaleTerms:
    """What a marketplace call was sold on, fixed at call time; settlement decides the money from these.

    Money in integer micro-units. ``revenue`` is the target's static revenue or the winning bid; the payout rule
    is the publisher's (fixed, or a share of revenue in basis points). ``duplicate_days``/``duplicate_after``
    carry the campaign's duplicate-caller rule: a repeat caller within the window is not paid.
    """

    campaign_id: str
    publisher_id: str | None = None
    buyer_id: str | None = None
    target_id: str | None = None
    revenue: int = 0
    conversion_s: int | None = None  # None: the call never converts by duration (only by webhook)
    conversion_from: ConversionFrom = ConversionFrom.ANSWER
    payout_fixed: int | None = None
    payout_share_bp: int | None = None
    duplicate_days: int | None = None
    duplicate_after: str = "connected"  # "connected" or "converted"
    bid_id: str | None = None

    def __post_init__(self) -> None:
        _make_storable(self)


def _make_storable(record: Any) -> None:
    """Replace every str field of ``record`` by its storable form (see :mod:`dce.billing.storable`)."""
    for spec in fields(record):
        value = getattr(record, spec.name)
        if isinstance(value, str) and not isinstance(value, enum.Enum):
            clean = storable(value, TEXT_LIMITS.get(spec.name, TEXT_LIMIT))
            if clean is not value:
                object.__setattr__(record, spec.name, clean)  # SaleTerms is frozen


@dataclass(slots=True)
class CallDetailRecord:
    """One finished call. Times are timezone-aware UTC; durations are whole seconds.

    Every text field and ``extra`` is made storable on construction (valid UTF-8, no NUL, bounded to its column),
    so no caller can build a record the database refuses, whatever bytes came from the wire.
    """

    call_id: str  # the exchange's own id for the call
    a_leg_call_id: str  # SIP Call-ID of the inbound leg
    b_leg_call_id: str | None  # SIP Call-ID of the last outbound leg, if any was dialled
    caller: str  # E.164 when the From user parses as a number, else the raw user part
    called: str  # E.164 of the Request-URI user
    did: str  # the tracking number the call arrived on (E.164)
    destination: str | None  # the destination URI that answered (or was last tried)
    invite_at: datetime
    end_at: datetime
    disposition: Disposition
    final_code: int  # final SIP status sent to the caller (200 for answered calls)
    ring_at: datetime | None = None
    answer_at: datetime | None = None
    hangup_side: HangupSide | None = None
    reason: str | None = None  # human-readable detail (e.g. "no route for DID")
    packets_relayed: int = 0
    bytes_relayed: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    verstat: str | None = None  # STIR/SHAKEN verification status of the inbound call, when verified
    dial_at: datetime | None = None  # the first outbound INVITE
    terms: SaleTerms | None = None  # marketplace calls: who sold and bought it, at what price
    trunk: str | None = None  # the inbound trunk's name the call came in on (None: no trunk matched)

    def __post_init__(self) -> None:
        _make_storable(self)
        if self.extra:
            self.extra = storable_json(self.extra, EXTRA_LIMIT)

    @property
    def duration_s(self) -> int:
        """Seconds from the INVITE to the end of the call."""
        return max(0, round((self.end_at - self.invite_at).total_seconds()))

    @property
    def billable_s(self) -> int:
        """Seconds from answer to the end of the call; 0 when never answered."""
        if self.answer_at is None:
            return 0
        return max(0, round((self.end_at - self.answer_at).total_seconds()))
