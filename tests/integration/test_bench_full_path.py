"""``bench/full_path.py`` stays runnable: 10 CPS for 3 s on the plain path, its last line parsed.

The bench's figures are its own business (performance numbers live in bench/, not in timed tests); this only
checks that the path it builds through the API answers every call, writes a CDR each and leaves no call active.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.externals import require
from tests.integration.sipp import sipp_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "full_path.py"


def test_plain_full_path_at_a_tiny_rate_answers_every_call(tmp_path: Path) -> None:
    require(sipp_binary() is not None, "sipp")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rates", "10", "--duration", "3", "--variants", "plain",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=150, check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    figures = dict(pair.split("=", 1) for pair in lines[-1].split())
    assert figures["plain_10_calls"] == "30", done.stdout
    assert figures["plain_10_failed"] == "0", done.stdout
    assert figures["plain_10_cdrs"] == "30", done.stdout
    assert figures["plain_10_active"] == "0", done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
