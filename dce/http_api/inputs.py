"""What a request carries is decodable and storable text, or the caller gets a problem (400/415/422), never a 500.

- :func:`read_text`, :func:`read_json`, :func:`read_json_object`: the body in its charset, as JSON; every string
  of it (keys too) free of NUL characters and lone surrogates, which no database column can store
  (PostgreSQL refuses ``\\x00`` in text; a lone surrogate cannot be encoded to UTF-8).
- :func:`validated`, :func:`read_model`: a body checked by a pydantic model, 422 naming each bad field (a
  :class:`ParameterBody` names its first bad field only, as ``invalid parameter 'name': reason``).
- :func:`documented`: a field reader (a ``BeforeValidator``'s function) carrying the JSON schema of what it reads.
- :func:`invalid_value`: the one way our validators fail a field, with a message that shows the value.
- :func:`input_guard_middleware`: the same rule for query parameters and path segments.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from dce.http_api.problems import ProblemError, invalid_parameter


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (a lone surrogate is not)"
    return None


def check_strings(value: Any) -> None:
    """Raise 422 naming the first string of a parsed JSON value (or key) that :func:`text_problem` refuses."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # iterative: a JSON document nested as deep as the parser allows must not exhaust the stack
        path, item = stack.pop()
        if isinstance(item, str):
            reason = text_problem(item)
            if reason is not None:
                raise invalid_parameter(path or "body", reason)
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else key
                reason = text_problem(key)
                if reason is not None:
                    raise invalid_parameter(path or "body", f"a key {reason}")
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]" if path else f"body[{i}]", child) for i, child in enumerate(item))


async def read_text(request: web.Request) -> str:
    """The body decoded with its ``charset`` (UTF-8 when none): 415 for an unknown charset, 400 for bad bytes."""
    raw = await request.read()
    charset = request.charset or "utf-8"
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        raise ProblemError(415, f"unknown charset {charset!r}: send UTF-8") from None
    try:
        return raw.decode(codec.name)
    except UnicodeDecodeError as exc:
        raise ProblemError(400, f"body is not valid {codec.name}: {exc.reason} at byte {exc.start}") from None


async def read_json(request: web.Request, *, decimals: bool = False) -> Any:
    """The body as JSON (400 when it is not, 422 for a string :func:`text_problem` refuses); ``decimals``: numbers
    with a fraction, NaN and Infinity as Decimal (money is never a float; validators refuse NaN and Infinity)."""
    text = await read_text(request)
    try:
        body = json.loads(text, parse_float=Decimal, parse_constant=Decimal) if decimals else json.loads(text)
    except RecursionError:
        raise ProblemError(400, "body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise ProblemError(400, f"body is not JSON: {exc}") from None
    check_strings(body)
    return body


async def read_json_object(request: web.Request, *, decimals: bool = False) -> dict[str, Any]:
    """:func:`read_json`, and 422 naming ``body`` unless it is a JSON object."""
    body = await read_json(request, decimals=decimals)
    if not isinstance(body, dict):
        raise ProblemError(
            422, "body must be a JSON object", invalid_params=[{"name": "body", "reason": "not an object"}]
        )
    return body


M = TypeVar("M", bound=BaseModel)

MAX_SHOWN = 80  # characters of an offending value quoted in a message


def shown(value: Any) -> str:
    """``value`` as a message quotes it: its repr, cut to :data:`MAX_SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def invalid_value(kind: str, message: str) -> PydanticCustomError:
    """A field validator's error whose ``message`` is final text (say ``f"not a SIP URI: {shown(value)}"``).

    pydantic formats a custom error's template with plain ``{name}`` placeholders only (``{value!r}`` is printed
    as is), so the message is formatted by Python first and passed through one placeholder."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def field_name(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path: ``targets[0].caps``; ``body`` for the whole body."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


class ParameterBody(BaseModel):
    """A body answered one field at a time: the first bad field (an unknown one first, then in field order) is a 422
    ``invalid parameter 'name': reason`` with ``invalid_params`` naming it; a missing field's reason is "required",
    an unknown one's "unknown field".

    A ``null`` is taken as the field left out (its default, or "required"); with :attr:`ABSENT_IS_NULL` it is the
    other way round: a required field left out reaches its reader as ``None``, which says what it expected."""

    model_config = ConfigDict(extra="forbid")
    REASONS: ClassVar[Mapping[str, str]] = {"missing": "required", "extra_forbidden": "unknown field"}
    ABSENT_IS_NULL: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if cls.ABSENT_IS_NULL:
            return {**{name: None for name, field in cls.model_fields.items() if field.is_required()}, **data}
        return {k: v for k, v in data.items() if v is not None}


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """``(field, reason)`` of the first error :class:`ParameterBody` answers with."""
    first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # stable: field order otherwise
    return field_name(tuple(first["loc"])), ParameterBody.REASONS.get(first["type"], first["msg"])


def validated(model: type[M], body: Any) -> M:
    """``body`` as ``model``, or 422 listing each bad field with pydantic's message (never the input itself, which
    may be a password); a :class:`ParameterBody` names its first bad field only."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        if issubclass(model, ParameterBody):
            raise invalid_parameter(*first_problem(exc)) from None
        params = [{"name": field_name(tuple(e["loc"])), "reason": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{p['name']}: {p['reason']}" for p in params)
        raise ProblemError(422, f"invalid body: {detail}", invalid_params=params) from None


async def read_model(request: web.Request, model: type[M], *, decimals: bool = False) -> M:
    """:func:`read_json_object` checked by :func:`validated`."""
    return validated(model, await read_json_object(request, decimals=decimals))


R = TypeVar("R", bound=Callable[[Any], Any])


def documented(schema: Mapping[str, Any]) -> Callable[[R], R]:
    """Mark a field reader (the function of a ``BeforeValidator``) with the JSON schema of what it reads: the
    OpenAPI document shows that schema, not the type the reader returns (e.g. money read as a decimal string)."""

    def mark(reader: R) -> R:
        reader.json_schema = dict(schema)  # type: ignore[attr-defined]
        return reader

    return mark


def documented_schema(reader: Any) -> dict[str, Any] | None:
    """The schema :func:`documented` put on ``reader`` (None when none)."""
    return getattr(reader, "json_schema", None)


def text_reader(max_length: int = 128) -> Callable[[Any], str]:
    """A reader of a non-empty string (stripped) of at most ``max_length`` characters."""

    @documented({"type": "string", "minLength": 1, "maxLength": max_length})
    def read(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise invalid_value("text", "expected a non-empty string")
        value = value.strip()
        if len(value) > max_length:
            raise invalid_value("text", f"at most {max_length} characters")
        return value

    return read


@web.middleware
async def input_guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """422 naming the query parameter or path segment that :func:`text_problem` refuses (before any handler)."""
    for name, value in request.match_info.items():
        reason = text_problem(value)
        if reason is not None:
            raise invalid_parameter(name, reason)
    for name, value in request.query.items():
        reason = text_problem(name) or text_problem(value)
        if reason is not None:
            raise invalid_parameter(name if text_problem(name) is None else "query", reason)
    return await handler(request)
