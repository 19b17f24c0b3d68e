"""Context for log lines: the call and trace a piece of work belongs to.

Context variables follow asyncio tasks: set the call id at the top of a call's task (``set_call_id``) and every
log line that task (and tasks it creates) writes carries it; ``bind_call`` scopes it to a ``with`` block.

The trace is the current OpenTelemetry span's (a call's ``sip.call`` span, an HTTP request's span) unless one is
bound explicitly with ``set_trace_id``/``bind_call``; with tracing off there is no span and no trace id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from opentelemetry.trace import get_current_span

CALL_ID: ContextVar[str | None] = ContextVar("dce_call_id", default=None)
TRACE_ID: ContextVar[str | None] = ContextVar("dce_trace_id", default=None)


def set_call_id(call_id: str | None) -> Token[str | None]:
    """Bind ``call_id`` for the rest of the current task/context; returns the token to ``CALL_ID.reset``."""
    return CALL_ID.set(call_id)


def set_trace_id(trace_id: str | None) -> Token[str | None]:
    """Bind ``trace_id`` for the rest of the current task/context."""
    return TRACE_ID.set(trace_id)


@contextmanager
def bind_call(call_id: str | None, trace_id: str | None = None) -> Iterator[None]:
    """Log lines inside the block carry ``call_id`` (and ``trace_id`` when given); restored on exit."""
    call_token = CALL_ID.set(call_id)
    trace_token = TRACE_ID.set(trace_id) if trace_id is not None else None
    try:
        yield
    finally:
        if trace_token is not None:
            TRACE_ID.reset(trace_token)
        CALL_ID.reset(call_token)


def current_call_id() -> str | None:
    return CALL_ID.get()


def current_trace_id() -> str | None:
    """The bound trace id, else the current span's (32 hex digits), else None."""
    return current_trace()[0]


def current_trace() -> tuple[str | None, str | None]:
    """``(trace_id, span_id)``: a bound trace id (no span id), else the current span's ids, else ``(None, None)``."""
    bound = TRACE_ID.get()
    if bound is not None:
        return bound, None
    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
