"""Importer: every line accounted for; the fast NANP path agrees with phonenumbers."""

from __future__ import annotations

import io

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dce.compliance import importer
from dce.compliance.importer import fast_key, normalise, parse_bytes, parse_stream


def test_plain_text_with_bad_lines_duplicates_and_blanks() -> None:
    data = b"\n".join([
        b"+12125550100",      # 1
        b"2125550100",        # 2 duplicate of 1
        b"1-310-555-0100",    # 3
        b"",                  # 4 blank
        b"hello",             # 5 invalid
        b"12345",             # 6 invalid (too short)
        b"(415) 555-0100\r",  # 7 CRLF
        b"+442079460000",     # 8 UK
        b"+1 212 555 0100",   # 9 duplicate
        b"555",               # 10 invalid
    ]) + b"\n"
    result = parse_bytes(data)
    assert result.lines == 10
    assert result.numbers.tolist() == [12125550100, 13105550100, 14155550100, 442079460000]
    assert result.valid == 6 and result.duplicates == 2
    assert result.blank == [4]
    assert [(bad.line, bad.text) for bad in result.invalid] == [(5, "hello"), (6, "12345"), (10, "555")]
    assert "no digits" in result.invalid[0].reason
    assert result.lines == result.valid + len(result.blank) + len(result.invalid)


def test_csv_first_column_with_header_detected() -> None:
    data = b"phone,name\n2125550100,Ann\n,empty\nbad,Bob\n\"(310) 555-0100\",Cy\n2125550100,dup\n"
    result = parse_bytes(data)
    assert result.header == "phone,name"
    assert result.numbers.tolist() == [12125550100, 13105550100]
    assert result.duplicates == 1
    assert result.blank == [3]
    assert [(bad.line, bad.text) for bad in result.invalid] == [(4, "bad")]


def test_csv_named_and_indexed_columns() -> None:
    data = b"id,Phone Number\n1,212-555-0100\n2,oops\n3\n"
    by_name = parse_bytes(data, column="phone number")
    assert by_name.numbers.tolist() == [12125550100]
    assert [(b.line, b.reason) for b in by_name.invalid] == [(3, "no digits"), (4, "no column 2 (1 columns)")]
    by_index = parse_bytes(b"1,2125550100\n", column=1)
    assert by_index.numbers.tolist() == [12125550100]
    with pytest.raises(ValueError):
        parse_bytes(data, column="missing")


def test_bom_no_trailing_newline_and_block_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "BLOCK_BYTES", 16)
    lines = [f"+1212555{i:04d}" for i in range(50)] + ["junk"] + ["3105550100"]
    data = b"\xef\xbb\xbf" + "\n".join(lines).encode()
    seen: list[int] = []
    result = parse_stream(io.BytesIO(data), progress=seen.append)
    assert result.lines == 52
    assert result.unique == 51
    assert [(b.line, b.text) for b in result.invalid] == [(51, "junk")]
    assert sum(seen) == len(data)


def test_empty_input() -> None:
    result = parse_bytes(b"")
    assert result.lines == 0 and result.unique == 0 and not result.invalid


def _phonenumbers(text: str) -> int | None:
    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return int(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:])


digits = st.text(alphabet="0123456789", min_size=9, max_size=13)
formatted = st.builds(
    lambda prefix, a, b, c, sep: f"{prefix}{a}{sep}{b}{sep}{c}",
    st.sampled_from(["", "1", "+1", "1 ", "+1 ", "+44 "]),
    st.text(alphabet="0123456789", min_size=3, max_size=3),
    st.text(alphabet="0123456789", min_size=3, max_size=3),
    st.text(alphabet="0123456789", min_size=4, max_size=4),
    st.sampled_from(["", "-", ".", " "]),
)


@given(st.one_of(digits, formatted, st.builds(lambda d: "+" + d, digits)))
@settings(max_examples=500)
def test_normalise_agrees_with_phonenumbers(text: str) -> None:
    expected = _phonenumbers(text)
    value, reason = normalise(text)
    assert value == expected, reason
    fast = fast_key(text)
    assert fast is None or fast == expected


@given(st.lists(st.one_of(digits, st.builds(lambda d: "+" + d, digits), st.sampled_from(["", "x", " 12"])),
                max_size=40))
@settings(max_examples=200)
def test_vectorised_text_path_agrees_with_line_by_line(lines: list[str]) -> None:
    result = parse_bytes("".join(line + "\n" for line in lines).encode(), fmt="text")
    expected = [normalise(line)[0] for line in lines]
    valid = [v for v in expected if v is not None]
    assert result.numbers.tolist() == sorted(set(valid))
    assert result.valid == len(valid)
    assert result.lines == len(lines)
    assert {b.line for b in result.invalid} | set(result.blank) == {
        i + 1 for i, v in enumerate(expected) if v is None
    }
