"""rtpengine as the media plane (mode ``rtpengine``): the same interface as the in-process relay, over ng.

One call is one ng call (``call-id`` = the exchange's call id) with two monologues, tagged ``a`` (the caller's
side) and ``b`` (the callee's, whichever target answers): an offer from side X is ``offer`` with
``from-tag`` X (and ``to-tag`` the other side once a first answer is in), its answer is ``answer`` with
``from-tag`` the offerer and ``to-tag`` the answerer. The first offer picks an instance (weighted, failing
over); everything after it goes to that instance. ``delete`` (with the caller's tag, so the reply carries the
counts) ends the call and its per-direction packets/bytes/errors become the CDR's media stats.

Rewrites are network round trips, so sessions are ``deferred``: the call flow awaits :meth:`rewrite` (the
caller's offer before dialling; later bodies when the B2BUA asks with ``SdpNeeded``), one at a time per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dce.media.ng import NgError, NgInstance, NgTransport, NgUnavailable
from dce.media.ports import MediaUnavailable
from dce.media.relay import DirectionStats, MediaStats

__all__ = ["RtpengineMedia", "RtpengineSession", "RtpengineUnavailable"]

log = logging.getLogger(__name__)

SIDES = ("a", "b")
# A B2BUA: each leg sees our own origin and session-level address, not the other party's.
OFFER_FLAGS: dict[str, Any] = {"replace": ["origin", "session-connection"]}


class RtpengineUnavailable(MediaUnavailable):
    """No rtpengine instance answered (the call gets 503 with this reason)."""

    reason = "media server unavailable"


class RtpengineSession:
    """One call's media through rtpengine. Create with :meth:`RtpengineMedia.allocate`."""

    deferred = True

    def __init__(self, plane: RtpengineMedia, call_id: str, on_timeout: Callable[[], None]) -> None:
        self.call_id = call_id
        self._plane = plane
        self._on_timeout: Callable[[], None] | None = on_timeout
        self._instance: NgInstance | None = None  # the instance holding the call, once an offer succeeded
        self._offerer: str | None = None  # the side of the last offer
        self._answered_once = False  # a first answer is in: offers name the other side's tag too
        self._last: dict[str, tuple[bytes, bool, bytes]] = {}  # side -> (body, offer, rewritten)
        self._lock = asyncio.Lock()  # one ng round trip at a time, in order
        self._poll: asyncio.Task[None] | None = None
        self._closed = False
        self._stats = MediaStats()

    # -- SDP -------------------------------------------------------------------------------------------
    def rewrite_from_a(self, sdp: bytes) -> bytes:
        """The caller's body as :meth:`rewrite` last returned it (the offer prepared before dialling)."""
        return self._prepared("a", sdp)

    def rewrite_from_b(self, sdp: bytes) -> bytes:
        """The callee's body as :meth:`rewrite` last returned it."""
        return self._prepared("b", sdp)

    def _prepared(self, side: str, sdp: bytes) -> bytes:
        last = self._last.get(side)
        if last is None or last[0] != sdp:
            raise ValueError(f"media {self.call_id}: SDP from {side} was not prepared with rtpengine")
        return last[2]

    async def rewrite(self, side: str, sdp: bytes, *, offer: bool) -> bytes:
        """``sdp`` received from ``side`` rewritten by rtpengine (``offer`` or answer). A body repeated from the
        same side (a 183's answer again in the 200, a retransmission) is not sent again.

        Raises :class:`RtpengineUnavailable` when no instance answers, :class:`NgError` (a ValueError) when
        rtpengine refuses the SDP.
        """
        side = str(side)  # the B2BUA's Side is a StrEnum: plain text for bencode
        if side not in SIDES:
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        async with self._lock:
            last = self._last.get(side)
            if last is not None and last[0] == sdp and last[1] == offer:
                return last[2]
            if self._closed:
                raise RtpengineUnavailable(f"media {self.call_id} is closed")
            other = "b" if side == "a" else "a"
            command: dict[str, Any] = {"call-id": self.call_id}
            if offer:
                command.update(OFFER_FLAGS, command="offer", sdp=sdp, **{"from-tag": side})
                if self._answered_once:
                    command["to-tag"] = other
            else:
                offerer = self._offerer or other
                command.update(command="answer", sdp=sdp, **{"from-tag": offerer, "to-tag": side})
            try:
                reply = await self._plane.transport.call(command, instance=self._instance)
            except NgUnavailable as exc:
                raise RtpengineUnavailable(str(exc)) from exc
            rewritten = reply.body.get(b"sdp")
            if not isinstance(rewritten, bytes):
                raise NgError(f"rtpengine {reply.instance}: {command['command']} reply without SDP")
            self._instance = reply.instance
            if offer:
                self._offerer = side
            else:
                self._answered_once = True
            self._last[side] = (sdp, offer, rewritten)
            return rewritten

    # -- inactivity ------------------------------------------------------------------------------------
    def answered(self) -> None:
        """The call is answered: from now on, no packet through rtpengine for ``rtp_timeout_s`` (or rtpengine
        forgetting the call) calls ``on_timeout``. Watched with ``query`` every half timeout, once a first offer
        is in (a delayed offer's may still be on its way at the answer)."""
        if self._closed or self._poll is not None or self._on_timeout is None:
            return
        self._poll = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        timeout = self._plane.rtp_timeout_s
        loop = asyncio.get_running_loop()
        last_count, last_change = -1, loop.time()
        while not self._closed:
            await asyncio.sleep(timeout / 2)
            if self._instance is None:  # no offer yet: nothing on rtpengine to watch
                last_change = loop.time()
                continue
            try:
                reply = await self._plane.transport.call({"command": "query", "call-id": self.call_id},
                                                         instance=self._instance)
            except (NgError, NgUnavailable) as exc:
                log.warning("media %s: rtpengine query failed (%s): the call's media is gone", self.call_id, exc)
                break
            self._stats = _stats(reply.body)
            count = _packets(self._stats)
            now = loop.time()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change >= timeout:
                log.info("media %s: no RTP through rtpengine for %.1fs", self.call_id, timeout)
                break
        self._poll = None
        callback, self._on_timeout = self._on_timeout, None
        if callback is not None and not self._closed:
            try:
                callback()
            except Exception:
                log.exception("media %s: on_timeout callback failed", self.call_id)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def finish(self) -> MediaStats:
        """The call is over: ``delete`` it on its instance; the reply's counts (the last polled ones if
        rtpengine does not answer)."""
        if self._closed:
            return self._stats
        self._stop()
        if self._instance is not None:
            try:
                reply = await self._plane.transport.call(
                    {"command": "delete", "call-id": self.call_id, "from-tag": self._offerer or "a"},
                    instance=self._instance)
            except (NgError, NgUnavailable) as exc:
                log.warning("media %s: rtpengine delete failed: %s", self.call_id, exc)
            else:
                if b"tags" in reply.body:
                    self._stats = _stats(reply.body)
        return self._stats

    def close(self) -> None:
        """Drop the session at once (its ``delete`` goes out in the background). Idempotent."""
        if self._closed:
            return
        self._stop()
        if self._instance is not None:
            self._plane._background(self._plane.transport.call(
                {"command": "delete", "call-id": self.call_id}, instance=self._instance))

    def _stop(self) -> None:
        self._closed = True
        self._on_timeout = None
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._plane._sessions.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> MediaStats:
        """The latest counts rtpengine reported (from ``query`` while answered, ``delete`` at the end)."""
        return self._stats


class RtpengineMedia:
    """The media plane for mode ``rtpengine``: sessions over one ng client (several weighted instances)."""

    def __init__(self, transport: NgTransport, *, rtp_timeout_s: float) -> None:
        if rtp_timeout_s <= 0:
            raise ValueError(f"rtp_timeout_s must be > 0, got {rtp_timeout_s}")
        self.transport = transport
        self.rtp_timeout_s = rtp_timeout_s
        self._sessions: set[RtpengineSession] = set()
        self._tasks: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, instances: list[NgInstance], *, timeout_s: float, retransmit_s: float, down_s: float,
                   rtp_timeout_s: float) -> RtpengineMedia:
        """A plane with its ng socket open."""
        transport = await NgTransport.open(instances, timeout_s=timeout_s, retransmit_s=retransmit_s,
                                           down_s=down_s)
        return cls(transport, rtp_timeout_s=rtp_timeout_s)

    @property
    def active_sessions(self) -> int:
        """Sessions allocated and not yet finished or closed."""
        return len(self._sessions)

    async def allocate(self, call_id: str, on_timeout: Callable[[], None]) -> RtpengineSession:
        """A new session; nothing is asked of rtpengine until the first offer."""
        session = RtpengineSession(self, call_id, on_timeout)
        self._sessions.add(session)
        return session

    async def close(self) -> None:
        """Delete every session still up (waiting for the replies, bounded by the ng timeout), close the socket."""
        await asyncio.gather(*(s.finish() for s in list(self._sessions)), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.transport.close()

    def _background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._tasks.discard(t)
            with contextlib.suppress(asyncio.CancelledError, NgError, NgUnavailable):
                t.result()

        task.add_done_callback(done)


def _stats(body: dict[bytes, Any]) -> MediaStats:
    """Per-direction counts from a ``query``/``delete`` reply: a stream's stats count what rtpengine received on
    it, so the ``a`` monologue's streams are the caller's packets (towards B), ``b``'s the callee's."""
    tags = body.get(b"tags")
    if not isinstance(tags, dict):
        return MediaStats()
    directions = {}
    for side in SIDES:
        rtp_p = rtp_b = rtcp_p = rtcp_b = errors = 0
        monologue = tags.get(side.encode())
        for media in (monologue or {}).get(b"medias", []):
            for stream in media.get(b"streams", []):
                counts = stream.get(b"stats", {})
                packets, nbytes = counts.get(b"packets", 0), counts.get(b"bytes", 0)
                errors += counts.get(b"errors", 0)
                if b"RTCP" in stream.get(b"flags", []):
                    rtcp_p, rtcp_b = rtcp_p + packets, rtcp_b + nbytes
                else:
                    rtp_p, rtp_b = rtp_p + packets, rtp_b + nbytes
        directions[side] = DirectionStats(rtp_p, rtp_b, rtcp_p, rtcp_b, errors)
    return MediaStats(a_to_b=directions["a"], b_to_a=directions["b"])


def _packets(stats: MediaStats) -> int:
    return sum(d.rtp_packets + d.rtcp_packets for d in (stats.a_to_b, stats.b_to_a))
