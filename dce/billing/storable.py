"""Text from the wire made storable: valid UTF-8 without NUL, bounded length, odd bytes kept visible as escapes.

Every database the exchange writes to refuses some strings Python can hold: PostgreSQL rejects NUL (in text and
in JSONB) and lone surrogates (what ``surrogateescape`` makes of undecodable bytes), SQLite's driver cannot
encode surrogates, and a ``VARCHAR(n)`` refuses n + 1 characters. :func:`storable` maps any ``str`` to one every
backend takes, keeping the evidence: an undecodable byte 0xff becomes the four characters ``\\xff``, NUL becomes
``\\x00``, other lone surrogates ``\\udXXX``; text over the limit keeps its head and a digest of the whole, so two
long values that differ only in their tails stay distinct.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

DIGEST_CHARS = 16  # hex characters of the blake2b digest appended to cut text
_MARK = "~"  # between the kept head and the digest


def _escape(ch: str) -> str:
    code = ord(ch)
    if code == 0:
        return "\\x00"
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return ch


def _clean(text: str) -> str:
    if "\x00" not in text:
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return "".join(_escape(ch) for ch in text)


def storable(text: str, limit: int) -> str:
    """``text`` as valid UTF-8 without NUL, at most ``limit`` characters (see the module docstring)."""
    if len(text) <= limit and text.isascii() and "\x00" not in text:
        return text  # the common case, cheap
    clean = _clean(text)
    if len(clean) <= limit:
        return clean
    digest = hashlib.blake2b(clean.encode("utf-8"), digest_size=DIGEST_CHARS // 2).hexdigest()
    keep = max(0, limit - DIGEST_CHARS - len(_MARK))
    return (clean[:keep] + _MARK + digest)[-limit:] if limit > 0 else ""


def storable_json(value: Any, limit: int) -> Any:
    """A JSON-like value (dicts, lists, scalars) with every string in it, keys included, made storable."""
    if isinstance(value, str):
        return storable(value, limit)
    if isinstance(value, dict):
        return {storable(str(key), limit): storable_json(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item, limit) for item in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value  # NaN and infinities are not JSON: they become text below
    return storable(str(value), limit)
