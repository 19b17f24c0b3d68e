"""The SIP driver: where bytes, time and the CallFlow's commands meet the sans-IO core, through one pump.

    datagram / stream message / timer / unreachable peer / command (reject, dial, cancel, hangup, release)
      -> the core (B2BUA over SipEndpoint), stamped with ``clock.monotonic()``
      -> pump(): drain core events -> on_event (the CallFlow) -> flush datagrams to the sockets -> re-arm one timer

The core never reads a clock and never touches a socket; the sockets (:class:`dce.sip.transport.SipTransport`)
never call the core. A command issued while a pump runs (the CallFlow rejecting inside ``on_event``) changes the
core at once and the running pump loops once more instead of nesting. Tests drive this same class with a
:class:`dce.clock.VirtualClock`, fake sockets and a fake timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from dce.clock import Clock
from dce.exchange.config import SipConfig
from dce.sip.b2bua import B2BUA, Call, CallEvent
from dce.sip.endpoint import Observer, SipEndpoint, is_ip_literal
from dce.sip.flood import FloodGuard
from dce.sip.message import uri_hostport
from dce.sip.outbound_auth import OutboundCredentials
from dce.sip.session_timer import TimerPolicy
from dce.sip.tls import TlsSettings
from dce.sip.transaction import TimerConfig
from dce.sip.transport import Address, SipTransport, TcpLimits
from dce.sip.websocket import WsFlows, WsLimits, WsTransport

log = logging.getLogger(__name__)


class Sockets(Protocol):
    """What the driver sends through and listens with (the asyncio adapter; a recorder in tests)."""

    def send(self, data: bytes, transport: str, addr: Address) -> None: ...
    def expect_tls_name(self, addr: Address, name: str) -> None: ...
    async def listen_udp(self, host: str, port: int) -> Address: ...
    async def listen_tcp(self, host: str, port: int) -> Address: ...
    async def listen_tls(self, host: str, port: int) -> Address: ...
    async def close(self) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """Schedules the one timer, on the clock's monotonic time (the event loop; a fake in tests)."""

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable: ...


class SipDriver:
    """Owns the SIP core and its sockets; every input and every command ends in :meth:`pump`."""

    def __init__(self, core: B2BUA, *, clock: Clock, sockets: Sockets | None = None, timers: Timers | None = None,
                 tcp: TcpLimits | None = None, tls: TlsSettings | None = None,
                 on_error: Callable[[str], None] | None = None, flood: FloodGuard | None = None,
                 websocket: WsLimits | None = None) -> None:
        """``sockets`` and ``timers`` default to a :class:`SipTransport` (with ``tcp`` limits and ``tls``
        settings) and the running loop. ``websocket``: the limits of the SIP WebSocket connections
        (:attr:`websockets`, which the side API's ``/ws/sip`` opens and the sockets send ``ws``/``wss`` through).

        ``on_error`` counts drops by a fixed reason (the ``sip_dropped`` metric). ``flood``, when given, screens
        every message before the core reads it and every TCP connection before it is accepted.
        """
        self.core = core
        self.clock = clock
        self.on_error = on_error or (lambda reason: None)
        self.flood = flood
        self._on_event: Callable[[CallEvent], None] | None = None  # the CallFlow's entry point (deliver_to)
        admit = self.admits if flood is not None else None
        self.websockets = WsFlows(self, websocket, admit_peer=admit, on_error=self.on_error)
        self.sockets: Sockets = sockets if sockets is not None else SipTransport(
            self, on_error=self.on_error, tcp=tcp, tls=tls, admit_peer=admit, websockets=self.websockets)
        self._timers: Timers = timers if timers is not None else asyncio.get_running_loop()
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self._closed = False  # no timer is armed once closed
        self._pumping = False
        self._again = False
        self.addresses: dict[str, Address] = {}  # transport -> the first address bound for it
        self._wall_checked_at = float("-inf")  # when the core's wall-clock offset was last read
        self._endpoint: SipEndpoint | None = getattr(core, "endpoint", None)  # (test doubles of the core have none)

    @classmethod
    def from_config(cls, config: SipConfig, *, clock: Clock, observer: Observer | None = None,
                    on_error: Callable[[str], None] | None = None) -> SipDriver:
        """The exchange's driver: a B2BUA over an endpoint with ``config``'s timers, identity and edge limits."""
        timers = TimerConfig(t1=config.t1_ms / 1000, t2=config.t2_ms / 1000, t4=config.t4_ms / 1000)
        endpoint = SipEndpoint(local={}, timers=timers, user_agent=config.user_agent, observer=observer,
                               max_message_bytes=config.max_message_bytes)
        session_timers = (TimerPolicy(config.session_expires_s, config.min_se_s) if config.session_timers
                          else None)
        core = B2BUA(endpoint, max_calls_per_source=config.max_calls_per_source,
                     retry_after_s=config.source_retry_after_s, session_timers=session_timers,
                     no_response_s=config.no_response_timeout_s or None)
        tcp = TcpLimits(idle_timeout_s=config.tcp_idle_timeout_s, header_timeout_s=config.tcp_header_timeout_s,
                        max_connections=config.tcp_max_connections,
                        max_connections_per_source=config.tcp_max_connections_per_source,
                        max_message_bytes=config.max_message_bytes, keepalive_s=config.tcp_keepalive_s,
                        keepalive_timeout_s=config.tcp_keepalive_timeout_s)
        flood = config.flood
        guard = FloodGuard(requests_per_window=flood.requests_per_window, window_s=flood.window_s,
                           ban_s=flood.ban_s, strikes_to_ban=flood.strikes_to_ban,
                           strike_window_s=flood.strike_window_s, max_sources=flood.max_sources,
                           trusted=flood.trusted) if flood.enabled else None
        t = config.tls
        tls = TlsSettings(cert_file=t.cert_file, key_file=t.key_file, client_ca_file=t.client_ca_file,
                          verify_clients=t.verify_clients, ca_file=t.ca_file, verify_server=t.verify_server)
        w = config.websocket
        websocket = WsLimits(max_connections=w.max_connections, max_connections_per_source=w.max_connections_per_source,
                             max_message_bytes=config.max_message_bytes,
                             first_message_timeout_s=w.first_message_timeout_s, idle_timeout_s=w.idle_timeout_s,
                             ping_interval_s=w.ping_interval_s)
        return cls(core, clock=clock, tcp=tcp, tls=tls, on_error=on_error, flood=guard, websocket=websocket)

    def deliver_to(self, on_event: Callable[[CallEvent], None]) -> None:
        """Hand the core's events to ``on_event`` (the CallFlow) from now on; those already waiting go at once."""
        self._on_event = on_event
        self.pump()

    # -- lifetime --------------------------------------------------------------------------------------
    async def open(self, endpoints: Iterable[tuple[str, str, int]], *, public_address: str | None = None) -> None:
        """Listen on every ``(transport, host, port)``; our Via and Contact name each transport's first address
        (its host replaced by ``public_address`` when set): an IPv4 one where there is one, and the first IPv6
        one for IPv6 peers. A UDP one is required. On failure nothing stays open.
        """
        endpoint = self.core.endpoint
        local, local6 = endpoint.local, endpoint.local6
        listeners = {"udp": self.sockets.listen_udp, "tcp": self.sockets.listen_tcp}
        try:
            for kind, host, port in endpoints:
                listen = listeners.get(kind) or self.sockets.listen_tls
                bound = await listen(host, port)
                self.addresses.setdefault(kind, bound)
                sent_by = (public_address or bound[0], bound[1])
                if ":" in bound[0]:
                    local6.setdefault(kind, sent_by)
                    local.setdefault(kind, sent_by)
                elif kind not in local or ":" in local[kind][0]:
                    local[kind] = sent_by
            if "udp" not in local:  # the configuration guarantees one (sip.listen)
                raise ValueError("at least one udp: SIP listen address is required")
        except BaseException:
            await self.close()
            raise

    def serve_websockets(self, transport: WsTransport, bound: Address, *, public_address: str | None = None) -> None:
        """SIP over WebSocket is served on the side API's listener ``bound`` (``wss`` when it has TLS): our Via
        and Contact toward WebSocket peers name it (its host replaced by ``public_address`` when set)."""
        sent_by = (public_address or bound[0], bound[1])
        endpoint = self.core.endpoint
        (endpoint.local6 if ":" in bound[0] else endpoint.local)[transport] = sent_by
        endpoint.local.setdefault(transport, sent_by)

    async def close(self) -> None:
        """Cancel the timer and close every socket."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        await self.sockets.close()

    def hang_up_all(self, reason: str) -> None:
        """End every call in progress (shutdown): BYE when answered, else CANCEL and 480; events pumped at once."""
        now = self.clock.monotonic()
        for call in list(self.core.calls.values()):
            self.core.hangup(call, now, reason=reason)
        self.pump()

    async def settle_dials(self, grace_s: float, poll_s: float = 0.02) -> None:
        """Keep the sockets open (at most ``grace_s``) until every outbound INVITE has its final response.

        A leg CANCELled at shutdown still owes us its 487, which its transaction must ACK: closing at once would
        leave the callee retransmitting into a closed port.
        """
        endpoint = self.core.endpoint
        deadline = self.clock.monotonic() + grace_s
        while endpoint.invites_awaiting_final() and self.clock.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        if left := endpoint.invites_awaiting_final():
            log.warning("%d outbound INVITEs had no final response by shutdown", left)

    # -- inputs (from the sockets and the timer) -------------------------------------------------------
    def receive(self, data: bytes, transport: str, addr: Address, *, stream: bool = False) -> None:
        """One datagram, or one framed stream message, from ``addr``; a banned source's or a scanner's is
        dropped unread and unanswered."""
        now = self.clock.monotonic()
        if self.flood is not None and (drop := self.flood.screen(data, addr[0], now)) is not None:
            self.on_error(drop)
            return
        if self.core.admission is not None and now >= self._wall_checked_at + 1.0:
            # digest nonces carry wall time: the core's offset is kept current (read once a second at most)
            self._wall_checked_at = now
            self.core.wall_offset = self.clock.now().timestamp() - now
        try:
            self.core.receive(data, transport, addr, now, stream=stream)
        except Exception:  # a core bug must not kill the transport
            log.exception("SIP core failed on a message from %s", addr)
            self.on_error("core_exception")
        self.pump()

    def admits(self, host: str) -> bool:
        """Whether a TCP connection from ``host`` may be accepted (False while it is banned)."""
        return self.flood is None or not self.flood.is_banned(host, self.clock.monotonic())

    def transport_error(self, transport: str, addr: Address, reason: str = "") -> None:
        """Nothing can reach ``addr`` (e.g. a refused TCP connect, a TLS certificate refused): its transactions
        fail now, with ``reason``."""
        self._unreachable(transport, addr, reason)
        self.pump()

    def connection_closed(self, transport: str, addr: Address, reason: str) -> None:
        """A WebSocket connection ended (RFC 7118 §5.3: the binding is the connection): the registrar's bindings
        made over it go, its pending transactions fail, and calls with a leg on it are hung up."""
        now = self.clock.monotonic()
        core = self.core
        registrar = getattr(core, "registrar", None)
        if registrar is not None:
            registrar.drop_flow(transport, addr)
        self._unreachable(transport, addr, reason)
        for call in list(getattr(core, "calls", {}).values()):
            legs = (call.a, call.b)
            if any(leg is not None and leg.dialog is not None and leg.dialog.transport == transport
                   and leg.dialog.flow == addr for leg in legs):
                core.hangup(call, now, reason=reason)
        self.pump()

    def handle_timer(self) -> None:
        """The timer fired: run what is due."""
        self._timer = self._timer_at = None
        try:
            self.core.handle_timer(self.clock.monotonic())
        except Exception:
            log.exception("SIP core failed handling a timer")
        self.pump()

    # -- commands (from the CallFlow) ------------------------------------------------------------------
    def reject(self, call: Call, status: int, *, reason_header: str | None = None) -> None:
        """Answer the caller with a final failure and end the call."""
        self.core.reject(call, status, self.clock.monotonic(), reason_header=reason_header)
        self.pump()

    def dial(self, call: Call, destination: str, *, ring_timeout: float, max_duration: float | None,
             next_hop: tuple[str, str, int] | None = None, credentials: OutboundCredentials | None = None) -> None:
        """INVITE ``destination`` for the caller (raises ValueError, sending nothing, on an unreadable offer), to
        ``next_hop`` when given (RFC 3263, resolved by the CallFlow), answering one 401/407 with ``credentials``."""
        if next_hop is not None and next_hop[0] == "tls" and not is_ip_literal(
                host := uri_hostport(destination)[0].strip("[]")):
            self.sockets.expect_tls_name((next_hop[1], next_hop[2]), host)
        leg = self.core.dial(call, destination, self.clock.monotonic(), ring_timeout=ring_timeout,
                             max_duration=max_duration, next_hop=next_hop, credentials=credentials)
        if leg is not None and self.flood is not None and is_ip_literal(leg.txn.addr[0]):
            self.flood.trust_peer(leg.txn.addr[0])  # the buyer's own requests (BYE, re-INVITE) never get it banned
        self.pump()

    def fork(self, call: Call, destinations: list[tuple[str, tuple[str, str, int] | None]], *, ring_timeout: float,
             max_duration: float | None) -> None:
        """INVITE every (destination, next hop) at once; the first to answer is bridged, the others are cancelled."""
        self.core.fork(call, destinations, self.clock.monotonic(), ring_timeout=ring_timeout,
                       max_duration=max_duration)
        self.pump()

    def cancel(self, call: Call, *, reason: str) -> None:
        """Stop ringing the current B leg; the caller keeps waiting."""
        self.core.cancel_dial(call, self.clock.monotonic(), reason=reason)
        self.pump()

    def hangup(self, call: Call, *, reason: str) -> None:
        """End the call from our side: BYE both legs when answered, else CANCEL B and 480 A."""
        self.core.hangup(call, self.clock.monotonic(), reason=reason)
        self.pump()

    def sdp_ready(self, call: Call, token: int, body: bytes) -> None:
        """The media plane's rewrite of a held SDP body (``SdpNeeded``): the message waiting for it goes out."""
        self.core.sdp_ready(call, token, body, self.clock.monotonic())
        self.pump()

    def release(self, call: Call) -> None:
        """The call is recorded: unlink it from the transactions that outlive it (nothing to send or time, so no
        pump)."""
        self.core.release(call)

    # -- the pump --------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Drain core events to ``on_event``, send what the core queued, re-arm the timer; loop until quiet.

        A destination the sockets refuse is reported to the core as unreachable (once per pump) and the loop
        goes round again for what that produced. Called while pumping, it only asks the running pump to loop.
        """
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        reported: frozenset[tuple[str, Address]] = frozenset()  # once per input and command: nothing allocated
        try:
            while True:
                self._again = False
                self._dispatch()
                if (refused := self._flush()) and (refused := refused - reported):
                    for transport, addr in refused:
                        self._unreachable(transport, addr, "cannot send")
                    reported = reported | refused
                elif not self._again:
                    break
            self._arm()
        finally:
            self._pumping = False

    def _dispatch(self) -> None:
        on_event = self._on_event
        if on_event is None:  # no CallFlow yet: events wait in the core
            return
        next_event = self.core.next_event
        while (event := next_event()) is not None:
            try:
                on_event(event)
            except Exception:
                log.exception("the CallFlow failed handling %s", type(event).__name__)

    def _flush(self) -> set[tuple[str, Address]] | None:
        """Send each queued datagram on its own; returns the destinations the sockets refused (None: none)."""
        refused: set[tuple[str, Address]] | None = None
        endpoint = self._endpoint
        if endpoint is not None and endpoint.aliases:  # RFC 5923 aliases learnt now: before requests using them
            alias = getattr(self.sockets, "alias", None)
            for transport, name, flow in endpoint.take_aliases():
                if alias is not None:
                    alias(transport, name, flow)
        send = self.sockets.send
        for data, transport, addr in self.core.datagrams_to_send():
            try:
                send(data, transport, addr)
            except Exception as exc:  # e.g. an address the socket cannot take: that destination only
                log.warning("cannot send to %s over %s: %s", addr, transport, exc)
                self.on_error("send_failed")
                if refused is None:
                    refused = set()
                refused.add((transport, addr))
        return refused

    def _unreachable(self, transport: str, addr: Address, reason: str = "") -> None:
        try:
            self.core.transport_error(transport, addr, self.clock.monotonic(), reason)
        except Exception:
            log.exception("SIP core failed handling a transport error")

    def _arm(self) -> None:
        deadline = self.core.next_timer()
        if deadline == self._timer_at or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._timers.call_at(deadline, self.handle_timer)
