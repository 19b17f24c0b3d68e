"""``/api/v1/bids``: the bid log (every bid of every auction, with its outcome and reject reason)."""

from __future__ import annotations

from aiohttp import web

from dce.db.bid_repository import list_bids
from dce.http_api.calls import BID_MONEY, json_row
from dce.http_api.describe import describe, id_params, money_out, page_of
from dce.http_api.keys import ENGINE
from dce.http_api.paging import page, page_params
from dce.http_api.permissions import require, tenant_filter
from dce.http_api.read_cache import CALLS_CACHE, cached, request_key

routes = web.RouteTableDef()


@describe("A page of the bid log, newest first", query=page_params(*id_params("call_id", "target_id", "buyer_id")),
          response_schema=page_of({"amount": money_out("the bid")}))
@routes.get("/bids")
@require("bids:read")
async def list_bid_log(request: web.Request) -> web.Response:
    """A page of bids, newest first: ``?limit=50&offset=0&call_id=&target_id=&buyer_id=`` (a buyer sees its own;
    ``amount`` a decimal string of currency units);
    served from the app's ``CALLS_CACHE`` (a page may be up to its ttl, 1 s, old)."""
    tenant = tenant_filter(request)
    limit, offset = page(request)

    async def compute() -> web.Response:
        rows, total = await list_bids(request.config_dict[ENGINE], limit=limit, offset=offset,
                                      call_id=request.query.get("call_id") or None,
                                      target_id=request.query.get("target_id") or None,
                                      buyer_id=tenant.get("buyer_id") or request.query.get("buyer_id") or None)
        return web.json_response({"items": [json_row(row, BID_MONEY) for row in rows], "total": total, "limit": limit,
                                  "offset": offset})

    return await cached(request, CALLS_CACHE, request_key(request, tenant), compute)
