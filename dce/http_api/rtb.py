"""Inbound RTB pings: ``POST /api/v1/rtb/{campaign_key}/ping`` answers a publisher with a bid (or a decline).

The auction itself is ``dce.bidding.inbound.InboundPings``; this module only adapts HTTP to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from dce.bidding.inbound import InboundPings
from dce.http_api.describe import FREE_JSON, describe
from dce.http_api.inputs import read_json
from dce.http_api.keys import wall_now
from dce.http_api.problems import ProblemError, problem
from dce.routing.model import Campaign


@dataclass(frozen=True, slots=True)
class RtbPingService:
    """What the endpoint needs: the auction and a campaign lookup by its public key (from memory)."""

    pings: InboundPings
    campaign_by_key: Callable[[str], Campaign | None]


RTB_PINGS = web.AppKey("rtb_pings", RtbPingService)


@describe(body_content=FREE_JSON, problems=(404,))
async def rtb_ping(request: web.Request) -> web.Response:
    """Run the auction for a would-be call and answer the winning bid, reserved for the caller's CID."""
    service = _service(request)
    if service is None:
        return problem(404, "real-time bidding is not enabled on this node")
    campaign = service.campaign_by_key(request.match_info["key"])
    if campaign is None:
        return problem(404, "no campaign has this key")
    try:
        payload = await read_json(request)
    except ProblemError:
        payload = None  # answered as a malformed ping (bidAmount 0 with a reason), as buyers' platforms expect
    answer = await service.pings.handle(campaign, payload, wall_now(request))
    return web.json_response(answer)


def _service(request: web.Request) -> RtbPingService | None:
    """``request.config_dict.get(RTB_PINGS)`` without building a ChainMapProxy and raising KeyError per app."""
    for app in reversed(request.match_info.apps):  # the route's app first, then its parents, as config_dict
        service = app.get(RTB_PINGS)
        if service is not None:
            return service
    return None


def rtb_routes() -> list[web.RouteDef]:
    """Routes for the /api/v1 sub-application."""
    return [web.post("/rtb/{key}/ping", rtb_ping)]
