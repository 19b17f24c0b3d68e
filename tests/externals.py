"""Gatekeeping for tests that need an external binary or server.

A missing external skips the test with a reason, except under ``DCE_REQUIRE_EXTERNAL=1`` (set by ``.ci/run``),
where a missing external fails it: CI must never go green by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_EXTERNAL = os.environ.get("DCE_REQUIRE_EXTERNAL") == "1"


def require(available: bool, what: str) -> None:
    """Skip (or fail under DCE_REQUIRE_EXTERNAL=1) when ``what`` is not available."""
    if available:
        return
    if REQUIRE_EXTERNAL:
        pytest.fail(f"{what} is required (DCE_REQUIRE_EXTERNAL=1) but not available")
    pytest.skip(f"{what} not available")


def require_binary(name: str) -> str:
    """Return the path of an executable on PATH, or skip/fail naming it."""
    path = shutil.which(name)
    require(path is not None, f"executable {name!r} (install it: see .ci/run)")
    assert path is not None
    return path
