"""Money at the side API's edge: decimal strings of currency units in and out, integer micro-units inside.

Every money field of every request (marketplace prices and limits, ledger amounts, conversions, live bids) is read
by :func:`parse_money`, and every money field of every answer (CDRs included) is written by
:func:`dce.routing.model.format_money`.
A JSON number is refused (``12.5`` may already have been rounded by the client's float), with a message saying to
send the decimal string ``"12.50"``; at most 6 decimal places, never a float inside.

In a body model, :data:`Money` (and :data:`PositiveMoney`, :data:`SignedMoney`) read a field with
:func:`parse_money` and document it as that decimal string (:func:`~dce.http_api.inputs.documented`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator

from dce.http_api.inputs import documented, invalid_value, shown
from dce.routing.model import MICROS_PER_UNIT

MAX_MONEY = Decimal(10) ** 12  # currency units; keeps micros well inside a BIGINT
MONEY_PATTERN = r"^\s*-?\d+(\.\d{1,6})?\s*$"
AS_STRING = 'send money as a decimal string, like "12.50"'


class MoneyError(ValueError):
    """Why a value is not an amount of money; the text is the 422's reason."""


def parse_money(value: Any, *, signed: bool = False, positive: bool = False) -> int:
    """A decimal string of currency units -> micro-units, or :class:`MoneyError` saying why not.

    Negative amounts only when ``signed`` (and then not zero); ``positive``: greater than zero."""
    if not isinstance(value, str):
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            raise MoneyError(f"{AS_STRING}, not the JSON number {value}")
        raise MoneyError(f"{AS_STRING}, got {shown(value)}")
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise MoneyError(f"not a decimal number: {shown(value)}") from None
    if not amount.is_finite():
        raise MoneyError(f"must be a finite number, got {value!r}")
    if abs(amount) >= MAX_MONEY:
        raise MoneyError(f"too large: {value!r} (at most {MAX_MONEY - 1})")
    micros = amount * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise MoneyError(f"at most 6 decimal places, got {value!r}")
    if amount < 0 and not signed:
        raise MoneyError(f"must not be negative, got {value!r}")
    if positive and amount <= 0:
        raise MoneyError(f"must be greater than zero, got {value!r}")
    if signed and amount == 0:
        raise MoneyError(f"must not be zero, got {value!r}")
    return int(micros)


def money_schema(description: str = "currency units") -> dict[str, Any]:
    """The JSON schema of a money field the API reads."""
    return {
        "type": "string", "pattern": MONEY_PATTERN,
        "description": f'{description}: a decimal string (e.g. "12.50"), at most 6 decimal places; a JSON number is '
                       f'refused (422 "send money as a decimal string")',
    }


def _reader(*, signed: bool = False, positive: bool = False, description: str = "currency units"
            ) -> Callable[[Any], int]:
    @documented(money_schema(description))
    def read(value: Any) -> int:
        try:
            return parse_money(value, signed=signed, positive=positive)
        except MoneyError as exc:
            raise invalid_value("money", str(exc)) from None

    return read


Money = Annotated[int, BeforeValidator(_reader())]  # micros; not negative
PositiveMoney = Annotated[int, BeforeValidator(_reader(positive=True, description="greater than zero"))]
SignedMoney = Annotated[int, BeforeValidator(_reader(
    signed=True, description="signed, not zero: > 0 credits the account, < 0 debits it"))]
