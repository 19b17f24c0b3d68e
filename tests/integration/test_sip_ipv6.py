"""A call over IPv6 loopback through a real ``dce serve``: SIPp caller on [::1] -> dce udp:[::1] listener ->
SIPp callee at ``sip:...@[::1]:port`` (our Via and Contact carry bracketed IPv6 addresses, or SIPp could not
answer). The exchange listens on IPv4 too, and an IPv4 call in the same run still works.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.externals import require_binary
from tests.integration.sipp import DID, HOST, ExchangeProcess, SippUas, fetch_cdrs, free_port, run_sipp_uac

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
V6 = "::1"
V6_ARGS = ["-i", V6, "-mi", V6]  # after the harness's IPv4 ones: SIPp takes the last


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind((V6, 0))
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _externals() -> None:
    require_binary("sipp")
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")


def bound_v6(port: int) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((V6, port))
        except OSError:
            return True
    return False


class SippUas6(SippUas):
    """The harness's SIPp callee, on [::1]."""

    def __init__(self, scenario_name: str, workdir: Path, **kwargs: object) -> None:
        super().__init__(scenario_name, workdir, extra=V6_ARGS, **kwargs)  # type: ignore[arg-type]

    @property
    def uri(self) -> str:
        return f"sip:[{V6}]:{self.port}"

    def start(self, timeout: float = 5.0) -> SippUas6:
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=(self.workdir / "stdout.txt").open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not bound_v6(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop(timeout=1)
                raise RuntimeError(f"sipp {self.name} did not listen on [::1]:{self.port}")
            time.sleep(0.05)
        return self


def test_a_call_over_ipv6_loopback(tmp_path: Path, migrated_database_url: str) -> None:
    callee = SippUas6("uas_answer", tmp_path, calls=1, name="uas6")
    callee4 = SippUas("uas_answer", tmp_path, calls=1, name="uas4")
    with callee, callee4:
        exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url,
                                   {DID: [callee.uri], "+18005550101": [callee4.uri]})
        port = exchange.sip_port
        exchange.extra_config = {"sip": {"listen": [f"udp:{HOST}:{port}", f"udp:[{V6}]:{port}",
                                                    f"tcp:[{V6}]:{free_port('tcp')}"]}}
        exchange.start()
        try:
            caller = run_sipp_uac("uac_basic", f"[{V6}]:{port}", tmp_path, hold_ms=300, timeout=30, extra=V6_ARGS,
                                  name="uac6")
            assert caller.successful == 1, caller.describe() + exchange.log(6000)
            callee_result = callee.stop()
            assert callee_result.successful == 1, callee_result.describe()
            messages = callee_result.messages()
            assert f"Via: SIP/2.0/UDP [{V6}]:{port};" in messages and f"<sip:[{V6}]:{port}>" in messages

            caller4 = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=300, timeout=30,
                                   service="+18005550101", name="uac4")
            assert caller4.successful == 1, caller4.describe() + exchange.log(6000)
            assert f"Via: SIP/2.0/UDP {HOST}:{port};" in callee4.stop().messages()
            cdrs = fetch_cdrs(exchange.http_base, 2)
            assert [c["disposition"] for c in cdrs] == ["answered", "answered"]
        finally:
            alive = exchange.alive()
            exchange.stop()
        assert alive, exchange.log()
