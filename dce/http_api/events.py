"""Live events over ``/ws/v1/events``: subscribe to topics, hear what happens as it happens.

Topics: ``calls`` (incoming, connected, completed, blocked, converted), ``bids`` (every bid's outcome),
``routing_decisions`` (each call's plan or why it has none) and ``compliance`` (flagged and rejected calls).
Connect with ``?topics=calls,bids`` (default: all). ``buyer_id=`` / ``publisher_id=`` narrow a connection to one
tenant's events (messages naming another tenant, or none, are not sent); with auth these come from the token.
A client may send ``{"type": "subscribe", "topics": [...]}`` to change its topics.

Publishing is synchronous and never waits: each connection has a bounded outbox (slow readers lose messages,
counted, rather than slowing the exchange).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import ProblemError, invalid_parameter
from dce.http_api.ws_outbox import Message, Outbox, open_socket

log = logging.getLogger(__name__)

TOPICS = ("calls", "bids", "routing_decisions", "compliance")
_MAX_ID = 64


@dataclass(eq=False)
class Subscription:
    """One listener: its topics, its tenant filter and where its messages go."""

    topics: set[str]
    deliver: Callable[[Message], None]
    buyer_id: str | None = None
    publisher_id: str | None = None
    sent: int = field(default=0)

    def wants(self, topic: str, message: Message) -> bool:
        if topic not in self.topics:
            return False
        if self.buyer_id is not None and message.get("buyer_id") != self.buyer_id:
            return False
        return self.publisher_id is None or message.get("publisher_id") == self.publisher_id


class EventHub:
    """In-process fan-out of events to subscribers (WebSocket connections)."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self.published = 0

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, subscription: Subscription) -> Callable[[], None]:
        """Start delivering to ``subscription``; returns the function that stops it."""
        self._subscriptions.append(subscription)

        def unsubscribe() -> None:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

        return unsubscribe

    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` (a JSON-able dict) on ``topic`` to every subscriber that wants it."""
        self.published += 1
        if not self._subscriptions:
            return
        message = {"topic": topic, **message}
        for subscription in tuple(self._subscriptions):
            if subscription.wants(topic, message):
                subscription.sent += 1
                subscription.deliver(message)


EVENT_HUB = web.AppKey("event_hub", EventHub)


def parse_topics(raw: Any, name: str = "topics") -> set[str]:
    """A list (or comma-separated text) of known topics; raises ``ValueError`` naming the unknown ones."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, Collection) or isinstance(items, str | bytes):
        raise ValueError(f"{name}: expected a list of topics")
    topics = {str(item).strip() for item in items if str(item).strip()}
    unknown = sorted(topics - set(TOPICS))
    if unknown:
        raise ValueError(f"unknown topics {unknown}; known: {', '.join(TOPICS)}")
    if not topics:
        raise ValueError("no topic given")
    return topics


def _tenant(request: web.Request, name: str) -> str | None:
    value = request.query.get(name) or None
    if value is not None and len(value) > _MAX_ID:
        raise invalid_parameter(name, f"at most {_MAX_ID} characters")
    return value


@require("calls:read")
async def events_socket(request: web.Request) -> web.WebSocketResponse:
    """``/ws/v1/events``: a live feed of the chosen topics (a buyer's or seller's token narrows it to its own)."""
    hub = request.config_dict.get(EVENT_HUB)
    if hub is None:
        raise ProblemError(404, "live events are not enabled on this node")
    try:
        topics = parse_topics(request.query["topics"]) if "topics" in request.query else set(TOPICS)
    except ValueError as exc:
        raise invalid_parameter("topics", str(exc)) from None
    tenant = tenant_filter(request)
    if tenant:
        buyer_id, publisher_id = tenant.get("buyer_id"), tenant.get("publisher_id")
    else:
        buyer_id, publisher_id = _tenant(request, "buyer_id"), _tenant(request, "publisher_id")
    async with open_socket(request) as ws:
        outbox = Outbox(ws)
        subscription = Subscription(topics, outbox.send, buyer_id, publisher_id)
        unsubscribe = hub.subscribe(subscription)
        try:
            async with outbox.running():
                outbox.send({"type": "subscribed", "topics": sorted(topics)})
                async for frame in ws:
                    if frame.type is WSMsgType.TEXT:
                        outbox.send(_command(subscription, frame.data))
        finally:
            unsubscribe()
            if outbox.dropped:
                log.warning("events socket dropped %d messages (slow reader)", outbox.dropped)
    return ws


def _command(subscription: Subscription, data: str) -> Message:
    try:
        payload = json.loads(data)
    except ValueError:
        return {"type": "error", "detail": "not JSON"}
    if not isinstance(payload, dict) or payload.get("type") != "subscribe":
        return {"type": "error", "detail": 'expected {"type": "subscribe", "topics": [...]}'}
    try:
        subscription.topics = parse_topics(payload.get("topics"))
    except ValueError as exc:
        return {"type": "error", "detail": str(exc)}
    return {"type": "subscribed", "topics": sorted(subscription.topics)}


def events_routes() -> list[web.RouteDef]:
    """Routes for the root application."""
    return [web.get("/ws/v1/events", events_socket)]
