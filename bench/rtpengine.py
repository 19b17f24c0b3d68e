"""rtpengine (userspace, no kernel module) beside the in-process relay, same load, one run.

Both media planes get N concurrent calls of paced G.711 (one 172-byte RTP packet every 20 ms per direction per
call, from ``bench/relay.py``'s load generator in a second process). The relay runs in this process (its CPU is
ours); rtpengine runs as ``rtpengine --foreground --table=-1`` and is set up through our ng client
(``RtpengineMedia``: offer, answer, delete), its CPU read from ``/proc/PID/stat``. Reported per plane: loss and
CPU over the send window, and the packets the plane says it forwarded.

    .venv/bin/python bench/rtpengine.py --calls 50 --seconds 10

The last line is ``key=value`` pairs, e.g. ``calls=50 relay_loss_pct=0.0 relay_cpu_pct=20.1
rtpengine_loss_pct=0.0 rtpengine_cpu_pct=9.8 ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay as relay_bench  # bench/relay.py: its load generator, and the relay run beside rtpengine

from dce.media.ng import NgInstance
from dce.media.rtpengine import RtpengineMedia
from dce.media.sdp import parse_sdp

HOST = relay_bench.HOST


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _ping(media: RtpengineMedia, deadline: float) -> None:
    while True:
        try:
            await media.transport.call({"command": "ping"})
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _rtpengine_run(args: argparse.Namespace) -> dict[str, object]:
    binary = shutil.which("rtpengine") or "/usr/bin/rtpengine"
    low, high = (int(x) for x in args.rtpengine_ports.split("-"))
    ng_port = _free_udp_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-rtpengine-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, "--foreground", "--table=-1", "--interface", HOST, "--listen-ng", f"{HOST}:{ng_port}",
         "--port-min", str(low), "--port-max", str(high), "--log-stderr", "--log-level", "4",
         "--num-threads", str(args.rtpengine_threads)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    media = await RtpengineMedia.open([NgInstance(HOST, ng_port)], timeout_s=1.0, retransmit_s=0.25, down_s=1.0,
                                      rtp_timeout_s=60)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    gen = ctx.Process(target=relay_bench._loadgen_main, args=(child, args.calls, args.seconds, "asyncio"),
                      daemon=True)
    try:
        await _ping(media, time.monotonic() + 10)
        gen.start()
        ports = await relay_bench._recv(parent)
        assert isinstance(ports, list)
        sessions, targets = [], []
        for call in range(args.calls):
            a_port, b_port = ports[2 * call], ports[2 * call + 1]
            session = await media.allocate(f"bench-{call}", lambda: None)
            offer = await session.rewrite("a", relay_bench._sdp(a_port), offer=True)
            answer = await session.rewrite("b", relay_bench._sdp(b_port), offer=False)
            sessions.append(session)
            targets += [parse_sdp(answer).media[0].port, parse_sdp(offer).media[0].port]
        parent.send(targets)
        assert await relay_bench._recv(parent) == "start"
        cpu0, wall0 = _cpu_seconds(proc.pid), time.perf_counter()
        assert await relay_bench._recv(parent) == "stop"
        cpu1, wall1 = _cpu_seconds(proc.pid), time.perf_counter()
        result = await relay_bench._recv(parent)
        assert isinstance(result, dict)
        finals = [await s.finish() for s in sessions]
    finally:
        await media.close()
        gen.join(5)
        if gen.is_alive():
            gen.terminate()
        proc.terminate()
        proc.wait(5)
        log.close()
    wall = wall1 - wall0
    sent, received = result["sent"], result["received"]
    relayed = sum(f.a_to_b.rtp_packets + f.b_to_a.rtp_packets for f in finals)
    return {
        "sent": sent,
        "relayed": relayed,
        "received": received,
        "loss_pct": round(100.0 * (sent - received) / max(sent, 1), 3),
        "cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
        "us_per_pkt": round(1e6 * (cpu1 - cpu0) / max(relayed, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port-range", default="42000-49999", help="relay RTP ports, LOW-HIGH (4 per call)")
    parser.add_argument("--rtpengine-ports", default="50000-59999", help="rtpengine's --port-min/--port-max")
    parser.add_argument("--rtpengine-threads", type=int, default=2, help="rtpengine --num-threads")
    args = parser.parse_args()
    args.loop = "asyncio"
    relay = asyncio.run(relay_bench._run(args))
    engine = asyncio.run(_rtpengine_run(args))
    line = {"calls": args.calls, "seconds": args.seconds,
            "relay_loss_pct": relay["loss_pct"], "relay_cpu_pct": relay["relay_cpu_pct"],
            "relay_us_per_pkt": relay["us_per_pkt"], "relay_pps": relay["pps"],
            **{f"rtpengine_{k}": v for k, v in engine.items() if k != "sent"}}
    print(" ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
