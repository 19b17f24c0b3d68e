"""Interop with a real SIP stack: two pjsua2 UAs, A calls the DID through ``dce serve`` (relay mode), B answers.

A plays a 1 kHz tone, B records the call; the tone must dominate B's recording (the audio crossed the relay),
and the CDR must show an answered call with relayed packets. The pjsua2 side runs in a subprocess
(tests/integration/pjsua2_tone_call.py): its library initialises once per process and may abort on misuse.
A direct A -> B call (no exchange) runs first as a control, so a failure can be told apart from a pjsua2 one.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.externals import require
from tests.integration.sipp import DID, HOST, ExchangeProcess, fetch_cdrs, free_media_port, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SCRIPT = Path(__file__).with_name("pjsua2_tone_call.py")
TONE_HZ = 1000


@pytest.fixture(autouse=True)
def _pjsua2() -> None:
    require(importlib.util.find_spec("pjsua2") is not None, "pjsua2 (pip install pjsua2-python)")


def tone_call(workdir: Path, a_port: int, b_port: int, target: str | None,
              extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    wav = workdir / "b.wav"
    args = [
        sys.executable,
        str(SCRIPT),
        "--a-port",
        str(a_port),
        "--b-port",
        str(b_port),
        "--rtp-port",
        str(free_media_port(span=40)),
        "--wav",
        str(wav),
        "--seconds",
        "3",
    ]
    if target:
        args += ["--target", target]
    args += extra
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=90, check=False)
    (workdir / "pjsua2.log").write_text(proc.stdout + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"pjsua2 call exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    )
    return json.loads(lines[-1]), wav


def tone_share(wav_path: Path, freq: float = TONE_HZ, half_band: float = 50.0) -> tuple[float, float]:
    """(share of the signal's energy within ``freq`` +- ``half_band``, RMS) of a 16-bit mono WAV."""
    with wave.open(str(wav_path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2), "expected 16-bit mono"
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    assert len(samples) >= rate, f"recording too short: {len(samples)} samples at {rate} Hz"
    samples -= samples.mean()
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    band = power[(freqs >= freq - half_band) & (freqs <= freq + half_band)].sum()
    return float(band / max(power.sum(), 1e-9)), float(np.sqrt(np.mean(samples**2)))


def assert_tone(report: dict[str, Any], wav: Path) -> None:
    assert report["answered"] and report["b_media"], report
    assert wav.exists(), report
    share, rms = tone_share(wav)
    assert rms > 300, f"B recorded near silence (RMS {rms:.0f}); {report}"
    assert share > 0.8, f"only {share:.0%} of B's recording is at {TONE_HZ} Hz; {report}"


def test_pjsua2_direct_call_control(tmp_path: Path) -> None:
    report, wav = tone_call(tmp_path, free_port("udp"), free_port("udp"), target=None)
    assert_tone(report, wav)


def test_pjsua2_tone_crosses_the_exchange_relay(tmp_path: Path, migrated_database_url: str) -> None:
    a_port, b_port = free_port("udp"), free_port("udp")
    exchange = ExchangeProcess(
        tmp_path / "dce", migrated_database_url, {DID: [f"sip:bob@{HOST}:{b_port}"]}, media_mode="relay"
    )
    with exchange:
        report, wav = tone_call(tmp_path, a_port, b_port, target=f"sip:{DID}@{exchange.sip_target}")
        assert_tone(report, wav)
        cdr = fetch_cdrs(exchange.http_base, 1)
        assert exchange.alive(), exchange.log()
    assert len(cdr) == 1, cdr
    cdr = cdr[0]
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller"), cdr
    assert cdr["destination"] == f"sip:bob@{HOST}:{b_port}"
    # ~3 s of 20 ms frames each way is ~300 packets; at least B's share of them crossed the relay
    assert cdr["packets_relayed"] >= 100, cdr
    assert cdr["billable_s"] >= 2, cdr


def test_pjsua2_answers_a_sha256_only_digest_challenge(tmp_path: Path, migrated_database_url: str) -> None:
    """A trunk that keeps only the SHA-256 HA1 (RFC 8760): pjsua2 answers its 401 and the call goes through."""
    a_port, b_port = free_port("udp"), free_port("udp")
    trunk = {"name": "pjsip", "networks": [f"{HOST}/32"], "username": "alice", "password": "pj-secret",
             "algorithms": ["SHA-256"]}
    exchange = ExchangeProcess(
        tmp_path / "dce", migrated_database_url, {DID: [f"sip:bob@{HOST}:{b_port}"]}, media_mode="relay",
        extra_config={"sip": {"unknown_sources": "reject", "trunks": [trunk]}})
    with exchange:
        report, _ = tone_call(tmp_path, a_port, b_port, target=f"sip:{DID}@{exchange.sip_target}",
                              extra=("--username", "alice", "--password", "pj-secret"))
        assert report["answered"] and report["b_media"], report  # the audio itself: the relay test above
        cdrs = fetch_cdrs(exchange.http_base, 1)
        metrics = exchange.metrics()
        assert exchange.alive(), exchange.log()
    (cdr,) = cdrs
    assert (cdr["disposition"], cdr["trunk"]) == ("answered", "pjsip"), cdr
    assert 'dce_trunk_calls_total{outcome="challenged",trunk="pjsip"} 1.0' in metrics
