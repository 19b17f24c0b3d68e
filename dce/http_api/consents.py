"""``/api/v1`` consent records and the outbound-call check.

::

    POST /consents                     {number, business, consent_type, channel, source, proof_hash | proof,
                                        granted_at?, expires_at?, reason?}  -> 201 the stored version
    GET  /consents?number=             -> 200 {"number", "items": [every version, newest first]}
    POST /consents/revoke              {number, business, consent_type, reason?, channel?}
                                       -> 201 the revoked version it appended; 404 when there is no such consent
    POST /compliance/outbound-check    {number, business, consent_type, at?}
                                       -> 200 {"action", "findings": [{code, detail}], "local_time", "timezone",
                                               "zones": [{timezone, local_time}], "states"}

Numbers are normalised to E.164 (national US numbers accepted). ``consent_type`` is one of
:class:`~dce.compliance.consent.ConsentType`, ``channel`` one of :class:`~dce.compliance.consent.ConsentChannel`.
Times are ISO 8601 with an offset (naive times are refused); ``proof`` (any text) is hashed to ``proof_hash``
(sha256 hex) when no hash is given. Bad input -> 422 problem+json naming the field in ``invalid_params``.

App keys: ``CALLING_HOURS`` (a :class:`CallingHours`; the 08:00-21:00 default without it), ``OUTBOUND_LISTS``
(number -> list findings: DNC, litigators...; none without it), and the app's
:class:`~dce.http_api.changes.Changes` (``consents`` hears of every write, so the in-memory consent book reloads).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from dce.compliance.consent import (
    SHA256_HEX,
    ConsentBook,
    ConsentChannel,
    ConsentRecord,
    ConsentType,
    proof_hash_of,
)
from dce.compliance.outbound import ListCheck, check_outbound
from dce.compliance.tcpa import CallingHours, local_times, number_place
from dce.db import consent_repository as repo
from dce.http_api.changes import Change, notify
from dce.http_api.describe import Param, describe
from dce.http_api.inputs import invalid_value, read_model, shown
from dce.http_api.keys import ENGINE, wall_now
from dce.http_api.marketplace import E164
from dce.http_api.permissions import require
from dce.http_api.problems import ProblemError, invalid_parameter
from dce.routing.numbers import to_e164

log = logging.getLogger(__name__)

CALLING_HOURS = web.AppKey("calling_hours", CallingHours)
OUTBOUND_LISTS = web.AppKey("outbound_lists", ListCheck)

READ = "compliance:read"
WRITE = "compliance:write"


# ----------------------------------------------------------------------------------------------------- input


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value.strip().lower()):
        raise invalid_value("sha256", f"expected a sha256 digest as 64 hex digits, got {shown(value)}")
    return value.strip().lower()


Number = E164
Sha256 = Annotated[str, BeforeValidator(_sha256)]
Business = Annotated[str, Field(min_length=1, max_length=128)]
Reason = Annotated[str, Field(max_length=2000)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ConsentIn(_Input):
    number: Number
    business: Business
    consent_type: ConsentType
    channel: ConsentChannel
    source: Annotated[str, Field(min_length=1, max_length=4096)]
    proof_hash: Sha256 | None = None
    proof: Annotated[str, Field(min_length=1, max_length=1_000_000)] | None = None
    granted_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    reason: Reason | None = None


class RevokeIn(_Input):
    number: Number
    business: Business
    consent_type: ConsentType
    reason: Reason | None = None
    channel: ConsentChannel | None = None


class OutboundCheckIn(_Input):
    number: Number
    business: Business
    consent_type: ConsentType
    at: AwareDatetime | None = None


# ---------------------------------------------------------------------------------------------------- output


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def consent_json(record: ConsentRecord, now: datetime) -> dict[str, Any]:
    return {
        "number": record.number,
        "business": record.business,
        "consent_type": record.consent_type,
        "channel": record.channel,
        "source": record.source,
        "proof_hash": record.proof_hash,
        "status": str(record.status),
        "granted_at": _time(record.granted_at),
        "expires_at": _time(record.expires_at),
        "version": record.version,
        "recorded_at": _time(record.recorded_at),
        "reason": record.reason,
        "active": record.is_active(now),
    }




# -------------------------------------------------------------------------------------------------- handlers


@describe("Record a consent", body=ConsentIn, status=201)
@require(WRITE)
async def record_consent(request: web.Request) -> web.Response:
    data = await read_model(request, ConsentIn)
    now = wall_now(request)
    if data.proof_hash is None and data.proof is None:
        raise invalid_parameter("proof_hash", "required (or give proof, which is hashed)")
    proof_hash = data.proof_hash or proof_hash_of(data.proof or "")
    if data.proof is not None and data.proof_hash is not None and proof_hash_of(data.proof) != data.proof_hash:
        raise invalid_parameter("proof_hash", "does not match the sha256 of proof")
    granted_at = data.granted_at or now
    if data.expires_at is not None and data.expires_at <= granted_at:
        raise invalid_parameter("expires_at", "must be later than granted_at")
    record = await repo.record_consent(
        request.config_dict[ENGINE], number=data.number, business=data.business, consent_type=data.consent_type,
        channel=data.channel, source=data.source, proof_hash=proof_hash, granted_at=granted_at,
        expires_at=data.expires_at, recorded_at=now, reason=data.reason,
    )
    await notify(request, Change.CONSENTS)
    return web.json_response(consent_json(record, now), status=201)


@describe("Every version of a number's consents, newest first",
          query=(Param("number", "phone number", required=True),))
@require(READ)
async def consent_history(request: web.Request) -> web.Response:
    raw = request.query.get("number", "").strip()
    if not raw:
        raise invalid_parameter("number", "required")
    number = to_e164(raw)
    if number is None:
        raise invalid_parameter("number", f"not a phone number: {raw!r}")
    now = wall_now(request)
    records = await repo.history(request.config_dict[ENGINE], number)
    return web.json_response({"number": number, "items": [consent_json(r, now) for r in records]})


@describe("Revoke a consent", body=RevokeIn, status=201, problems=(404,))
@require(WRITE)
async def revoke_consent(request: web.Request) -> web.Response:
    data = await read_model(request, RevokeIn)
    now = wall_now(request)
    record = await repo.revoke_consent(
        request.config_dict[ENGINE], number=data.number, business=data.business, consent_type=data.consent_type,
        reason=data.reason, at=now, channel=data.channel,
    )
    if record is None:
        raise ProblemError(404, f"no {data.consent_type} consent of {data.number} for {data.business!r}")
    await notify(request, Change.CONSENTS)
    return web.json_response(consent_json(record, now), status=201)


@describe("May this number be called now?", body=OutboundCheckIn)
@require(READ)
async def outbound_check(request: web.Request) -> web.Response:
    data = await read_model(request, OutboundCheckIn)
    at = data.at or wall_now(request)
    latest = await repo.latest_consent(request.config_dict[ENGINE], data.number, data.business, data.consent_type)
    verdict = check_outbound(
        data.number, at,
        calling_hours=request.config_dict.get(CALLING_HOURS) or CallingHours(),
        consents=ConsentBook([latest] if latest is not None else []),
        business=data.business, consent_type=data.consent_type,
        on_lists=request.config_dict.get(OUTBOUND_LISTS),
    )
    times = local_times(data.number, at)
    return web.json_response({
        "action": str(verdict.action),
        "findings": [{"code": str(f.code), "detail": f.detail} for f in verdict.findings],
        "local_time": times[0].isoformat() if times else None,
        "timezone": times[0].tzinfo.key if times else None,  # type: ignore[union-attr]
        "zones": [{"timezone": t.tzinfo.key, "local_time": t.isoformat()} for t in times],  # type: ignore[union-attr]
        "states": list(number_place(data.number).states),
        "consent": consent_json(latest, at) if latest is not None else None,
    })


def consent_routes() -> list[web.RouteDef]:
    """The routes, for the ``/api/v1`` sub-app."""
    return [
        web.post("/consents", record_consent),
        web.get("/consents", consent_history),
        web.post("/consents/revoke", revoke_consent),
        web.post("/compliance/outbound-check", outbound_check),
    ]
