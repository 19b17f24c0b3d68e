"""Reading number lists from CSV or plain text: every line accounted for.

Plain text is one number per line; CSV takes one column (the first, a 0-based index, or a header name). Numbers
are normalised to E.164 the way phonenumbers does it (default region US; ``(212) 555-0100``, ``1-212-555-0100``
and ``+1 212 555 0100`` are all ``+12125550100``) and must be *possible* numbers (the right length for their
country), as the call path's normaliser requires. The result says how many lines held numbers, how many repeat
an earlier line, which lines are blank, and which lines are invalid, with their line numbers and why.

Fast: plain-text lines already in a bare NANP form (``2125550100``, ``12125550100``, ``+12125550100``) are
recognised by numpy a block at a time (the shape of nearly every bulk DNC file); every other line goes through
phonenumbers. Streaming: the file is read in blocks and only the numbers (8 bytes each) are kept.

Pure apart from reading the stream given.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import phonenumbers

from dce.compliance.numberset import e164_to_int, sorted_unique

DEFAULT_REGION = "US"
BLOCK_BYTES = 8 << 20
Format = Literal["auto", "text", "csv"]
Progress = Callable[[int], None]  # called with the bytes consumed since the last call

_PUNCTUATION = str.maketrans("", "", " -.()/\u00a0")
_NANP = 10_000_000_000  # +1 as a prefix of 10 national digits
_ZEROS = {n: sum(ord("0") * 10**i for i in range(n)) for n in (10, 11)}  # n ASCII "0"s read as digits
_POSSIBLE = (phonenumbers.ValidationResult.IS_POSSIBLE, phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY)
_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """A line that holds no usable number: its 1-based line number, the text (cut at 200) and why."""

    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text!r}"


@dataclass(slots=True)
class ParseResult:
    """What a file held. ``numbers`` is sorted, without repeats; ``valid = numbers.size + duplicates``."""

    numbers: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    lines: int = 0  # lines read, header and blank lines included
    valid: int = 0  # lines holding a number
    duplicates: int = 0  # of those, lines repeating a number of an earlier line
    blank: list[int] = field(default_factory=list)  # line numbers of empty lines (or empty CSV fields)
    invalid: list[InvalidLine] = field(default_factory=list)
    header: str | None = None  # the CSV header line, when there was one (line 1)

    @property
    def unique(self) -> int:
        return int(self.numbers.size)

    def summary(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "valid": self.valid,
            "unique": self.unique,
            "duplicates_in_file": self.duplicates,
            "blank": len(self.blank),
            "invalid": len(self.invalid),
            "header": self.header,
        }


def normalise(text: str, region: str = DEFAULT_REGION) -> tuple[int | None, str]:
    """``text`` as E.164 digits (``+12125550100`` -> 12125550100) and ``""``, or None and why not."""
    value = fast_key(text)
    if value is not None:
        return value, ""
    text = text.strip()
    value = fast_key(text.translate(_PUNCTUATION))  # (212) 555-0100, 212.555.0100, +1 212 555 0100
    if value is not None:
        return value, ""
    if not text:
        return None, "empty"
    if not any(ch.isdigit() for ch in text):
        return None, "no digits"
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"not a phone number ({exc._msg})"
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible not in _POSSIBLE:
        return None, f"not a possible number: {_REASONS.get(possible, 'impossible')}"
    value = e164_to_int(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    if value is None:  # pragma: no cover - phonenumbers formats E.164
        return None, "not E.164"
    return value, ""


def fast_key(text: str) -> int | None:
    """The E.164 digits of a bare NANP number (``2125550100``, ``12125550100``, ``+12125550100``), else None
    (None means "ask phonenumbers", not "invalid"). Gives what phonenumbers gives for these forms."""
    n = len(text)
    if n == 10:
        if text.isdigit() and text.isascii() and text[0] in "23456789":
            return _NANP + int(text)
    elif n == 11:
        if text[0] == "1" and text.isdigit() and text.isascii() and text[1] in "23456789":
            return int(text)
    elif n == 12 and text[0] == "+" and text[1] == "1" and text[2] in "23456789":
        digits = text[1:]
        if digits.isdigit() and digits.isascii():
            return int(digits)
    return None


# ---------------------------------------------------------------------------------------------- entry points


def parse_path(path: str | os.PathLike[str], *, fmt: Format = "auto", column: int | str | None = None,
               region: str = DEFAULT_REGION, progress: Progress | None = None) -> ParseResult:
    """Parse a file (``fmt="auto"``: CSV when it ends in ``.csv`` or its first line has a comma or tab)."""
    path = Path(path)
    with path.open("rb") as stream:
        if fmt == "auto" and path.suffix.lower() in (".csv", ".tsv"):
            fmt = "csv"
        return parse_stream(stream, fmt=fmt, column=column, region=region, progress=progress)


def parse_bytes(data: bytes, *, fmt: Format = "auto", column: int | str | None = None,
                region: str = DEFAULT_REGION) -> ParseResult:
    return parse_stream(io.BytesIO(data), fmt=fmt, column=column, region=region)


def parse_stream(stream: BinaryIO, *, fmt: Format = "auto", column: int | str | None = None,
                 region: str = DEFAULT_REGION, progress: Progress | None = None) -> ParseResult:
    """Parse a binary stream of UTF-8 text (a BOM is skipped)."""
    head = stream.read(BLOCK_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
        if progress:
            progress(len(codecs.BOM_UTF8))
    if fmt == "auto":
        first = head.split(b"\n", 1)[0]
        fmt = "csv" if (column is not None or b"," in first or b"\t" in first) else "text"
    if fmt == "text":
        if column not in (None, 0):
            raise ValueError("a plain-text file has one column; use fmt='csv' to pick a column")
        return _parse_text(_blocks(head, stream), region, progress)
    return _parse_csv(head, stream, column, region, progress)


# ---------------------------------------------------------------------------------------------- plain text


def _blocks(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    """The stream in blocks that end at a newline (the last one may not)."""
    carry = head
    while True:
        more = stream.read(BLOCK_BYTES)
        if not more:
            if carry:
                yield carry
            return
        carry += more
        cut = carry.rfind(b"\n") + 1
        if cut:
            yield carry[:cut]
            carry = carry[cut:]


_DIGIT_LO, _DIGIT_HI = ord("0"), ord("9")
# (line length, offset of the first digit, number of digits, first digits that must be fixed)
_FAST_SHAPES = ((10, 0, 10), (11, 0, 11), (12, 1, 11))


class _Collector:
    def __init__(self, region: str) -> None:
        self.region = region
        self.result = ParseResult()
        self.parts: list[np.ndarray] = []
        self.pending: list[int] = []

    def slow(self, line_no: int, text: str) -> None:
        stripped = text.strip()
        if not stripped:
            self.result.blank.append(line_no)
            return
        value, reason = normalise(stripped, self.region)
        if value is None:
            self.result.invalid.append(InvalidLine(line_no, stripped[:200], reason))
        else:
            self.pending.append(value)
            if len(self.pending) >= 65_536:
                self.flush()

    def add_array(self, values: np.ndarray) -> None:
        if values.size:
            self.parts.append(values)

    def flush(self) -> None:
        if self.pending:
            self.parts.append(np.array(self.pending, dtype=np.int64))
            self.pending = []

    def finish(self, lines: int) -> ParseResult:
        self.flush()
        result = self.result
        result.lines = lines
        if self.parts:
            everything = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
            self.parts = []
            result.valid = int(everything.size)
            result.numbers = sorted_unique(everything)
            result.duplicates = result.valid - int(result.numbers.size)
        return result


def _parse_text(blocks: Iterator[bytes], region: str, progress: Progress | None) -> ParseResult:
    collector = _Collector(region)
    line_base = 0  # lines before this block
    for block in blocks:
        data = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(data == 10)
        ends = newlines
        if not block.endswith(b"\n"):
            ends = np.append(newlines, len(block))
        starts = np.empty(ends.size, dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        ends = ends.copy()
        # drop a trailing \r
        has_cr = np.zeros(ends.size, dtype=bool)
        nonempty = ends > starts
        has_cr[nonempty] = data[ends[nonempty] - 1] == 13
        ends[has_cr] -= 1
        lengths = ends - starts
        handled = np.zeros(ends.size, dtype=bool)
        for length, offset, ndigits in _FAST_SHAPES:
            rows = np.flatnonzero(lengths == length)
            if rows.size == 0:
                continue
            matrix = data[starts[rows, None] + np.arange(length)]
            digits = matrix[:, offset:]
            ok = ((digits >= _DIGIT_LO) & (digits <= _DIGIT_HI)).all(axis=1)
            if offset:  # +1NXX...
                ok &= (matrix[:, 0] == ord("+")) & (matrix[:, 1] == ord("1")) & (matrix[:, 2] >= ord("2"))
            elif ndigits == 11:  # 1NXX...
                ok &= (matrix[:, 0] == ord("1")) & (matrix[:, 1] >= ord("2"))
            else:  # NXX...
                ok &= matrix[:, 0] >= ord("2")
            rows = rows[ok]
            digits = digits[ok]
            values = np.zeros(rows.size, dtype=np.int64)
            for j in range(ndigits):
                values *= 10
                values += digits[:, j]
            values -= _ZEROS[ndigits]
            if ndigits == 10:
                values += _NANP
            collector.add_array(values)
            handled[rows] = True
        for row in np.flatnonzero(~handled).tolist():
            raw = block[starts[row]:ends[row]]
            text = raw.decode("utf-8", errors="replace")
            collector.slow(line_base + row + 1, text)
        line_base += int(ends.size)
        if progress:
            progress(len(block))
    return collector.finish(line_base)


# ---------------------------------------------------------------------------------------------- CSV


class _CountingReader(io.RawIOBase):
    """The head block then the rest of the stream, reporting bytes read to ``progress``."""

    def __init__(self, head: bytes, stream: BinaryIO, progress: Progress | None) -> None:
        self._head = head
        self._stream = stream
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            chunk = self._stream.read(len(buffer))
            n = len(chunk)
            buffer[:n] = chunk
        if self._progress and n:
            self._progress(n)
        return n


def _parse_csv(head: bytes, stream: BinaryIO, column: int | str | None, region: str,
               progress: Progress | None) -> ParseResult:
    raw = io.BufferedReader(_CountingReader(head, stream, progress), buffer_size=1 << 20)
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
    first = head.split(b"\n", 1)[0]
    dialect: type[csv.Dialect] = csv.excel_tab if (b"\t" in first and b"," not in first) else csv.excel
    reader = csv.reader(text, dialect)
    collector = _Collector(region)
    index = column if isinstance(column, int) else 0
    if index < 0:
        raise ValueError(f"column index must be >= 0, got {index}")
    first_row = True
    fast = fast_key
    pending = collector.pending
    for row in reader:
        line_no = reader.line_num
        if first_row:
            first_row = False
            if isinstance(column, str):
                names = [name.strip().lower() for name in row]
                if column.strip().lower() not in names:
                    raise ValueError(f"no column {column!r} in the header {row!r}")
                index = names.index(column.strip().lower())
                collector.result.header = ",".join(row)
                continue
            if column is None and index < len(row) and row[index].strip() and not any(c.isdigit() for c in row[index]):
                collector.result.header = ",".join(row)  # a header: no digits where numbers go
                continue
        if not row:
            collector.result.blank.append(line_no)
            continue
        if index >= len(row):
            collector.result.invalid.append(
                InvalidLine(line_no, ",".join(row)[:200], f"no column {index + 1} ({len(row)} columns)")
            )
            continue
        value = fast(row[index])
        if value is not None:
            pending.append(value)
            if len(pending) >= 65_536:
                collector.flush()
                pending = collector.pending
        else:
            collector.slow(line_no, row[index])
            pending = collector.pending
    return collector.finish(reader.line_num)
