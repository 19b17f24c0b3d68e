"""SDP (RFC 4566 / RFC 3264) parsing, serialization and relay rewriting.

The model is line-preserving: every line is kept as a ``(type, value)`` pair in its original order, and only
the handful of fields the relay rewrites (``o=`` address, ``c=`` addresses, ``m=`` ports, ``a=rtcp:``) are
interpreted. Anything else (codecs, ``a=sendonly`` and friends, crypto, unknown attributes) passes through
untouched. Input may use CRLF or LF line endings; output always uses CRLF.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "MediaDescription",
    "SdpError",
    "SessionDescription",
    "parse_sdp",
    "rewrite_sdp",
]

Line = tuple[str, str]
"""One SDP line: its one-letter type and the text after ``=``."""

NULL_ADDRESS = "0.0.0.0"
"""RFC 2543-style hold address; kept as is by the rewriter."""

_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


class SdpError(ValueError):
    """The SDP is malformed or uses something the relay cannot handle."""


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_connection(value: str, where: str) -> str:
    """Return the address of a ``c=`` value (``IN IP4 <addr>[/ttl[/n]]``)."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"{where}: expected 'c=IN IP4|IP6 <address>', got 'c={value}'")
    return parts[2].split("/", 1)[0]


def _rewrite_connection(value: str, address: str) -> str:
    if _parse_connection(value, "c=") == NULL_ADDRESS:
        return value
    return f"IN {_addrtype(address)} {address}"


def _parse_rtcp(value: str) -> tuple[int, str | None]:
    """Parse the value of ``a=rtcp:<port> [IN IP4 <addr>]`` (RFC 3605)."""
    parts = value.split()
    try:
        port = int(parts[0])
    except (IndexError, ValueError):
        raise SdpError(f"bad a=rtcp attribute: 'a=rtcp:{value}'") from None
    if not 0 <= port <= 65535:
        raise SdpError(f"a=rtcp port out of range: {port}")
    if len(parts) == 1:
        return port, None
    if len(parts) != 4 or parts[1] != "IN":
        raise SdpError(f"bad a=rtcp attribute: 'a=rtcp:{value}'")
    return port, parts[3]


@dataclass
class MediaDescription:
    """One ``m=`` section: the parsed ``m=`` line plus every line after it, verbatim."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    lines: list[Line] = field(default_factory=list)

    @property
    def connection_address(self) -> str | None:
        """Address of the media-level ``c=`` line, if any."""
        for kind, value in self.lines:
            if kind == "c":
                return _parse_connection(value, f"m={self.media}")
        return None

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=<name>[:value]`` line ('' for a flag), or None."""
        for kind, value in self.lines:
            if kind != "a":
                continue
            key, _, rest = value.partition(":")
            if key == name:
                return rest
        return None

    @property
    def direction(self) -> str | None:
        """The media-level direction attribute (sendrecv/sendonly/recvonly/inactive), if any."""
        for kind, value in self.lines:
            if kind == "a" and value in _DIRECTIONS:
                return value
        return None

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """``(port, address-or-None)`` from ``a=rtcp:`` (RFC 3605), or None when absent."""
        value = self.attribute("rtcp")
        return None if value is None else _parse_rtcp(value)

    @property
    def rtcp_mux(self) -> bool:
        """True when ``a=rtcp-mux`` (RFC 5761) is present."""
        return self.attribute("rtcp-mux") is not None

    def m_line(self) -> str:
        """The ``m=`` value as it serializes."""
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.media, port, self.proto, *self.formats])


@dataclass
class SessionDescription:
    """A parsed SDP body: session-level lines and the media sections, in order."""

    lines: list[Line]
    media: list[MediaDescription]

    @property
    def connection_address(self) -> str | None:
        """Address of the session-level ``c=`` line, if any."""
        for kind, value in self.lines:
            if kind == "c":
                return _parse_connection(value, "session")
        return None

    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, if any."""
        for kind, value in self.lines:
            if kind == "a" and value in _DIRECTIONS:
                return value
        return None

    def media_address(self, index: int) -> str:
        """Effective connection address of media ``index`` (media-level ``c=``, else session-level)."""
        address = self.media[index].connection_address or self.connection_address
        if address is None:
            raise SdpError(f"m= line {index} ({self.media[index].media}) has no c= address at any level")
        return address

    def set_origin(self, username: str, session_id: int, version: int, address: str) -> None:
        """Replace the ``o=`` line's fields (B2BUA: each leg sees our own origin)."""
        value = f"{username} {session_id} {version} IN {_addrtype(address)} {address}"
        for i, (kind, _) in enumerate(self.lines):
            if kind == "o":
                self.lines[i] = ("o", value)
                return
        self.lines.insert(1, ("o", value))

    def copy(self) -> SessionDescription:
        """A copy that can be modified without touching this one (lines are immutable tuples)."""
        media = [dataclasses.replace(m, formats=list(m.formats), lines=list(m.lines)) for m in self.media]
        return SessionDescription(lines=list(self.lines), media=media)

    def serialize(self) -> bytes:
        """The SDP as bytes with CRLF line endings (and a final CRLF)."""
        out: list[str] = [f"{kind}={value}" for kind, value in self.lines]
        for m in self.media:
            out.append(f"m={m.m_line()}")
            out.extend(f"{kind}={value}" for kind, value in m.lines)
        out.append("")
        return "\r\n".join(out).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.serialize()


def _parse_m(value: str, lineno: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"line {lineno}: expected 'm=<media> <port> <proto> <fmt>...', got 'm={value}'")
    port_text, _, count_text = parts[1].partition("/")
    try:
        port = int(port_text)
        count = int(count_text) if count_text else None
    except ValueError:
        raise SdpError(f"line {lineno}: bad port {parts[1]!r} in 'm={value}'") from None
    if not 0 <= port <= 65535:
        raise SdpError(f"line {lineno}: port {port} out of range in 'm={value}'")
    return MediaDescription(media=parts[0], port=port, port_count=count, proto=parts[2], formats=parts[3:])


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`SdpError` on malformed input."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes | bytearray) else data
    raw_lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not raw_lines:
        raise SdpError("empty SDP body")
    session: list[Line] = []
    media: list[MediaDescription] = []
    for lineno, line in enumerate(raw_lines, 1):
        line = line.rstrip("\r")
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"line {lineno}: expected '<type>=<value>', got {line!r}")
        kind, value = line[0], line[2:]
        if lineno == 1 and (kind != "v" or value.strip() != "0"):
            raise SdpError(f"SDP must start with 'v=0', got {line!r}")
        if kind == "m":
            media.append(_parse_m(value, lineno))
            continue
        if kind == "c":
            _parse_connection(value, f"line {lineno}")
        elif kind == "o" and len(value.split()) != 6:
            raise SdpError(f"line {lineno}: expected 6 fields in o=, got {line!r}")
        elif kind == "a" and value.startswith("rtcp:"):
            _parse_rtcp(value[5:])
        (media[-1].lines if media else session).append((kind, value))
    return SessionDescription(lines=session, media=media)


def _rewrite_rtcp(value: str, port: int, address: str) -> str:
    _, rtcp_address = _parse_rtcp(value)
    if rtcp_address is None:
        return str(port)
    return f"{port} IN {_addrtype(address)} {address}"


def rewrite_sdp(sdp: SessionDescription, address: str, ports: Sequence[int | None]) -> SessionDescription:
    """Return a copy of ``sdp`` pointing at ``address`` and the given RTP ports.

    ``ports[i]`` is the (even) RTP port for media ``i``; RTCP is ``ports[i] + 1``. ``None`` leaves that
    ``m=`` port as is (use it for port 0, a disabled stream). Every ``c=`` line and the ``o=`` address get
    ``address``, except ``c=`` lines holding ``0.0.0.0`` (old-style hold), which stay. An ``a=rtcp:`` line
    gets the RTCP port, and ``address`` if it carried one. A port count (``m=video 4000/2``) is dropped:
    the relay forwards one RTP/RTCP pair per ``m=`` line.
    """
    if len(ports) != len(sdp.media):
        raise ValueError(f"{len(ports)} ports for {len(sdp.media)} m= lines")
    ipaddress.ip_address(address)  # ValueError on a non-literal address
    out = sdp.copy()
    for i, (kind, value) in enumerate(out.lines):
        if kind == "c":
            out.lines[i] = ("c", _rewrite_connection(value, address))
        elif kind == "o":
            fields = value.split()
            fields[4:6] = [_addrtype(address), address]
            out.lines[i] = ("o", " ".join(fields))
    for m, port in zip(out.media, ports, strict=True):
        if port is not None and m.port != 0:
            m.port = port
            m.port_count = None
        for i, (kind, value) in enumerate(m.lines):
            if kind == "c":
                m.lines[i] = ("c", _rewrite_connection(value, address))
            elif kind == "a" and value.startswith("rtcp:") and port is not None and m.port != 0:
                m.lines[i] = ("a", "rtcp:" + _rewrite_rtcp(value[5:], port + 1, address))
    return out
