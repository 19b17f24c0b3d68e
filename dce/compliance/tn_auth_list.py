"""The TNAuthList certificate extension of STIR certificates (RFC 8226 §9, OID 1.3.6.1.5.5.7.1.26): read and check.

    TNAuthorizationList ::= SEQUENCE SIZE (1..MAX) OF TNEntry
    TNEntry ::= CHOICE { spc [0] ServiceProviderCode, range [1] TelephoneNumberRange, one [2] TelephoneNumber }
    ServiceProviderCode ::= IA5String
    TelephoneNumberRange ::= SEQUENCE { start TelephoneNumber, count INTEGER (2..MAX), ... }
    TelephoneNumber ::= IA5String (SIZE (1..15)) (FROM ("0123456789#*"))

The module uses EXPLICIT tags, so a SHAKEN certificate's usual list of one SPC is ``30 08 A0 06 16 04 <4 chars>``.
A SHAKEN certificate (ATIS-1000080) carries the service provider's code (SPC/OCN): it may sign for any of that
provider's numbers. A certificate that lists telephone numbers or ranges (delegate certificates, RFC 9060)
covers only those. The DER is small and fixed, so a strict reader of these few tags is enough; anything else in
the extension is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

__all__ = ["TN_AUTH_LIST_OID", "TnAuthList", "TnAuthListError", "parse_tn_auth_list", "tn_auth_list_of"]

TN_AUTH_LIST_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.26")
_SEQUENCE, _IA5STRING, _INTEGER = 0x30, 0x16, 0x02
_SPC, _RANGE, _ONE = 0xA0, 0xA1, 0xA2  # context-specific, constructed (explicit) [0], [1], [2]
_TN_CHARS = frozenset("0123456789#*")


class TnAuthListError(ValueError):
    """A TNAuthList extension that is missing or does not decode."""


@dataclass(frozen=True, slots=True)
class TnAuthList:
    """What a certificate may sign for: service provider codes, single numbers and number ranges (digits as
    written in the certificate)."""

    spcs: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    ranges: tuple[tuple[str, int], ...] = ()  # (first number, count)

    @property
    def lists_numbers(self) -> bool:
        """Whether the list names numbers (then only those are covered), not only SPCs."""
        return bool(self.numbers or self.ranges)

    def covers(self, tn: str, normalise: Callable[[str], str] = str) -> bool:
        """Whether the digits ``tn`` are covered: always when only SPCs are listed (the provider's own numbers);
        else when ``tn`` is one of the numbers or inside one of the ranges (same length, start <= tn < start +
        count). ``normalise`` is applied to the certificate's numbers before comparing."""
        if not self.lists_numbers:
            return True
        norm = normalise
        if any(norm(number) == tn for number in self.numbers):
            return True
        if not tn.isdigit():
            return False
        for start, count in self.ranges:
            first = norm(start)
            if first.isdigit() and len(first) == len(tn) and int(first) <= int(tn) < int(first) + count:
                return True
        return False


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The (tag, content start, content end) of the DER element at ``pos`` (which must end by ``end``)."""
    if pos + 2 > end:
        raise TnAuthListError("TNAuthList is truncated")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise TnAuthListError("TNAuthList uses a high tag number")
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 3 or pos + size > end:
            raise TnAuthListError("TNAuthList has a bad length")
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    if pos + length > end:
        raise TnAuthListError("TNAuthList is truncated")
    return tag, pos, pos + length


def _only(data: bytes, start: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """The content of the single element of type ``tag`` filling ``data[start:end]``."""
    got, inner, stop = _tlv(data, start, end)
    if got != tag or stop != end:
        raise TnAuthListError(f"TNAuthList {what} is not as RFC 8226 defines it")
    return inner, stop


def _ia5(data: bytes, start: int, end: int, what: str) -> str:
    got, inner, stop = _tlv(data, start, end)
    if got != _IA5STRING:
        raise TnAuthListError(f"TNAuthList {what} is not an IA5String")
    raw = data[inner:stop]
    if not raw or any(byte > 0x7E or byte < 0x20 for byte in raw):
        raise TnAuthListError(f"TNAuthList {what} is empty or not printable ASCII")
    return raw.decode("ascii")


def _tn(value: str, what: str) -> str:
    if not 1 <= len(value) <= 15 or not set(value) <= _TN_CHARS:
        raise TnAuthListError(f"TNAuthList {what} {value!r} is not a telephone number")
    return value


def parse_tn_auth_list(der: bytes) -> TnAuthList:
    """Decode the extension's DER value; raise :class:`TnAuthListError` for anything else."""
    start, end = _only(der, 0, len(der), _SEQUENCE, "value")
    spcs: list[str] = []
    numbers: list[str] = []
    ranges: list[tuple[str, int]] = []
    pos = start
    while pos < end:
        tag, inner, stop = _tlv(der, pos, end)
        if tag == _SPC:
            spcs.append(_ia5(der, inner, stop, "SPC"))
        elif tag == _ONE:
            numbers.append(_tn(_ia5(der, inner, stop, "number"), "number"))
        elif tag == _RANGE:
            seq, seq_end = _only(der, inner, stop, _SEQUENCE, "range")
            _tag, _s, first_end = _tlv(der, seq, seq_end)
            first = _tn(_ia5(der, seq, first_end, "range start"), "range start")
            got, num, num_end = _tlv(der, first_end, seq_end)
            if got != _INTEGER or num == num_end or num_end - num > 8:
                raise TnAuthListError("TNAuthList range count is not a small INTEGER")
            count = int.from_bytes(der[num:num_end], "big", signed=True)
            if count < 2:
                raise TnAuthListError(f"TNAuthList range count {count} is below 2")
            ranges.append((first, count))  # an extension marker may follow: ignored
        else:
            raise TnAuthListError(f"TNAuthList entry has unknown tag 0x{tag:02x}")
        pos = stop
    if not (spcs or numbers or ranges):
        raise TnAuthListError("TNAuthList is empty")
    return TnAuthList(tuple(spcs), tuple(numbers), tuple(ranges))


def tn_auth_list_of(cert: x509.Certificate) -> TnAuthList:
    """The certificate's TNAuthList; raises :class:`TnAuthListError` when it has none or it does not decode."""
    try:
        extension = cert.extensions.get_extension_for_oid(TN_AUTH_LIST_OID)
    except x509.ExtensionNotFound:
        raise TnAuthListError("certificate has no TNAuthList extension") from None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography does not parse it
        raise TnAuthListError("TNAuthList extension not readable")
    return parse_tn_auth_list(value.value)
