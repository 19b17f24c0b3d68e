"""Telling an outage (retry the batch) from a record's own fault (isolate it)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from dce.db.failures import is_outage, is_record_fault


class PgError(Exception):
    """Stands for the asyncpg adapter's error: it carries a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def wrapped(orig: BaseException) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("INSERT INTO calls ...", {}, orig)


@pytest.mark.parametrize("error", [
    TimeoutError(), ConnectionRefusedError(), OSError("network unreachable"),
    sa_exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked")),
    wrapped(PgError("08006")), wrapped(PgError("57014")), wrapped(PgError("53300")), wrapped(PgError("40P01")),
])
def test_outages(error: BaseException) -> None:
    assert is_outage(error) and not is_record_fault(error)


@pytest.mark.parametrize("error", [
    wrapped(PgError("22021")),  # NUL / bad byte sequence
    wrapped(PgError("22001")),  # value too long for the column
    wrapped(PgError("22P02")),  # bad JSON
    wrapped(PgError("23502")),  # NOT NULL
    sa_exc.StatementError("bind", "INSERT", {}, ValueError("naive datetime")),
    UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
])
def test_record_faults(error: BaseException) -> None:
    assert is_record_fault(error) and not is_outage(error)


def test_a_missing_table_is_neither() -> None:
    """Decided by what happens to the other records of the batch (the writer isolates, then judges)."""
    error = wrapped(PgError("42P01"))
    assert not is_outage(error) and not is_record_fault(error)
