"""The compliance and fraud gate: run every check on one call, fold the findings into a ``Verdict``.

Pure and in memory: the checks read lists, certificates and counters loaded beforehand; ``now`` is passed in.
A check is any callable ``check(call, now, out)`` that adds findings to ``out`` (a ``Screening``) and may set
the fraud risk, the STIR/SHAKEN verstat or buyers to skip. Checks run in the order given; later checks can
read what earlier ones found (fraud scoring treats a blocked caller as blacklisted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dce.compliance.fraud import SharedVelocity
from dce.compliance.verdict import Action, Finding, ReasonCode, Verdict


@dataclass(frozen=True, slots=True)
class ScreenedCall:
    """What screening may read about an inbound call (plain values: no SIP or routing types)."""

    ani: str | None  # caller in E.164 (From user), None when anonymous or not a number
    did: str  # the tracking number called (E.164)
    state: str | None = None  # the caller's US/CA state, from the number
    campaign_id: str | None = None
    publisher_id: str | None = None
    identity: str | None = None  # the SIP Identity header (RFC 8224), if any
    asserted: str | None = None  # P-Asserted-Identity user in E.164, if any (STIR orig check)
    stir_min_attestation: str | None = None  # the campaign's STIR/SHAKEN policy
    stir_on_failure: str = "reject"
    stir_on_unsigned: str = "allow"
    velocity: SharedVelocity | None = None  # velocity counted by every node (Redis), when known


class Screening:
    """The findings of one call's checks so far, and what the checks set aside."""

    __slots__ = ("findings", "risk", "suppressed_buyers", "verstat")

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.risk: float | None = None
        self.verstat: str | None = None
        self.suppressed_buyers: frozenset[str] = frozenset()

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def has(self, code: ReasonCode) -> bool:
        return any(f.code is code for f in self.findings)

    def verdict(self) -> Verdict:
        return Verdict.of(self.findings, risk=self.risk, verstat=self.verstat,
                          suppressed_buyers=self.suppressed_buyers)


class Check(Protocol):
    """One screening check."""

    def __call__(self, call: ScreenedCall, now: float, out: Screening) -> None: ...


class Screener:
    """Runs its checks on each call; with no checks every call is allowed."""

    def __init__(self, checks: Sequence[Check] = ()) -> None:
        self.checks = tuple(checks)

    def screen(self, call: ScreenedCall, now: float) -> Verdict:
        out = Screening()
        for check in self.checks:
            check(call, now, out)
        return out.verdict()


def rejected(verdict: Verdict) -> bool:
    """Whether the call must be refused."""
    return verdict.action is Action.REJECT
