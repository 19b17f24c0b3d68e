"""A flood from one source beside legitimate calls from another (bench/flood.py, bounded to 5 s): the flooder is
banned and dropped unread, and not one legitimate call is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.flood import run
from tests.externals import require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

DURATION = 30.0 if os.environ.get("DCE_SOAK") == "1" else 5.0


def test_a_flooder_is_banned_and_no_legitimate_call_is_lost(tmp_path: Path, migrated_database_url: str) -> None:
    require_binary("sipp")
    result = run(duration=DURATION, flood_rps=5000, cps=50, workdir=tmp_path, database_url=migrated_database_url)
    print(result.line())
    assert result.exchange_alive
    assert result.flood_rps > 4000
    assert result.legit_placed == int(50 * DURATION)
    assert result.legit_failed == 0
    assert result.banned == 1
    assert result.flood_dropped > result.flood_rps * DURATION * 0.8  # most of the flood never reached the parser
