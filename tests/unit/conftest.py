"""Unit-test fixtures: the root logger put back as it was, and a JSON log captured in memory."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from dce.exchange.logging_setup import configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    """The root logger's handlers and level as they were before the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def json_log(restore_root: None) -> io.StringIO:
    """JSON log lines at INFO written to this stream for the test's duration."""
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    return stream
