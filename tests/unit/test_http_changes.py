"""The API's one change notifier: each kind reaches its own hook (sync or async), a failing hook is logged and
never fails the write, and a kind nobody listens to is a no-op."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from dce.http_api.changes import Change, Changes


async def test_each_kind_reaches_its_own_hook() -> None:
    heard: list[str] = []

    async def ledger() -> None:
        heard.append("ledger")

    changes = Changes(marketplace=lambda: heard.append("marketplace"), ledger=ledger)
    for kind in Change:
        await changes.notify(kind)
    assert heard == ["marketplace", "ledger"]


async def test_a_failing_hook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("reload failed")

    with caplog.at_level(logging.ERROR, logger="dce.http_api.changes"):
        await Changes(lists=broken).notify(Change.LISTS)
    assert "the lists change hook failed" in caplog.text


async def test_converted_calls_are_announced_to_whoever_listens() -> None:
    announced: list[Any] = []

    async def converted(settled: Any) -> None:
        announced.append(settled)

    await Changes().announce_converted(object())  # nobody listens: nothing happens
    settled = object()
    await Changes(converted=converted).announce_converted(settled)  # type: ignore[arg-type]
    assert announced == [settled]


def test_every_kind_is_a_hook() -> None:
    assert {kind.value for kind in Change} | {"converted"} == set(Changes.__dataclass_fields__)
