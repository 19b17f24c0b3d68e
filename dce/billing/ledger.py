"""The double-entry ledger, pure: accounts, journal entries that always balance, and the builders of each kind.

Accounts are strings:

* ``buyer:<id>``        the buyer's funds (credit-normal: deposits credit it, charges for calls debit it)
* ``publisher:<id>``    what the exchange owes the publisher (credit-normal: payouts credit it, payments debit it)
* ``exchange:revenue``  the exchange's margin (credit-normal)
* ``exchange:adjustments``  the other side of manual adjustments
* ``exchange:cash``     money in and out of the exchange's bank account (debit-normal)

A :class:`Line` amount > 0 is a debit, < 0 a credit; every entry's lines sum to zero. Amounts are integer
micro-units. A buyer's available balance is ``-(sum of its lines) + credit_limit``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

EXCHANGE_REVENUE = "exchange:revenue"
EXCHANGE_ADJUSTMENTS = "exchange:adjustments"
EXCHANGE_CASH = "exchange:cash"
EXCHANGE_ACCOUNTS = frozenset({EXCHANGE_REVENUE, EXCHANGE_ADJUSTMENTS, EXCHANGE_CASH})
DEBIT_NORMAL = frozenset({EXCHANGE_CASH})

BUYER_PREFIX = "buyer:"
PUBLISHER_PREFIX = "publisher:"
MAX_ACCOUNT_LENGTH = 128

# entry kinds
SALE = "sale"
CONVERSION = "conversion"  # a sale settled late, by the buyer's webhook, after the call settled unconverted
DEPOSIT = "deposit"
ADJUSTMENT = "adjustment"
REFUND = "refund"
PAYMENT = "payment"


class UnbalancedEntry(ValueError):
    """A journal entry whose lines do not sum to zero, or that is otherwise malformed."""


def buyer_account(buyer_id: str) -> str:
    return BUYER_PREFIX + buyer_id


def publisher_account(publisher_id: str) -> str:
    return PUBLISHER_PREFIX + publisher_id


def is_valid_account(account: str) -> bool:
    """``buyer:<id>``, ``publisher:<id>`` (non-empty id) or one of the exchange's accounts."""
    if not isinstance(account, str) or len(account) > MAX_ACCOUNT_LENGTH:
        return False
    if account in EXCHANGE_ACCOUNTS:
        return True
    return any(account.startswith(p) and len(account) > len(p) for p in (BUYER_PREFIX, PUBLISHER_PREFIX))


def natural_balance(account: str, raw: int) -> int:
    """The balance on the account's normal side: ``raw`` (sum of lines, debit positive) for exchange:cash,
    ``-raw`` for the credit-normal accounts (a buyer's funds, a publisher's payable, revenue, adjustments)."""
    return raw if account in DEBIT_NORMAL else -raw


def available(raw_buyer_balance: int, credit_limit: int | None) -> int:
    """What a buyer can still spend: its funds (``-raw``) plus its credit limit."""
    return -raw_buyer_balance + (credit_limit or 0)


@dataclass(frozen=True, slots=True)
class Line:
    account: str
    amount: int  # micros; > 0 debit, < 0 credit


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One balanced journal entry. ``key`` makes posting idempotent (``sale:<call_id>``, ``deposit:<uuid>``...)."""

    key: str
    kind: str
    at: datetime
    actor: str | None
    memo: str | None
    lines: tuple[Line, ...]

    def __post_init__(self) -> None:
        validate(self)

    def amount_of(self, account: str) -> int:
        return sum(line.amount for line in self.lines if line.account == account)


def validate(entry: JournalEntry) -> None:
    """Refuse an entry with no lines, lines that do not sum to zero, a zero or non-integer amount, an account
    twice, an unknown account form, an empty key or a naive time."""
    if not entry.key or len(entry.key) > 200:
        raise UnbalancedEntry(f"entry key must be 1-200 characters, got {entry.key!r}")
    if entry.at.tzinfo is None:
        raise UnbalancedEntry(f"entry {entry.key}: naive time {entry.at!r}")
    if not entry.lines:
        raise UnbalancedEntry(f"entry {entry.key}: no lines")
    seen: set[str] = set()
    total = 0
    for line in entry.lines:
        if not isinstance(line.amount, int) or isinstance(line.amount, bool):
            raise UnbalancedEntry(f"entry {entry.key}: amount {line.amount!r} is not integer micros")
        if line.amount == 0:
            raise UnbalancedEntry(f"entry {entry.key}: zero line on {line.account}")
        if not is_valid_account(line.account):
            raise UnbalancedEntry(f"entry {entry.key}: unknown account {line.account!r}")
        if line.account in seen:
            raise UnbalancedEntry(f"entry {entry.key}: account {line.account} twice")
        seen.add(line.account)
        total += line.amount
    if total != 0:
        raise UnbalancedEntry(f"entry {entry.key}: lines sum to {total}, not zero")


def _lines(pairs: Iterable[tuple[str, int]]) -> tuple[Line, ...]:
    """Lines from (account, amount) pairs: amounts per account summed, zero lines dropped, first-seen order."""
    merged: dict[str, int] = {}
    for account, amount in pairs:
        merged[account] = merged.get(account, 0) + amount
    return tuple(Line(account, amount) for account, amount in merged.items() if amount != 0)


def sale_lines(buyer_id: str | None, publisher_id: str | None, revenue: int, payout: int) -> tuple[Line, ...]:
    """Debit the buyer the revenue, credit the publisher the payout, credit exchange:revenue the margin (debit it
    when a fixed payout exceeds the revenue)."""
    if revenue < 0 or payout < 0:
        raise UnbalancedEntry(f"negative sale amounts: revenue={revenue} payout={payout}")
    if revenue and buyer_id is None:
        raise UnbalancedEntry("revenue without a buyer")
    if payout and publisher_id is None:
        raise UnbalancedEntry("payout without a publisher")
    pairs: list[tuple[str, int]] = []
    if buyer_id is not None:
        pairs.append((buyer_account(buyer_id), revenue))
    if publisher_id is not None:
        pairs.append((publisher_account(publisher_id), -payout))
    pairs.append((EXCHANGE_REVENUE, payout - revenue))
    return _lines(pairs)


def sale_entry(
    call_id: str,
    buyer_id: str | None,
    publisher_id: str | None,
    revenue: int,
    payout: int,
    at: datetime,
    *,
    kind: str = SALE,
    actor: str | None = "settlement",
    memo: str | None = None,
) -> JournalEntry:
    """The sale of one converted call: key ``sale:<call_id>`` (``conversion:<call_id>`` for ``kind=CONVERSION``)."""
    return JournalEntry(
        key=f"{kind}:{call_id}", kind=kind, at=at, actor=actor, memo=memo or f"call {call_id}",
        lines=sale_lines(buyer_id, publisher_id, revenue, payout),
    )


def deposit_entry(buyer_id: str, amount: int, at: datetime, *, key: str, actor: str | None = None,
                  memo: str | None = None) -> JournalEntry:
    """A buyer's prepayment: debit exchange:cash, credit the buyer's funds."""
    if amount <= 0:
        raise UnbalancedEntry(f"deposit must be positive, got {amount}")
    return JournalEntry(key=key, kind=DEPOSIT, at=at, actor=actor, memo=memo,
                        lines=(Line(EXCHANGE_CASH, amount), Line(buyer_account(buyer_id), -amount)))


def adjustment_entry(account: str, amount: int, *, actor: str, reason: str, at: datetime,
                     key: str) -> JournalEntry:
    """A manual adjustment, who and why. ``amount`` > 0 credits ``account`` (adds to a buyer's funds or a
    publisher's payable), < 0 debits it; exchange:adjustments takes the other side."""
    if amount == 0:
        raise UnbalancedEntry("adjustment of zero")
    if account == EXCHANGE_ADJUSTMENTS:
        raise UnbalancedEntry("cannot adjust exchange:adjustments against itself")
    return JournalEntry(key=key, kind=ADJUSTMENT, at=at, actor=actor, memo=reason,
                        lines=(Line(account, -amount), Line(EXCHANGE_ADJUSTMENTS, amount)))


def refund_entry(call_id: str, sale: JournalEntry, *, actor: str, reason: str, at: datetime) -> JournalEntry:
    """Reverse ``sale`` (the call's sale or late conversion) exactly: key ``refund:<call_id>``."""
    return JournalEntry(key=f"{REFUND}:{call_id}", kind=REFUND, at=at, actor=actor, memo=reason,
                        lines=tuple(Line(line.account, -line.amount) for line in sale.lines))


def publisher_payment_entry(publisher_id: str, amount: int, at: datetime, *, key: str, actor: str | None = None,
                            memo: str | None = None) -> JournalEntry:
    """Paying a publisher: debit its payable, credit exchange:cash."""
    if amount <= 0:
        raise UnbalancedEntry(f"payment must be positive, got {amount}")
    return JournalEntry(key=key, kind=PAYMENT, at=at, actor=actor, memo=memo,
                        lines=(Line(publisher_account(publisher_id), amount), Line(EXCHANGE_CASH, -amount)))


def balances_of(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Raw balances (sum of lines, debit positive) per account over ``entries``."""
    totals: dict[str, int] = {}
    for entry in entries:
        for line in entry.lines:
            totals[line.account] = totals.get(line.account, 0) + line.amount
    return totals
