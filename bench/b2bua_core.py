"""The sans-IO SIP core alone: full calls (INVITE, 180, 200, ACK, BYE, 200) through the B2BUA in memory.

No sockets, no event loop: this is the CPU the SIP stack spends per call, the budget every other room adds to.
``--driver`` feeds the same calls through the exchange's SipDriver (its pump, a virtual clock, recorded sockets):
the difference is what the driver costs per call.

    .venv/bin/python bench/b2bua_core.py [--calls 5000] [--driver] [--profile]

Last line: ``calls=... us_per_call=... calls_per_s=... messages_per_call=...``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.clock import VirtualClock
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import B2BUA, Call, CallEvent, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, Response, parse
from tests.unit.sipfactory import SDP_A, SDP_B, ack_for, new_branch, request, response_to

CALLER = ("192.0.2.10", 5060)
CALLEE = ("127.0.0.1", 5080)


Datagram = tuple[bytes, str, tuple[str, int]]


class CoreStack:
    """The B2BUA driven directly, ``now`` given per call."""

    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua
        self.now = 0.0

    def receive(self, data: bytes, addr: tuple[str, int]) -> None:
        self.b2bua.receive(data, "udp", addr, self.now)

    def offered(self) -> CallEvent | None:
        return self.b2bua.next_event()

    def dial(self, call: Call) -> None:
        self.b2bua.dial(call, "sip:127.0.0.1:5080", self.now, ring_timeout=30)

    def out(self) -> list[Datagram]:
        return self.b2bua.datagrams_to_send()

    def drain(self) -> None:
        while self.b2bua.next_event() is not None:
            pass


class DriverStack(CoreStack):
    """The same B2BUA behind a SipDriver: a virtual clock, recorded sockets, a timer that never fires."""

    def __init__(self, b2bua: B2BUA) -> None:
        super().__init__(b2bua)
        self.clock = VirtualClock(monotonic=0.0)
        self.sent: list[Datagram] = []
        self.events: list[CallEvent] = []
        self.driver = SipDriver(b2bua, clock=self.clock, sockets=self, timers=self)  # type: ignore[arg-type]
        self.driver.deliver_to(self.events.append)

    def send(self, data: bytes, transport: str, addr: tuple[str, int]) -> None:
        self.sent.append((data, transport, addr))

    def call_at(self, when: float, callback: object) -> DriverStack:
        return self

    def cancel(self) -> None:
        pass

    def receive(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.now > self.clock.monotonic():
            self.clock.advance(self.now - self.clock.monotonic())
        self.driver.receive(data, "udp", addr)

    def offered(self) -> CallEvent | None:
        return self.events.pop(0) if self.events else None

    def dial(self, call: Call) -> None:
        self.driver.dial(call, "sip:127.0.0.1:5080", ring_timeout=30, max_duration=None)

    def out(self) -> list[Datagram]:
        out, self.sent = self.sent, []
        return out

    def drain(self) -> None:
        self.events.clear()


def one_call(stack: CoreStack, n: int, now: float) -> int:
    """Walk call ``n`` end to end; return the number of messages the core handled (in + out)."""
    stack.now = now
    out = stack.out
    a_invite = request("INVITE", "sip:+18005550100@10.0.0.1", body=SDP_A, call_id=f"{n}@a", from_tag=f"f{n}")
    stack.receive(a_invite, CALLER)
    event = stack.offered()
    assert isinstance(event, CallOffered)
    stack.dial(event.call)
    sent = [parse(d) for d, _, _ in out()]
    b_invite = next(m for m in sent if isinstance(m, Request))
    stack.receive(response_to(b_invite, 180, to_tag="t"), CALLEE)
    stack.receive(response_to(b_invite, 200, to_tag="t", contact="<sip:b@127.0.0.1:5080>", body=SDP_B), CALLEE)
    sent += [parse(d) for d, _, _ in out()]
    ok = next(m for m in sent if isinstance(m, Response) and m.status == 200)
    stack.receive(ack_for(a_invite, ok, branch=new_branch()), CALLER)
    bye = request("BYE", "sip:10.0.0.1:5060", call_id=f"{n}@a", from_tag=f"f{n}", to_tag=ok.to_tag, cseq=2)
    stack.receive(bye, CALLER)
    sent += [parse(d) for d, _, _ in out()]
    b_bye = next(m for m in sent if isinstance(m, Request) and m.method == "BYE")
    stack.receive(response_to(b_bye, 200), CALLEE)
    stack.drain()
    return 6 + len(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--driver", action="store_true", help="through the SipDriver's pump (fake sockets)")
    parser.add_argument("--profile", action="store_true", help="print the top functions by own time")
    args = parser.parse_args()
    b2bua = B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)}))
    stack = (DriverStack if args.driver else CoreStack)(b2bua)
    for n in range(200):  # warm-up
        one_call(stack, -n - 1, 0.0)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    messages = 0
    for n in range(args.calls):
        messages += one_call(stack, n, n * 0.003)
    elapsed = time.perf_counter() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    # The test peers' own work (building and parsing their side's messages) is included: it is a ceiling.
    print(f"calls={args.calls} us_per_call={elapsed / args.calls * 1e6:.1f} "
          f"calls_per_s={args.calls / elapsed:.0f} messages_per_call={messages / args.calls:.1f}")


if __name__ == "__main__":
    main()
