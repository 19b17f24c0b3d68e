"""May we place this outbound leg or callback? Calling hours, consent and the lists, folded into one Verdict.

Pure: ``now`` is passed in (aware), the consents are an in-memory :class:`ConsentBook`, and the list check is a
callable (``ListBook``-style: number -> findings) so this module does not depend on how lists are held.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dce.compliance.consent import ConsentBook, ConsentStatus
from dce.compliance.tcpa import CallingHours
from dce.compliance.verdict import Action, Finding, ReasonCode, Verdict

ListCheck = Callable[[str], list[Finding]]


def consent_finding(number: str, now: datetime, *, consents: ConsentBook, business: str,
                    consent_type: str) -> Finding | None:
    """None when ``number`` has active consent of ``consent_type`` for ``business``; otherwise a NO_CONSENT reject
    saying why (none recorded, revoked, expired, not yet in force)."""
    latest = consents.latest(number, business, consent_type)
    if latest is not None and latest.is_active(now):
        return None
    what = f"{consent_type} consent of {number} for {business}"
    if latest is None:
        why = "none recorded"
    elif latest.status is ConsentStatus.REVOKED:
        why = f"revoked at {latest.recorded_at.isoformat()} (version {latest.version})"
    elif latest.expires_at is not None and now >= latest.expires_at:
        why = f"expired at {latest.expires_at.isoformat()} (version {latest.version})"
    else:
        why = f"not in force until {latest.granted_at.isoformat()} (version {latest.version})"
    return Finding(Action.REJECT, ReasonCode.NO_CONSENT, f"no active {what}: {why}")


def check_outbound(number: str, now: datetime, *, calling_hours: CallingHours | None, consents: ConsentBook,
                   business: str, consent_type: str, on_lists: ListCheck | None = None) -> Verdict:
    """The verdict on calling ``number`` (E.164) at ``now`` on behalf of ``business``.

    Findings in order: calling hours (skipped when ``calling_hours`` is None), consent of ``consent_type``, then
    whatever ``on_lists`` reports (DNC, litigators, suppression...). Every check runs, so the verdict lists all the
    reasons; the strongest action wins.
    """
    findings: list[Finding] = []
    if calling_hours is not None:
        hours = calling_hours.check(number, now)
        if hours is not None:
            findings.append(hours)
    consent = consent_finding(number, now, consents=consents, business=business, consent_type=consent_type)
    if consent is not None:
        findings.append(consent)
    if on_lists is not None:
        findings.extend(on_lists(number))
    return Verdict.of(findings)
