"""The SIP driver's pump: one path for inputs and commands, no nesting, the one timer, opening and shutdown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dce.clock import VirtualClock
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import B2BUA, CallEnded, CallEvent, CallOffered
from dce.sip.endpoint import SipEndpoint
from tests.unit.sipfactory import describe, parse_outbox, request
from tests.unit.test_callflow import CALLER, RecordedSockets, VirtualTimer, invite

CALLEE = ("127.0.0.1", 5080)


class Rig:
    """A driver over a real B2BUA, with a virtual clock, recorded sockets and a virtual timer."""

    def __init__(self) -> None:
        self.clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
        self.b2bua = B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)}))
        self.wire = RecordedSockets()
        self.timer = VirtualTimer()
        self.driver = SipDriver(self.b2bua, clock=self.clock, sockets=self.wire, timers=self.timer)
        self.events: list[CallEvent] = []

    def sent(self) -> list[str]:
        return describe(parse_outbox(self.wire.take()))


def test_events_wait_in_the_core_until_there_is_a_call_flow() -> None:
    rig = Rig()
    rig.driver.receive(invite(), "udp", CALLER)
    assert rig.sent() == ["100"]
    rig.driver.deliver_to(rig.events.append)
    assert [type(e) for e in rig.events] == [CallOffered]


def test_a_command_issued_while_pumping_loops_the_pump_instead_of_nesting() -> None:
    rig = Rig()
    depth = 0
    in_flight: list[int] = []
    dispatch = rig.driver._dispatch

    def counted() -> None:
        nonlocal depth
        depth += 1
        in_flight.append(depth)
        try:
            dispatch()
        finally:
            depth -= 1

    rig.driver._dispatch = counted  # type: ignore[method-assign]

    def reject_at_once(event: CallEvent) -> None:
        rig.events.append(event)
        if isinstance(event, CallOffered):
            rig.driver.reject(event.call, 404)
            assert rig.wire.sent == [], "a nested pump would have flushed already"

    rig.driver.deliver_to(reject_at_once)
    rig.driver.receive(invite(), "udp", CALLER)
    assert [type(e) for e in rig.events] == [CallOffered, CallEnded]  # the reject's event, in the same pump
    assert rig.sent() == ["100", "404"]
    assert max(in_flight) == 1


def test_a_hangup_delivers_its_events_at_once() -> None:
    rig = Rig()
    rig.driver.deliver_to(rig.events.append)
    rig.driver.receive(invite(), "udp", CALLER)
    [offered] = rig.events
    rig.driver.dial(offered.call, "sip:127.0.0.1:5080", ring_timeout=30, max_duration=None)
    rig.wire.take()
    rig.driver.hangup(offered.call, reason="media timeout")
    assert [type(e) for e in rig.events] == [CallOffered, CallEnded]  # no loop iteration needed
    assert rig.sent() == ["480"]  # the CANCEL waits for the callee's first provisional (RFC 3261 9.1)


def test_the_one_timer_follows_the_core_and_fires_its_retransmissions() -> None:
    rig = Rig()
    rig.driver.deliver_to(rig.events.append)
    rig.driver.receive(invite(), "udp", CALLER)
    rig.driver.dial(rig.events[0].call, "sip:127.0.0.1:5080", ring_timeout=30, max_duration=None)
    assert rig.sent() == ["100", "INVITE"]
    armed = rig.timer.armed
    assert armed is not None and armed.when == rig.b2bua.next_timer() == 100.5  # timer A: T1
    rig.clock.advance(0.5)
    rig.timer.fire_due(rig.clock.monotonic())
    assert rig.sent() == ["INVITE"]  # retransmitted
    assert rig.timer.armed is not None and rig.timer.armed.when == rig.b2bua.next_timer() == 101.5


def test_shutdown_hangs_up_every_call_and_pumps_at_once() -> None:
    rig = Rig()
    rig.driver.deliver_to(rig.events.append)
    for n in range(2):
        rig.driver.receive(request("INVITE", "sip:+18005550100@10.0.0.1", call_id=f"c{n}@a", from_tag=f"f{n}"),
                           "udp", CALLER)
    rig.wire.take()
    rig.driver.hang_up_all("exchange shutting down")
    assert [type(e) for e in rig.events] == [CallOffered, CallOffered, CallEnded, CallEnded]
    assert rig.sent() == ["480", "480"] and rig.b2bua.active_calls == 0


class FailingSockets(RecordedSockets):
    def __init__(self, fail_on: str | None) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.listening: list[str] = []
        self.closed = False

    async def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        return self._listen("udp", host, port)

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        return self._listen("tcp", host, port)

    def _listen(self, kind: str, host: str, port: int) -> tuple[str, int]:
        if kind == self.fail_on:
            raise OSError("address in use")
        self.listening.append(kind)
        return host, port or 40000

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("fail_on", "listen", "error"), [
    ("tcp", [("udp", "127.0.0.1", 0), ("tcp", "127.0.0.1", 5060)], OSError),
    (None, [("tcp", "127.0.0.1", 5060)], ValueError),  # no udp listener
])
async def test_a_failed_open_closes_what_it_opened(fail_on, listen, error) -> None:
    sockets = FailingSockets(fail_on)
    driver = SipDriver(B2BUA(SipEndpoint(local={})), clock=VirtualClock(), sockets=sockets, timers=VirtualTimer())
    with pytest.raises(error):
        await driver.open(listen)
    assert sockets.closed


async def test_open_names_each_transport_by_its_first_address_or_the_public_one() -> None:
    sockets = FailingSockets(None)
    endpoint = SipEndpoint(local={})
    driver = SipDriver(B2BUA(endpoint), clock=VirtualClock(), sockets=sockets, timers=VirtualTimer())
    await driver.open([("udp", "127.0.0.1", 0), ("tcp", "127.0.0.1", 5070), ("udp", "127.0.0.2", 5090)],
                      public_address="203.0.113.9")
    assert driver.addresses == {"udp": ("127.0.0.1", 40000), "tcp": ("127.0.0.1", 5070)}
    assert endpoint.local == {"udp": ("203.0.113.9", 40000), "tcp": ("203.0.113.9", 5070)}
    assert sockets.listening == ["udp", "tcp", "udp"]


async def test_nothing_is_armed_once_closed() -> None:
    rig = Rig()
    rig.driver.deliver_to(rig.events.append)
    rig.driver.receive(invite(), "udp", CALLER)
    rig.driver.sockets = FailingSockets(None)
    await rig.driver.close()
    rig.driver.dial(rig.events[0].call, "sip:127.0.0.1:5080", ring_timeout=30, max_duration=None)  # a late task
    assert rig.b2bua.next_timer() is not None and rig.timer.armed is None


def test_a_tls_next_hop_resolved_from_a_name_expects_a_certificate_for_that_name() -> None:
    rig = Rig()
    rig.driver.deliver_to(rig.events.append)
    rig.driver.receive(invite(), "udp", CALLER)
    [offered] = rig.events
    rig.driver.dial(offered.call, "sips:buyer@buyer.test", ring_timeout=30, max_duration=None,
                    next_hop=("tls", "192.0.2.8", 5061))
    rig.driver.dial(offered.call, "sips:buyer@192.0.2.9", ring_timeout=30, max_duration=None,
                    next_hop=("tls", "192.0.2.9", 5061))
    assert rig.wire.tls_names == {("192.0.2.8", 5061): "buyer.test"}  # an address literal is checked as itself
