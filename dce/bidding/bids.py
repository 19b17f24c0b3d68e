"""Bids and bid records: what a buyer offers for a call, and what became of every offer.

Money is integer micro-units (``Micros``); buyers' JSON amounts (decimal strings or numbers of currency units) are
parsed with ``Decimal`` and quantized to micros. Times are float seconds on the caller's clock (epoch seconds in
practice), always passed in.
"""

from __future__ import annotations

import enum
import math
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, NamedTuple

from dce.routing.model import MICROS_PER_UNIT, Micros, format_money

MAX_BID_MICROS: Micros = 10_000 * MICROS_PER_UNIT  # anything above 10,000 currency units per call is absurd
DEFAULT_EXPIRY_S = 30.0
format_amount = format_money  # bids answer amounts as decimal strings of currency units
MAX_EXPIRY_S = 3600.0
MAX_MIN_DURATION_S = 86_400
_MAX_AMOUNT_CHARS = 32
_MAX_DESTINATION_CHARS = 256

_E164 = re.compile(r"\+?[1-9][0-9]{6,14}")
# A SIP URI that is safe to put in a Request-URI: no whitespace, control characters, quotes or angle brackets.
_SIP_URI = re.compile(r"sips?:[^\s<>\"\x00-\x1f\x7f]+", re.IGNORECASE)


class Outcome(enum.StrEnum):
    """What became of a bid."""

    WON = "won"
    LOST = "lost"
    REJECTED = "rejected"


class RejectReason(enum.StrEnum):
    """Why a bid was rejected (the metric label)."""

    LATE = "late"  # answered after the ping timeout (or placed after the auction window)
    MALFORMED = "malformed"
    BELOW_RESERVE = "below_reserve"
    EXPIRED = "expired"  # the bid's own expiry passed before the auction closed
    ERROR = "error"  # transport error or non-2xx answer
    NO_BID = "no_bid"  # the buyer declined (amount 0)


class MalformedBid(ValueError):
    """A buyer's answer that cannot be a bid; ``reason`` says which field and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Bid(NamedTuple):
    """One buyer's offer for one call. ``destination`` is an E.164 number or a SIP URI (None: not known).

    A NamedTuple (immutable, and cheap to build: auctions make one per static target per call)."""

    bid_id: str
    target_id: str
    amount: Micros
    destination: str | None
    expires_at: float
    min_duration_s: int = 0
    received_at: float = 0.0
    latency_ms: float = 0.0


class BidRecord(NamedTuple):
    """The fate of one bid (every bid is recorded): won, lost, or rejected with a reason."""

    target_id: str
    amount: Micros
    outcome: Outcome
    reject_reason: RejectReason | None = None
    latency_ms: float = 0.0
    bid_id: str | None = None


def parse_amount(value: Any) -> Micros:
    """A JSON amount in currency units (decimal string, int or float) -> micros; raise ``MalformedBid``.

    Rejects booleans, NaN/infinity, negatives and amounts above ``MAX_BID_MICROS``; rounds half-even to micros.
    """
    if isinstance(value, bool) or value is None:
        raise MalformedBid("bidAmount: not a number")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedBid("bidAmount: not finite")
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise MalformedBid("bidAmount: not a number")
    if not text or len(text) > _MAX_AMOUNT_CHARS:
        raise MalformedBid("bidAmount: bad length")
    try:
        dec = Decimal(text)
    except InvalidOperation:
        raise MalformedBid("bidAmount: not a decimal") from None
    if not dec.is_finite():
        raise MalformedBid("bidAmount: not finite")
    if dec < 0:
        raise MalformedBid("bidAmount: negative")
    if dec > MAX_BID_MICROS // MICROS_PER_UNIT:
        raise MalformedBid("bidAmount: absurd")
    return int((dec * MICROS_PER_UNIT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def validate_destination(value: Any) -> str:
    """An E.164 number (normalised to ``+digits``) or a SIP URI safe for a Request-URI; raise ``MalformedBid``."""
    if not isinstance(value, str) or not value or len(value) > _MAX_DESTINATION_CHARS:
        raise MalformedBid("destination: not a string")
    if _E164.fullmatch(value):
        return value if value.startswith("+") else "+" + value
    if _SIP_URI.fullmatch(value):
        return value
    raise MalformedBid("destination: neither an E.164 number nor a SIP URI")


def _number(payload: dict[str, Any], names: tuple[str, ...], default: float, low: float, high: float) -> float:
    for name in names:
        if name in payload:
            value = payload[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise MalformedBid(f"{name}: not a number")
            if not low <= value <= high:
                raise MalformedBid(f"{name}: out of range")
            return float(value)
    return default


def parse_bid(
    payload: Any,
    *,
    target_id: str,
    received_at: float,
    default_destination: str | None,
    latency_ms: float = 0.0,
) -> Bid:
    """A buyer's JSON answer -> ``Bid``; raise ``MalformedBid(reason)``.

    Fields (aliases in brackets): ``bidAmount`` [``amount``, ``bid``] in currency units, required (0 = no bid);
    ``bidId`` [``bid_id``]; ``phoneNumber`` | ``sipAddress`` [``destination``], else ``default_destination``;
    ``expireInSeconds`` [``expires_in``] (default 30, at most 3600); ``minDuration`` [``min_duration``] seconds.
    """
    if not isinstance(payload, dict):
        raise MalformedBid("answer: not a JSON object")
    for name in ("bidAmount", "amount", "bid"):
        if name in payload:
            amount = parse_amount(payload[name])
            break
    else:
        raise MalformedBid("bidAmount: missing")
    bid_id = payload.get("bidId", payload.get("bid_id", ""))
    if isinstance(bid_id, int) and not isinstance(bid_id, bool):
        bid_id = str(bid_id)
    if not isinstance(bid_id, str) or len(bid_id) > 128:
        raise MalformedBid("bidId: not a string")
    destination = default_destination
    for name in ("phoneNumber", "sipAddress", "destination"):
        if payload.get(name) not in (None, ""):
            destination = validate_destination(payload[name])
            break
    expiry = _number(payload, ("expireInSeconds", "expires_in"), DEFAULT_EXPIRY_S, 0.0, MAX_EXPIRY_S)
    min_duration = _number(payload, ("minDuration", "min_duration"), 0, 0, MAX_MIN_DURATION_S)
    return Bid(
        bid_id=bid_id,
        target_id=target_id,
        amount=amount,
        destination=destination,
        expires_at=received_at + expiry,
        min_duration_s=int(min_duration),
        received_at=received_at,
        latency_ms=latency_ms,
    )
