"""A real userspace rtpengine for tests: ``RtpengineProcess`` on a free ng port and RTP port block, loopback only.

No kernel module: ``--table=-1`` (userspace forwarding, no kernel table; rtpengine 10.5 falls back without
``--no-fallback``). Started in the foreground, logging to a file in the test's directory; ready once it answers
an ng ``ping``; stopped (SIGTERM, then SIGKILL) by :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import bencodepy

from tests.externals import require_binary
from tests.integration.sipp import _KINDS, HOST, _bindable, _handed_out, free_port

PORT_AREA = (29000, 32700)  # above SIPp's media ports (20000-29000), below the ephemeral range (32768-)


def free_rtp_block(size: int) -> tuple[int, int]:
    """A block of ``size`` UDP ports every one of which is free now (rtpengine gives up on a range with busy
    ports sooner than the relay does: other tests on this host bind relay ports)."""
    for low in range(PORT_AREA[0], PORT_AREA[1] - size, 2):
        block = range(low, low + size)
        if _handed_out.isdisjoint(block) and all(_bindable(p, _KINDS["udp"]) for p in block):
            _handed_out.update(block)
            return low, low + size - 1
    raise RuntimeError(f"no free block of {size} UDP ports in {PORT_AREA}")


class RtpengineProcess:
    """``rtpengine --foreground`` on ``HOST``; ``ng`` is its control address as ``udp:HOST:PORT``."""

    def __init__(self, workdir: Path, *, ports: int = 100) -> None:
        self.binary = require_binary("rtpengine")
        self.ng_port = free_port("udp")
        self.rtp_ports = free_rtp_block(ports)
        self.log_path = workdir / f"rtpengine-{self.ng_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ng(self) -> str:
        return f"udp:{HOST}:{self.ng_port}"

    def start(self, timeout: float = 10.0) -> RtpengineProcess:
        low, high = self.rtp_ports
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--foreground", "--table=-1", "--interface", HOST, "--listen-ng",
                 f"{HOST}:{self.ng_port}", "--port-min", str(low), "--port-max", str(high), "--log-stderr",
                 "--log-level", "6", "--no-log-timestamps", "--delete-delay", "0"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtpengine exited with {self.proc.returncode}:\n{self.log()}")
            if self.ping():
                return self
        self.stop()
        raise RuntimeError(f"rtpengine did not answer ng ping in {timeout} s:\n{self.log()}")

    def ping(self, wait: float = 0.2) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(wait)
            sock.sendto(b"p1 " + bencodepy.encode({"command": "ping"}), (HOST, self.ng_port))
            try:
                return sock.recv(1000).startswith(b"p1 ")
            except OSError:
                return False

    def list_calls(self) -> int:
        """How many calls rtpengine holds (ng ``list``)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"l1 " + bencodepy.encode({"command": "list"}), (HOST, self.ng_port))
            reply = bencodepy.decode(sock.recv(65535).partition(b" ")[2])
        return len(reply.get(b"calls", []))

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-6000:]
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> RtpengineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
