"""The Redis the tests share: ``DCE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), skipped (or failed
under DCE_REQUIRE_EXTERNAL=1) when nothing answers there. Tests keep to keys of their own (a unique prefix)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from tests.externals import require


def redis_test_url() -> str:
    """The test Redis's URL, once it is known to accept connections."""
    url = os.environ.get("DCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1).close()
        reachable = True
    except OSError:
        reachable = False
    require(reachable, f"Redis at {url} (DCE_TEST_REDIS_URL)")
    return url
