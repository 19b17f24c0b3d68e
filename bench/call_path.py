"""Whole answered calls through the exchange's SIP glue and CallFlow, in one process, with a fake UDP socket.

SipDriver (receive -> pump -> CallFlow -> send), the real B2BUA and SipTransport, a static route and passthrough
media: INVITE, 180, 200, ACK, BYE, 200 per call, the peers' messages built and parsed here (included: a ceiling).
What ``bench/b2bua_core.py`` leaves out (the driver, the CallFlow task, the CDR) without SIPp's noise; run it
under ``valgrind --tool=callgrind`` with two call counts to get instructions per call, repeatable on a busy box.

    .venv/bin/python bench/call_path.py [--calls 3000]

Last line: ``calls=... us_per_call=... calls_per_s=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dce.billing.cdr import CallDetailRecord, Disposition
from dce.clock import LoopClock
from dce.compliance.verdict import Verdict
from dce.exchange.callflow import CallFlow
from dce.exchange.router import StaticRouter
from dce.exchange.sip_driver import SipDriver
from dce.media.relay import PassthroughMedia
from dce.routing.static import StaticRoutes
from dce.sip.b2bua import B2BUA
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, Response, parse
from tests.unit.sipfactory import SDP_A, SDP_B, ack_for, new_branch, request, response_to

DID = "+18005550100"
CALLER = ("192.0.2.10", 5060)
CALLEE = ("127.0.0.1", 5080)


class FakeUdp:
    """Takes what the transport sends."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.out.append(data)

    def close(self) -> None:
        pass


class Records:
    """The CDR sink and the metrics hooks, counting nothing but CDRs."""

    def __init__(self) -> None:
        self.cdrs: list[CallDetailRecord] = []

    def submit(self, cdr: CallDetailRecord) -> None:
        self.cdrs.append(cdr)

    def call_started(self) -> None: ...
    def call_finished(self, cdr: CallDetailRecord) -> None: ...
    def call_reaped(self) -> None: ...
    def dialled(self, delay_s: float) -> None: ...
    def screened(self, verdict: Verdict) -> None: ...
    def routed(self, seconds: float) -> None: ...


async def run(calls: int) -> float:
    """Seconds per call for ``calls`` answered calls (after a warm-up)."""
    records = Records()
    driver = SipDriver(B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)})),
                       clock=LoopClock(asyncio.get_running_loop()))
    udp = FakeUdp()
    driver.sockets._udp = udp  # type: ignore[attr-defined]  # the transport's socket, faked
    flow = CallFlow(sip=driver, router=StaticRouter(StaticRoutes({DID: ["sip:127.0.0.1:5080"]}), 30.0),
                    media=PassthroughMedia(), cdrs=records, observer=records, clock=driver.clock)
    driver.deliver_to(flow.dispatch)

    async def settle() -> list[Request | Response]:
        for _ in range(4):  # the call's task runs between messages
            await asyncio.sleep(0)
        sent = [parse(data) for data in udp.out]
        udp.out.clear()
        return sent

    async def one_call(n: int) -> None:
        a_invite = request("INVITE", f"sip:{DID}@10.0.0.1", body=SDP_A, call_id=f"{n}@a", from_tag=f"f{n}")
        driver.receive(a_invite, "udp", CALLER)
        b_invite = next(m for m in await settle() if isinstance(m, Request) and m.method == "INVITE")
        driver.receive(response_to(b_invite, 180, to_tag="t"), "udp", CALLEE)
        driver.receive(response_to(b_invite, 200, to_tag="t", contact="<sip:b@127.0.0.1:5080>", body=SDP_B),
                       "udp", CALLEE)
        ok = next(m for m in await settle() if isinstance(m, Response) and m.status == 200)
        driver.receive(ack_for(a_invite, ok, branch=new_branch()), "udp", CALLER)
        driver.receive(request("BYE", "sip:10.0.0.1:5060", call_id=f"{n}@a", from_tag=f"f{n}", to_tag=ok.to_tag,
                               cseq=2), "udp", CALLER)
        b_bye = next(m for m in await settle() if isinstance(m, Request) and m.method == "BYE")
        driver.receive(response_to(b_bye, 200), "udp", CALLEE)
        await settle()

    for n in range(200):  # warm-up
        await one_call(-n - 1)
    started = time.perf_counter()
    for n in range(calls):
        await one_call(n)
    elapsed = time.perf_counter() - started
    answered = [cdr for cdr in records.cdrs if cdr.disposition is Disposition.ANSWERED]
    assert len(answered) == calls + 200, f"{len(answered)} answered of {calls + 200}"
    return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    per_call = asyncio.run(run(args.calls))
    print(f"calls={args.calls} us_per_call={per_call * 1e6:.1f} calls_per_s={1 / per_call:.0f}")


if __name__ == "__main__":
    main()
