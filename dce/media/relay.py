"""In-process asyncio RTP/RTCP relay: the embedded default media plane.

Design
------
Sockets are raw non-blocking UDP sockets registered with ``loop.add_reader``; the reader takes one datagram
per callback with ``recvfrom_into`` into one buffer shared by the whole relay and forwards it with ``sendto``.
Compared with
``loop.create_datagram_endpoint`` this

* binds synchronously, so ``rewrite_from_a``/``rewrite_from_b`` can stay synchronous and a port in use by
  another process is detected on the spot (``bind`` raises) and skipped;
* keeps the per-packet path to one plain Python callback, with no transport/protocol layers,
  no per-packet ``bytes`` allocation (``recvfrom_into`` + memoryview slice) and no write buffering: when the
  kernel send buffer is full the packet is dropped and counted, which is the right thing for real-time media.

It works with both the default selector loop and uvloop (Unix only; not the Windows proactor loop).

Per ``m=`` line index ``i`` a session owns two RTP/RTCP pairs: one facing A (the caller) and one facing B
(the callee). A packet arriving on an A-facing socket leaves through the matching B-facing socket towards
B's current address, and vice versa.

Symmetric RTP latching: each socket's peer address starts as the address from that side's SDP; the first
packet received after the side's (re)offer/answer latches the peer to the packet's source (NAT). Later
packets from other sources are still forwarded but do not move the latch, except a packet from exactly
the SDP-declared address, which always wins (so a stray packet from a failed-over callee cannot keep the
latch once the new callee's own packets arrive from the address it announced).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dce.media.ports import DescriptorsExhausted, PortAllocator, PortsExhausted
from dce.media.sdp import NULL_ADDRESS, SdpError, SessionDescription, parse_sdp, rewrite_sdp

__all__ = [
    "DirectionStats",
    "MediaPlane",
    "MediaRelay",
    "MediaSession",
    "MediaStats",
    "PassthroughMedia",
    "PassthroughSession",
    "PortsExhausted",
    "RelaySession",
]

log = logging.getLogger(__name__)

_BUFFER_SIZE = 65536

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """Counters for one direction: forwarded RTP/RTCP packets and bytes, and packets dropped."""

    rtp_packets: int = 0
    rtp_bytes: int = 0
    rtcp_packets: int = 0
    rtcp_bytes: int = 0
    dropped_packets: int = 0


@dataclass(frozen=True, slots=True)
class MediaStats:
    """A snapshot of a session's counters. ``a_to_b`` counts packets received from A and sent to B."""

    a_to_b: DirectionStats = DirectionStats()
    b_to_a: DirectionStats = DirectionStats()


class MediaSession(Protocol):
    """One call's media, as seen by the B2BUA and the call flow.

    ``deferred`` sessions (rtpengine) rewrite through :meth:`rewrite`, awaited by the call flow (the B2BUA
    holds the message meanwhile: ``SdpNeeded``); the others rewrite synchronously in ``rewrite_from_a/b``.
    ``finish`` ends the session at the end of the call and returns its final counts; ``close`` drops it at once.
    """

    call_id: str
    deferred: bool

    def rewrite_from_a(self, sdp: bytes) -> bytes: ...
    def rewrite_from_b(self, sdp: bytes) -> bytes: ...
    async def rewrite(self, side: str, sdp: bytes, *, offer: bool) -> bytes: ...
    def answered(self) -> None: ...
    async def finish(self) -> MediaStats: ...
    def close(self) -> None: ...
    @property
    def stats(self) -> MediaStats: ...


class MediaPlane(Protocol):
    """What the call flow needs from a media plane (relay, passthrough, rtpengine)."""

    async def allocate(self, call_id: str, on_timeout: Callable[[], None]) -> MediaSession: ...
    async def close(self) -> None: ...
    @property
    def active_sessions(self) -> int: ...


class _Socket:
    """One bound UDP socket of a session, facing one side; ``out`` is its twin facing the other side."""

    __slots__ = (
        "dropped",
        "fd",
        "latched",
        "nbytes",
        "out",
        "packets",
        "port",
        "remote",
        "sdp_remote",
        "sock",
    )

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.port = port
        self.out: _Socket = self
        self.remote: Address | None = None  # where this side gets packets (SDP, then latched)
        self.sdp_remote: Address | None = None
        self.latched = False
        self.packets = 0  # forwarded after receipt on this socket
        self.nbytes = 0
        self.dropped = 0

    def expect(self, remote: Address | None, *, latch: bool = True) -> None:
        """A new offer/answer from this socket's side: aim at its SDP address and re-arm latching.

        ``latch=False`` (stream disabled with port 0) keeps it unlatched-for-good: nothing is sent there.
        """
        self.remote = remote
        self.sdp_remote = remote
        self.latched = not latch


class _Stream:
    """The two RTP/RTCP pairs for one ``m=`` line index."""

    __slots__ = ("a_port", "a_rtcp", "a_rtp", "b_port", "b_rtcp", "b_rtp")

    def __init__(self, a_port: int, b_port: int, socks: list[socket.socket]) -> None:
        self.a_port = a_port
        self.b_port = b_port
        self.a_rtp = _Socket(socks[0], a_port)
        self.a_rtcp = _Socket(socks[1], a_port + 1)
        self.b_rtp = _Socket(socks[2], b_port)
        self.b_rtcp = _Socket(socks[3], b_port + 1)
        self.a_rtp.out, self.b_rtp.out = self.b_rtp, self.a_rtp
        self.a_rtcp.out, self.b_rtcp.out = self.b_rtcp, self.a_rtcp

    def sockets(self) -> tuple[_Socket, _Socket, _Socket, _Socket]:
        return self.a_rtp, self.a_rtcp, self.b_rtp, self.b_rtcp


class _Origin:
    """Our own ``o=`` towards one side: session id, version, and the last body sent (with version 0)."""

    __slots__ = ("last_body", "session_id", "version")

    def __init__(self) -> None:
        self.session_id = random.getrandbits(62)
        self.version = 1
        self.last_body: bytes | None = None


class RelaySession:
    """One call's media through the relay. Create with :meth:`MediaRelay.allocate`."""

    deferred = False  # rewrites are synchronous (sockets bind on the spot)

    def __init__(self, relay: MediaRelay, call_id: str, on_timeout: Callable[[], None]) -> None:
        self.call_id = call_id
        self._relay = relay
        self._loop = relay._running_loop()
        self._time = self._loop.time
        self._on_timeout: Callable[[], None] | None = on_timeout
        self._streams: list[_Stream | None] = []
        self._closed = False
        self._last_rx = self._time()
        self._timer: asyncio.TimerHandle | None = None  # armed at answer: a ringing call sends no RTP
        self._origin = {"a": _Origin(), "b": _Origin()}

    # -- SDP -------------------------------------------------------------------------------------------

    def rewrite_from_a(self, sdp: bytes) -> bytes:
        """SDP received from A -> SDP to send to B (our address, B-facing ports)."""
        return self._rewrite(sdp, from_a=True)

    async def rewrite(self, side: str, sdp: bytes, *, offer: bool) -> bytes:
        """The synchronous rewrite of ``sdp`` from ``side`` (``"a"``/``"b"``)."""
        return self._rewrite(sdp, from_a=side == "a")

    def rewrite_from_b(self, sdp: bytes) -> bytes:
        """SDP received from B -> SDP to send to A (our address, A-facing ports)."""
        return self._rewrite(sdp, from_a=False)

    def _rewrite(self, data: bytes, *, from_a: bool) -> bytes:
        if self._closed:
            raise RuntimeError(f"media session {self.call_id} is closed")
        desc = parse_sdp(data)
        remotes = [self._remotes(desc, i) for i in range(len(desc.media))]  # validate before binding
        ports: list[int | None] = []
        for i, pair in enumerate(remotes):
            if pair is None:  # port 0: disabled; stop sending that side media on a stream bound before
                ports.append(None)
                bound = self._streams[i] if i < len(self._streams) else None
                if bound is not None:
                    for s in (bound.a_rtp, bound.a_rtcp) if from_a else (bound.b_rtp, bound.b_rtcp):
                        s.expect(None, latch=False)
                continue
            stream = self._stream(i)
            rtp_remote, rtcp_remote = pair
            if from_a:
                stream.a_rtp.expect(rtp_remote)
                stream.a_rtcp.expect(rtcp_remote)
                ports.append(stream.b_port)
            else:
                stream.b_rtp.expect(rtp_remote)
                stream.b_rtcp.expect(rtcp_remote)
                ports.append(stream.a_port)
        out = rewrite_sdp(desc, self._relay.address, ports)
        return self._stamp_origin(out, "b" if from_a else "a")

    @staticmethod
    def _remotes(desc: SessionDescription, index: int) -> tuple[Address | None, Address | None] | None:
        """(RTP, RTCP) addresses a side announced for media ``index``; None for a disabled stream."""
        m = desc.media[index]
        if m.port == 0:
            return None
        address = desc.media_address(index)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise SdpError(f"m= line {index}: c= address {address!r} is not an IP literal") from None
        if ip.version != 4:
            raise SdpError(f"m= line {index}: IPv6 media ({address}) is not supported by the relay")
        if address == NULL_ADDRESS:
            return None, None  # old-style hold: send nothing until that side's packets latch it
        rtcp = m.rtcp
        rtcp_remote = (address, m.port + 1) if rtcp is None else (rtcp[1] or address, rtcp[0])
        return (address, m.port), rtcp_remote

    def _stamp_origin(self, desc: SessionDescription, towards: str) -> bytes:
        """Give the outgoing SDP our own o= line; bump its version whenever the body changes."""
        origin = self._origin[towards]
        desc.set_origin("-", origin.session_id, 0, self._relay.address)
        body = desc.serialize()
        if origin.last_body is not None and body != origin.last_body:
            origin.version += 1
        origin.last_body = body
        desc.set_origin("-", origin.session_id, origin.version, self._relay.address)
        return desc.serialize()

    # -- sockets ---------------------------------------------------------------------------------------

    def _stream(self, index: int) -> _Stream:
        """The stream for ``index``, binding its four sockets on first use (closes the session on failure)."""
        while len(self._streams) <= index:
            self._streams.append(None)
        stream = self._streams[index]
        if stream is None:
            try:
                stream = self._relay._bind_stream()
            except BaseException:
                self.close()
                raise
            self._streams[index] = stream
            add_reader = self._loop.add_reader
            for s in stream.sockets():
                add_reader(s.fd, self._on_readable, s)
        return stream

    def _on_readable(self, s: _Socket) -> None:
        """Forward one datagram from ``s`` to the other side (the per-packet hot path).

        One datagram per callback: RTP is paced, so a socket rarely holds more than one, and draining in a
        loop would cost an extra ``recvfrom`` failing with EAGAIN (and its exception) per wakeup, ~25% more
        CPU in ``bench/relay.py``. Level-triggered readiness brings us back if more are queued, and every
        ready socket gets its turn per loop iteration.
        """
        try:
            n, src = s.sock.recvfrom_into(self._relay._buffer)
        except OSError:  # BlockingIOError (spurious wakeup), or an error queued on the socket
            return
        self._last_rx = self._time()
        if not s.latched:
            s.remote = src
            s.latched = True
            log.debug("media %s: latched port %d to %s:%d", self.call_id, s.port, *src)
        elif src != s.remote and src == s.sdp_remote:
            s.remote = src
        out = s.out
        dst = out.remote
        if dst is None:
            s.dropped += 1
            return
        try:
            out.sock.sendto(self._relay._view[:n], dst)
        except OSError:  # send buffer full, unreachable, ...: real-time media is dropped, not queued
            s.dropped += 1
            return
        s.packets += 1
        s.nbytes += n

    # -- inactivity ------------------------------------------------------------------------------------

    def answered(self) -> None:
        """The call is answered: from now on, ``rtp_timeout_s`` without a packet calls ``on_timeout``.

        Before answer there is no timeout (early media is optional; ringing is bounded by the ring timeouts).
        """
        if self._closed or self._timer is not None or self._on_timeout is None:
            return
        self._last_rx = max(self._last_rx, self._time())
        self._timer = self._loop.call_at(self._last_rx + self._relay.rtp_timeout_s, self._check_timeout)

    def _check_timeout(self) -> None:
        """The session's single timer: fire ``on_timeout`` once, or re-arm at last packet + timeout."""
        self._timer = None
        if self._closed:
            return
        deadline = self._last_rx + self._relay.rtp_timeout_s
        if self._time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_timeout)
            return
        callback, self._on_timeout = self._on_timeout, None
        if callback is None:
            return
        log.info("media %s: no RTP for %.1fs", self.call_id, self._relay.rtp_timeout_s)
        try:
            callback()
        except Exception:
            log.exception("media %s: on_timeout callback failed", self.call_id)

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def ports(self) -> list[tuple[int, int] | None]:
        """Per ``m=`` index: ``(A-facing RTP port, B-facing RTP port)``, or None if not bound."""
        return [None if st is None else (st.a_port, st.b_port) for st in self._streams]

    def close(self) -> None:
        """Stop relaying, close the sockets and release the ports. Idempotent; no callback afterwards."""
        if self._closed:
            return
        self._closed = True
        self._on_timeout = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in self._streams:
            if stream is not None:
                for s in stream.sockets():
                    self._loop.remove_reader(s.fd)
                self._relay._unbind_stream(stream)
        self._streams.clear()
        self._relay._sessions.discard(self)

    async def finish(self) -> MediaStats:
        """The call is over: its final counts, and the session closed."""
        stats = self.stats
        self.close()
        return stats

    @property
    def stats(self) -> MediaStats:
        """Packets/bytes forwarded per direction (RTP and RTCP sockets separately) and drops."""
        return MediaStats(a_to_b=self._direction(from_a=True), b_to_a=self._direction(from_a=False))

    def _direction(self, *, from_a: bool) -> DirectionStats:
        rtp_p = rtp_b = rtcp_p = rtcp_b = dropped = 0
        for st in self._streams:
            if st is None:
                continue
            rtp, rtcp = (st.a_rtp, st.a_rtcp) if from_a else (st.b_rtp, st.b_rtcp)
            rtp_p += rtp.packets
            rtp_b += rtp.nbytes
            rtcp_p += rtcp.packets
            rtcp_b += rtcp.nbytes
            dropped += rtp.dropped + rtcp.dropped
        return DirectionStats(rtp_p, rtp_b, rtcp_p, rtcp_b, dropped)

    def __repr__(self) -> str:
        return f"<RelaySession {self.call_id} ports={self.ports} closed={self._closed}>"


class MediaRelay:
    """The in-process relay: allocates :class:`RelaySession` objects bound to ports from ``port_range``.

    ``address`` is advertised in SDP and, unless ``bind_address`` is given (e.g. ``0.0.0.0`` behind a 1:1
    NAT), also bound. ``rtp_timeout_s`` is the inactivity timeout after which ``on_timeout`` is called (counted
    from the answer: see :meth:`RelaySession.answered`).
    """

    def __init__(
        self,
        *,
        address: str,
        port_range: tuple[int, int],
        rtp_timeout_s: float,
        loop: asyncio.AbstractEventLoop | None = None,
        bind_address: str | None = None,
    ) -> None:
        ip = ipaddress.ip_address(address)
        if ip.version != 4:
            raise ValueError(f"media address must be IPv4, got {address!r}")
        if ip.is_unspecified:
            raise ValueError("media address 0.0.0.0 cannot be advertised in SDP; pass bind_address instead")
        if rtp_timeout_s <= 0:
            raise ValueError(f"rtp_timeout_s must be > 0, got {rtp_timeout_s}")
        self.address = address
        self.bind_address = bind_address or address
        self.rtp_timeout_s = rtp_timeout_s
        self.ports = PortAllocator(*port_range)
        self._loop = loop
        self._sessions: set[RelaySession] = set()
        self._buffer = bytearray(_BUFFER_SIZE)
        self._view = memoryview(self._buffer)

    @property
    def active_sessions(self) -> int:
        """Sessions allocated and not yet closed."""
        return len(self._sessions)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def allocate(self, call_id: str, on_timeout: Callable[[], None]) -> RelaySession:
        """A new session with its first stream bound (so port exhaustion shows before dialing).

        Raises :class:`PortsExhausted` when no pair can be bound.
        """
        session = RelaySession(self, call_id, on_timeout)
        self._sessions.add(session)
        session._stream(0)
        return session

    async def close(self) -> None:
        """Close every session and release all ports."""
        for session in list(self._sessions):
            session.close()

    def _bind_pair(self) -> tuple[int, list[socket.socket]]:
        """Allocate and bind one RTP/RTCP pair, skipping pairs another process holds."""
        busy: list[int] = []
        try:
            for _ in range(self.ports.available):
                port = self.ports.allocate()
                socks: list[socket.socket] = []
                try:
                    for p in (port, port + 1):
                        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        socks.append(sock)
                        sock.setblocking(False)
                        sock.bind((self.bind_address, p))
                except OSError as exc:
                    for sock in socks:
                        sock.close()
                    busy.append(port)
                    if exc.errno in (errno.EMFILE, errno.ENFILE):  # no port would do: say what is short
                        raise DescriptorsExhausted(f"cannot open RTP sockets: {exc.strerror}") from exc
                    log.debug("media: port pair %d/%d unavailable (%s), skipping", port, port + 1, exc)
                    continue
                return port, socks
            raise PortsExhausted(
                f"no bindable RTP port pair in {self.ports.low}-{self.ports.high} "
                f"({self.ports.in_use - len(busy)} in use by us, {len(busy)} busy elsewhere)"
            )
        finally:
            for port in busy:  # to the back of the queue: maybe free again later
                self.ports.release(port)

    def _bind_stream(self) -> _Stream:
        a_port, a_socks = self._bind_pair()
        try:
            b_port, b_socks = self._bind_pair()
        except BaseException:
            for sock in a_socks:
                sock.close()
            self.ports.release(a_port)
            raise
        return _Stream(a_port, b_port, a_socks + b_socks)

    def _unbind_stream(self, stream: _Stream) -> None:
        for s in stream.sockets():
            with contextlib.suppress(OSError):
                s.sock.close()
            del s.out  # the twins point at each other: unlink them so reference counting frees the session
        self.ports.release(stream.a_port)
        self.ports.release(stream.b_port)


class PassthroughSession:
    """Media flows end to end; SDP is returned unchanged and nothing is counted."""

    deferred = False

    def __init__(self, owner: PassthroughMedia, call_id: str) -> None:
        self.call_id = call_id
        self._owner = owner
        self.closed = False

    def rewrite_from_a(self, sdp: bytes) -> bytes:
        """Return ``sdp`` unchanged."""
        return sdp

    def rewrite_from_b(self, sdp: bytes) -> bytes:
        """Return ``sdp`` unchanged."""
        return sdp

    async def rewrite(self, side: str, sdp: bytes, *, offer: bool) -> bytes:
        """Return ``sdp`` unchanged."""
        return sdp

    async def finish(self) -> MediaStats:
        """Close; the counts are zero."""
        self.close()
        return MediaStats()

    def answered(self) -> None:
        """Nothing to watch: media does not pass through us."""

    def close(self) -> None:
        """Forget the session. Idempotent."""
        self.closed = True
        self._owner._sessions.discard(self)

    @property
    def stats(self) -> MediaStats:
        """Always zero: media does not pass through us."""
        return MediaStats()


class PassthroughMedia:
    """Media plane for mode ``passthrough``: same interface as :class:`MediaRelay`, no relaying.

    ``on_timeout`` is never called (we see no packets).
    """

    def __init__(self) -> None:
        self._sessions: set[PassthroughSession] = set()

    @property
    def active_sessions(self) -> int:
        """Sessions allocated and not yet closed."""
        return len(self._sessions)

    async def allocate(self, call_id: str, on_timeout: Callable[[], None]) -> PassthroughSession:
        """A session whose rewrites are the identity."""
        session = PassthroughSession(self, call_id)
        self._sessions.add(session)
        return session

    async def close(self) -> None:
        """Close every session."""
        for session in list(self._sessions):
            session.close()
