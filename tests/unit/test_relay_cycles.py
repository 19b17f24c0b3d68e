"""A finished relay session is freed by reference counting alone.

The exchange's GC policy (``dce.exchange.gc_policy``) freezes survivors every second and runs a full collection
only every ten minutes, so anything a call leaves in a reference cycle stays for up to ten minutes: at 300 CPS
that was 4 sockets and 4 ``_Socket`` objects per call (a soak's RSS climbed with every call).
"""

from __future__ import annotations

import gc
import random
import socket

from dce.media.relay import MediaRelay


def _free_range(size: int = 40) -> tuple[int, int]:
    for _ in range(50):
        low = random.randrange(30000, 32000 - size, 2)
        try:
            probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            for probe, port in zip(probes, (low, low + size - 1), strict=True):
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return low, low + size - 1
    raise RuntimeError("no free port range")


async def test_a_closed_relay_session_leaves_no_cyclic_garbage() -> None:
    relay = MediaRelay(address="127.0.0.1", port_range=_free_range(), rtp_timeout_s=30)
    gc.collect()
    gc.disable()
    try:
        for n in range(3):
            session = await relay.allocate(f"call-{n}", lambda: None)
            session.close()
        del session
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [type(o).__qualname__ for o in gc.garbage
                  if type(o).__module__ == "dce.media.relay" or isinstance(o, socket.socket)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        await relay.close()
    assert cyclic == []
