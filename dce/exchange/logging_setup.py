"""Logging for the ``dce`` process: plain text (the default, for ``make run``) or JSON lines.

JSON lines carry ``timestamp`` (ISO 8601 UTC, milliseconds, ``Z``), ``level``, ``logger``, ``message``,
``exc_info`` (the formatted traceback) when present, ``call_id``/``trace_id``/``span_id`` from
:mod:`dce.exchange.log_context` when bound or when an OpenTelemetry span is current, and any ``extra={...}``
fields the call passed::

    {"timestamp": "2025-01-15T10:30:45.123Z", "level": "INFO", "logger": "dce.exchange.callflow",
     "message": "call answered", "call_id": "c1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
     "span_id": "00f067aa0ba902b7"}

Malformed HTTP that aiohttp answers with a 400 (a bad header byte, a broken request line: scanners, fuzzers) is one
warning line, not aiohttp's ERROR with a traceback (:class:`MalformedHttpFilter`): it is the client's fault.

A filter on the handler stamps ``record.call_id``/``record.trace_id``/``record.span_id`` from the context at emit
time (an explicit ``extra={"call_id": ...}`` wins), so plain-text formats may use ``%(call_id)s`` too.
"""

from __future__ import annotations

import json as jsonlib
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from aiohttp.http_exceptions import HttpProcessingError

from dce.exchange.log_context import CALL_ID, current_trace

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra=`` and goes into the JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "call_id", "trace_id", "span_id", "taskName",
}  # fmt: skip


class ContextFilter(logging.Filter):
    """Stamps ``call_id``, ``trace_id`` and ``span_id`` from the context onto each record (None when unbound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            record.call_id = CALL_ID.get()
        if getattr(record, "trace_id", None) is None:
            record.trace_id, record.span_id = current_trace()
        return True


class MalformedHttpFilter(logging.Filter):
    """On ``aiohttp.server``: a request aiohttp could not parse (and answered 400) becomes a WARNING line without a
    traceback, naming the peer and what was wrong; every other record passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            detail = " ".join(str(exc.message).split()) or type(exc).__name__
            record.msg, record.args = "malformed HTTP request from %s (answered 400): %s", (peer, detail)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "timestamp": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or CALL_ID.get()
        if call_id is not None:
            body["call_id"] = call_id
        trace_id, span_id = getattr(record, "trace_id", None), getattr(record, "span_id", None)
        if trace_id is None:
            trace_id, span_id = current_trace()
        if trace_id is not None:
            body["trace_id"] = trace_id
        if trace_id is not None and span_id is not None:
            body["span_id"] = span_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in body:
                body[key] = value
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exc_info"] = record.exc_text
        if record.stack_info:
            body["stack_info"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(body, default=str, ensure_ascii=False)


def _iso_utc(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def configure_logging(
    level: int | str = "INFO", *, json: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one writing to ``stream`` (stderr by default): JSON lines when
    ``json``, else the plain text format. Returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedHttpFilter) for f in server.filters):
        server.addFilter(MalformedHttpFilter())
    return handler
