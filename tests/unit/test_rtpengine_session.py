"""The rtpengine media session over a fake ng transport: which command, tags and instance each rewrite uses, the
counts it reads, and what it does when rtpengine fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dce.media.ng import NgError, NgInstance, NgReply, NgUnavailable
from dce.media.relay import DirectionStats
from dce.media.rtpengine import RtpengineMedia, RtpengineUnavailable

ONE = NgInstance("127.0.0.1", 2223)
OFFER = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\nm=audio 5000 RTP/AVP 0\r\n"


class FakeNg:
    """Records commands; answers with ``sdp`` = the command name, or raises what ``fail`` holds."""

    def __init__(self) -> None:
        self.commands: list[tuple[dict[str, Any], NgInstance | None]] = []
        self.fail: Exception | None = None
        self.body: dict[bytes, Any] = {}

    async def call(self, command: dict[str, Any], *, instance: NgInstance | None = None) -> NgReply:
        self.commands.append((dict(command), instance))
        if self.fail is not None:
            raise self.fail
        return NgReply(len(self.commands), ONE, {b"result": b"ok", b"sdp": b"rewritten " + command["command"].encode(),
                                                 **self.body})

    def close(self) -> None:
        pass


def plane() -> tuple[RtpengineMedia, FakeNg]:
    ng = FakeNg()
    return RtpengineMedia(ng, rtp_timeout_s=5), ng  # type: ignore[arg-type]


def tags(command: dict[str, Any]) -> tuple[str, str | None, str | None]:
    return command["command"], command.get("from-tag"), command.get("to-tag")


async def test_early_offer_then_answer_then_a_reinvite_from_the_callee() -> None:
    media, ng = plane()
    session = await media.allocate("call-1", on_timeout=lambda: None)
    assert await session.rewrite("a", OFFER, offer=True) == b"rewritten offer"
    assert session.rewrite_from_a(OFFER) == b"rewritten offer"  # what dial() reads
    await session.rewrite("b", ANSWER, offer=False)  # 183
    await session.rewrite("b", ANSWER, offer=False)  # the same answer in the 200: not asked again
    await session.rewrite("b", OFFER, offer=True)  # the callee's re-INVITE
    await session.rewrite("a", ANSWER, offer=False)
    assert [tags(c) for c, _ in ng.commands] == [
        ("offer", "a", None), ("answer", "a", "b"), ("offer", "b", "a"), ("answer", "b", "a")]
    assert ng.commands[0][0]["call-id"] == "call-1"
    assert ng.commands[0][0]["replace"] == ["origin", "session-connection"]
    assert [instance for _, instance in ng.commands] == [None, ONE, ONE, ONE]  # pinned after the first offer


async def test_delayed_offer_the_callee_offers_first() -> None:
    media, ng = plane()
    session = await media.allocate("call-2", on_timeout=lambda: None)
    await session.rewrite("b", OFFER, offer=True)
    await session.rewrite("a", ANSWER, offer=False)
    assert [tags(c) for c, _ in ng.commands] == [("offer", "b", None), ("answer", "b", "a")]


async def test_an_unprepared_body_is_a_value_error_for_dial() -> None:
    media, _ = plane()
    session = await media.allocate("call-3", on_timeout=lambda: None)
    with pytest.raises(ValueError, match="not prepared"):
        session.rewrite_from_a(OFFER)


async def test_no_answer_is_media_unavailable_and_a_refusal_a_value_error() -> None:
    media, ng = plane()
    session = await media.allocate("call-4", on_timeout=lambda: None)
    ng.fail = NgUnavailable("no answer from rtpengine (udp:127.0.0.1:2223)")
    with pytest.raises(RtpengineUnavailable) as info:
        await session.rewrite("a", OFFER, offer=True)
    assert info.value.reason == "media server unavailable"
    ng.fail = NgError("rtpengine udp:127.0.0.1:2223: Failed to parse SDP")
    with pytest.raises(ValueError, match="Failed to parse SDP"):
        await session.rewrite("a", OFFER, offer=True)
    assert await session.finish() == session.stats  # never offered: nothing to delete
    assert len(ng.commands) == 2 and media.active_sessions == 0


def stream(port: int, flag: str, packets: int, nbytes: int, errors: int = 0) -> dict[bytes, Any]:
    return {b"local port": port, b"flags": [flag.encode()],
            b"stats": {b"packets": packets, b"bytes": nbytes, b"errors": errors}}


async def test_finish_deletes_on_the_instance_and_reads_the_counts_per_direction() -> None:
    media, ng = plane()
    session = await media.allocate("call-5", on_timeout=lambda: None)
    await session.rewrite("a", OFFER, offer=True)
    await session.rewrite("b", ANSWER, offer=False)
    ng.body = {b"tags": {
        b"a": {b"medias": [{b"streams": [stream(40000, "RTP", 200, 34400, 1), stream(40001, "RTCP", 3, 300)]}]},
        b"b": {b"medias": [{b"streams": [stream(40010, "RTP", 150, 25800), stream(40011, "RTCP", 2, 200)]}]}}}
    stats = await session.finish()
    command, instance = ng.commands[-1]
    assert (tags(command), instance) == (("delete", "a", None), ONE)
    assert stats.a_to_b == DirectionStats(200, 34400, 3, 300, 1)
    assert stats.b_to_a == DirectionStats(150, 25800, 2, 200, 0)
    assert media.active_sessions == 0
    assert await session.finish() == stats  # idempotent: nothing more sent
    assert ng.commands[-1][0]["command"] == "delete" and len(ng.commands) == 3


async def test_a_failed_delete_keeps_the_call_recordable() -> None:
    media, ng = plane()
    session = await media.allocate("call-6", on_timeout=lambda: None)
    await session.rewrite("a", OFFER, offer=True)
    ng.fail = NgUnavailable("gone")
    stats = await session.finish()
    assert stats.a_to_b == DirectionStats() and media.active_sessions == 0


async def test_no_packets_for_the_rtp_timeout_after_answer_calls_on_timeout() -> None:
    ng = FakeNg()
    media = RtpengineMedia(ng, rtp_timeout_s=0.1)  # type: ignore[arg-type]
    fired: list[str] = []
    session = await media.allocate("call-7", on_timeout=lambda: fired.append("timeout"))
    await session.rewrite("a", OFFER, offer=True)
    ng.body = {b"tags": {b"a": {b"medias": [{b"streams": [stream(40000, "RTP", 7, 1204)]}]}}}
    session.answered()
    await asyncio.sleep(0.4)
    assert fired == ["timeout"]
    assert {c["command"] for c, _ in ng.commands[1:]} == {"query"}
    assert session.stats.a_to_b.rtp_packets == 7


async def test_rtpengine_forgetting_the_call_is_a_media_timeout() -> None:
    ng = FakeNg()
    media = RtpengineMedia(ng, rtp_timeout_s=0.1)  # type: ignore[arg-type]
    fired: list[str] = []
    session = await media.allocate("call-8", on_timeout=lambda: fired.append("timeout"))
    await session.rewrite("a", OFFER, offer=True)
    ng.fail = NgError("rtpengine udp:127.0.0.1:2223: Unknown call-id")
    session.answered()
    await asyncio.sleep(0.15)
    assert fired == ["timeout"]


async def test_the_watch_waits_for_a_delayed_offer_that_lands_after_the_answer() -> None:
    ng = FakeNg()
    media = RtpengineMedia(ng, rtp_timeout_s=0.1)  # type: ignore[arg-type]
    fired: list[str] = []
    session = await media.allocate("call-9", on_timeout=lambda: fired.append("timeout"))
    session.answered()  # the callee's 200 (the offer) is still with rtpengine
    await asyncio.sleep(0.15)
    assert fired == [] and ng.commands == []
    await session.rewrite("b", OFFER, offer=True)
    await asyncio.sleep(0.4)  # no packets counted by the queries from now on
    assert fired == ["timeout"]
    await session.finish()
