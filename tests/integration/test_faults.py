"""bench/faults.py as a test: the database silent under SIPp load, SIGTERM, restart; every call placed has exactly
one CDR. Bounded by default (a few seconds of outage); DCE_SOAK=1 runs the full size (50 CPS, 20 s silent)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.databases import postgres_server_url
from tests.externals import require, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def test_silent_database_then_sigterm_loses_no_record(tmp_path: Path) -> None:
    require_binary("sipp")
    server = postgres_server_url()
    require(server is not None, "PostgreSQL (DCE_TEST_DATABASE_URL) for the fault run")
    spec = importlib.util.spec_from_file_location("faults_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    size = [] if os.environ.get("DCE_SOAK") == "1" else ["--cps", "20", "--duration", "6", "--outage-s", "3"]

    figures = bench.run([*size, "--database-url", str(server), "--workdir", str(tmp_path)])

    assert figures["placed"] > 0 and figures["sipp_failed"] == 0, figures
    assert (figures["missing"], figures["duplicates"]) == (0, 0), figures
    assert figures["cdrs"] == figures["placed"] and figures["spooled_at_stop"] == 1, figures
