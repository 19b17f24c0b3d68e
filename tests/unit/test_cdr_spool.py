"""The shutdown spool: CDRs the database could not take survive to the next start, unchanged."""

from __future__ import annotations

from dce.billing.cdr import Disposition
from dce.db import cdr_spool
from tests.cdr_factory import make_cdr


def test_spooled_records_come_back_identical_and_the_file_is_consumed(tmp_path):
    path = tmp_path / "spool.jsonl"
    records = [make_cdr(1), make_cdr(2, disposition=Disposition.BUSY)]
    cdr_spool.spool(path, records[:1])
    cdr_spool.spool(path, records[1:])  # appends

    back = cdr_spool.take(path)

    assert back == records
    assert not path.exists()
    assert cdr_spool.take(path) == []


def test_a_corrupt_line_is_set_aside_not_lost(tmp_path):
    path = tmp_path / "spool.jsonl"
    cdr_spool.spool(path, [make_cdr(1)])
    with path.open("a") as handle:
        handle.write("{not json\n")

    back = cdr_spool.take(path)

    assert [cdr.call_id for cdr in back] == ["call-00001"]
    assert (tmp_path / "spool.jsonl.bad").read_text() == "{not json\n"
