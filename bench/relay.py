"""Benchmark the in-process media relay with paced G.711 RTP from a second process.

The relay runs in this process; a load generator (``multiprocessing``, spawn) plays both ends of N calls,
sending one 172-byte RTP packet every 20 ms per direction per call, and counts what comes back. Reported:
packets/s relayed, loss, and the relay process's CPU (user+sys) over the send window.

    .venv/bin/python bench/relay.py --calls 50 --seconds 10 [--loop uvloop]

The last line is ``key=value`` pairs, e.g. ``calls=50 pps=5000 loss_pct=0.0 relay_cpu_pct=23.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import socket
import struct
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dce.media.relay import MediaRelay
from dce.media.sdp import parse_sdp

HOST = "127.0.0.1"
PTIME = 0.020
PAYLOAD = b"\xff" * 160  # 20 ms of G.711


def _install_loop(kind: str) -> None:
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
    ).encode()


# -- load generator (second process) -----------------------------------------------------------------


async def _loadgen(conn: Connection, calls: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(2 * calls):  # [a0, b0, a1, b1, ...]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind((HOST, 0))
        socks.append(s)
    conn.send([s.getsockname()[1] for s in socks])
    targets: list[int] = conn.recv()  # relay port each socket must send to
    received = [0]
    buf = bytearray(2048)

    def on_readable(s: socket.socket) -> None:
        while True:
            try:
                s.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            received[0] += 1

    for s in socks:
        loop.add_reader(s.fileno(), on_readable, s)
    header = struct.Struct("!BBHII")
    seq = [0] * len(socks)
    sent = 0
    slots = 10  # spread each 20 ms tick over 10 slots of 2 ms
    start = loop.time() + 0.1
    conn.send("start")
    tick = 0
    end = start + seconds
    while True:
        at = start + tick * PTIME / slots
        if at >= end:
            break
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for i in range(tick % slots, len(socks), slots):
            n = seq[i] = (seq[i] + 1) & 0xFFFF
            try:
                socks[i].sendto(header.pack(0x80, 0, n, n * 160, i) + PAYLOAD, (HOST, targets[i]))
                sent += 1
            except BlockingIOError:
                pass
        tick += 1
    conn.send("stop")
    await asyncio.sleep(0.5)  # let in-flight packets land
    conn.send({"sent": sent, "received": received[0]})
    for s in socks:
        loop.remove_reader(s.fileno())
        s.close()


def _loadgen_main(conn: Connection, calls: int, seconds: float, loop_kind: str) -> None:
    _install_loop(loop_kind)
    asyncio.run(_loadgen(conn, calls, seconds))


# -- relay (this process) ----------------------------------------------------------------------------


async def _recv(conn: Connection) -> object:
    """Await one message from the pipe without blocking the relay's loop."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


async def _run(args: argparse.Namespace) -> dict[str, object]:
    low, high = (int(x) for x in args.port_range.split("-"))
    relay = MediaRelay(address=HOST, port_range=(low, high), rtp_timeout_s=60)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_loadgen_main, args=(child, args.calls, args.seconds, args.loop), daemon=True)
    proc.start()
    try:
        ports = await _recv(parent)
        assert isinstance(ports, list)
        sessions, targets = [], []
        for call in range(args.calls):
            a_port, b_port = ports[2 * call], ports[2 * call + 1]
            session = await relay.allocate(f"bench-{call}", lambda: None)
            b_target = parse_sdp(session.rewrite_from_a(_sdp(a_port))).media[0].port
            a_target = parse_sdp(session.rewrite_from_b(_sdp(b_port))).media[0].port
            sessions.append(session)
            targets += [a_target, b_target]
        parent.send(targets)
        assert await _recv(parent) == "start"
        cpu0, wall0 = _cpu(), time.perf_counter()
        assert await _recv(parent) == "stop"
        cpu1, wall1 = _cpu(), time.perf_counter()
        result = await _recv(parent)
        assert isinstance(result, dict)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
    relayed = sum(s.stats.a_to_b.rtp_packets + s.stats.b_to_a.rtp_packets for s in sessions)
    dropped = sum(s.stats.a_to_b.dropped_packets + s.stats.b_to_a.dropped_packets for s in sessions)
    await relay.close()
    wall = wall1 - wall0
    sent, received = result["sent"], result["received"]
    return {
        "calls": args.calls,
        "seconds": round(wall, 2),
        "loop": args.loop,
        "sent": sent,
        "relayed": relayed,
        "relay_dropped": dropped,
        "received": received,
        "pps": round(relayed / wall),
        "loss_pct": round(100.0 * (sent - received) / max(sent, 1), 3),
        "relay_user_pct": round(100.0 * (cpu1[0] - cpu0[0]) / wall, 1),
        "relay_sys_pct": round(100.0 * (cpu1[1] - cpu0[1]) / wall, 1),
        "us_per_pkt": round(1e6 * (sum(cpu1) - sum(cpu0)) / max(relayed, 1), 1),
        "relay_cpu_pct": round(100.0 * (sum(cpu1) - sum(cpu0)) / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--port-range", default="42000-49999", help="relay RTP ports, LOW-HIGH (4 per call)")
    args = parser.parse_args()
    _install_loop(args.loop)
    stats = asyncio.run(_run(args))
    print(" ".join(f"{k}={v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
