"""Harness for tests that put a real ``dce serve`` between SIPp peers.

- :func:`free_port`, :func:`free_media_port`: loopback ports that are free right now (UDP, TCP or both).
- :class:`ExchangeProcess`: writes a YAML config, runs ``dce migrate`` then ``dce serve`` as a subprocess
  (output to a log file), waits for ``/health/ready``, stops it with SIGTERM then SIGKILL; dumps the log
  when it fails.
- :class:`SippUas`: a SIPp callee in the background; :func:`run_sipp_uac`: a SIPp caller in the foreground.
  Both return a :class:`SippResult` (exit code, the cumulative counters of ``-trace_stat``, the error log).
- :func:`fetch_cdrs`: poll ``GET /api/v1/calls`` until the batching CDR writer has written the expected rows.

Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "sip-test-scenarios"
HOST = "127.0.0.1"
DID = "+18005550100"
CALLER = "+15551230000"  # the From user of the uac_* scenarios


# --------------------------------------------------------------------------------------------- ports


def _bindable(port: int, kinds: tuple[int, ...], host: str = HOST) -> bool:
    socks: list[socket.socket] = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            socks.append(sock)
            sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


_KINDS = {
    "udp": (socket.SOCK_DGRAM,),
    "tcp": (socket.SOCK_STREAM,),
    "both": (socket.SOCK_DGRAM, socket.SOCK_STREAM),
}
_handed_out: set[int] = set()


def free_port(kind: str = "both", host: str = HOST) -> int:
    """A port free on ``host`` for ``kind`` ("udp", "tcp" or "both"), not handed out before here."""
    kinds = _KINDS[kind]
    for _ in range(200):
        with socket.socket(socket.AF_INET, kinds[0]) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port not in _handed_out and _bindable(port, kinds, host):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free {kind} port on {host}")


def free_media_port(host: str = HOST, span: int = 4) -> int:
    """An even UDP port with ``span`` consecutive free ports (RTP, RTCP; SIPp also binds port + 2)."""
    for _ in range(200):
        port = random.randrange(20000, 29000, 2)
        block = range(port, port + span)
        if _handed_out.isdisjoint(block) and all(_bindable(p, _KINDS["udp"], host) for p in block):
            _handed_out.update(block)
            return port
    raise RuntimeError(f"no free media port block on {host}")


def free_port_range(size: int = 200, host: str = HOST) -> tuple[int, int]:
    """A block of UDP ports for the exchange's relay, free at the time of asking.

    Drawn from 10000-20000: below the SIPp media ports of :func:`free_media_port` and below Linux's ephemeral
    range (32768-60999), where :func:`free_port` and every client socket land.
    """
    assert size <= 9000, size
    for low in range(10000, 20000 - size, 2):  # the lowest free block: small ones pack low, large gaps stay high
        block = range(low, low + size)
        if _handed_out.isdisjoint(block) and all(_bindable(p, _KINDS["udp"], host) for p in block[::10]):
            _handed_out.update(block)
            return low, low + size - 1
    raise RuntimeError(f"no free block of {size} RTP ports in 10000-20000")


def _wait_bound(port: int, kind: str, timeout: float) -> bool:
    """Wait until someone holds ``port`` (a server we started has bound it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _bindable(port, _KINDS[kind]):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------- exchange


def dce_command() -> list[str]:
    """How to run the ``dce`` console script of this checkout's environment."""
    script = Path(sys.executable).with_name("dce")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dce.exchange.cli"]


_admin_keys: dict[str, str] = {}  # http_base -> the admin API key of the ExchangeProcess serving there


def admin_headers(url: str) -> dict[str, str]:
    """``X-API-Key`` of the ExchangeProcess whose side API ``url`` is on (auth is on by default), else nothing."""
    for base, key in _admin_keys.items():
        if url.startswith(base):
            return {"X-API-Key": key}
    return {}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` as the admin of the exchange serving it: ``(status, body)``; status 0 when nothing answered."""
    try:
        request = urllib.request.Request(url, headers=admin_headers(url))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def at_head(database_url: str) -> bool:
    """Whether the database at ``database_url`` exists and is at the latest Alembic revision (a read, no change)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection
    from sqlalchemy.pool import NullPool

    from dce.db.engine import create_engine
    from dce.db.migrate import alembic_config
    from tests.databases import run_coroutine

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())

    def current(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async def read() -> set[str]:
        engine = create_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(current)
        finally:
            await engine.dispose()

    try:
        return run_coroutine(read()) == heads
    except Exception:  # no such database yet, a proxy that is down, ...: let `dce migrate` say what is wrong
        return False


@dataclass
class ExchangeProcess:
    """A ``dce serve`` subprocess on free ports. Use as a context manager, or call start()/stop()."""

    workdir: Path
    database_url: str
    static_routes: dict[str, list[str]] = field(default_factory=dict)
    media_mode: str = "passthrough"
    ring_timeout_s: float = 30.0
    rtp_timeout_s: float = 60.0
    transports: tuple[str, ...] = ("udp", "tcp")
    log_level: str = "INFO"
    extra_config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    rtp_port_count: int = 200
    command: list[str] | None = None  # how to run ``dce`` (default: dce_command())

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port("both")
        self.http_port = free_port("tcp")
        self.rtp_ports = free_port_range(self.rtp_port_count)
        self.config_path = self.workdir / "dce.yaml"
        self.log_path = self.workdir / "dce.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.admin_key = f"test-admin-{secrets.token_urlsafe(32)}"  # auth.bootstrap_admin_key
        _admin_keys[self.http_base] = self.admin_key

    # addresses
    @property
    def sip_target(self) -> str:
        return f"{HOST}:{self.sip_port}"

    @property
    def http_base(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def config(self) -> dict[str, Any]:
        low, high = self.rtp_ports
        config: dict[str, Any] = {
            "sip": {
                "listen": [f"{t}:{HOST}:{self.sip_port}" for t in self.transports],
                "public_address": None,
                "unknown_sources": "allow",  # a test wanting trunks passes extra_config (sip.unknown_sources: reject)
                # SIPp callers run from HOST, at up to hundreds of CPS: trusted, as a carrier's trunk would be
                # (a test of the flood guard floods from another loopback address, 127.0.0.2 and up)
                "flood": {"trusted": [f"{HOST}/32"]},
            },
            "http": {"listen": f"{HOST}:{self.http_port}"},
            "media": {"mode": self.media_mode, "ports": f"{low}-{high}", "rtp_timeout_s": self.rtp_timeout_s},
            "database": {"url": self.database_url},
            "routing": {"ring_timeout_s": self.ring_timeout_s},
            "static_routes": self.static_routes,
            "auth": {"secret": secrets.token_urlsafe(48), "bootstrap_admin_key": self.admin_key},
        }
        for section, values in self.extra_config.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        key = (config.get("auth") or {}).get("bootstrap_admin_key")
        if key:  # a test's own auth section may name another key
            self.admin_key = _admin_keys[self.http_base] = key
        return config

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DCE_")}
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, timeout: float = 30.0) -> ExchangeProcess:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        base = [*(self.command or dce_command()), "--log-level", self.log_level]
        if not at_head(self.database_url):  # a migrated fixture database skips a process start (seconds in CI)
            migrate = subprocess.run(
                [*base, "migrate", "--config", str(self.config_path)],
                cwd=self.workdir,
                env=self._env(),
                capture_output=True,
                timeout=120,
                check=False,
            )
            if migrate.returncode != 0:
                raise RuntimeError(
                    f"dce migrate exited {migrate.returncode}:\n{migrate.stdout.decode(errors='replace')}"
                    f"\n{migrate.stderr.decode(errors='replace')}"
                )
        self._log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*base, "serve", "--config", str(self.config_path)],
            cwd=self.workdir,
            env=self._env(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"dce serve exited with {self.proc.returncode} before it was ready")
            status, _ = http_get(f"{self.http_base}/health/ready", timeout=1.0)
            if status == 200:
                return self
            time.sleep(0.1)
        self._fail(f"dce serve not ready within {timeout:.0f} s")
        raise AssertionError("unreachable")

    def _fail(self, message: str) -> None:
        self.stop()
        raise RuntimeError(f"{message}\n--- {self.log_path} ---\n{self.log()}")

    def log(self, tail: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _handed_out.difference_update(range(self.rtp_ports[0], self.rtp_ports[1] + 1))
        return self.proc.returncode

    def __enter__(self) -> ExchangeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # HTTP side
    def get_json(self, path: str) -> Any:
        status, body = http_get(f"{self.http_base}{path}")
        assert status == 200, f"GET {path} -> {status}: {body[:500]!r}"
        return json.loads(body)

    def metrics(self) -> str:
        status, body = http_get(f"{self.http_base}/metrics")
        assert status == 200, f"GET /metrics -> {status}"
        return body.decode()


def fetch_cdrs(http_base: str, expected: int, timeout: float = 10.0, settle: float = 0.3) -> list[dict[str, Any]]:
    """Poll ``GET /api/v1/calls?limit=100`` until ``total >= expected`` (bounded), then return the items.

    Once the count is reached, waits ``settle`` seconds and reads again, so that a surplus row is seen.
    Raises AssertionError with what was there when the timeout expires.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, body = http_get(f"{http_base}/api/v1/calls?limit=100")
        if status == 200:
            last = json.loads(body)
            if last.get("total", 0) >= expected:
                time.sleep(settle)
                status, body = http_get(f"{http_base}/api/v1/calls?limit=100")
                return list(json.loads(body)["items"]) if status == 200 else list(last["items"])
        time.sleep(0.1)
    raise AssertionError(f"expected {expected} CDR(s) within {timeout} s; last answer: {last!r}")


# --------------------------------------------------------------------------------------------- RTP sniffing


class UdpSniffer:
    """Counts UDP datagrams on this host by (source port, destination port), through a raw socket.

    Needs CAP_NET_RAW (root); check :meth:`available` first. Sees loopback traffic (all these tests make).
    """

    def __init__(self, ports: set[int]) -> None:
        import collections
        import threading

        self.ports = ports
        self.counts: collections.Counter[tuple[int, int]] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-sniffer", daemon=True)
        self._sock: socket.socket | None = None

    @staticmethod
    def available() -> bool:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
            return True
        except OSError:
            return False

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 4:
                continue
            src, dst = (
                int.from_bytes(data[ihl : ihl + 2], "big"),
                int.from_bytes(data[ihl + 2 : ihl + 4], "big"),
            )
            if dst in self.ports:
                self.counts[(src, dst)] += 1

    def __enter__(self) -> UdpSniffer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self._sock.settimeout(0.2)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def received(self, dst: int, src_range: tuple[int, int] | None = None, src: int | None = None) -> int:
        """Datagrams to ``dst`` from ``src`` or from a port in ``src_range`` (inclusive)."""
        total = 0
        for (s, d), n in self.counts.items():
            if d != dst:
                continue
            if src is not None and s != src:
                continue
            if src_range is not None and not src_range[0] <= s <= src_range[1]:
                continue
            total += n
        return total


# --------------------------------------------------------------------------------------------- SIPp


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def scenario(name: str) -> Path:
    path = SCENARIOS / (name if name.endswith(".xml") else f"{name}.xml")
    assert path.exists(), path
    return path


@dataclass
class SippResult:
    """What a finished SIPp run reported."""

    returncode: int | None
    stats: dict[str, str]
    workdir: Path
    name: str
    output: str = ""

    def counter(self, name: str) -> int:
        value = self.stats.get(name, "")
        return int(value) if value.strip().isdigit() else -1

    @property
    def successful(self) -> int:
        return self.counter("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.counter("FailedCall(C)")

    @property
    def created(self) -> int:
        return self.counter("TotalCallCreated")

    def errors(self) -> str:
        path = self.workdir / f"{self.name}_errors.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def messages(self) -> str:
        path = self.workdir / f"{self.name}_messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def rtt_file(self) -> Path | None:
        found = sorted(self.workdir.glob("*_rtt.csv"))  # SIPp names it <scenario>_<pid>_rtt.csv
        return found[0] if found else None

    def describe(self, tail: int = 6000) -> str:
        return (
            f"sipp {self.name}: exit={self.returncode} successful={self.successful} failed={self.failed}\n"
            f"--- errors ---\n{self.errors()[-tail:]}\n--- messages (tail) ---\n{self.messages()[-tail:]}\n"
            f"--- output (tail) ---\n{self.output[-2000:]}"
        )


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` CSV as a dict (cumulative counters end in ``(C)``)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {key: value for key, value in zip(header, last, strict=False) if key}


def _sipp_args(
    name: str,
    scenario_path: Path,
    workdir: Path,
    *,
    port: int,
    transport: str,
    media_port: int | None,
    calls: int | None,
    trace_msg: bool,
    extra: tuple[str, ...] | list[str],
) -> list[str]:
    sipp = sipp_binary()
    assert sipp is not None, "sipp not on PATH"
    args = [
        sipp,
        "-sf",
        str(scenario_path),
        "-i",
        HOST,
        "-p",
        str(port),
        "-t",
        transport,
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(workdir / f"{name}_errors.log"),
        "-trace_stat",
        "-stf",
        str(workdir / f"{name}_stats.csv"),
        "-fd",
        "1",
        "-mi",
        HOST,
        "-mp",
        str(media_port if media_port is not None else free_media_port()),
    ]
    if trace_msg:
        args += ["-trace_msg", "-message_file", str(workdir / f"{name}_messages.log")]
    if calls is not None:
        args += ["-m", str(calls)]
    return [*args, *extra]


class SippUas:
    """A SIPp callee running in the background on a free port (or ``port``)."""

    def __init__(
        self,
        scenario_name: str,
        workdir: Path,
        *,
        calls: int | None = None,
        port: int | None = None,
        transport: str = "u1",
        media_port: int | None = None,
        trace_msg: bool = True,
        extra: tuple[str, ...] | list[str] = (),
        name: str | None = None,
    ) -> None:
        self.scenario_path = scenario(scenario_name)
        self.name = name or self.scenario_path.stem
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.transport = transport
        self.port = port if port is not None else free_port("tcp" if transport.startswith("t") else "udp")
        self.media_port = media_port if media_port is not None else free_media_port()
        self.args = _sipp_args(
            self.name,
            self.scenario_path,
            self.workdir,
            port=self.port,
            transport=transport,
            media_port=self.media_port,
            calls=calls,
            trace_msg=trace_msg,
            extra=extra,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: SippResult | None = None

    @property
    def uri(self) -> str:
        suffix = ";transport=tcp" if self.transport.startswith("t") else ""
        return f"sip:{HOST}:{self.port}{suffix}"

    def start(self, timeout: float = 5.0) -> SippUas:
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "stdout.txt").open("wb"),
            stderr=subprocess.STDOUT,
        )
        kind = "tcp" if self.transport.startswith("t") else "udp"
        if not _wait_bound(self.port, kind, timeout) or self.proc.poll() is not None:
            self.stop(timeout=1)
            raise RuntimeError(f"sipp {self.name} did not start listening on {self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> SippResult:
        """Wait ``timeout`` s for SIPp to finish its ``-m`` calls, else make it quit (SIGUSR1), else kill."""
        if self.result is not None:
            return self.result
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # soft exit: writes its final statistics
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        stdout = self.workdir / "stdout.txt"
        self.result = SippResult(
            self.proc.returncode,
            read_stats(self.workdir / f"{self.name}_stats.csv"),
            self.workdir,
            self.name,
            stdout.read_text(errors="replace") if stdout.exists() else "",
        )
        return self.result

    def __enter__(self) -> SippUas:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def run_sipp_uac(
    scenario_name: str,
    target: str,
    workdir: Path,
    *,
    service: str = DID,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    hold_ms: int | None = None,
    transport: str = "u1",
    media_port: int | None = None,
    timeout: float = 60.0,
    trace_msg: bool = True,
    extra: tuple[str, ...] | list[str] = (),
    name: str | None = None,
    port: int | None = None,
) -> SippResult:
    """Run a SIPp caller to completion (at most ``timeout`` seconds) against ``target`` (host:port), from ``port``
    (default: a free one)."""
    path = scenario(scenario_name)
    name = name or path.stem
    rundir = workdir / name
    rundir.mkdir(parents=True, exist_ok=True)
    kind = "tcp" if transport.startswith("t") else "udp"
    args = _sipp_args(
        name,
        path,
        rundir,
        port=port if port is not None else free_port(kind),
        transport=transport,
        media_port=media_port,
        calls=calls,
        trace_msg=trace_msg,
        extra=[
            "-s",
            service,
            "-timeout",
            f"{int(timeout)}s",
            "-timeout_error",
            *(["-r", str(rate)] if rate is not None else []),
            *(["-l", str(limit)] if limit is not None else []),
            *(["-d", str(hold_ms)] if hold_ms is not None else []),
            *extra,
            target,
        ],
    )
    with (rundir / "stdout.txt").open("wb") as out:
        proc = subprocess.Popen(args, cwd=rundir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return SippResult(
        proc.returncode,
        read_stats(rundir / f"{name}_stats.csv"),
        rundir,
        name,
        (rundir / "stdout.txt").read_text(errors="replace"),
    )
