"""The ledger's tables: journal entries and their lines, the cached account balances, webhook conversions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base

EntryId = BigInteger().with_variant(Integer, "sqlite")


class JournalEntryRow(Base):
    """One :class:`dce.billing.ledger.JournalEntry`; ``key`` is unique (posting is idempotent by key)."""

    __tablename__ = "journal_entries"

    id: Mapped[int] = mapped_column(EntryId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    actor: Mapped[str | None] = mapped_column(String(128))
    memo: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("uq_journal_entries_key", "key", unique=True),)


class JournalLineRow(Base):
    """One line of an entry: ``amount`` micros, > 0 debit, < 0 credit. An entry touches an account once."""

    __tablename__ = "journal_lines"

    entry_id: Mapped[int] = mapped_column(EntryId, ForeignKey("journal_entries.id"), primary_key=True)
    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_journal_lines_account_entry_id", "account", "entry_id"),)


class AccountBalanceRow(Base):
    """The sum of an account's lines, cached: updated in the transaction that posts each entry."""

    __tablename__ = "account_balances"

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger)


class ConversionRow(Base):
    """A buyer's confirmation of a sale through the conversion webhook: one per call."""

    __tablename__ = "conversions"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    revenue: Mapped[int | None] = mapped_column(BigInteger)  # micros; NULL: the call's sale price
    at: Mapped[datetime]
