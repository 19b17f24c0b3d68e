"""JSON log lines carry the call and trace they belong to; plain text stays the default."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from dce.exchange.log_context import CALL_ID, TRACE_ID, bind_call, set_call_id
from dce.exchange.logging_setup import PLAIN_FORMAT, configure_logging


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_carries_call_id_inside_bind_call(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    log = logging.getLogger("dce.test")
    with bind_call("c1"):
        log.info("call %s answered", "c1", extra={"buyer_id": "acme"})
    log.info("outside")
    inside, outside = _lines(stream)
    assert inside["call_id"] == "c1"
    assert inside["message"] == "call c1 answered"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "dce.test"
    assert inside["buyer_id"] == "acme"
    assert str(inside["timestamp"]).endswith("Z") and "T" in str(inside["timestamp"])
    assert "call_id" not in outside
    assert CALL_ID.get() is None


def test_json_carries_trace_id_and_exception(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(logging.DEBUG, json=True, stream=stream)
    log = logging.getLogger("dce.test")
    with bind_call("c2", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    (line,) = _lines(stream)
    assert line["call_id"] == "c2"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["level"] == "ERROR"
    assert "RuntimeError: boom" in str(line["exc_info"])
    assert TRACE_ID.get() is None


def test_explicit_extra_call_id_wins(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    with bind_call("outer"):
        logging.getLogger("dce.test").info("x", extra={"call_id": "explicit"})
    assert _lines(stream)[0]["call_id"] == "explicit"


async def test_call_id_follows_each_task(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    log = logging.getLogger("dce.test")

    async def call(call_id: str) -> None:
        set_call_id(call_id)  # at the top of a call's task: its own context copy
        await asyncio.sleep(0)
        log.info("in %s", call_id)

    await asyncio.gather(call("a"), call("b"))
    assert {(line["call_id"], line["message"]) for line in _lines(stream)} == {("a", "in a"), ("b", "in b")}
    assert CALL_ID.get() is None


def test_plain_text_is_the_default(restore_root: None) -> None:
    stream = io.StringIO()
    handler = configure_logging("WARNING", stream=stream)
    assert handler.formatter is not None and handler.formatter._fmt == PLAIN_FORMAT
    log = logging.getLogger("dce.test")
    log.info("hidden")
    with bind_call("c3"):
        log.warning("shown")
    text = stream.getvalue()
    assert "hidden" not in text
    assert " WARNING dce.test: shown" in text
    assert logging.getLogger().handlers == [handler]
