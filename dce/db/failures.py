"""Why a write failed: the database is away ("outage": retry the batch later) or this record is bad ("record").

The batching writer retries an outage with backoff and keeps every record queued; a failure that is the record's
own (data the database refuses, a constraint) is isolated by writing the batch one by one, and the record that
still fails alone is set aside as a dead letter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

# SQLSTATE classes: connection exception, insufficient resources, operator intervention (incl. statement timeout),
# system error, transaction rollback (deadlock, serialization): nothing about the record itself.
_OUTAGE_CLASSES = frozenset({"08", "53", "57", "58", "40"})
# data exception (bad text, out of range, bad JSON) and integrity constraint violation: this record.
_RECORD_CLASSES = frozenset({"22", "23"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def is_outage(exc: BaseException) -> bool:
    """The database (or the way to it) failed, not the record: timeouts, lost connections, server trouble."""
    for error in _chain(exc):
        if isinstance(error, TimeoutError | OSError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sqlite3.OperationalError):
            return True
        code = _sqlstate(error)
        if code is not None:
            return code[:2] in _OUTAGE_CLASSES
    return False


def is_record_fault(exc: BaseException) -> bool:
    """The record itself cannot be stored (bad data, a constraint), whatever the database's state."""
    if is_outage(exc):
        return False
    for error in _chain(exc):
        if isinstance(error, sa_exc.DataError | sa_exc.IntegrityError | sqlite3.DataError | sqlite3.IntegrityError):
            return True
        if isinstance(error, ValueError | TypeError | OverflowError):  # UnicodeError is a ValueError
            return True
        code = _sqlstate(error)
        if code is not None:
            return code[:2] in _RECORD_CLASSES
    return False
