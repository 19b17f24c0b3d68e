"""``/ws/sip``: SIP over WebSocket (RFC 7118) for browser agents, ``wss`` when the listener has TLS.

aiohttp speaks the WebSocket protocol; this handler only admits a connection and moves messages between it and the
exchange's SIP transport (:class:`dce.sip.websocket.WsFlows`). A client must ask for the ``sip`` subprotocol
(``Sec-WebSocket-Protocol: sip``); a request without it, or no WebSocket upgrade at all, is answered 400 before any
upgrade, and a source over the connection limits 503 (a banned one 403). Each WebSocket message (text or binary)
is one SIP message; what the exchange sends goes as a text frame (binary when it is not UTF-8).

Bounds, each ending the connection with a close code that says why: a message over ``max_message_bytes`` (1009),
text that is not UTF-8 (1007), a broken frame (1002), no SIP message within ``first_message_timeout_s`` of
opening or ``idle_timeout_s`` since the last one (1008), no pong to our ping (``ping_interval_s``), a peer that
does not read what we send (1008). The app closing (shutdown) closes them with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from dce.http_api.describe import describe
from dce.http_api.permissions import SIP_WEBSOCKET_PATH
from dce.http_api.problems import ProblemError
from dce.http_api.ws_outbox import open_socket
from dce.sip.websocket import SUBPROTOCOL, WsFlow, WsFlows, WsLimits

log = logging.getLogger(__name__)

SIP_WEBSOCKETS = web.AppKey("sip_websockets", WsFlows)


class _Connection:
    """Writes what the SIP core sends, in order, from one task; a peer that lets ``send_queue`` messages pile up
    is closed."""

    def __init__(self, ws: web.WebSocketResponse, flows: WsFlows) -> None:
        self.ws = ws
        self.flows = flows
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(flows.limits.send_queue)
        self.closing = False

    def send(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.flows.on_error("ws_not_reading")
            self.close(WSCloseCode.POLICY_VIOLATION, "not reading")

    def close(self, code: int, why: str) -> None:
        """Close from outside the receive loop (which then ends)."""
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().create_task(self.ws.close(code=code, message=why.encode()))

    async def write(self) -> None:
        ws = self.ws
        while True:
            data = await self.queue.get()
            opcode = WSMsgType.TEXT if data.isascii() or _is_utf8(data) else WSMsgType.BINARY
            try:
                await ws.send_frame(data, opcode)
            except (ConnectionError, RuntimeError) as exc:  # closed under us: the receive loop ends it
                log.debug("SIP WebSocket write failed: %s", exc)
                return


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@describe("SIP over WebSocket (RFC 7118): subprotocol sip, one SIP message per WebSocket message", status=101,
          content_type=None, problems=(400, 403, 404, 503))
async def sip_socket(request: web.Request) -> web.StreamResponse:
    """``/ws/sip``: a SIP transport (``WS``, or ``WSS`` over TLS) for agents' browsers; SIP digest is the auth."""
    flows = request.config_dict.get(SIP_WEBSOCKETS)
    if flows is None:
        raise ProblemError(404, "SIP over WebSocket is not enabled on this node (sip.websocket.enabled)")
    limits = flows.limits
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=limits.ping_interval_s,
                               max_msg_size=limits.max_message_bytes, compress=False)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise ProblemError(400, "expected a WebSocket upgrade (GET with Connection: Upgrade, Upgrade: websocket)")
    if ready.protocol != SUBPROTOCOL:
        raise ProblemError(400, "the WebSocket subprotocol 'sip' is required (Sec-WebSocket-Protocol: sip, "
                                "RFC 7118)")
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if not peer:
        raise ProblemError(400, "the connection is gone")
    address = (peer[0], peer[1])
    if (why := flows.refusal(address)) is not None:
        flows.on_error("flood_banned" if why == "banned" else "ws_limit")
        if why == "banned":
            raise ProblemError(403, "this address is banned for flooding")
        raise ProblemError(503, why)
    async with open_socket(request, ws=ws):
        connection = _Connection(ws, flows)
        try:
            flow = flows.open("wss" if request.secure else "ws", address, connection)
        except ValueError as exc:  # taken between the check and the upgrade
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=str(exc).encode())
            return ws
        writer = asyncio.create_task(connection.write())
        reason = "WebSocket closed"
        try:
            reason = await _serve(ws, flows, flow, limits)
        finally:
            connection.closing = True
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            flows.closed(flow, reason)
    return ws


async def _serve(ws: web.WebSocketResponse, flows: WsFlows, flow: WsFlow, limits: WsLimits) -> str:
    """Hand each message to the SIP transport until the connection ends; why it ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.first_message_timeout_s
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                message = await ws.receive()
        except TimeoutError:
            first = flow.messages == 0
            why = (f"no SIP message within {limits.first_message_timeout_s:g} s" if first
                   else f"idle: no SIP message for {limits.idle_timeout_s:g} s")
            flows.on_error("ws_first_message_timeout" if first else "ws_idle")
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=why.encode())
            return why
        kind = message.type
        if kind is WSMsgType.TEXT:
            flows.received(flow, message.data.encode())
        elif kind is WSMsgType.BINARY:
            flows.received(flow, message.data)
        elif kind is WSMsgType.ERROR:  # aiohttp closed it with the code that says why (1002, 1007, 1009)
            return f"WebSocket error {ws.close_code}: {message.data}"
        else:  # CLOSE, CLOSING, CLOSED
            return f"WebSocket closed ({ws.close_code})"
        deadline = loop.time() + limits.idle_timeout_s


def sip_ws_routes() -> list[web.RouteDef]:
    """Routes for the root application."""
    return [web.get(SIP_WEBSOCKET_PATH, sip_socket)]
