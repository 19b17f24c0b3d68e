"""rtpengine's ng control protocol: a sans-IO client core and its asyncio UDP adapter.

A request is ``<cookie> <bencoded dict>`` in one datagram; the reply echoes the cookie. The core numbers
requests, picks an instance (weighted, skipping instances marked down), sends the datagram again at each
``retransmit_s`` with the same cookie (rtpengine answers a repeated cookie from its cache, so an offer is not
done twice) and, when an instance has not answered within ``timeout_s``, marks it down for ``down_s`` and tries
the request on the next instance, unless the request is pinned to one (an ``answer``/``delete`` must reach the
instance that holds the call). Bencode is the ``bencode.py`` library (``bencodepy``): rtpengine writes dict keys
in insertion order, which strict decoders refuse.

Core: ``request(command, now)`` -> ``datagrams_to_send()`` / ``next_timer()`` / ``handle_timer(now)`` /
``receive(data, addr, now)`` -> ``next_event()`` (:class:`NgReply` or :class:`NgFailure`). No clock, no socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bencodepy

__all__ = [
    "NgClient",
    "NgError",
    "NgFailure",
    "NgInstance",
    "NgReply",
    "NgTransport",
    "NgUnavailable",
    "parse_instance",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]
_INSTANCE = re.compile(r"^udp:(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]=\s]+):(?P<port>\d{1,5})(?:=(?P<weight>\d+))?$")


class NgError(ValueError):
    """rtpengine answered ``result: error`` (its ``error-reason`` is the message): the request was refused."""


class NgUnavailable(RuntimeError):
    """No rtpengine instance answered in time (or none is configured up)."""


@dataclass(frozen=True, slots=True)
class NgInstance:
    """One rtpengine control address and its weight (share of new calls)."""

    host: str
    port: int
    weight: int = 1

    @property
    def address(self) -> Address:
        return self.host, self.port

    def __str__(self) -> str:
        return f"udp:{self.host}:{self.port}"


def parse_instance(text: str) -> NgInstance:
    """``udp:HOST:PORT[=WEIGHT]`` (HOST an IP address or name; ``[v6]`` bracketed) -> :class:`NgInstance`."""
    match = _INSTANCE.match(text.strip())
    if match is None:
        raise ValueError(f"expected udp:HOST:PORT or udp:HOST:PORT=WEIGHT, got {text!r}")
    port = int(match["port"])
    if not 0 < port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    weight = int(match["weight"]) if match["weight"] is not None else 1
    if weight < 1:
        raise ValueError(f"weight must be at least 1 in {text!r}")
    return NgInstance(match["host"].strip("[]"), port, weight)


@dataclass(frozen=True, slots=True)
class NgReply:
    """Request ``id`` answered (``result`` ok/pong, or a warning) by ``instance``."""

    id: int
    instance: NgInstance
    body: dict[bytes, Any]


@dataclass(frozen=True, slots=True)
class NgFailure:
    """Request ``id`` failed: :class:`NgError` (refused) or :class:`NgUnavailable` (nobody answered)."""

    id: int
    error: NgError | NgUnavailable


@dataclass(slots=True)
class _Pending:
    id: int
    cookie: bytes
    data: bytes
    instance: NgInstance
    pinned: bool
    sent_at: float
    resend_at: float
    give_up_at: float
    tried: set[NgInstance] = field(default_factory=set)


class NgClient:
    """The ng client core. ``rng`` (``random.random``-like) makes the weighted choice testable."""

    def __init__(self, instances: list[NgInstance], *, timeout_s: float = 1.0, retransmit_s: float = 0.25,
                 down_s: float = 10.0, cookie_prefix: str = "", rng: Callable[[], float] = random.random) -> None:
        if not instances:
            raise ValueError("at least one rtpengine instance is required")
        if not 0 < retransmit_s <= timeout_s:
            raise ValueError("need 0 < retransmit_s <= timeout_s")
        self.instances = list(instances)
        self.timeout_s = timeout_s
        self.retransmit_s = retransmit_s
        self.down_s = down_s
        self._prefix = cookie_prefix
        self._rng = rng
        self._next_id = 1
        self._pending: dict[bytes, _Pending] = {}
        self._down_until: dict[NgInstance, float] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[NgReply | NgFailure] = deque()

    # -- inputs ----------------------------------------------------------------------------------------
    def request(self, command: Mapping[str, Any], now: float, *, instance: NgInstance | None = None) -> int:
        """Queue ``command`` (str keys; str/bytes/int/list/dict values) and return its id.

        ``instance``: send it there only (the instance holding the call); else the weighted choice among the
        instances not marked down, failing over on timeout.
        """
        request_id = self._next_id
        self._next_id += 1
        cookie = f"{self._prefix}{request_id}".encode()
        data = cookie + b" " + bencodepy.encode(dict(command))
        target = instance or self._choose(now, set())
        if target is None:
            self._events.append(NgFailure(request_id, NgUnavailable("no rtpengine instance configured")))
            return request_id
        pending = _Pending(request_id, cookie, data, target, instance is not None, now, now, now)
        self._pending[cookie] = pending
        self._send(pending, target, now)
        return request_id

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """A datagram from an instance; unknown cookies (late replies after a failover) are ignored."""
        cookie, _, payload = data.partition(b" ")
        pending = self._pending.get(cookie)
        if pending is None:
            return
        try:
            body = bencodepy.decode(payload)
        except Exception:
            log.warning("rtpengine %s: unreadable reply to %s: %r", pending.instance, cookie.decode(), data[:80])
            return
        if not isinstance(body, dict):
            return
        del self._pending[cookie]
        self._down_until.pop(pending.instance, None)
        result = body.get(b"result")
        if result in (b"ok", b"pong"):
            self._events.append(NgReply(pending.id, pending.instance, body))
        else:
            reason = body.get(b"error-reason", result or b"no result")
            text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
            self._events.append(NgFailure(pending.id, NgError(f"rtpengine {pending.instance}: {text}")))

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due; fail over (or fail) what timed out."""
        for pending in list(self._pending.values()):
            if now >= pending.give_up_at:
                self._timed_out(pending, now)
            elif now >= pending.resend_at:
                self._out.append((pending.data, pending.instance.address))
                pending.resend_at = min(now + self.retransmit_s, pending.give_up_at)

    # -- outputs ---------------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """The earliest retransmission or timeout, or None when nothing is in flight."""
        return min((min(p.resend_at, p.give_up_at) for p in self._pending.values()), default=None)

    def next_event(self) -> NgReply | NgFailure | None:
        return self._events.popleft() if self._events else None

    def is_down(self, instance: NgInstance, now: float) -> bool:
        """Whether ``instance`` timed out less than ``down_s`` ago."""
        return self._down_until.get(instance, float("-inf")) > now

    # -- internals -------------------------------------------------------------------------------------
    def _send(self, pending: _Pending, instance: NgInstance, now: float) -> None:
        pending.instance = instance
        pending.tried.add(instance)
        pending.sent_at = now
        pending.resend_at = now + self.retransmit_s
        pending.give_up_at = now + self.timeout_s
        self._out.append((pending.data, instance.address))

    def _timed_out(self, pending: _Pending, now: float) -> None:
        instance = pending.instance
        if not self.is_down(instance, now):
            log.warning("rtpengine %s: no answer in %.1f s; marked down for %.0f s", instance, self.timeout_s,
                        self.down_s)
        self._down_until[instance] = now + self.down_s
        following = None if pending.pinned else self._choose(now, pending.tried)
        if following is not None:
            self._send(pending, following, now)
            return
        del self._pending[pending.cookie]
        tried = ", ".join(str(i) for i in self.instances if i in pending.tried)
        self._events.append(NgFailure(pending.id, NgUnavailable(f"no answer from rtpengine ({tried})")))

    def _choose(self, now: float, tried: set[NgInstance]) -> NgInstance | None:
        """Weighted choice among untried instances that are up; when all untried ones are down, among those
        (a down mark is a hint, not a ban: with every instance marked down, calls still probe them)."""
        untried = [i for i in self.instances if i not in tried]
        up = [i for i in untried if not self.is_down(i, now)] or untried
        if not up:
            return None
        point = self._rng() * sum(i.weight for i in up)
        for instance in up:
            point -= instance.weight
            if point < 0:
                return instance
        return up[-1]


class NgTransport(asyncio.DatagramProtocol):
    """The asyncio adapter: one unconnected UDP socket, one timer, a future per request."""

    def __init__(self, core: NgClient) -> None:
        self.core = core
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[int, asyncio.Future[NgReply]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def open(cls, instances: list[NgInstance], *, timeout_s: float, retransmit_s: float,
                   down_s: float) -> NgTransport:
        """A client bound to an ephemeral port (IPv4 or IPv6 by the first instance's address)."""
        core = NgClient(instances, timeout_s=timeout_s, retransmit_s=retransmit_s, down_s=down_s,
                        cookie_prefix=secrets.token_hex(4) + "-")
        self = cls(core)
        self._loop = loop = asyncio.get_running_loop()
        family_host = "::" if ":" in instances[0].host else "0.0.0.0"
        await loop.create_datagram_endpoint(lambda: self, local_addr=(family_host, 0))
        return self

    async def call(self, command: Mapping[str, Any], *, instance: NgInstance | None = None) -> NgReply:
        """Send ``command`` and wait for its reply; raises :class:`NgError` or :class:`NgUnavailable`."""
        assert self._loop is not None, "open() first"
        future: asyncio.Future[NgReply] = self._loop.create_future()
        request_id = self.core.request(command, self._loop.time(), instance=instance)
        self._waiting[request_id] = future
        self._flush()
        return await future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self._loop is not None
        self.core.receive(data, (addr[0], addr[1]), self._loop.time())
        self._flush()

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: the timeout decides
        log.debug("rtpengine ng socket: %s", exc)

    def close(self) -> None:
        """Close the socket; requests in flight fail with :class:`NgUnavailable`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(NgUnavailable("rtpengine client closed"))

    def _on_timer(self) -> None:
        self._timer = None
        assert self._loop is not None
        self.core.handle_timer(self._loop.time())
        self._flush()

    def _flush(self) -> None:
        core = self.core
        transport = self._transport
        for data, addr in core.datagrams_to_send():
            if transport is not None:
                transport.sendto(data, addr)
        while (event := core.next_event()) is not None:
            future = self._waiting.pop(event.id, None)
            if future is None or future.done():
                continue
            if isinstance(event, NgReply):
                future.set_result(event)
            else:
                future.set_exception(event.error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = core.next_timer()
        if at is not None and self._loop is not None and self._transport is not None:
            self._timer = self._loop.call_at(at, self._on_timer)
