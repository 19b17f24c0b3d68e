"""SIP messages: parsing, header access and serialization (RFC 3261 §7, §20).

Framing (start line, header folding, compact forms, Content-Length) is done here, by hand, because it runs for
every datagram: a benchmark showed `sipmessage.Message.parse` plus its typed header parsers at ~100 µs per
message against ~15 µs here. `sipmessage` still validates Request-URIs and parses name-addr values
(`parse_address`), where its grammar earns its cost and which run once per dialog, not per packet.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import sipmessage

COMPACT_FORMS = {
    "a": "Accept-Contact",
    "u": "Allow-Events",
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "o": "Event",
    "f": "From",
    "y": "Identity",
    "r": "Refer-To",
    "b": "Referred-By",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "x": "Session-Expires",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}

_CANONICAL_NAMES = [
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route", "Record-Route",
    "Content-Length", "Content-Type", "Allow", "Supported", "Require", "Proxy-Require", "Unsupported",
    "User-Agent", "Server", "Reason", "Expires", "Subject", "Accept", "Session-Expires", "Min-SE",
    "P-Asserted-Identity", "Identity", "Warning", "Retry-After", "RSeq", "RAck", "Event", "Refer-To",
    "Authorization", "WWW-Authenticate", "Proxy-Authenticate", "Proxy-Authorization", "Date",
    "Timestamp", "Organization", "Priority", "Call-Info", "Alert-Info", "Error-Info", "Accept-Encoding",
    "Accept-Language", "Content-Encoding", "Content-Disposition", "Content-Language", "MIME-Version",
    "Min-Expires", "Reply-To", "In-Reply-To", "Allow-Events",
]
CANONICAL = {name.lower(): name for name in _CANONICAL_NAMES}
CANONICAL.update({short: CANONICAL.get(long.lower(), long) for short, long in COMPACT_FORMS.items()})

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1); values of others may contain commas.
LIST_HEADERS = frozenset(
    {"via", "route", "record-route", "contact", "allow", "supported", "require", "proxy-require",
     "unsupported", "accept", "accept-encoding", "accept-language", "content-encoding", "allow-events"}
)

_EXACT = {name: name for name in CANONICAL.values()}
_LIST_CANONICAL = frozenset(CANONICAL[name] for name in LIST_HEADERS if name in CANONICAL)
# Headers whose values parse() gathers in its single pass over the lines, for validation.
_CHECKED = frozenset({"Via", "CSeq", "Call-ID", "From", "To", "Content-Length", "Max-Forwards"})

REQUIRED_HEADERS = ("via", "from", "to", "call-id", "cseq")

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")  # RFC 3986 §3.1
_SIP_VERSION = "SIP/2.0"
LENIENT = "dce-latin1"  # codec error handler: a byte that is not UTF-8 is read as Latin-1 (one character)


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """Decode the offending bytes as Latin-1: real carriers send Latin-1 display names, and the result is
    valid text (no lone surrogates), so it can be stored and re-encoded as UTF-8."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(LENIENT, _latin1_fallback)


class SipParseError(ValueError):
    """A message that cannot be accepted.

    ``status`` is the response a server should send (400, or 505 for a wrong version) when the message is a
    request whose Via, From, To, Call-ID and CSeq could be read; ``request`` is then that partial request, so
    a response can be formed. Otherwise the message can only be dropped.
    """

    def __init__(self, message: str, *, status: int = 400, request: Request | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.request = request


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts characters like '²' that ``int()`` rejects."""
    return text.isascii() and text.isdigit()


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name, expanding compact forms.

    Header names are case-insensitive (§7.3.5): names we do not know are title-cased ("x-account" and
    "X-ACCOUNT" both become "X-Account") so that lookups stay exact string comparisons.
    """
    canonical = _EXACT.get(name)  # callers mostly pass canonical names already
    if canonical is not None:
        return canonical
    canonical = CANONICAL.get(name.lower())
    if canonical is None:  # not cached: names come from the network, the table must not grow with them
        return name.title() if name.isascii() else name
    return canonical


def reason_phrase(status: int) -> str:
    """The default reason phrase for a status code."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and angle brackets."""
    if "," not in value:
        return [value.strip()]
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` into ``{"a": "b", "c": None}`` (names lower-cased)."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        params[name.strip().lower()] = value.strip() if eq else None
    return params


_VIA_PROTOCOL_RE = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/;]+)\s+(.*)\Z", re.DOTALL)


@dataclass(slots=True, frozen=True)
class Via:
    """One Via header value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one Via value; raises ValueError when malformed."""
        match = _VIA_PROTOCOL_RE.match(value)  # SLASH = SWS "/" SWS: "SIP / 2.0 / UDP host" is valid
        if match is None or match.group(1).upper() != "SIP" or match.group(2) != "2.0":
            raise ValueError(f"bad Via protocol: {value!r}")
        parts = match.groups()
        rest = match.group(4).strip()
        hostport, _, params = rest.partition(";")
        hostport = hostport.strip()
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise ValueError(f"bad Via host: {value!r}")
            host, port_text = hostport[: end + 1], hostport[end + 2 :] if hostport[end + 1 : end + 2] == ":" else ""
        else:
            host, _, port_text = hostport.partition(":")
        host = host.strip()
        port_text = port_text.strip()
        if not host or " " in host:
            raise ValueError(f"bad Via host: {value!r}")
        port = None
        if port_text:
            if not _is_digits(port_text) or not 0 < int(port_text) < 65536:
                raise ValueError(f"bad Via port: {value!r}")
            port = int(port_text)
        return cls(parts[2].upper(), host, port, parse_params(params))

    @property
    def branch(self) -> str | None:
        """The branch parameter, if any."""
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int]:
        """Host and port (default 5060) the sender put in the Via."""
        return self.host.lower(), self.port or 5060


@dataclass(slots=True, eq=False)
class Message:
    """Common parts of requests and responses: ordered headers and a body."""

    headers: list[tuple[str, str]] = field(default_factory=list)  # (canonical name, value), wire order
    body: bytes = b""

    # -- header access -------------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (the first list element for list headers, as :meth:`get_all` reads them:
        a header line listing nothing, ``Via: ,``, is passed over; only such lines read as empty)."""
        name = canonical_name(name)
        listed_nothing = False
        for key, value in self.headers:
            if key == name:
                if name in _LIST_CANONICAL:
                    parts = split_list(value)
                    if not parts:
                        listed_nothing = True
                        continue
                    return parts[0]
                return value
        return "" if listed_nothing else default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, splitting comma-separated lists for list headers."""
        name = canonical_name(name)
        values = [value for key, value in self.headers if key == name]
        if name in _LIST_CANONICAL:
            return [item for value in values for item in split_list(value)]
        return values

    def has(self, name: str) -> bool:
        """Whether the header is present."""
        name = canonical_name(name)
        return any(key == name for key, _ in self.headers)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self.headers.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before any other line of the same header (or first)."""
        name = canonical_name(name)
        for i, (key, _) in enumerate(self.headers):
            if key == name:
                self.headers.insert(i, (name, value))
                return
        self.headers.insert(0, (name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of a header by one value (appended if absent)."""
        name = canonical_name(name)
        for i, (key, _) in enumerate(self.headers):
            if key == name:
                self.headers[i] = (name, value)
                self.headers[i + 1 :] = [h for h in self.headers[i + 1 :] if h[0] != name]
                return
        self.headers.append((name, value))

    def remove(self, name: str) -> None:
        """Remove every line of a header."""
        name = canonical_name(name)
        self.headers = [h for h in self.headers if h[0] != name]

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (e.g. the top Via or Route)."""
        name = canonical_name(name)
        for i, (key, value) in enumerate(self.headers):
            if key == name:
                items = split_list(value)
                if not items:  # a line listing nothing ("Via: ,"): dropped, the next one holds the first value
                    del self.headers[i]
                    return self.pop_first(name)
                if len(items) > 1:
                    self.headers[i] = (name, ", ".join(items[1:]))
                else:
                    del self.headers[i]
                return items[0]
        return None

    # -- common fields -------------------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """CSeq number and method."""
        number, _, method = (self.get("CSeq") or "").strip().partition(" ")
        return int(number), method.strip()

    @property
    def top_via(self) -> Via:
        """The topmost Via."""
        return Via.parse(self.get("Via") or "")

    @property
    def from_tag(self) -> str | None:
        """The tag parameter of From."""
        return header_tag(self.get("From") or "")

    @property
    def to_tag(self) -> str | None:
        """The tag parameter of To."""
        return header_tag(self.get("To") or "")

    # -- serialization -------------------------------------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire form, with a Content-Length matching the body."""
        lines = [self.start_line()]
        lines.extend(f"{key}: {value}" for key, value in self.headers if key != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True, eq=False)
class Request(Message):
    """A SIP request."""

    method: str = ""
    uri: str = ""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {_SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


@dataclass(slots=True, eq=False)
class Response(Message):
    """A SIP response."""

    status: int = 0
    reason: str = ""

    def start_line(self) -> str:
        return f"{_SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.cseq[1] if self.has('CSeq') else ''} call-id={self.call_id}>"


_TAG_RE = re.compile(r";\s*tag\s*=\s*([^;\s,>]+)", re.IGNORECASE)


def header_tag(value: str) -> str | None:
    """The tag parameter of a From/To value (outside the angle-bracketed URI)."""
    end = value.rfind(">")
    match = _TAG_RE.search(value, end + 1 if end >= 0 else 0)
    return match.group(1) if match else None


def header_uri(value: str) -> str:
    """The URI inside a name-addr or addr-spec value (From, To, Contact, Route)."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        return value[start + 1 : end].strip() if end > 0 else value[start + 1 :].strip()
    return value.split(";", 1)[0].strip()


def uri_user(uri: str) -> str:
    """The user part of a sip:/sips:/tel: URI ('' when none)."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(":", 1)[0].split(";", 1)[0]


def uri_hostport(uri: str) -> tuple[str, int | None, dict[str, str | None]]:
    """Host, port and parameters of a sip: URI (for choosing where to send a request)."""
    _, _, rest = uri.partition(":")
    rest = rest.split("?", 1)[0]
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    hostport, _, params = rest.partition(";")
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port_text = hostport[: end + 1], hostport[end + 2 :]
    else:
        host, _, port_text = hostport.partition(":")
    return host, int(port_text) if _is_digits(port_text) else None, parse_params(params)


def parse_address(value: str) -> sipmessage.Address:
    """A name-addr/addr-spec header value parsed with sipmessage (raises ValueError)."""
    return sipmessage.Address.parse(value)


def _unfold(header_block: str) -> list[str]:
    """Split the header block into logical lines, joining folded continuation lines (RFC 3261 §7.3.1)."""
    lines: list[str] = []
    for raw in header_block.split("\n"):
        raw = raw.rstrip("\r")
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip() + " " + raw.strip()
        elif raw:
            lines.append(raw)
    return lines


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message from a datagram (or a framed TCP message when ``stream``).

    Raises SipParseError for anything that is not a well-formed SIP/2.0 message.
    """
    split = data.find(b"\r\n\r\n")
    sep = 4
    if split < 0:
        split = data.find(b"\n\n")
        sep = 2
    if split < 0:
        raise SipParseError("no end of headers")
    raw_head = data[:split]
    try:
        head = raw_head.decode("utf-8")
    except UnicodeDecodeError:
        head = raw_head.decode("utf-8", LENIENT)
    problem = None  # a malformed line is remembered, not raised at once: with Via, Call-ID, CSeq read, a 400
    if "\x00" in head:
        # NUL is legal only as a quoted-pair (RFC 4475 intmeth); it means nothing there, and text we keep must
        # be storable: drop the pair. Anywhere else it is an error.
        head = head.replace("\\\x00", "")
        if "\x00" in head:
            problem = "NUL byte outside a quoted-pair"
    body = data[split + sep :]
    lines = _unfold(head.lstrip("\r\n"))
    if not lines:
        raise SipParseError("empty message")
    message, start_line_error = _parse_start_line(lines[0])
    headers = message.headers
    found: dict[str, list[str]] = {}  # the values validation needs, gathered in this one pass
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        known = _EXACT.get(name) if colon else None  # the common case: a canonical name, no space before ':'
        if known is None:
            name = name.strip()
            if not colon or not name or not _TOKEN_RE.match(name):
                problem = problem or f"malformed header line: {line[:60]!r}"
                continue
            known = canonical_name(name)
        name = known
        value = value.strip()
        headers.append((name, value))
        if name in _CHECKED:
            if name in found:
                found[name].append(value)
            else:
                found[name] = [value]
    if start_line_error is None and problem is not None:
        start_line_error = SipParseError(problem, request=_if_request(message))
    if start_line_error is not None:
        # Raised only now, so that a request whose Via, Call-ID and CSeq are readable can still be answered.
        if start_line_error.request is not None and not _answerable(start_line_error.request):
            start_line_error.request = None
        raise start_line_error
    _check_body_length(message, body, stream, found.get("Content-Length", ()))
    _validate(message, found)
    return message


def _parse_start_line(line: str) -> tuple[Request | Response, SipParseError | None]:
    """The message the start line begins, and an error to raise once the headers are read (requests only)."""
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.strip().partition(" ")
        if version != _SIP_VERSION:
            raise SipParseError(f"unsupported version {version!r}")
        if not (_is_digits(code) and len(code) == 3 and 100 <= int(code) <= 699):
            raise SipParseError(f"bad status code {code!r}")
        return Response(status=int(code), reason=reason.strip()), None
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        # Extra or missing spaces or words (RFC 4475 lwsruri, lwsstart, trws; "... SIP/2.0 extra"): still a
        # request we can answer 400 when its headers say where.
        words = line.split()
        if len(words) >= 2 and _TOKEN_RE.match(words[0]):
            request = Request(method=words[0], uri=words[1])
            return request, SipParseError(f"malformed request line: {line[:80]!r}", request=request)
        raise SipParseError(f"malformed request line: {line[:80]!r}")
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise SipParseError(f"bad method {method!r}")
    request = Request(method=method, uri=uri)
    if version != _SIP_VERSION:
        return request, SipParseError(f"unsupported version {version!r}", status=505, request=request)
    return request, None


def _answerable(request: Request) -> bool:
    """Whether a response to ``request`` could be formed and routed (Via, Call-ID and CSeq readable)."""
    if not (request.has("Call-ID") and request.has("CSeq") and request.has("From") and request.has("To")):
        return False
    try:
        request.top_via  # noqa: B018 - validation
    except ValueError:
        return False
    return True


def _check_body_length(message: Message, body: bytes, stream: bool, lengths: Sequence[str]) -> None:
    if len(lengths) > 1:
        raise SipParseError("more than one Content-Length", request=_if_request(message))  # RFC 4475 mcl01
    length_text = lengths[0] if lengths else None
    if length_text is None:
        if stream:
            raise SipParseError("Content-Length is required on a stream transport")
        message.body = body
        return
    if not _is_digits(length_text):
        raise SipParseError(f"bad Content-Length {length_text!r}", request=_if_request(message))
    length = int(length_text)
    if length > len(body):
        raise SipParseError("Content-Length exceeds the body", request=_if_request(message))
    message.body = body[:length]


def _if_request(message: Message) -> Request | None:
    return message if isinstance(message, Request) else None


def _validate(message: Request | Response, found: dict[str, list[str]]) -> None:
    """Check what every message must carry; ``found`` holds the values of the ``_CHECKED`` headers."""
    missing = [h for h in REQUIRED_HEADERS if CANONICAL[h] not in found]
    if missing:
        # Without Via/CSeq/Call-ID no response can be routed or matched: drop. Otherwise answer 400.
        routable = {"via", "cseq", "call-id"}.isdisjoint(missing)
        request = message if isinstance(message, Request) and routable else None
        raise SipParseError(f"missing header(s): {', '.join(missing)}", request=request)
    vias = [item for value in found["Via"] for item in split_list(value)]
    try:
        Via.parse(vias[0] if vias else "")
    except ValueError as exc:
        raise SipParseError(str(exc)) from exc
    for value in vias[1:]:  # RFC 4475 badinv01: "Via: SIP/2.0/UDP 192.0.2.15;;,;,,"
        try:
            Via.parse(value)
        except ValueError as exc:
            raise SipParseError(str(exc), request=_if_request(message)) from exc
    if len(found["CSeq"]) != 1:
        raise SipParseError("more than one CSeq", request=_if_request(message))
    cseq = found["CSeq"][0]
    number, _, method = cseq.partition(" ")
    method = method.strip()
    if not _is_digits(number) or len(number) > 10 or int(number) >= 2**31 or not _TOKEN_RE.match(method):
        raise SipParseError(f"bad CSeq {cseq!r}", request=_if_request(message))
    for name in ("Call-ID", "From", "To"):
        if len(found[name]) != 1:
            raise SipParseError(f"exactly one {name} required", request=_if_request(message))
    if isinstance(message, Request):
        if method != message.method:
            raise SipParseError("CSeq method does not match the request method", request=message)
        max_forwards = found.get("Max-Forwards", (None,))[0]
        if max_forwards is not None and (not _is_digits(max_forwards) or int(max_forwards) > 255):
            raise SipParseError(f"bad Max-Forwards {max_forwards!r}", request=message)
        if message.method != "INVITE" or header_tag(found["To"][0]):
            return  # full grammar checks cost ~60 µs: spend them once per dialog, on the initial INVITE
        _validate_request_uri(message)
        for name in ("From", "To"):
            try:
                parse_address(message.get(name) or "")
            except ValueError as exc:
                raise SipParseError(f"malformed {name} header", request=message) from exc


def _validate_request_uri(request: Request) -> None:
    scheme, colon, _ = request.uri.partition(":")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        try:
            sipmessage.URI.parse(request.uri)
        except ValueError as exc:
            raise SipParseError(f"malformed Request-URI {request.uri[:80]!r}", request=request) from exc
    elif colon and _SCHEME_RE.match(scheme):
        return  # tel: and other schemes are routed or answered 416 by the application
    else:
        raise SipParseError(f"malformed Request-URI {request.uri[:80]!r}", request=request)


class StreamFramer:
    """Splits a TCP byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    ``feed`` returns complete messages; CRLF keep-alives between messages are skipped and counted in ``crlfs``
    (the connection answers RFC 5626 pings from that count and resets it). Garbage, or a message
    (headers and body) longer than ``max_message_bytes``, raises SipParseError, after which the connection
    should be closed: at most one message's worth is ever buffered.
    """

    def __init__(self, max_message_bytes: int = 65535) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self.crlfs = 0  # CRLF pairs skipped between messages since the reader last reset it

    @property
    def partial(self) -> bool:
        """Whether part of a message is buffered (a message has started and not finished)."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages they finish."""
        self._buffer += data
        messages: list[bytes] = []
        limit = self.max_message_bytes
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
                self.crlfs += 1
            if self._buffer[:1] == b"\n":
                del self._buffer[:1]
            end = self._buffer.find(b"\r\n\r\n", 0, limit + 4)
            if end < 0:
                if len(self._buffer) > limit:
                    raise SipParseError("header block too large")
                return messages
            head = bytes(self._buffer[:end])
            total = end + 4 + _stream_content_length(head)
            if total > limit:
                raise SipParseError(f"message of {total} bytes is over the limit of {limit}")
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]


_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)", re.IGNORECASE | re.MULTILINE)


def _stream_content_length(head: bytes) -> int:
    match = _CONTENT_LENGTH_RE.search(head)
    if match is None:
        raise SipParseError("Content-Length is required on a stream transport")
    text = match.group(1)
    if not text.isdigit() or len(text) > 9:
        raise SipParseError(f"bad Content-Length {text[:20]!r}")
    return int(text)


def make_response(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None,
                  extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                  content_type: str | None = None) -> Response:
    """A response to ``request`` copying Via, From, To, Call-ID, CSeq (RFC 3261 §8.2.6.2)."""
    response = Response(status=status, reason=reason or reason_phrase(status))
    headers = response.headers
    for key, value in request.headers:
        if key in ("Via", "From", "Call-ID", "CSeq") or (key == "Record-Route" and 100 < status < 300):
            headers.append((key, value))
        elif key == "To":
            if to_tag and header_tag(value) is None and status > 100:
                value = f"{value};tag={to_tag}"
            headers.append((key, value))
    if extra:
        headers.extend((canonical_name(k), v) for k, v in extra)
    if body:
        response.body = body
        if content_type:
            headers.append(("Content-Type", content_type))
    return response


def next_request(request: Request, *, replace: Mapping[str, str | None] | None = None,
                 add: Iterable[tuple[str, str]] = ()) -> Request:
    """``request`` asked again as a new transaction (RFC 3261 §8.1.3.5, §22.2): the same Call-ID, tags and body,
    CSeq + 1 and no Via (the endpoint adds one with a new branch). Headers named in ``replace`` (canonical
    names) take the value given, or are left out for None; ``add`` is appended."""
    replace = replace or {}
    again = Request(method=request.method, uri=request.uri, body=request.body)
    for name, value in request.headers:
        name = canonical_name(name)
        if name == "Via":
            continue
        if name == "CSeq":
            value = f"{request.cseq[0] + 1} {request.method}"
        elif name in replace:
            if (new := replace[name]) is None:
                continue
            value = new
        again.headers.append((name, value))
    again.headers.extend(add)
    return again
