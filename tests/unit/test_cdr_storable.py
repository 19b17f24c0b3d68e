"""Text from the wire is storable once it is in a CDR: NUL, undecodable bytes and huge values reach the database
as visible escapes, bounded to their columns, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import pytest
from sqlalchemy import String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.billing.cdr import EXTRA_LIMIT, TEXT_LIMIT, TEXT_LIMITS, SaleTerms
from dce.billing.storable import storable
from dce.db.cdr_repository import get_cdr, insert_cdrs
from dce.db.models import CallRecordRow
from tests.cdr_factory import make_cdr

RAW = b"Al\xe9 \xff\xfe caller"
ESCAPED = RAW.decode("utf-8", "surrogateescape")  # what the SDP parser and lenient header decoding produce


def test_plain_text_is_returned_unchanged_and_as_is() -> None:
    text = "+13125550199"
    assert storable(text, 64) is text
    assert storable("Zoë ☎", 64) == "Zoë ☎"


def test_nul_and_undecodable_bytes_become_visible_escapes() -> None:
    assert storable("abc\x00def", 64) == "abc\\x00def"
    assert storable(ESCAPED, 64) == "Al\\xe9 \\xff\\xfe caller"
    assert storable("lone \ud800 high", 64) == "lone \\ud800 high"
    storable(ESCAPED, 64).encode("utf-8")  # valid UTF-8 now


def test_long_text_is_cut_to_the_limit_and_keeps_a_digest_of_the_whole() -> None:
    one, two = "x" * 5000 + "1", "x" * 5000 + "2"
    assert len(storable(one, 255)) == 255
    assert storable(one, 255) != storable(two, 255)  # different tails stay different (call ids stay unique)
    assert storable(one, 255).startswith("x" * 200)
    assert len(storable("\x00" * 100, 64)) == 64  # escaping cannot push it past the limit


def test_a_cdr_is_storable_on_construction() -> None:
    cdr = replace(make_cdr(1), a_leg_call_id="id\x00@host", caller=ESCAPED * 100, called="9" * 500,
                  reason="\x00" * 10_000, extra={"k\x00": ESCAPED, "n": "x" * 5000},
                  terms=SaleTerms(campaign_id="c\x00" * 100))
    assert cdr.a_leg_call_id == "id\\x00@host"
    assert len(cdr.caller) == 255 and "\\xff" in cdr.caller
    assert len(cdr.called) == 64
    assert len(cdr.reason or "") == TEXT_LIMIT
    assert cdr.extra["k\\x00"] == "Al\\xe9 \\xff\\xfe caller" and len(cdr.extra["n"]) == EXTRA_LIMIT
    assert cdr.terms is not None and len(cdr.terms.campaign_id) == 64 and "\x00" not in cdr.terms.campaign_id


def test_text_limits_are_the_column_lengths() -> None:
    table = cast(Table, CallRecordRow.__table__)
    for name, limit in TEXT_LIMITS.items():
        column_type = table.c[name].type
        assert isinstance(column_type, String) and column_type.length == limit, name
    text_fields = {"call_id", "a_leg_call_id", "b_leg_call_id", "caller", "called", "did", "destination", "verstat",
                   "trunk"}
    assert text_fields <= TEXT_LIMITS.keys()


@pytest.mark.parametrize("field, value", [
    ("a_leg_call_id", "nul\x00in-call-id@carrier"),
    ("caller", ESCAPED),
    ("reason", "bye from \udcff\x00"),
    ("called", "1" * 300),
    ("destination", "sip:" + "d" * 5000 + "@example.com"),
    ("extra", {"sdp_session": ESCAPED + "\x00", "\x00key": "v"}),
])
async def test_hostile_text_is_stored_on_every_backend(engine: AsyncEngine, field: str, value: object) -> None:
    cdr = replace(make_cdr(1), **{field: value})
    await insert_cdrs(engine, [cdr])
    stored = await get_cdr(engine, cdr.call_id)
    assert stored == cdr
