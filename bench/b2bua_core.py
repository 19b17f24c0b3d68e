"""The sans-IO SIP core alone: full calls (INVITE, 180, 200, ACK, BYE, 200) through the B2BUA in memory.

No sockets, no event loop: this is the CPU the SIP stack spends per call, the budget every other room adds to.

    .venv/bin/python bench/b2bua_core.py [--calls 5000] [--profile]

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

from dce.sip.b2bua import B2BUA, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, Response, parse
from tests.unit.sipfactory import SDP_A, SDP_B, ack_for, new_branch, request, response_to

CALLER = ("192.0.2.10", 5060)
CALLEE = ("127.0.0.1", 5080)


def one_call(b2bua: B2BUA, n: int, now: float) -> int:
    """Walk call ``n`` end to end; return the number of messages the core handled (in + out)."""
    out = b2bua.datagrams_to_send
    a_invite = request("INVITE", "sip:+18005550100@10.0.0.1", body=SDP_A, call_id=f"{n}@a", from_tag=f"f{n}")
    b2bua.receive(a_invite, "udp", CALLER, now)
    event = b2bua.next_event()
    assert isinstance(event, CallOffered)
    b2bua.dial(event.call, "sip:127.0.0.1:5080", now, ring_timeout=30)
    sent = [parse(d) for d, _, _ in out()]
    b_invite = next(m for m in sent if isinstance(m, Request))
    b2bua.receive(response_to(b_invite, 180, to_tag="t"), "udp", CALLEE, now)
    b2bua.receive(response_to(b_invite, 200, to_tag="t", contact="<sip:b@127.0.0.1:5080>", body=SDP_B),
                  "udp", CALLEE, now)
    sent += [parse(d) for d, _, _ in out()]
    ok = next(m for m in sent if isinstance(m, Response) and m.status == 200)
    b2bua.receive(ack_for(a_invite, ok, branch=new_branch()), "udp", CALLER, now)
    bye = request("BYE", "sip:10.0.0.1:5060", call_id=f"{n}@a", from_tag=f"f{n}", to_tag=ok.to_tag, cseq=2)
    b2bua.receive(bye, "udp", CALLER, now)
    sent += [parse(d) for d, _, _ in out()]
    b_bye = next(m for m in sent if isinstance(m, Request) and m.method == "BYE")
    b2bua.receive(response_to(b_bye, 200), "udp", CALLEE, now)
    while b2bua.next_event() is not None:
        pass
    return 6 + len(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="print the top functions by own time")
    args = parser.parse_args()
    b2bua = B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)}))
    for n in range(200):  # warm-up
        one_call(b2bua, -n - 1, 0.0)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    messages = 0
    for n in range(args.calls):
        messages += one_call(b2bua, n, n * 0.003)
    elapsed = time.perf_counter() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    # The test peers' own work (building and parsing their side's messages) is included: it is a ceiling.
    print(f"calls={args.calls} us_per_call={elapsed / args.calls * 1e6:.1f} "
          f"calls_per_s={args.calls / elapsed:.0f} messages_per_call={messages / args.calls:.1f}")


if __name__ == "__main__":
    main()
