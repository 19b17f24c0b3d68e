"""JSON lines for records (dataclasses and NamedTuples), derived from their type hints: every field, both ways.

One codec serves the durable spool (encode, then decode at replay) and the dead-letter table (encode). Nothing is
listed by hand, so a field added to a record type is carried without anyone remembering this module. Output is
ASCII JSON: a lone surrogate or a NUL in a string survives the round trip as an escape and never breaks a file.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, Generic, TypeVar

from dce.bidding.log import BidLogEntry
from dce.billing.cdr import CallDetailRecord

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """A JSON-able form of ``value`` (records as objects keyed by field name)."""
    if value is None or (isinstance(value, bool | int | float) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {spec.name: to_json(getattr(value, spec.name)) for spec in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {name: to_json(item) for name, item in zip(value._fields, value, strict=True)}
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(item) for item in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_json(hint: Any, value: Any) -> Any:
    """Rebuild a value of type ``hint`` from :func:`to_json`'s output; raise ValueError/TypeError if it does not fit."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_json(arg, value)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        raise ValueError(f"{value!r} fits none of {hint}: {errors}")
    if hint is Any:
        return value
    if origin is dict:
        key_hint, item_hint = typing.get_args(hint) or (Any, Any)
        _expect(value, dict)
        return {from_json(key_hint, key): from_json(item_hint, item) for key, item in value.items()}
    if origin in (list, tuple, set, frozenset):
        item_hint = (typing.get_args(hint) or (Any,))[0]
        _expect(value, list)
        return origin(from_json(item_hint, item) for item in value)
    supertype = getattr(hint, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return from_json(supertype, value)
    if not isinstance(hint, type):
        raise TypeError(f"cannot decode into {hint!r}")
    if dataclasses.is_dataclass(hint) or (issubclass(hint, tuple) and hasattr(hint, "_fields")):
        _expect(value, dict)
        hints = _hints(hint)
        return hint(**{name: from_json(hints[name], item) for name, item in value.items()})
    if issubclass(hint, enum.Enum):
        return hint(value)
    if hint is datetime:
        _expect(value, str)
        return datetime.fromisoformat(value)
    if hint is Decimal:
        return Decimal(_expect(value, str))
    if hint is float:
        return float(_expect(value, int | float))
    if hint in (int, str, bool):
        if isinstance(value, bool) and hint is not bool:
            raise TypeError(f"expected {hint.__name__}, got a bool")
        return _expect(value, hint)
    raise TypeError(f"cannot decode into {hint!r}")


def _expect(value: Any, kind: Any) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind}, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class Codec(Generic[T]):
    """How records of ``cls`` become one JSON line and back; ``key`` names a record in logs and dead letters."""

    cls: type[T]
    kind: str
    key: Callable[[T], str]

    def dumps(self, record: T) -> str:
        """One line of ASCII JSON, every field included."""
        return json.dumps(to_json(record), ensure_ascii=True, sort_keys=True, separators=(",", ":"))

    def loads(self, line: str) -> T:
        """The record :meth:`dumps` wrote; ValueError/TypeError/KeyError when the line is not one."""
        value: T = from_json(self.cls, json.loads(line))
        return value



CDR_CODEC: Codec[CallDetailRecord] = Codec(CallDetailRecord, "cdr", lambda cdr: cdr.call_id)
BID_CODEC: Codec[BidLogEntry] = Codec(BidLogEntry, "bid", lambda entry: entry.id)
