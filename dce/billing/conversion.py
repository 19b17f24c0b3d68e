"""Whether a finished call converted, and the money it moves: pure rules over a :class:`CallDetailRecord`.

A marketplace call converts when it was answered and its duration, timed per ``terms.conversion_from``
(answer: end - answer; dial: end - first outbound INVITE; incoming: end - the caller's INVITE), reaches
``terms.conversion_s``; or when the buyer confirmed the sale through the conversion webhook (one per call,
with an optional revenue override). Revenue is the sale price (``terms.revenue``: static revenue or the winning
bid) or the webhook's; the publisher's payout is the fixed amount, or ``revenue * share_bp / 10000`` rounded
down to a micro-unit. A duplicate call (the campaign's repeat-caller rule) is neither charged nor paid.

Money is integer micro-units throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dce.billing.cdr import CallDetailRecord, ConversionFrom, SaleTerms

BASIS_POINTS = 10_000

# Settlement.reason values
NO_TERMS = "no_terms"  # not a marketplace sale
DUPLICATE = "duplicate"  # the campaign's repeat-caller rule
WEBHOOK = "webhook"  # the buyer confirmed it
DURATION = "duration"  # answered and long enough
NOT_ANSWERED = "not_answered"
TOO_SHORT = "too_short"
NO_DURATION_RULE = "no_duration_rule"  # conversion_s is None: converts by webhook only


@dataclass(frozen=True, slots=True)
class WebhookConversion:
    """A buyer's confirmation of a sale (``POST /conversions``): at most one per call."""

    call_id: str
    revenue: int | None = None  # micros; None: the sale price of the call
    at: datetime | None = None
    source: str = "webhook"


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling one call decided."""

    converted: bool
    revenue: int  # micros charged to the buyer
    payout: int  # micros owed to the publisher
    reason: str


NOTHING = Settlement(converted=False, revenue=0, payout=0, reason=NO_TERMS)


def payout_for(terms: SaleTerms, revenue: int) -> int:
    """The publisher's payout on ``revenue`` under the terms' rule: the fixed amount if set, else the share
    (basis points clamped to 0..10000) rounded down, else 0. Never negative; a share never exceeds revenue."""
    if terms.publisher_id is None:
        return 0
    if terms.payout_fixed is not None:
        return max(0, terms.payout_fixed)
    if terms.payout_share_bp is not None and revenue > 0:
        share = min(max(terms.payout_share_bp, 0), BASIS_POINTS)
        return revenue * share // BASIS_POINTS
    return 0


def timed_duration(cdr: CallDetailRecord, conversion_from: ConversionFrom) -> timedelta | None:
    """The call's duration timed per ``conversion_from``; None when it was never answered."""
    if cdr.answer_at is None:
        return None
    if conversion_from is ConversionFrom.DIAL:
        start = cdr.dial_at or cdr.answer_at
    elif conversion_from is ConversionFrom.INCOMING:
        start = cdr.invite_at
    else:
        start = cdr.answer_at
    return max(cdr.end_at - start, timedelta(0))


def decide(cdr: CallDetailRecord, *, duplicate: bool, webhook: WebhookConversion | None) -> Settlement:
    """Settle one finished call: converted or not, the revenue charged and the payout owed."""
    terms = cdr.terms
    if terms is None:
        return NOTHING
    if duplicate:
        return Settlement(converted=False, revenue=0, payout=0, reason=DUPLICATE)
    if webhook is not None:
        reason = WEBHOOK
        revenue = terms.revenue if webhook.revenue is None else webhook.revenue
    else:
        duration = timed_duration(cdr, terms.conversion_from)
        if duration is None:
            return Settlement(converted=False, revenue=0, payout=0, reason=NOT_ANSWERED)
        if terms.conversion_s is None:
            return Settlement(converted=False, revenue=0, payout=0, reason=NO_DURATION_RULE)
        if duration < timedelta(seconds=terms.conversion_s):
            return Settlement(converted=False, revenue=0, payout=0, reason=TOO_SHORT)
        reason = DURATION
        revenue = terms.revenue
    revenue = max(0, revenue) if terms.buyer_id is not None else 0
    return Settlement(converted=True, revenue=revenue, payout=payout_for(terms, revenue), reason=reason)
