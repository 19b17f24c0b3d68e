"""Live auctions over HTTP: the ``/ws/v1/bidding`` WebSocket and ``POST /api/v1/bids``.

WebSocket protocol (JSON text frames). Connect with ``?buyer_id=B`` to hear only the calls B may bid on (and to
bid without naming yourself); without it, every offer is heard and each bid names its ``buyer_id``.

    server -> {"type": "subscribed", "buyer_id": ...}                    once, when the connection is ready
    server -> {"type": "call.offered", "call_id", "campaign_id", "buyer_ids", "reserve", "window_ms",
               "closes_at", "caller": {...}}
    client -> {"type": "bid", "call_id", "amount": "12.50", "buyer_id"?, "request_id"?}
    server -> {"type": "bid.result", "status", "call_id", "amount", "high_bid", "request_id"?}
    server -> {"type": "auction.closed", "call_id", "winner", "amount", "bids"}
    server -> {"type": "error", "detail", "request_id"?}                  an unreadable message

``POST /api/v1/bids {"call_id", "amount", "buyer_id"}`` places the same bid over HTTP: 202 when accepted; 404 for
a call with no open auction; 409 once its window closed; 422 naming the field for a malformed amount, an amount
below the reserve, or a buyer with no eligible target. (The buyer comes from the token once auth lands.)
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from aiohttp import WSMsgType, web
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError

from dce.bidding.live import BidAnswer, BidStatus, LiveBidding, Message
from dce.http_api.describe import Param, describe
from dce.http_api.inputs import ParameterBody, documented, first_problem, invalid_value, read_json
from dce.http_api.keys import wall_now
from dce.http_api.money import Money
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.problems import ProblemError, invalid_parameter
from dce.http_api.ws_outbox import Outbox, open_socket

log = logging.getLogger(__name__)

LIVE_BIDDING = web.AppKey("live_bidding", LiveBidding)
QUEUE_LIMIT = 1024  # messages waiting for one slow WebSocket client before new ones are dropped
_MAX_ID = 64


def _live(request: web.Request) -> LiveBidding:
    live = request.config_dict.get(LIVE_BIDDING)
    if live is None:
        raise ProblemError(404, "live auctions are not enabled on this node")
    return live


def _now(request: web.Request) -> float:
    """The exchange clock's wall time in epoch seconds (what live auctions count in)."""
    return wall_now(request).timestamp()


class BadBid(ValueError):
    """A bid message that cannot be placed; ``field`` names the culprit."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@documented({"type": "string", "minLength": 1, "maxLength": _MAX_ID})
def _read_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise invalid_value("id", f"a non-empty string of at most {_MAX_ID} characters is required")
    return value


class BidIn(ParameterBody):
    """A bid, over HTTP or as a WebSocket message (whose ``type`` and ``request_id`` are not the bid's)."""

    model_config = ConfigDict(extra="ignore")
    ABSENT_IS_NULL = True

    call_id: Annotated[str, BeforeValidator(_read_id)]
    buyer_id: Annotated[str, BeforeValidator(_read_id), Field(description="a buyer's token names the bidder")]
    amount: Money


def place(live: LiveBidding, payload: Any, default_buyer: str | None, now: float) -> BidAnswer:
    """Read a bid message (:class:`BidIn`; ``default_buyer`` when it names none) and place it; raise ``BadBid``
    naming the first bad field when it is unreadable."""
    if not isinstance(payload, dict):
        raise BadBid("body", "a JSON object is required")
    try:
        bid = BidIn.model_validate({"buyer_id": default_buyer, **payload})
    except ValidationError as exc:
        raise BadBid(*first_problem(exc)) from None
    return live.bid(bid.call_id, bid.buyer_id, bid.amount, now)


_REFUSALS = {
    BidStatus.UNKNOWN_CALL: (404, None, "no open auction for this call"),
    BidStatus.WINDOW_CLOSED: (409, None, "the auction window has closed"),
    BidStatus.BELOW_RESERVE: (422, "amount", "below the campaign's reserve"),
    BidStatus.MALFORMED: (422, "amount", "not a non-negative amount"),
    BidStatus.NOT_ELIGIBLE: (422, "buyer_id", "this buyer has no eligible target for the call"),
}


@describe(body=BidIn, status=202, problems=(404, 409))
@require("bids:create")
async def post_bid(request: web.Request) -> web.Response:
    """Place a bid on a call in a live auction (a buyer's token names the bidder)."""
    live = _live(request)
    payload = await read_json(request)
    try:
        bidder = tenant_filter(request).get("buyer_id")
        if bidder is not None and isinstance(payload, dict):
            payload = {**payload, "buyer_id": bidder}
        answer = place(live, payload, bidder, _now(request))
    except BadBid as exc:
        raise invalid_parameter(exc.field, exc.detail) from None
    if answer.status is BidStatus.ACCEPTED:
        return web.json_response(answer.to_json(), status=202)
    status, field, detail = _REFUSALS[answer.status]
    if field is not None:
        raise invalid_parameter(field, detail)
    raise ProblemError(status, detail, call_id=answer.call_id)


class _Connection:
    """One bidder's WebSocket: what it may hear of the auction room goes to its bounded outbox."""

    def __init__(self, ws: web.WebSocketResponse, buyer_id: str | None) -> None:
        self.outbox = Outbox(ws, QUEUE_LIMIT)
        self.send = self.outbox.send
        self.buyer_id = buyer_id
        self.offered: set[str] = set()  # calls this connection was offered (it hears how they close)

    def hear(self, message: Message) -> None:
        kind = message["type"]
        if self.buyer_id is not None:
            if kind == "call.offered":
                if self.buyer_id not in message["buyer_ids"]:
                    return
                self.offered.add(message["call_id"])
            elif kind == "auction.closed":
                if message["call_id"] not in self.offered:
                    return
                self.offered.discard(message["call_id"])
        self.send(message)


@describe("Live auctions over a WebSocket (JSON text frames)",
          query=(Param("buyer_id", "hear only this buyer's calls"),), status=101, content_type=None, problems=(404,))
@require("bids:create")
async def bidding_socket(request: web.Request) -> web.WebSocketResponse:
    """``/ws/v1/bidding``: hear offers, place bids, hear who won (a buyer's token names the bidder)."""
    live = _live(request)
    buyer_id = tenant_filter(request).get("buyer_id") or request.query.get("buyer_id") or None
    if buyer_id is not None and len(buyer_id) > _MAX_ID:
        raise invalid_parameter("buyer_id", f"at most {_MAX_ID} characters")
    async with open_socket(request) as ws:
        connection = _Connection(ws, buyer_id)
        unsubscribe = live.subscribe(connection.hear)
        try:
            async with connection.outbox.running():
                connection.send({"type": "subscribed", "buyer_id": buyer_id})
                async for frame in ws:
                    if frame.type is WSMsgType.TEXT:
                        connection.send(_answer(live, frame.data, buyer_id, _now(request)))
        finally:
            unsubscribe()
            if connection.outbox.dropped:
                log.warning("bidding socket for %s dropped %d messages (slow reader)", buyer_id,
                            connection.outbox.dropped)
    return ws


def _answer(live: LiveBidding, data: str, buyer_id: str | None, now: float) -> Message:
    try:
        payload = json.loads(data)
    except ValueError:
        return {"type": "error", "detail": "not JSON"}
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or payload.get("type") != "bid":
        answer: Message = {"type": "error", "detail": 'expected {"type": "bid", ...}'}
    else:
        try:
            answer = place(live, payload, buyer_id, now).to_json()
        except BadBid as exc:
            answer = {"type": "error", "detail": str(exc)}
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        answer["request_id"] = request_id
    return answer


def live_bidding_api_routes() -> list[web.RouteDef]:
    """Routes for the /api/v1 sub-application."""
    return [web.post("/bids", post_bid)]


def live_bidding_ws_routes() -> list[web.RouteDef]:
    """Routes for the root application."""
    return [web.get("/ws/v1/bidding", bidding_socket)]
