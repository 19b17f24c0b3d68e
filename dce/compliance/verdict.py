"""What screening says about a call: allow, flag or reject, with the reason codes behind it.

Every check in this room reports ``Finding``s; ``Verdict.of`` folds them into one answer (the strongest action
wins). Reason codes are stable strings: they go into CDRs, events, metrics labels and the SIP Reason text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Action(enum.IntEnum):
    """What to do with a call; ordered so that ``max`` picks the strongest."""

    ALLOW = 0
    FLAG = 1  # route normally, carry the flag into the CDR and events
    REJECT = 2

    def __str__(self) -> str:
        return self.name.lower()


class ReasonCode(enum.StrEnum):
    """Why a call was flagged or rejected."""

    DNC_NATIONAL = "dnc_national"
    DNC_STATE = "dnc_state"
    DNC_INTERNAL = "dnc_internal"
    LITIGATOR = "litigator"
    BLOCKED_ANI = "blocked_ani"
    BLOCKED_DID = "blocked_did"
    SUPPRESSED = "suppressed"  # on a buyer's suppression list (that buyer's targets are skipped)
    STIR_INVALID = "stir_invalid"  # Identity header present but not verifiable (signature, cert, claims)
    STIR_STALE = "stir_stale"  # iat outside the allowed window
    STIR_MISMATCH = "stir_mismatch"  # orig/dest do not match the SIP headers
    STIR_LOW_ATTESTATION = "stir_low_attestation"
    STIR_UNSIGNED = "stir_unsigned"
    STIR_PENDING = "stir_pending"  # signed, but the x5u certificate was still being fetched (not verified yet)
    ANONYMOUS_ANI = "anonymous_ani"
    INVALID_ANI = "invalid_ani"
    VELOCITY_ANI = "velocity_ani"
    VELOCITY_PUBLISHER = "velocity_publisher"
    DUPLICATE_CALLER = "duplicate_caller"
    CONVERSION_CLUSTER = "conversion_cluster"  # publisher's calls cluster just past the conversion duration
    FRAUD_RISK = "fraud_risk"  # the combined fraud score crossed a threshold
    OUTSIDE_CALLING_HOURS = "outside_calling_hours"
    NO_CONSENT = "no_consent"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: what it asks for, why, and an optional human-readable detail."""

    action: Action
    code: ReasonCode
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The screening answer for one call.

    ``findings`` lists every flag and reject in the order the checks ran; ``risk`` is the fraud score (0..1)
    when fraud scoring ran; ``verstat`` is the STIR/SHAKEN verification status (RFC 8588 / ATIS-1000074 terms,
    e.g. ``TN-Validation-Passed-A``, ``TN-Validation-Failed``, ``No-TN-Validation``) when it ran.
    ``suppressed_buyers`` are buyers whose suppression list holds the caller: their targets are skipped.
    """

    action: Action
    findings: tuple[Finding, ...] = ()
    risk: float | None = None
    verstat: str | None = None
    suppressed_buyers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, findings: Iterable[Finding], *, risk: float | None = None, verstat: str | None = None,
           suppressed_buyers: frozenset[str] = frozenset()) -> Verdict:
        """Fold findings into a verdict: the strongest action wins; ALLOW findings are dropped."""
        kept = tuple(f for f in findings if f.action is not Action.ALLOW)
        action = max((f.action for f in kept), default=Action.ALLOW)
        return cls(action, kept, risk, verstat, suppressed_buyers)

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        """The reason codes, in order, without repeats."""
        return tuple(dict.fromkeys(f.code for f in self.findings))

    @property
    def reason(self) -> str:
        """The first finding of the deciding action as ``code: detail`` (for the SIP Reason text and CDR)."""
        for finding in self.findings:
            if finding.action is self.action:
                return f"{finding.code}: {finding.detail}" if finding.detail else str(finding.code)
        return ""


ALLOW = Verdict(Action.ALLOW)
