"""Building CallDetailRecords for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dce.billing.cdr import CallDetailRecord, Disposition, HangupSide

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_cdr(
    n: int,
    *,
    disposition: Disposition = Disposition.ANSWERED,
    did: str = "+12125550100",
    start: datetime = T0,
) -> CallDetailRecord:
    """Call number ``n``: its INVITE ``n`` seconds after ``start``; answered: 5 s ring, 65 s talk."""
    invite_at = start + timedelta(seconds=n)
    answered = disposition is Disposition.ANSWERED
    return CallDetailRecord(
        call_id=f"call-{n:05d}",
        a_leg_call_id=f"a-{n}@carrier.example",
        b_leg_call_id=f"b-{n}@dce" if answered else None,
        caller="+13125550199",
        called=did,
        did=did,
        destination="sip:buyer@127.0.0.1:5080" if answered else None,
        invite_at=invite_at,
        end_at=invite_at + timedelta(seconds=70 if answered else 3),
        disposition=disposition,
        final_code=200 if answered else 486,
        ring_at=invite_at + timedelta(seconds=1),
        answer_at=invite_at + timedelta(seconds=5) if answered else None,
        hangup_side=HangupSide.CALLER if answered else None,
        reason=None if answered else "busy",
        packets_relayed=3500 if answered else 0,
        bytes_relayed=602000 if answered else 0,
        extra={"campaign": "c1"},
    )
