"""What the CallFlow tells the outside world about a call, as it happens: incoming, connected, completed or
blocked (converted comes from settlement). Today the listener is the postback dispatcher; emitting never waits."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from dce.billing.cdr import CallDetailRecord, Disposition, SaleTerms
from dce.billing.postback import EventName, PostbackEvent


class Emitter(Protocol):
    """Takes events synchronously and cheaply (the dispatcher queues deliveries for its worker)."""

    def emit(self, event: PostbackEvent) -> int: ...


class CallEvents:
    """The CallFlow's events as postback events."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter

    def incoming(self, call_id: str, at: datetime, caller: str, did: str, terms: SaleTerms | None) -> None:
        """The call passed screening and belongs to a campaign."""
        if terms is None:
            return
        self.emitter.emit(PostbackEvent(EventName.INCOMING, call_id, at, caller=caller, did=did,
                                        campaign_id=terms.campaign_id, publisher_id=terms.publisher_id))

    def connected(self, call_id: str, at: datetime, caller: str, did: str, terms: SaleTerms | None) -> None:
        """A buyer's target answered."""
        if terms is None:
            return
        self.emitter.emit(PostbackEvent(EventName.CONNECTED, call_id, at, caller=caller, did=did,
                                        campaign_id=terms.campaign_id, publisher_id=terms.publisher_id,
                                        buyer_id=terms.buyer_id, target_id=terms.target_id, revenue=terms.revenue))

    def finished(self, cdr: CallDetailRecord) -> None:
        """The call is over: ``blocked`` when the gate refused it, else ``completed``."""
        if cdr.terms is None:
            return
        name = EventName.BLOCKED if cdr.disposition is Disposition.BLOCKED else EventName.COMPLETED
        self.emitter.emit(PostbackEvent.from_cdr(name, cdr))

    def converted(self, cdr: CallDetailRecord, revenue: int, payout: int, at: datetime) -> None:
        """Settlement (or the buyer's webhook) converted the call."""
        self.emitter.emit(PostbackEvent.from_cdr(EventName.CONVERTED, cdr, revenue=revenue, payout=payout, at=at))
