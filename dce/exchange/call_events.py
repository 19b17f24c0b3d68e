"""What the CallFlow tells the outside world about a call, as it happens.

Two listeners: the postback dispatcher (incoming, connected, completed, blocked; converted comes from
settlement) and the live event hub behind ``/ws/v1/events`` (the same call events, plus each routing decision and
each compliance finding). Both take events synchronously and never wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from dce.billing.cdr import CallDetailRecord, Disposition, SaleTerms
from dce.billing.postback import EventName, PostbackEvent
from dce.compliance.verdict import Verdict
from dce.routing.model import PlannedTarget, format_money


class Emitter(Protocol):
    """Takes postback events synchronously and cheaply (the dispatcher queues deliveries for its worker)."""

    def emit(self, event: PostbackEvent) -> int: ...


class Publisher(Protocol):
    """The live event hub."""

    def publish(self, topic: str, message: dict[str, Any]) -> None: ...


class CallEvents:
    """The CallFlow's events, as postback events and live events."""

    def __init__(self, emitter: Emitter | None = None, hub: Publisher | None = None) -> None:
        self.emitter = emitter
        self.hub = hub

    def _call_event(self, event: PostbackEvent) -> None:
        if self.emitter is not None:
            self.emitter.emit(event)
        if self.hub is not None:
            self.hub.publish("calls", {"type": f"call.{event.name}", **event.tokens()})

    def incoming(self, call_id: str, at: datetime, caller: str, did: str, terms: SaleTerms | None) -> None:
        """The call passed screening and belongs to a campaign."""
        if terms is None:
            return
        self._call_event(PostbackEvent(EventName.INCOMING, call_id, at, caller=caller, did=did,
                                       campaign_id=terms.campaign_id, publisher_id=terms.publisher_id))

    def connected(self, call_id: str, at: datetime, caller: str, did: str, terms: SaleTerms | None) -> None:
        """A buyer's target answered."""
        if terms is None:
            return
        self._call_event(PostbackEvent(EventName.CONNECTED, call_id, at, caller=caller, did=did,
                                       campaign_id=terms.campaign_id, publisher_id=terms.publisher_id,
                                       buyer_id=terms.buyer_id, target_id=terms.target_id, revenue=terms.revenue))

    def finished(self, cdr: CallDetailRecord) -> None:
        """The call is over: ``blocked`` when the gate refused it, else ``completed``."""
        if cdr.terms is None:
            return
        name = EventName.BLOCKED if cdr.disposition is Disposition.BLOCKED else EventName.COMPLETED
        self._call_event(PostbackEvent.from_cdr(name, cdr))

    def converted(self, cdr: CallDetailRecord, revenue: int, payout: int, at: datetime) -> None:
        """Settlement (or the buyer's webhook) converted the call."""
        self._call_event(PostbackEvent.from_cdr(EventName.CONVERTED, cdr, revenue=revenue, payout=payout, at=at))

    def decided(self, call_id: str, at: datetime, terms: SaleTerms | None, targets: Sequence[PlannedTarget],
                reason: str | None) -> None:
        """Routing decided the call's plan (after any auction): the targets in order, or why there are none."""
        if self.hub is None:
            return
        self.hub.publish("routing_decisions", {
            "type": "routing.decision", "call_id": call_id, "at": at.isoformat(),
            "campaign_id": terms.campaign_id if terms else None,
            "publisher_id": terms.publisher_id if terms else None,
            "targets": [{"target_id": t.target_id, "revenue": format_money(t.revenue), "bid_id": t.bid_id}
                        for t in targets],
            "reason": reason,
        })

    def screened(self, call_id: str, at: datetime, terms: SaleTerms | None, verdict: Verdict) -> None:
        """The compliance gate flagged or rejected the call."""
        if self.hub is None or not verdict.findings:
            return
        self.hub.publish("compliance", {
            "type": "compliance.verdict", "call_id": call_id, "at": at.isoformat(),
            "campaign_id": terms.campaign_id if terms else None,
            "publisher_id": terms.publisher_id if terms else None,
            "action": str(verdict.action), "codes": list(verdict.codes), "reason": verdict.reason,
            "risk": verdict.risk, "verstat": verdict.verstat,
        })
