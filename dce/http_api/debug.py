"""Debug endpoints: the effective configuration (secrets redacted), a phone-number inspector and a TCPA
calling-hours check.

* ``GET /debug/config``: ``SETTINGS_DUMP()`` (e.g. ``settings.model_dump(mode="json")``) with every secret
  replaced by ``"***"``: ``SecretStr``/``SecretBytes`` values (and their ``"**********"`` JSON rendering), the value
  of any key named like password/secret/token/key/credential, and the password of any URL
  (``postgresql://user:***@host/db``).
* ``GET /debug/validate/phone/{number}``: what phonenumbers knows of a number; national input is read in
  ``?region=`` (US by default), by the same rule as calls, the API and the CLI.
* ``GET /api/v1/debug/compliance/tcpa?number=&at=``: the number's local time(s) at ``at`` (ISO 8601 with an
  offset; now by default) and whether that is inside calling hours (app key ``consents.CALLING_HOURS``, else the
  08:00-21:00 default).

Register ``debug_routes()`` on the root app and ``debug_api_routes()`` on the ``/api/v1`` sub-app; set
``SETTINGS_DUMP`` (404 without it). All need ``debug:read``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from aiohttp import web
from phonenumbers import PhoneNumberType, carrier, geocoder, timezone
from pydantic import SecretBytes, SecretStr

from dce.compliance.tcpa import CallingHours, number_place
from dce.http_api.consents import CALLING_HOURS
from dce.http_api.describe import Param, describe
from dce.http_api.keys import wall_now
from dce.http_api.permissions import require
from dce.http_api.problems import ProblemError, invalid_parameter
from dce.routing.numbers import DEFAULT_REGION, to_e164

SettingsDump = Callable[[], Mapping[str, Any]]
SETTINGS_DUMP = web.AppKey("settings_dump", SettingsDump)

PERMISSION = "debug:read"
REDACTED = "***"

_SECRET_KEY = re.compile(r"passw(or)?d|passphrase|secret|token|(^|_)keys?($|_)|key$|credential|private|auth", re.I)
_PYDANTIC_MASKS = frozenset({"**********", ""})  # SecretStr / SecretBytes rendered by model_dump(mode="json")
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)(?P<at>@)", re.I)
_TYPE_NAMES = {value: name.lower() for name, value in vars(PhoneNumberType).items() if not name.startswith("_")}


def is_secret_key(key: str) -> bool:
    """True for keys named like a secret: password, secret, token, key (``pseudonym_key``, ``api_key``), ..."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every secret replaced by ``"***"`` (recursively; None stays None: unset is no secret)."""
    if value is None:
        return None
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if key and is_secret_key(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    if isinstance(value, str):
        if value == "**********":
            return REDACTED
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", value)
    if isinstance(value, bool | int | float):
        return value
    return str(value)


@require(PERMISSION)
async def debug_config(request: web.Request) -> web.Response:
    dump = request.config_dict.get(SETTINGS_DUMP)
    if dump is None:
        raise ProblemError(404, "no configuration to show (SETTINGS_DUMP not set)")
    return web.json_response(redact(dump()))


def _parse_number(value: str | None, name: str, region: str = DEFAULT_REGION) -> phonenumbers.PhoneNumber:
    """``value`` read by the rule of the call path, the API and the CLI (:func:`~dce.routing.numbers.to_e164`:
    national numbers in ``region``, US by default); 422 naming ``name`` when it is not a possible number."""
    if not value:
        raise invalid_parameter(name, "required")
    e164 = to_e164(value, region)
    if e164 is None:
        raise invalid_parameter(name, f"not a phone number: {value!r}")
    return phonenumbers.parse(e164)


def _e164(parsed: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@require(PERMISSION)
async def validate_phone(request: web.Request) -> web.Response:
    region = request.query.get("region")
    if region is not None and (len(region) != 2 or not region.isalpha()):
        raise invalid_parameter("region", "a two-letter region code (ISO 3166-1), e.g. US")
    parsed = _parse_number(request.match_info["number"], "number", region.upper() if region else DEFAULT_REGION)
    e164 = _e164(parsed)
    zones = [z for z in timezone.time_zones_for_number(parsed) if z != timezone.UNKNOWN_TIMEZONE]
    return web.json_response({
        "input": request.match_info["number"],
        "e164": e164,
        "valid": phonenumbers.is_valid_number(parsed),
        "possible": phonenumbers.is_possible_number(parsed),
        "type": _TYPE_NAMES.get(phonenumbers.number_type(parsed), "unknown"),
        "country_code": parsed.country_code,
        "national_number": str(parsed.national_number),
        "region": phonenumbers.region_code_for_number(parsed),
        "description": geocoder.description_for_number(parsed, "en") or None,
        "time_zones": zones,
        "carrier": carrier.name_for_number(parsed, "en") or None,
        "states": list(number_place(e164).states),
        "formatted": {
            "international": phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
            "national": phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL),
        },
    })


def _parse_at(request: web.Request) -> datetime:
    value = request.query.get("at")
    if value is None or value == "":
        return wall_now(request)
    try:
        at = datetime.fromisoformat(value.replace(" ", "+"))  # a "+" left unencoded in a query decodes to " "
    except ValueError:
        raise invalid_parameter("at", f"not an ISO 8601 date-time: {value!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise invalid_parameter("at", "needs a UTC offset (e.g. 2025-01-15T14:00:00Z)")
    return at


@describe("May this number be called at this time (TCPA calling hours)?", query=(
    Param("number", "phone number", required=True),
    Param("at", "ISO 8601 time with a UTC offset (default: now)", {"type": "string", "format": "date-time"}),
))
@require(PERMISSION)
async def tcpa_check(request: web.Request) -> web.Response:
    raw = request.query.get("number")
    if raw is not None and raw.startswith(" "):
        raw = "+" + raw[1:]  # "+1212..." sent unencoded in the query string
    number = _e164(_parse_number(raw, "number"))
    at = _parse_at(request)
    hours: CallingHours = request.config_dict.get(CALLING_HOURS) or CallingHours()
    place = number_place(number)
    windows = hours.windows_for(place.states)
    local = []
    for zone in place.zones:
        moment = at.astimezone(zone)
        wall = moment.time().replace(tzinfo=None)
        local.append({
            "time_zone": zone.key,
            "local_time": moment.isoformat(),
            "inside": all(wall in window for window in windows),
        })
    finding = hours.check(number, at)
    return web.json_response({
        "number": number,
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "states": list(place.states),
        "windows": [str(window) for window in windows],
        "local_times": local,
        "allowed": finding is None,
        "reason": finding.detail if finding is not None else None,
    })


def debug_routes() -> list[web.RouteDef]:
    """Root-app routes: ``/debug/config`` and ``/debug/validate/phone/{number}``."""
    return [
        web.get("/debug/config", debug_config),
        web.get("/debug/validate/phone/{number}", validate_phone),
    ]


def debug_api_routes() -> list[web.RouteDef]:
    """``/api/v1`` sub-app routes: ``/debug/compliance/tcpa``."""
    return [web.get("/debug/compliance/tcpa", tcpa_check)]
