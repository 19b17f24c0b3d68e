"""Consent records and the outbound check: versions, revocation, expiry, type matching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dce.compliance.consent import (
    ConsentBook,
    ConsentRecord,
    ConsentStatus,
    ConsentType,
    proof_hash_of,
)
from dce.compliance.outbound import check_outbound, consent_finding
from dce.compliance.tcpa import CallingHours
from dce.compliance.verdict import Action, Finding, ReasonCode

NUMBER = "+12125550100"
BUYER = "buyer-1"
WRITTEN = ConsentType.EXPRESS_WRITTEN
PRIOR = ConsentType.PRIOR_EXPRESS
PROOF = proof_hash_of("form submission #42")
T0 = datetime(2026, 7, 1, 14, 0, tzinfo=UTC)  # 10:00 EDT in New York


def grant(book: ConsentBook, *, number: str = NUMBER, business: str = BUYER, consent_type: str = WRITTEN,
          at: datetime = T0, expires_at: datetime | None = None) -> ConsentRecord:
    return book.grant(number, business, consent_type, channel="web", source="https://example.com/form",
                      proof_hash=PROOF, granted_at=at, recorded_at=at, expires_at=expires_at)


def test_proof_hash() -> None:
    assert proof_hash_of("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert proof_hash_of(b"abc") == proof_hash_of("abc")


def test_grant_is_active() -> None:
    book = ConsentBook()
    record = grant(book)
    assert record.version == 1 and record.status is ConsentStatus.GRANTED
    assert book.active(NUMBER, BUYER, WRITTEN, T0) == record
    assert book.active(NUMBER, BUYER, WRITTEN, T0 + timedelta(days=3650)) == record
    assert book.active(NUMBER, BUYER, WRITTEN, T0 - timedelta(seconds=1)) is None  # not yet granted


def test_versions_and_revoke_appends() -> None:
    book = ConsentBook()
    first = grant(book)
    revoked = book.revoke(NUMBER, BUYER, WRITTEN, T0 + timedelta(hours=1), "STOP by SMS", channel="sms")
    assert revoked is not None
    assert (revoked.version, revoked.status, revoked.reason, revoked.channel) == (
        2, ConsentStatus.REVOKED, "STOP by SMS", "sms")
    assert revoked.granted_at == first.granted_at and revoked.proof_hash == first.proof_hash
    assert first.status is ConsentStatus.GRANTED  # the old version is untouched
    assert book.active(NUMBER, BUYER, WRITTEN, T0 + timedelta(hours=2)) is None
    assert book.latest(NUMBER, BUYER, WRITTEN) == revoked
    regranted = grant(book, at=T0 + timedelta(days=1))
    assert regranted.version == 3
    assert book.active(NUMBER, BUYER, WRITTEN, T0 + timedelta(days=1)) == regranted
    assert len(book) == 1


def test_revoke_without_consent() -> None:
    assert ConsentBook().revoke(NUMBER, BUYER, WRITTEN, T0) is None


def test_latest_version_wins_whatever_the_order_added() -> None:
    book = ConsentBook()
    first = grant(book)
    revoked = first.revoked(T0 + timedelta(hours=1))
    other = ConsentBook([revoked, first])
    assert other.latest(NUMBER, BUYER, WRITTEN) == revoked
    assert other.active(NUMBER, BUYER, WRITTEN, T0 + timedelta(hours=2)) is None


def test_expiry() -> None:
    book = ConsentBook()
    expires = T0 + timedelta(days=30)
    grant(book, expires_at=expires)
    assert book.active(NUMBER, BUYER, WRITTEN, expires - timedelta(seconds=1)) is not None
    assert book.active(NUMBER, BUYER, WRITTEN, expires) is None
    with pytest.raises(ValueError, match="later than granted_at"):
        grant(ConsentBook(), expires_at=T0)


def test_type_business_and_number_match_exactly() -> None:
    book = ConsentBook()
    grant(book, consent_type=PRIOR)
    assert book.active(NUMBER, BUYER, PRIOR, T0) is not None
    assert book.active(NUMBER, BUYER, "prior_express", T0) is not None  # plain strings work too
    assert book.active(NUMBER, BUYER, WRITTEN, T0) is None  # prior express does not cover written
    assert book.active(NUMBER, "buyer-2", PRIOR, T0) is None
    assert book.active("+12125550101", BUYER, PRIOR, T0) is None
    grant(book, consent_type=WRITTEN)
    book.revoke(NUMBER, BUYER, WRITTEN, T0 + timedelta(hours=1))
    # revoking one type leaves the other
    assert book.active(NUMBER, BUYER, PRIOR, T0 + timedelta(hours=2)) is not None
    assert book.active(NUMBER, BUYER, WRITTEN, T0 + timedelta(hours=2)) is None


def test_forget() -> None:
    book = ConsentBook()
    grant(book)
    grant(book, consent_type=PRIOR)
    grant(book, number="+13105550100")
    assert len(book.for_number(NUMBER)) == 2
    assert book.forget(NUMBER) == 2
    assert book.for_number(NUMBER) == []
    assert len(book) == 1


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="sha256"):
        ConsentBook().grant(NUMBER, BUYER, WRITTEN, channel="web", source="x", proof_hash="abc", granted_at=T0,
                            recorded_at=T0)
    with pytest.raises(ValueError, match="naive"):
        ConsentBook().grant(NUMBER, BUYER, WRITTEN, channel="web", source="x", proof_hash=PROOF,
                            granted_at=datetime(2026, 7, 1), recorded_at=T0)


# ------------------------------------------------------------------------------------------- outbound check


def test_consent_finding_reasons() -> None:
    book = ConsentBook()

    def why(now: datetime = T0) -> str:
        finding = consent_finding(NUMBER, now, consents=book, business=BUYER, consent_type=WRITTEN)
        assert finding is not None and finding.code is ReasonCode.NO_CONSENT and finding.action is Action.REJECT
        return finding.detail

    assert "none recorded" in why()
    grant(book, expires_at=T0 + timedelta(days=1))
    assert consent_finding(NUMBER, T0, consents=book, business=BUYER, consent_type=WRITTEN) is None
    assert "expired" in why(T0 + timedelta(days=2))
    assert "not in force" in why(T0 - timedelta(days=1))
    book.revoke(NUMBER, BUYER, WRITTEN, T0 + timedelta(hours=1))
    assert "revoked" in why(T0 + timedelta(hours=2))


def test_check_outbound_allows_with_consent_inside_hours() -> None:
    book = ConsentBook()
    grant(book)
    verdict = check_outbound(NUMBER, T0, calling_hours=CallingHours(), consents=book, business=BUYER,
                             consent_type=WRITTEN, on_lists=None)
    assert verdict.action is Action.ALLOW and verdict.findings == ()


def test_check_outbound_combines_every_reason() -> None:
    book = ConsentBook()
    night = datetime(2026, 7, 2, 3, 0, tzinfo=UTC)  # 23:00 EDT
    seen: list[str] = []

    def lists(number: str) -> list[Finding]:
        seen.append(number)
        return [Finding(Action.REJECT, ReasonCode.DNC_NATIONAL, "national DNC")]

    verdict = check_outbound(NUMBER, night, calling_hours=CallingHours(), consents=book, business=BUYER,
                             consent_type=WRITTEN, on_lists=lists)
    assert verdict.action is Action.REJECT
    assert verdict.codes == (ReasonCode.OUTSIDE_CALLING_HOURS, ReasonCode.NO_CONSENT, ReasonCode.DNC_NATIONAL)
    assert verdict.reason.startswith("outside_calling_hours: local time 2026-07-01 23:00 EDT")
    assert seen == [NUMBER]


def test_check_outbound_without_hours_and_flag_from_lists() -> None:
    book = ConsentBook()
    grant(book)
    night = datetime(2026, 7, 2, 3, 0, tzinfo=UTC)
    verdict = check_outbound(NUMBER, night, calling_hours=None, consents=book, business=BUYER,
                             consent_type=WRITTEN,
                             on_lists=lambda _n: [Finding(Action.FLAG, ReasonCode.LITIGATOR, "maybe")])
    assert verdict.action is Action.FLAG and verdict.codes == (ReasonCode.LITIGATOR,)
    hours = check_outbound(NUMBER, night, calling_hours=CallingHours(), consents=book, business=BUYER,
                           consent_type=WRITTEN, on_lists=None)
    assert hours.action is Action.REJECT and hours.codes == (ReasonCode.OUTSIDE_CALLING_HOURS,)
