"""Tables of the number lists (DNC, suppression, litigators, blocked numbers): see :mod:`dce.db.list_repository`.

``number_lists`` holds one row per list. Its numbers are stored compactly in ``number_list_chunks``: sorted,
non-overlapping runs of E.164 digits (little-endian int64, up to 65,536 a chunk, so 10M numbers are ~150 rows of
512 KB). Numbers added one by one through the API go to ``number_list_adds`` (a row each) until an import or the
next compaction folds them into the chunks. ``number_lists_version`` holds one row whose counter every list write
bumps in its own transaction, so a poller can tell cheaply whether to reload.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from dce.db.models import Base


class NumberListRow(Base):
    __tablename__ = "number_lists"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str | None] = mapped_column(String(64))  # state (dnc_state) or buyer id (suppression)
    name: Mapped[str] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(BigInteger)  # numbers on the list (chunks + adds)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_number_lists_kind_scope", "kind", "scope"),)


class NumberListChunkRow(Base):
    """A sorted run of a list's numbers: ``count`` int64 little-endian in ``data``, from ``first_number`` to
    ``last_number``; a list's chunks do not overlap and ``seq`` orders them."""

    __tablename__ = "number_list_chunks"

    list_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("number_lists.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    first_number: Mapped[int] = mapped_column(BigInteger)
    last_number: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_number_list_chunks_last_number", "last_number"),)


class NumberListAddRow(Base):
    """A number added to a list since its chunks were last written."""

    __tablename__ = "number_list_adds"

    list_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("number_lists.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)

    __table_args__ = (Index("ix_number_list_adds_number", "number"),)


class NumberListsVersionRow(Base):
    """One row (id 1): bumped by every list write, in the write's transaction."""

    __tablename__ = "number_lists_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
