"""The spool: every record it is given comes back identical (every field of the type), read back chunk by chunk;
the file is removed only when the writer says the records read are stored."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dce.bidding.bids import BidRecord, Outcome
from dce.bidding.log import bid_log_entry
from dce.billing.cdr import CallDetailRecord, ConversionFrom, Disposition, HangupSide, SaleTerms
from dce.db.cdr_spool import Spool
from dce.db.record_codec import BID_CODEC, CDR_CODEC
from tests.cdr_factory import T0, make_cdr

# odd text: any code point, surrogates and NUL included, as the wire can deliver through surrogateescape
ODD_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
TIMES = st.datetimes(timezones=st.just(UTC))
OPTIONAL_INT = st.none() | st.integers(min_value=0, max_value=2**62)

TERMS = st.builds(
    SaleTerms, campaign_id=ODD_TEXT, publisher_id=st.none() | ODD_TEXT, buyer_id=st.none() | ODD_TEXT,
    target_id=st.none() | ODD_TEXT, revenue=st.integers(min_value=0, max_value=2**62), conversion_s=OPTIONAL_INT,
    conversion_from=st.sampled_from(ConversionFrom), payout_fixed=OPTIONAL_INT, payout_share_bp=OPTIONAL_INT,
    duplicate_days=OPTIONAL_INT, duplicate_after=st.sampled_from(["connected", "converted"]),
    bid_id=st.none() | ODD_TEXT,
)
CDRS = st.builds(
    CallDetailRecord, call_id=ODD_TEXT, a_leg_call_id=ODD_TEXT, b_leg_call_id=st.none() | ODD_TEXT,
    caller=ODD_TEXT, called=ODD_TEXT, did=ODD_TEXT, destination=st.none() | ODD_TEXT, invite_at=TIMES,
    end_at=TIMES, disposition=st.sampled_from(Disposition), final_code=st.integers(100, 699),
    ring_at=st.none() | TIMES, answer_at=st.none() | TIMES, hangup_side=st.none() | st.sampled_from(HangupSide),
    reason=st.none() | ODD_TEXT, packets_relayed=st.integers(0, 2**62), bytes_relayed=st.integers(0, 2**62),
    extra=st.dictionaries(ODD_TEXT, ODD_TEXT, max_size=4), verstat=st.none() | ODD_TEXT,
    dial_at=st.none() | TIMES, terms=st.none() | TERMS, trunk=st.none() | ODD_TEXT,
)


def test_every_field_of_the_cdr_type_is_in_a_spooled_line(tmp_path: Path) -> None:
    cdr = make_cdr(1)
    line = CDR_CODEC.dumps(cdr)
    assert set(json.loads(line)) == {spec.name for spec in dataclasses.fields(CallDetailRecord)}
    assert line.isascii()


@settings(max_examples=300, deadline=None,  # each example fsyncs: its time is the disk's and the load's
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cdrs=st.lists(CDRS, max_size=5))
def test_any_cdr_round_trips_through_the_spool(tmp_path: Path, cdrs: list[CallDetailRecord]) -> None:
    spool = Spool(tmp_path / "spool.jsonl", CDR_CODEC)
    spool.take()  # hypothesis reuses tmp_path: start empty
    spool.append(cdrs)
    assert spool.take() == cdrs
    assert not spool.has_records()


def test_a_cdr_with_every_timestamp_and_terms_round_trips(tmp_path: Path) -> None:
    """The field the old hand-made list forgot (dial_at) and the sale terms, which it could not carry."""
    cdr = dataclasses.replace(make_cdr(1), dial_at=T0, verstat="TN-Validation-Passed",
                              terms=SaleTerms(campaign_id="c1", buyer_id="b1", revenue=12_500_000, bid_id="bid-1"))
    spool = Spool(tmp_path / "spool.jsonl", CDR_CODEC)
    spool.append([cdr])
    assert spool.take() == [cdr]


def test_bids_round_trip_too(tmp_path: Path) -> None:
    entry = bid_log_entry(T0, BidRecord("t1", 1_250_000, Outcome.WON, latency_ms=12.5, bid_id="b"), "c1", "call")
    spool = Spool(tmp_path / "bids.jsonl", BID_CODEC)
    spool.append([entry])
    assert spool.take() == [entry]


def test_read_back_in_chunks_and_removed_only_when_finished(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(path, CDR_CODEC)
    records = [make_cdr(n) for n in range(5)]
    spool.append(records[:3])
    spool.append(records[3:])  # appends

    first, done = spool.read(2)
    assert (first, done) == (records[:2], False)
    spool.append([make_cdr(9)])  # a spill while replaying goes to the spool file itself, not the replay
    rest, done = spool.read(10)
    assert (rest, done) == (records[2:], True)
    assert spool.replay_path.exists()  # not removed until the writer says the records are stored
    spool.finish_replay()
    assert spool.take() == [make_cdr(9)]
    assert not spool.has_records()


def test_a_reader_crash_rereads_the_whole_replay_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    Spool(path, CDR_CODEC).append([make_cdr(1), make_cdr(2)])
    Spool(path, CDR_CODEC).read(1)  # a process read one record, then died before storing it
    assert Spool(path, CDR_CODEC).take() == [make_cdr(1), make_cdr(2)]  # idempotent writes: a re-read is safe


def test_a_corrupt_line_is_set_aside_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(path, CDR_CODEC)
    spool.append([make_cdr(1)])
    with path.open("a") as handle:
        handle.write("{not json\n")
        handle.write('{"torn": ')  # a crash mid-append

    back = spool.take()

    assert [cdr.call_id for cdr in back] == ["call-00001"]
    assert (tmp_path / "spool.jsonl.bad").read_text() == '{not json\n{"torn": \n'
