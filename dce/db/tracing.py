"""OpenTelemetry spans for SQL statements, as children of the span that ran them (an API request's, a call's).

:func:`trace_statements` hangs listeners on an engine: each statement executed while a recording span is current
becomes a CLIENT span named by its verb (``SELECT``, ``INSERT``...) with the database system and the statement text
(bound parameters stay out: they hold phone numbers). Statements of background work with no current span (the
watchers' polls, the CDR writer's batches) make no span, so tracing does not drown in a poll every half second.
The listeners run inside SQLAlchemy's greenlet, which carries the calling task's context.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

DB_SYSTEM = "db.system.name"
DB_QUERY = "db.query.text"
DB_OPERATION = "db.operation.name"
MAX_QUERY_CHARS = 2000

_SPAN = "_dce_span"  # where a statement's span waits on its execution context
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite"}


def trace_statements(engine: AsyncEngine, tracer: Tracer) -> None:
    """Open a span per statement run under a recording span, on ``engine``'s connections from now on."""
    sync_engine = engine.sync_engine
    system = _SYSTEMS.get(sync_engine.dialect.name, sync_engine.dialect.name)

    def before(_conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
        if context is None or not trace.get_current_span().is_recording():
            return
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        attributes = {DB_SYSTEM: system, DB_OPERATION: verb, DB_QUERY: statement[:MAX_QUERY_CHARS]}
        setattr(context, _SPAN, tracer.start_span(verb, kind=SpanKind.CLIENT, attributes=attributes))

    def after(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        span = getattr(context, _SPAN, None)
        if span is not None:
            setattr(context, _SPAN, None)
            span.end()

    def failed(exception_context: Any) -> None:
        context = exception_context.execution_context
        span = getattr(context, _SPAN, None) if context is not None else None
        if span is not None:
            setattr(context, _SPAN, None)
            error = exception_context.original_exception
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", failed)
