"""Consent records: who agreed to be called by whom, how, with what proof, and whether it still holds.

Records are versioned per (consumer number, business, consent type): granting again or revoking appends the
next version, nothing is updated in place, so the history of a consent is the list of its versions. The latest
version decides: a consent is active at ``now`` when the latest version is ``granted``, ``granted_at <= now``
and it has not expired (``expires_at`` is None or later than ``now``).

Consent types match exactly: an ``express_written`` consent does not answer a ``prior_express`` requirement or
the other way round (the campaign states what it needs).

Pure and in memory: :class:`ConsentBook` is what screening reads; ``dce.db.consent_repository`` stores the
versions and loads a book from them.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ConsentType(enum.StrEnum):
    """What the consumer agreed to (TCPA terms)."""

    EXPRESS_WRITTEN = "express_written"  # prior express written consent: telemarketing, autodialled/prerecorded
    PRIOR_EXPRESS = "prior_express"  # prior express consent: informational, non-marketing calls


class ConsentChannel(enum.StrEnum):
    """How the consent (or its revocation) was given."""

    WEB = "web"
    PHONE = "phone"
    SMS = "sms"
    EMAIL = "email"
    PAPER = "paper"
    OTHER = "other"


class ConsentStatus(enum.StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"


ConsentKey = tuple[str, str, str]  # (number, business, consent_type)


def proof_hash_of(proof: str | bytes) -> str:
    """The sha256 hex digest of a consent artefact (the form submission, recording, signed text...)."""
    data = proof.encode() if isinstance(proof, str) else proof
    return hashlib.sha256(data).hexdigest()


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive datetime {value!r}; times must be timezone-aware")


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One version of one consent.

    ``number`` is E.164; ``business`` who may call (a buyer id, for instance); ``source`` where the consent was
    captured (a URL, or text describing it); ``proof_hash`` the sha256 hex of the proof artefact. ``granted_at``
    is when the consumer consented (a revoked version keeps the grant's times); ``recorded_at`` when this version
    was written. ``reason`` says why a version was written (a revocation's reason, for instance).
    """

    number: str
    business: str
    consent_type: str
    channel: str
    source: str
    proof_hash: str
    status: ConsentStatus
    granted_at: datetime
    expires_at: datetime | None
    version: int
    recorded_at: datetime
    reason: str | None = None

    def __post_init__(self) -> None:
        if not SHA256_HEX.fullmatch(self.proof_hash):
            raise ValueError(f"proof_hash {self.proof_hash!r} is not a lowercase sha256 hex digest")
        if self.version < 1:
            raise ValueError(f"version {self.version} < 1")
        _require_aware(self.granted_at, "granted_at")
        _require_aware(self.recorded_at, "recorded_at")
        if self.expires_at is not None:
            _require_aware(self.expires_at, "expires_at")
            if self.expires_at <= self.granted_at:
                raise ValueError("expires_at must be later than granted_at")

    @property
    def key(self) -> ConsentKey:
        return (self.number, self.business, self.consent_type)

    def is_active(self, now: datetime) -> bool:
        """Granted, already in force and not expired at ``now``."""
        return (
            self.status is ConsentStatus.GRANTED
            and self.granted_at <= now
            and (self.expires_at is None or now < self.expires_at)
        )

    def revoked(self, at: datetime, reason: str | None = None, *, channel: str | None = None) -> ConsentRecord:
        """The next version: this consent revoked at ``at`` (grant details kept for the record)."""
        return replace(
            self, status=ConsentStatus.REVOKED, version=self.version + 1, recorded_at=at, reason=reason,
            channel=channel or self.channel,
        )


class ConsentBook:
    """The latest version of every consent, in memory, for screening.

    ``add`` keeps a record only if it is newer (higher version) than the one held for its key, so records may be
    added in any order. ``grant``/``revoke`` build and add the next version and return it (for the caller to
    store); the book keeps only the latest version per key.
    """

    __slots__ = ("_latest",)

    def __init__(self, records: Iterable[ConsentRecord] = ()) -> None:
        self._latest: dict[ConsentKey, ConsentRecord] = {}
        for record in records:
            self.add(record)

    def add(self, record: ConsentRecord) -> None:
        held = self._latest.get(record.key)
        if held is None or record.version > held.version:
            self._latest[record.key] = record

    def latest(self, number: str, business: str, consent_type: str) -> ConsentRecord | None:
        """The latest version for the key, whatever its status."""
        return self._latest.get((number, business, str(consent_type)))

    def active(self, number: str, business: str, consent_type: str, now: datetime) -> ConsentRecord | None:
        """The consent in force for ``number`` with ``business`` of exactly ``consent_type`` at ``now``, if any."""
        record = self._latest.get((number, business, str(consent_type)))
        return record if record is not None and record.is_active(now) else None

    def grant(self, number: str, business: str, consent_type: str, *, channel: str, source: str, proof_hash: str,
              granted_at: datetime, recorded_at: datetime, expires_at: datetime | None = None,
              reason: str | None = None) -> ConsentRecord:
        """Record a grant as the next version of its key; returns it."""
        held = self._latest.get((number, business, str(consent_type)))
        record = ConsentRecord(
            number=number, business=business, consent_type=str(consent_type), channel=str(channel), source=source,
            proof_hash=proof_hash, status=ConsentStatus.GRANTED, granted_at=granted_at, expires_at=expires_at,
            version=1 if held is None else held.version + 1, recorded_at=recorded_at, reason=reason,
        )
        self._latest[record.key] = record
        return record

    def revoke(self, number: str, business: str, consent_type: str, at: datetime, reason: str | None = None, *,
               channel: str | None = None) -> ConsentRecord | None:
        """Append a revoked version to the key's consent; None when there is none to revoke."""
        held = self._latest.get((number, business, str(consent_type)))
        if held is None:
            return None
        record = held.revoked(at, reason, channel=channel)
        self._latest[record.key] = record
        return record

    def forget(self, number: str) -> int:
        """Drop every consent of ``number`` (erasure); returns how many keys were dropped."""
        keys = [key for key in self._latest if key[0] == number]
        for key in keys:
            del self._latest[key]
        return len(keys)

    def for_number(self, number: str) -> list[ConsentRecord]:
        """The latest version of each consent of ``number``."""
        return [record for key, record in self._latest.items() if key[0] == number]

    def __iter__(self) -> Iterator[ConsentRecord]:
        return iter(self._latest.values())

    def __len__(self) -> int:
        return len(self._latest)
