"""A destination the transport cannot use (a hostname: no DNS yet) fails that destination only.

The core never queues a datagram for a non-IP address: the client transaction to it fails with a transport
error at once (through the timer, so the B2BUA sees it after its own bookkeeping), and every other message and
timer goes on. The SIP driver, for its part, sends each datagram on its own through the asyncio adapter: one that
raises is reported to the core as a transport error for that destination, and the rest of the batch and the
timer still go out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import pytest
import uvloop

from dce.clock import LoopClock
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import CallEnded, DialFailed
from tests.unit.sipfactory import SDP_B, Sent, ack_for, describe, new_branch, response_to
from tests.unit.test_b2bua import ALICE, BOB, Harness

HOSTNAME_CONTACT = "<sip:bob@callee.example.com:5060>"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def all_to_ips(sent: list[Sent]) -> bool:
    return all(is_ip(item.addr[0]) for item in sent)


def test_caller_bye_is_answered_though_the_callee_contact_is_a_hostname() -> None:
    h = Harness()
    call = h.offer()
    h.dial(call)
    assert h.b_invite is not None
    ok = response_to(h.b_invite, 200, to_tag="bob-tag", contact=HOSTNAME_CONTACT, body=SDP_B)
    sent = h.feed(ok, BOB)
    assert all_to_ips(sent), [(s.message, s.addr) for s in sent]
    assert describe(sent) == ["200"]  # A gets its 200; the ACK to the hostname is not queued
    h.events()
    assert h.feed(ack_for(h.a_invite, sent[0].response, branch=new_branch())) == []

    sent = h.feed(h.a_request("BYE", call, 2))
    assert all_to_ips(sent)
    assert describe(sent) == ["200"] and sent[0].addr == ALICE
    assert [type(e) for e in h.events()] == [CallEnded]
    later = h.advance(h.now + 64)  # the BYE to the hostname failed at once: never retransmitted, no timer left
    assert later == [] and all_to_ips(later)
    assert not [t for t in h.endpoint.client_transactions.values() if t.request.method == "BYE"]


def test_callee_bye_reaches_the_caller_when_the_callee_route_is_a_hostname() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    dialog = call.b.dialog  # type: ignore[union-attr]
    assert dialog is not None
    dialog.route_set = ["<sip:proxy.example.com;lr>"]  # what a Record-Route with a hostname makes
    sent = h.feed(h.b_request("BYE", 1), BOB)
    assert all_to_ips(sent)
    assert sorted(describe(sent)) == ["200", "BYE"]
    assert [type(e) for e in h.events()] == [CallEnded]
    h.b2bua.hangup(call, h.now)  # nothing left to do, and nothing raises


def test_system_hangup_sends_the_caller_its_bye_when_the_callee_is_unreachable() -> None:
    h = Harness()
    call = h.offer()
    h.answer(call)
    call.b.dialog.remote_target = "sip:bob@callee.example.com"  # type: ignore[union-attr]
    h.b2bua.hangup(call, h.now, reason="max duration")
    sent = h.take()
    assert all_to_ips(sent)
    assert describe(sent) == ["BYE"] and sent[0].addr == ALICE
    later = h.advance(h.now + 1)  # A's BYE is retransmitted as usual; nothing goes to the hostname
    assert later and {s.addr for s in later} == {ALICE}


def test_dial_to_a_hostname_fails_that_leg_with_503_at_once() -> None:
    h = Harness()
    call = h.offer()
    h.b2bua.dial(call, "sip:bob@callee.example.com", h.now, ring_timeout=30)
    assert h.take() == []
    assert h.b2bua.next_timer() == h.now  # the failure is reported through the timer, now
    assert h.advance(h.now) == []
    (failed,) = h.events()
    assert isinstance(failed, DialFailed) and failed.status == 503
    sent = h.dial(call)  # the CallFlow fails over to the next destination as usual
    assert sent.uri == "sip:bob@198.51.100.20"


# -- the driver over the adapter -----------------------------------------------------------------------------
class BatchCore:
    """A core that has queued one datagram for a hostname between two for a real socket."""

    def __init__(self, good: tuple[str, int], deadline: float) -> None:
        self.queue = [(b"first", "udp", good), (b"bad", "udp", ("callee.example.com", 5060)),
                      (b"third", "udp", good)]
        self.deadline = deadline
        self.errors: list[tuple[str, tuple[str, int]]] = []

    def receive(self, data: bytes, transport: str, addr: tuple[str, int], now: float, *,
                stream: bool = False) -> None:
        pass

    def handle_timer(self, now: float) -> None:
        pass

    def transport_error(self, transport: str, addr: tuple[str, int], now: float, reason: str = "") -> None:
        self.errors.append((transport, addr))

    def next_timer(self) -> float | None:
        return self.deadline

    def datagrams_to_send(self) -> list[tuple[bytes, str, tuple[str, int]]]:
        out, self.queue = self.queue, []
        return out

    def next_event(self) -> None:
        return None


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_pump_sends_the_rest_of_the_batch_rearms_and_reports_the_bad_destination(loop_name: str) -> None:
    async def scenario() -> None:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        loop = asyncio.get_running_loop()
        core = BatchCore(receiver.getsockname(), loop.time() + 100)
        driver = SipDriver(core, clock=LoopClock(loop))  # type: ignore[arg-type]
        try:
            await driver.sockets.listen_udp("127.0.0.1", 0)
            driver.pump()
            await asyncio.sleep(0.05)
            got = {receiver.recv(100), receiver.recv(100)}
            assert got == {b"first", b"third"}
            assert driver._timer_at == core.deadline  # re-armed
            assert core.errors == [("udp", ("callee.example.com", 5060))]
        finally:
            receiver.close()
            await driver.close()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())
