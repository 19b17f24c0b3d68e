"""Every way a call ends ends its CallFlow task, with exactly one CDR and every counter back where it started.

The CallFlow over the real sans-IO B2BUA with a virtual clock (the harness of ``test_callflow``): each row of
``ENDINGS`` plays one ending (caller, callee, timers, transport errors, CANCEL races, the exchange's hangups,
the maximum call duration, the watchdog) and the same checks run after each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from dce.billing.cdr import Disposition, HangupSide
from dce.exchange.router import CallLimits
from dce.exchange.watchdog import LifeBounds, Watchdog
from dce.media.relay import MediaStats
from dce.media.rtpengine import RtpengineUnavailable
from dce.routing.model import PlannedTarget, RoutingPlan
from dce.sip.b2bua import Call
from dce.sip.message import Request, Response, parse
from tests.unit.sipfactory import SDP_B, Sent, ack_for, new_branch, request, response_to
from tests.unit.test_callflow import CALLER, DID, Harness, PlannedRouter, invite, requests_of, statuses

B = ("127.0.0.1", 5080)
RING_S = 20.0


class Slow(PlannedRouter):
    """A router whose auction waits until the test lets it finish (a live auction's window)."""

    def __init__(self, plan: RoutingPlan, after: RoutingPlan | None = None) -> None:
        super().__init__(plan)
        self.after = after
        self.window = asyncio.Event()

    def needs_auction(self, routed):
        return True

    async def auction(self, routed, call_id):
        await self.window.wait()
        if self.after is not None:
            routed.plan = self.after
        return routed


class NoBid(Slow):
    """A slow auction that no bid wins."""

    def __init__(self, plan: RoutingPlan) -> None:
        super().__init__(plan, RoutingPlan((), "no bid at or above the reserve"))


class Wedged(PlannedRouter):
    """A router whose slot acquisition never returns (a bug: e.g. a shared counter awaited without a timeout)."""

    async def acquire(self, routed, target, now):
        routed.held.add(target.target_id)
        self.log.append(f"acquire {target.target_id}")
        await asyncio.get_running_loop().create_future()
        return True


class Broken(PlannedRouter):
    def connected(self, routed, target, now):
        raise RuntimeError("caps table on fire")


@dataclass
class Play:
    """One call in progress: the harness, the B2BUA's call, A's INVITE and the INVITE sent to B."""

    h: Harness
    call: Call
    a_invite: bytes
    leg: Sent | None
    ok_to_a: Response | None = None
    b_ok: Response | None = None

    async def ring(self) -> None:
        assert self.leg is not None
        await self.h.feed(response_to(self.leg.request, 180, to_tag="b"), addr=B)

    async def answer(self, *, ack: bool = True) -> None:
        assert self.leg is not None
        data = response_to(self.leg.request, 200, to_tag="b", contact="<sip:b@127.0.0.1:5080>", body=SDP_B)
        self.b_ok = parse(data)  # type: ignore[assignment]
        sent = await self.h.feed(data, addr=B)
        self.ok_to_a = next((s.response for s in sent if s.addr == CALLER and s.message.__class__ is Response), None)
        if ack and self.ok_to_a is not None:
            await self.h.feed(ack_for(self.a_invite, self.ok_to_a, branch=new_branch()))

    async def caller(self, method: str, **kw: object) -> list[Sent]:
        return await self.h.feed(request(method, **kw))  # type: ignore[arg-type]

    async def caller_bye(self) -> None:
        assert self.ok_to_a is not None
        await self.caller("BYE", uri="sip:10.0.0.1:5060", to_tag=self.ok_to_a.to_tag, cseq=2,
                          from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")

    async def caller_cancel(self) -> None:
        branch = self.a_invite.split(b"branch=")[1].split(b"\r\n")[0].decode()
        await self.caller("CANCEL", uri=f"sip:{DID}@10.0.0.1", branch=branch, from_uri="sip:+13125550199@192.0.2.10")

    async def callee_bye(self) -> None:
        assert self.leg is not None and self.b_ok is not None
        invite_out: Request = self.leg.request
        lines = [
            f"BYE {invite_out.get('Contact', '')[1:-1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch={new_branch()}",
            "Max-Forwards: 70",
            f"From: {self.b_ok.get('To')}",
            f"To: {invite_out.get('From')}",
            f"Call-ID: {invite_out.call_id}",
            "CSeq: 1 BYE",
            "Content-Length: 0",
        ]
        await self.h.feed(("\r\n".join(lines) + "\r\n\r\n").encode(), addr=B)

    async def b_says(self, status: int) -> None:
        assert self.leg is not None
        await self.h.feed(response_to(self.leg.request, status, to_tag="b"), addr=B)

    async def advance(self, seconds: float) -> list[Sent]:
        return await self.h.advance(seconds)

    def hangup(self, reason: str) -> None:
        self.h.sip.hangup(self.call, reason=reason)


async def _cancel_then_ok_crosses(p: Play) -> None:
    await p.ring()
    await p.caller_cancel()
    await p.answer(ack=False)  # B answered before it saw our CANCEL: ACK and BYE it


async def _ring_timeout_487(p: Play) -> None:
    await p.ring()
    await p.advance(RING_S)  # CANCEL to B
    await p.b_says(487)


async def _hangup_while_ringing(p: Play) -> None:
    await p.ring()
    p.hangup("media timeout")  # what a media plane's on_timeout does; also shutdown and the no-ACK guard
    await p.h.pump()
    await p.b_says(487)


async def _answer_then(p: Play, then: Callable[[Play], Awaitable[None]]) -> None:
    await p.ring()
    await p.answer()
    await p.advance(30)
    await then(p)


async def _hangup_now(p: Play, reason: str) -> None:
    p.hangup(reason)
    await p.h.pump()


async def _reap(p: Play) -> None:
    await p.advance(RING_S + 32 + 14400 + 60 - 1)
    assert p.h.flow.reap(p.h.clock.monotonic()) == 0  # not yet past its longest possible life
    await p.advance(2)
    assert p.h.flow.reap(p.h.clock.monotonic()) == 1
    await p.h.pump()
    assert statuses(p.h.out()) == [480]  # the caller is released at once


@dataclass(frozen=True)
class Ending:
    play: Callable[[Play], Awaitable[None]]
    disposition: Disposition
    final_code: int
    hangup_side: HangupSide | None
    reason: str | None = None
    router: type[PlannedRouter] = PlannedRouter
    ring_s: float = RING_S


ENDINGS: dict[str, Ending] = {
    "caller BYE": Ending(lambda p: _answer_then(p, Play.caller_bye), Disposition.ANSWERED, 200, HangupSide.CALLER),
    "callee BYE": Ending(lambda p: _answer_then(p, Play.callee_bye), Disposition.ANSWERED, 200, HangupSide.CALLEE),
    "exchange hangup after answer": Ending(
        lambda p: _answer_then(p, lambda p: _hangup_now(p, "exchange shutting down")),
        Disposition.ANSWERED, 200, HangupSide.SYSTEM, "exchange shutting down"),
    "max call duration": Ending(lambda p: _answer_then(p, lambda p: p.advance(14400)),
                                Disposition.ANSWERED, 200, HangupSide.SYSTEM, "max call duration"),
    "caller never ACKs the 2xx": Ending(lambda p: _then(p.answer(ack=False), p.advance(40)),
                                       Disposition.ANSWERED, 200, HangupSide.SYSTEM, "no ACK from caller"),
    "a bug after answer": Ending(lambda p: _then(p.ring(), p.answer()), Disposition.FAILED, 500, HangupSide.SYSTEM,
                                 router=Broken),
    "caller CANCEL while ringing": Ending(lambda p: _then(p.ring(), p.caller_cancel()),
                                         Disposition.CANCELLED, 487, HangupSide.CALLER),
    "caller CANCEL crossed by the callee's 200": Ending(_cancel_then_ok_crosses, Disposition.CANCELLED, 487,
                                                       HangupSide.CALLER),
    "busy": Ending(lambda p: p.b_says(486), Disposition.BUSY, 486, HangupSide.SYSTEM),
    "ring timeout, 487": Ending(_ring_timeout_487, Disposition.NO_ANSWER, 480, HangupSide.SYSTEM),
    "ring timeout, nothing heard": Ending(lambda p: p.advance(RING_S), Disposition.NO_ANSWER, 480, HangupSide.SYSTEM),
    "ring timeout, CANCEL never answered": Ending(lambda p: _then(p.ring(), p.advance(RING_S), p.advance(40)),
                                                 Disposition.NO_ANSWER, 480, HangupSide.SYSTEM),
    "timer B": Ending(lambda p: p.advance(40), Disposition.NO_ANSWER, 480, HangupSide.SYSTEM, ring_s=100),
    "transport error": Ending(lambda p: _transport_error(p), Disposition.FAILED, 503, HangupSide.SYSTEM),
    "exchange hangup while ringing (media timeout)": Ending(_hangup_while_ringing, Disposition.FAILED, 480,
                                                           HangupSide.SYSTEM, "media timeout"),
    "exchange hangup during the auction": Ending(lambda p: _auction_hangup(p), Disposition.FAILED, 480,
                                                 HangupSide.SYSTEM, "exchange shutting down", router=Slow),
    "caller CANCEL during the auction, no bid": Ending(lambda p: _auction_cancel(p), Disposition.CANCELLED, 487,
                                                      HangupSide.CALLER, router=NoBid),
    "the watchdog": Ending(_reap, Disposition.FAILED, 480, HangupSide.SYSTEM, "ended by the call watchdog",
                           router=Wedged),
    "shutdown: a task still running after the grace": Ending(lambda p: _shutdown(p), Disposition.FAILED, 480,
                                                             HangupSide.SYSTEM, "exchange shutting down",
                                                             router=Wedged),
}


async def _then(*steps: Awaitable[None]) -> None:
    for step in steps:
        await step


async def _transport_error(p: Play) -> None:
    p.h.sip.transport_error("udp", B)
    await p.h.pump()


async def _shutdown(p: Play) -> None:
    assert await p.h.flow.drain(grace_s=0.01) == 1  # Exchange.stop: the rest is ended, with its CDR
    assert statuses(p.h.out()) == [480]


async def _auction_cancel(p: Play) -> None:
    await p.caller_cancel()
    router = p.h.flow.router
    assert isinstance(router, Slow)
    router.window.set()  # no bid at or above the reserve: the CallFlow would reject a call already gone
    await p.h.pump()


async def _auction_hangup(p: Play) -> None:
    p.hangup("exchange shutting down")  # Exchange.stop hangs up every call, whatever it is doing
    await p.h.pump()
    router = p.h.flow.router
    assert isinstance(router, Slow)
    router.window.set()  # the auction ends after the call did: the CallFlow must not dial
    await p.h.pump()


@pytest.mark.parametrize("name", list(ENDINGS))
async def test_every_ending_ends_the_task_with_one_cdr_and_returns_every_counter(name: str, caplog) -> None:
    ending = ENDINGS[name]
    h = Harness({})
    router = ending.router(RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 5_000_000, ending.ring_s),)))
    h.flow.router = router
    a_invite = invite()
    sent = await h.feed(a_invite)
    [call] = h.b2bua.calls.values()
    legs = requests_of(sent, "INVITE")
    await ending.play(Play(h, call, a_invite, legs[0] if legs else None))
    await h.advance(64.0)  # lingering transactions, retransmissions and guard timers run out
    await asyncio.sleep(0)

    assert len(h.cdrs) == 1, h.cdrs
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.hangup_side) == (
        ending.disposition, ending.final_code, ending.hangup_side), cdr
    if ending.reason is not None:
        assert cdr.reason == ending.reason
    assert not h.flow._tasks and len(h.flow.watchdog) == 0, "the call's task is still running"
    assert not h.b2bua.calls and h.active == 0, "dce_active_calls would stay raised"
    assert h.flow.media.active_sessions == 0, "dce_media_sessions would stay raised"
    assert not router.routed.held
    assert router.log.count("acquire t1") == router.log.count("release t1"), router.log
    assert h.reaped == (1 if name == "the watchdog" else 0)
    if name == "the watchdog":
        assert any(r.levelno == logging.ERROR and call.id in r.getMessage() for r in caplog.records)
        assert cdr.destination == "sip:127.0.0.1:5080"  # the target whose slot it held


async def test_the_caller_hears_the_exchange_hangup_while_ringing() -> None:
    h = Harness({})
    h.flow.router = PlannedRouter(RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 0, RING_S),)))
    sent = await h.feed(invite())
    [leg] = requests_of(sent, "INVITE")
    [call] = h.b2bua.calls.values()
    await h.feed(response_to(leg.request, 180, to_tag="b"), addr=B)
    h.sip.hangup(call, reason="media timeout")
    await h.pump()
    sent = h.out()
    assert statuses(sent) == [480] and [s.addr for s in requests_of(sent, "CANCEL")] == [B]
    assert len(h.cdrs) == 1


class Watching:
    """A media plane that records when the CallFlow starts the RTP inactivity watch."""

    def __init__(self) -> None:
        self.answered: list[float] = []
        self.active_sessions = 0

    async def allocate(self, call_id, on_timeout):
        plane = self

        class Session:
            deferred = False

            def rewrite_from_a(self, sdp: bytes) -> bytes:
                return sdp

            def rewrite_from_b(self, sdp: bytes) -> bytes:
                return sdp

            def answered(self) -> None:
                plane.answered.append(plane.now())

            def close(self) -> None:
                plane.active_sessions -= 1

            async def finish(self) -> None:
                self.close()

        self.active_sessions += 1
        return Session()


async def test_media_inactivity_is_watched_from_the_answer_only() -> None:
    h = Harness({})
    h.flow.router = PlannedRouter(RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 0, 60),)))
    media = Watching()
    media.now = h.clock.monotonic  # type: ignore[attr-defined]
    h.flow.media = media
    a_invite = invite()
    sent = await h.feed(a_invite)
    [call] = h.b2bua.calls.values()
    play = Play(h, call, a_invite, requests_of(sent, "INVITE")[0])
    await play.ring()
    await play.advance(45)  # ringing long, no RTP: no watch yet
    assert media.answered == []
    await play.answer()
    assert media.answered == [h.clock.monotonic()]


@pytest.mark.parametrize(("campaign_s", "global_s", "expected_s"), [(600, 14400, 600), (None, 300, 300)])
async def test_the_maximum_call_duration_is_the_campaigns_else_the_exchanges(campaign_s, global_s, expected_s):
    h = Harness({})
    router = PlannedRouter(RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 0, RING_S),)))
    router.call_limits = CallLimits(max_call_duration_s=campaign_s)
    h.flow.router = router
    h.flow.watchdog = Watchdog(LifeBounds(max_call_duration_s=global_s))
    a_invite = invite()
    sent = await h.feed(a_invite)
    [call] = h.b2bua.calls.values()
    play = Play(h, call, a_invite, requests_of(sent, "INVITE")[0])
    await play.answer()
    await play.advance(expected_s - 1)
    assert h.cdrs == []
    byes = requests_of(await play.advance(1), "BYE")
    assert {s.addr for s in byes} == {CALLER, B}
    assert {s.request.get("Reason") for s in byes} == {'SIP;cause=200;text="max call duration"'}
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.hangup_side, cdr.reason) == (Disposition.ANSWERED, HangupSide.SYSTEM,
                                                              "max call duration")
    assert cdr.billable_s == expected_s


def test_the_longest_life_sums_auction_rings_talk_and_slack() -> None:
    bounds = LifeBounds(max_call_duration_s=3600, leg_guard_s=32, slack_s=60)
    targets = (PlannedTarget("a", "sip:a", 0, 20), PlannedTarget("b", "sip:b", 0, 30))
    assert bounds.longest_life(targets, CallLimits(auction_s=2)) == 2 + (20 + 32) + (30 + 32) + 3600 + 60
    assert bounds.longest_life(targets, CallLimits(max_call_duration_s=60)) == 52 + 62 + 60 + 60


class Deferred:
    """A deferred media plane (like rtpengine): rewrites are awaited; ``fail`` maps a side to what it raises."""

    def __init__(self, fail: dict[str, Exception]) -> None:
        self.fail = fail
        self.active_sessions = 0

    async def allocate(self, call_id, on_timeout):
        plane = self

        class Session:
            deferred = True
            done: dict[str, bytes] = {}

            async def rewrite(self, side: str, sdp: bytes, *, offer: bool) -> bytes:
                await asyncio.sleep(0)
                if side in plane.fail:
                    raise plane.fail[side]
                self.done[side] = b"v=0 via media server " + side.encode()
                return self.done[side]

            def rewrite_from_a(self, sdp: bytes) -> bytes:
                return self.done["a"]

            def answered(self) -> None:
                pass

            async def finish(self) -> MediaStats:
                plane.active_sessions -= 1
                return MediaStats()

        self.active_sessions += 1
        return Session()


async def test_a_media_server_failing_on_the_callees_answer_ends_the_call_with_one_cdr() -> None:
    h = Harness({})
    h.flow.router = PlannedRouter(RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 0, 60),)))
    media = h.flow.media = Deferred({"b": RtpengineUnavailable("no answer from rtpengine")})
    a_invite = invite()
    sent = await h.feed(a_invite)
    [leg] = requests_of(sent, "INVITE")
    assert leg.request.body == b"v=0 via media server a"  # the offer was prepared before the dial
    [call] = h.b2bua.calls.values()
    data = response_to(leg.request, 200, to_tag="b", contact="<sip:b@127.0.0.1:5080>", body=SDP_B)
    sent = await h.feed(data, addr=B)
    for _ in range(3):
        sent += await h.advance(0)
    assert 200 in statuses(sent) and requests_of(sent, "BYE"), sent  # A gets its 200 (unrewritten), then BYE
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.hangup_side, cdr.reason) == (Disposition.ANSWERED, HangupSide.SYSTEM,
                                                              "media unavailable")
    assert media.active_sessions == 0 and call.id not in h.flow._queues


async def test_a_media_server_failing_on_the_callers_offer_is_503_before_any_dial() -> None:
    h = Harness({})
    h.flow.router = PlannedRouter(RoutingPlan((PlannedTarget("t1", "sip:127.0.0.1:5080", 0, 60),)))
    media = h.flow.media = Deferred({"a": RtpengineUnavailable("no answer from rtpengine")})
    sent = await h.feed(invite())
    assert statuses(sent)[-1] == 503 and not requests_of(sent, "INVITE")
    final = [s.response for s in sent if s.message.__class__ is Response][-1]
    assert final.get("Reason") == 'Q.850;cause=47;text="media server unavailable"'
    [cdr] = h.cdrs
    assert (cdr.disposition, cdr.final_code, cdr.reason) == (Disposition.FAILED, 503, "media server unavailable")
    assert media.active_sessions == 0
