"""The exchange's lifecycle: a failure at any step of start closes what the earlier steps opened (no socket,
task or file left), stop() after a failed start is harmless, and `dce serve` exits 1 with one ERROR line."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from dce.exchange.config import Settings, load_settings
from dce.exchange.service import Exchange, StartError
from tests.integration.sipp import free_port, free_port_range

pytestmark = pytest.mark.integration

STEPS = ("tracing", "database", "records", "media", "sip", "marketplace", "trunks", "compliance", "retention",
         "postbacks", "settlement", "http", "calls", "gc_policy")


@cache
def _media_ports() -> str:
    """One relay port block for every exchange here: they run one at a time (a block each would fragment the
    pool the other tests draw from)."""
    return "{}-{}".format(*free_port_range(100))


def _settings(database_url: str, tmp_path: Path, **extra: Any) -> Settings:
    sip_port = free_port()
    return load_settings(None, {
        "database": {"url": database_url, "spool_path": str(tmp_path / "cdr.spool")},
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}", f"tcp:127.0.0.1:{sip_port}"]},
        "http": {"listen": f"127.0.0.1:{free_port('tcp')}"},
        "media": {"mode": "relay", "ports": _media_ports()},
        "compliance": {"gdpr": {"retention_days": 30, "pseudonym_key": "k" * 32}},
        **extra,
    })


def _open_fds() -> Counter[str]:
    """What this process holds open (sockets, files), counted by target: fd numbers are reused."""
    held: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held[os.readlink(f"/proc/self/fd/{fd}")] += 1
        except OSError:  # the fd of the listing itself, gone already
            continue
    return held


async def _settled() -> tuple[Counter[str], set[asyncio.Task[Any]]]:
    for _ in range(5):  # closed transports let go of their sockets on the next loop turns
        await asyncio.sleep(0.02)
    gc.collect()
    return _open_fds(), set(asyncio.all_tasks()) - {asyncio.current_task()}


def test_every_step_is_named_and_in_start_order() -> None:
    exchange = Exchange(Settings())
    assert all(hasattr(exchange, f"_start_{step}") for step in STEPS)


@pytest.mark.parametrize("failing", STEPS)
async def test_a_failure_at_any_step_of_start_leaves_nothing_open(
        migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    # Warm up once: imports, the engine's dialect, the loop's own resources are opened on first use.
    warm = Exchange(_settings(migrated_database_url, tmp_path))
    await warm.start()
    await warm.stop(grace_s=0.1)
    fds_before, tasks_before = await _settled()

    exchange = Exchange(_settings(migrated_database_url, tmp_path))  # its own ports: the first may linger
    original = getattr(exchange, f"_start_{failing}")

    async def opened_then_failed(stack: Any) -> None:
        await original(stack)  # the step opens all it opens, then fails: its own resources must close too
        raise RuntimeError(f"injected failure after {failing}")

    opened_then_failed.__name__ = original.__name__
    monkeypatch.setattr(exchange, f"_start_{failing}", opened_then_failed)
    with pytest.raises(StartError, match=f"^{failing}: injected failure") as raised:
        await exchange.start()
    assert raised.value.step == failing and not raised.value.expected

    await exchange.stop()  # after a failed start: nothing to do, nothing raised
    fds_after, tasks_after = await _settled()
    assert not fds_after - fds_before, f"left open: {fds_after - fds_before}"
    assert tasks_after <= tasks_before, f"left running: {tasks_after - tasks_before}"


async def test_stop_twice_and_stop_before_start_do_nothing(migrated_database_url: str, tmp_path: Path) -> None:
    exchange = Exchange(_settings(migrated_database_url, tmp_path))
    await exchange.stop()
    await exchange.start()
    await exchange.stop(grace_s=0.1)
    await exchange.stop()


async def test_a_port_in_use_is_an_expected_failure(migrated_database_url: str, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        settings = _settings(migrated_database_url, tmp_path, http={"listen": f"127.0.0.1:{port}"})
        with pytest.raises(StartError, match=r"^http: .*address already in use") as raised:
            await Exchange(settings).start()
    assert raised.value.expected


def _serve_fails(config: Path, sip_port: int) -> str:
    """Run `dce serve` expecting it to fail at start: exit 1, one ERROR line (returned), no traceback."""
    done = subprocess.run([sys.executable, "-m", "dce.exchange.cli", "serve", "--config", str(config),
                           "--sip-listen", f"udp:127.0.0.1:{sip_port}", "--http-listen",
                           f"127.0.0.1:{free_port('tcp')}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_serve_exits_1_with_one_error_line_when_the_port_is_in_use(tmp_path: Path) -> None:
    config = tmp_path / "dce.yaml"
    config.write_text(f"database: {{url: 'sqlite+aiosqlite:///{tmp_path}/dce.db', spool_path: '{tmp_path}/s'}}\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        error = _serve_fails(config, held.getsockname()[1])
    assert "could not start: sip:" in error and "address already in use" in error.lower()


def test_serve_exits_1_without_a_traceback_when_the_database_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "dce.yaml"
    config.write_text("database: {url: 'postgresql+asyncpg://nobody@127.0.0.1:9/none', connect_timeout_s: 2, "
                      f"spool_path: '{tmp_path}/s'}}\n")
    assert "could not start: marketplace:" in _serve_fails(config, free_port())
