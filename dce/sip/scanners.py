"""Known SIP scanners, recognised on the raw bytes before any parsing.

The signatures are the User-Agent strings (and From display names) that scanning tools put in their probes:
SIPVicious (``friendly-scanner``, ``sipvicious``), sipcli, VaxSIPUserAgent, iWar, sip-scan, sundayddr, SIVuS
and pplsip. Diagnostic tools an operator may point at their own exchange (sipsak, SIPp) are not on the list.

The check is cheap: the header block is lower-cased once and searched for each signature; only when one occurs
anywhere is a precise match run, which wants it as a whole word in a User-Agent or From line.
"""

from __future__ import annotations

import re

SIGNATURES = (
    b"friendly-scanner", b"sipvicious", b"sipcli", b"vaxsipuseragent", b"iwar", b"sip-scan", b"sundayddr",
    b"sivus", b"pplsip",
)
HEADER_SCAN_BYTES = 8192  # at most this much of a message is searched when it has no end of headers

_PRECISE = re.compile(
    rb"^(?:user-agent|from|f)[ \t]*:[^\r\n]*?(?<![a-z0-9])(?:" + b"|".join(re.escape(s) for s in SIGNATURES)
    + rb")(?![a-z0-9])",
    re.MULTILINE,
)


def is_scanner(data: bytes) -> bool:
    """Whether ``data``'s User-Agent or From carries a known scanner's signature (case-insensitive)."""
    end = data.find(b"\r\n\r\n", 0, HEADER_SCAN_BYTES)
    head = (data[:end] if end >= 0 else data[:HEADER_SCAN_BYTES]).lower()
    for signature in SIGNATURES:
        if signature in head:
            return _PRECISE.search(head) is not None
    return False
