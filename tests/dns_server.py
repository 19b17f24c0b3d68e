"""A real DNS server on loopback for tests: dnsmasq (Debian package ``dnsmasq``) serving only the records given.

    with Dnsmasq(srv=[...], naptr=[...], hosts=[...]) as dns:
        resolver = SipResolver(nameservers=[dns.nameserver])

Names under ``local_domain`` that are not listed answer NXDOMAIN/NODATA (``--local``), nothing is forwarded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType

from tests.externals import require_binary


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Dnsmasq:
    """dnsmasq in the foreground on 127.0.0.1:<free port>; stopped on exit.

    ``srv``: ``(service_name, target, port, priority, weight)``; ``naptr``: ``(name, order, preference, flags,
    service, replacement)``; ``hosts``: ``(name, address)``; ``ttl``: of every answer.
    """

    def __init__(self, *, srv: Sequence[tuple[str, str, int, int, int]] = (),
                 naptr: Sequence[tuple[str, int, int, str, str, str]] = (),
                 hosts: Sequence[tuple[str, str]] = (), ttl: int = 30, local_domain: str = "test") -> None:
        self.binary = require_binary("dnsmasq")
        self.port = _free_udp_port()
        self.args = [
            self.binary, "--keep-in-foreground", f"--port={self.port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=",
            f"--local=/{local_domain}/", f"--local-ttl={ttl}", f"--auth-ttl={ttl}", "--log-facility=-",
        ]
        if os.geteuid() == 0:
            import pwd
            self.args.append(f"--user={pwd.getpwuid(0).pw_name}")
        self.args += [f"--srv-host={name},{target},{port},{priority},{weight}"
                      for name, target, port, priority, weight in srv]
        self.args += [f"--naptr-record={name},{order},{pref},{flags},{service},,{replacement}"
                      for name, order, pref, flags, service, replacement in naptr]
        self.args += [f"--host-record={name},{address}" for name, address in hosts]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Dnsmasq:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # ready once it answers a query
            if self.process.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            if _answers(self.port):
                return self
            time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError("dnsmasq did not start answering")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


def _answers(port: int) -> bool:
    """Whether a DNS server answers a query (any answer) on 127.0.0.1:``port``."""
    query = bytes.fromhex("abcd01000001000000000000") + b"\x05probe\x04test\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            return bool(sock.recv(512))
        except OSError:
            return False
