"""SIP digest authentication (RFC 3261 §22.4 on RFC 2617, SHA-256 per RFC 8760): pure functions and values.

Both sides use it: the edge challenges trunks (:class:`Challenge` out, :class:`Credentials` in, :func:`verify`)
and outbound legs answer a buyer's 401/407 (:func:`authorization`). Passwords are kept only as HA1
(:func:`ha1`), one per algorithm. Nonces are stateless (:class:`NonceSigner`): the issue time, a random salt and
an HMAC over them and the source, so any node holding the secret verifies a nonce another node issued. Replays are
caught per node (:class:`NonceCounts`: the nonce count must grow).

sipmessage's auth parser splits quoted values at commas (``qop="auth,auth-int"``), so the header grammar
(``scheme param=value, param="quoted, value"``) is parsed here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

Algorithm = Literal["MD5", "SHA-256"]
ALGORITHMS: dict[str, Algorithm] = {"MD5": "MD5", "SHA-256": "SHA-256"}
PREFERRED: tuple[Algorithm, ...] = ("SHA-256", "MD5")  # RFC 8760 §2.4: challenge with the strongest first
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_QUOTED = frozenset({"realm", "nonce", "opaque", "username", "uri", "response", "cnonce", "qop", "domain"})
_UNQUOTED_IN_CREDENTIALS = frozenset({"qop", "nc", "algorithm"})  # RFC 2617: message-qop and nc are tokens
_NC = re.compile(r"[0-9A-Fa-f]{8}")  # RFC 2617 §3.2.2: nc-value = 8LHEX
_PARAM = re.compile(r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode()).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: Algorithm = "SHA-256") -> str:
    """H(username:realm:password): what is stored instead of the password."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def response(ha1_hex: str, *, method: str, uri: str, nonce: str, algorithm: Algorithm,
             qop: str | None = None, nc: str | None = None, cnonce: str | None = None) -> str:
    """The request-digest: H(HA1:nonce[:nc:cnonce:qop]:H(method:uri)) (qop ``auth`` or none)."""
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1_hex}:{nonce}:{ha2}")


def parse_header(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", qop=auth`` -> ("Digest", {...}); ValueError when it is not that form."""
    scheme, _, rest = value.strip().partition(" ")
    if not scheme or not rest.strip():
        raise ValueError("no authentication parameters")
    params: dict[str, str] = {}
    position, rest = 0, rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise ValueError(f"bad authentication parameter at {rest[position:position + 20]!r}")
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        position = match.end()
    return scheme, params


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format(params: dict[str, str], unquoted: frozenset[str] = frozenset()) -> str:
    return "Digest " + ", ".join(
        f"{name}={_quote(value) if name in _QUOTED and name not in unquoted else value}"
        for name, value in params.items())


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate``/``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: Algorithm = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """ValueError for another scheme, a missing realm/nonce or an algorithm we do not speak."""
        scheme, params = parse_header(value)
        if scheme.lower() != "digest":
            raise ValueError(f"not a Digest challenge: {scheme}")
        algorithm = ALGORITHMS.get(params.get("algorithm", "MD5").upper())
        if algorithm is None or "realm" not in params or "nonce" not in params:
            raise ValueError("unsupported algorithm or missing realm/nonce")
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        return cls(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"),
                   params.get("stale", "").lower() == "true")

    def __str__(self) -> str:
        params = {"realm": self.realm, "nonce": self.nonce, "algorithm": self.algorithm}
        if self.qop:
            params["qop"] = ",".join(self.qop)
        if self.opaque is not None:
            params["opaque"] = self.opaque
        if self.stale:
            params["stale"] = "true"
        return _format(params)


@dataclass(frozen=True, slots=True)
class Credentials:
    """One ``Authorization``/``Proxy-Authorization`` Digest answer."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """ValueError for another scheme, a missing field or an algorithm we do not speak."""
        scheme, params = parse_header(value)
        if scheme.lower() != "digest":
            raise ValueError(f"not Digest credentials: {scheme}")
        algorithm = ALGORITHMS.get(params.get("algorithm", "MD5").upper())
        if algorithm is None:
            raise ValueError("unsupported algorithm")
        try:
            credentials = cls(params["username"], params["realm"], params["nonce"], params["uri"],
                              params["response"], algorithm, params.get("qop"), params.get("nc"),
                              params.get("cnonce"), params.get("opaque"))
        except KeyError as missing:
            raise ValueError(f"missing {missing.args[0]}") from None
        if credentials.qop is not None and (credentials.nc is None or credentials.cnonce is None):
            raise ValueError("qop without nc/cnonce")
        if credentials.nc is not None and not _NC.fullmatch(credentials.nc):
            raise ValueError("nc is not 8 hex digits")
        return credentials

    def __str__(self) -> str:
        params = {"username": self.username, "realm": self.realm, "nonce": self.nonce, "uri": self.uri,
                  "response": self.response, "algorithm": self.algorithm}
        if self.qop is not None:
            params.update(qop=self.qop, nc=self.nc or "00000001", cnonce=self.cnonce or "")
        if self.opaque is not None:
            params["opaque"] = self.opaque
        return _format(params, _UNQUOTED_IN_CREDENTIALS)


def verify(credentials: Credentials, *, method: str, ha1_hex: str) -> bool:
    """Whether ``credentials`` prove knowledge of the password behind ``ha1_hex`` (same algorithm) for ``method``."""
    expected = response(ha1_hex, method=method, uri=credentials.uri, nonce=credentials.nonce,
                        algorithm=credentials.algorithm, qop=credentials.qop, nc=credentials.nc,
                        cnonce=credentials.cnonce)
    return hmac.compare_digest(expected, credentials.response.lower())


def authorization(challenge: Challenge, *, username: str, method: str, uri: str, cnonce: str,
                  password: str | None = None, ha1_hex: str | None = None, nc: int = 1) -> Credentials:
    """Answer ``challenge`` (client side) with the password, or the HA1 for the challenge's realm and algorithm."""
    if ha1_hex is None:
        if password is None:
            raise ValueError("a password or an HA1 is needed")
        ha1_hex = ha1(username, challenge.realm, password, challenge.algorithm)
    qop = "auth" if "auth" in challenge.qop else None
    nc_text = f"{nc:08x}" if qop else None
    digest = response(ha1_hex, method=method, uri=uri, nonce=challenge.nonce, algorithm=challenge.algorithm,
                      qop=qop, nc=nc_text, cnonce=cnonce if qop else None)
    return Credentials(username, challenge.realm, challenge.nonce, uri, digest, challenge.algorithm, qop,
                       nc_text, cnonce if qop else None, challenge.opaque)


NonceCheck = Literal["fresh", "stale", "invalid"]


class NonceSigner:
    """Stateless nonces: ``<issued epoch seconds>.<salt>.<HMAC(secret, issued:salt:source)>``, valid
    ``lifetime_s``.

    Any node with the same secret verifies a nonce another node issued; an expired one is ``stale`` (the client
    retries with the new nonce without asking its user again, RFC 2617 ``stale=true``). A nonce is bound to the
    source address, so one captured from another host is ``invalid``. The random salt makes every challenge's
    nonce unique (two calls challenged in the same second from one carrier each count their own nc from 1).
    """

    def __init__(self, secret: bytes, lifetime_s: float = 300.0) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime_s = lifetime_s

    def _mac(self, issued: int, salt: str, source: str) -> str:
        digest = hmac.new(self._secret, f"{issued}:{salt}:{source}".encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def issue(self, source: str, now: float) -> str:
        """A new nonce for ``source`` at wall time ``now`` (epoch seconds)."""
        issued = int(now)
        salt = base64.urlsafe_b64encode(os.urandom(9)).decode()
        return f"{issued}.{salt}.{self._mac(issued, salt, source)}"

    def check(self, nonce: str, source: str, now: float) -> NonceCheck:
        """``fresh``, ``stale`` (ours but too old) or ``invalid`` (not ours, or for another source)."""
        issued_text, _, rest = nonce.partition(".")
        salt, _, mac = rest.partition(".")
        if not issued_text.isdigit() or not hmac.compare_digest(mac, self._mac(int(issued_text), salt, source)):
            return "invalid"
        age = now - int(issued_text)
        return "fresh" if -5 <= age <= self.lifetime_s else "stale"


class NonceCounts:
    """The highest nonce count (``nc``, qop=auth) accepted per nonce: a request whose nc is not above it is a replay
    (RFC 7616 §3.4.5 / RFC 2617 §3.2.2: the server keeps its own copy of the count; the same nc twice is a replay).

    Per node: nonces are stateless HMACs that any node verifies, but these counts live in one node's memory, so a
    request replayed to another node is not caught there (a load balancer that keeps a source on one node closes
    that gap). Bounded: at most ``max_nonces`` (the least recently used dropped first), and a nonce is forgotten
    ``lifetime_s`` after it was first counted, when it is stale anyway. Pure: ``now`` comes in.
    """

    def __init__(self, lifetime_s: float, max_nonces: int = 65536) -> None:
        if max_nonces < 1:
            raise ValueError("max_nonces must be >= 1")
        self.lifetime_s = lifetime_s
        self.max_nonces = max_nonces
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # nonce -> (forget at, highest nc)

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, nc: int, now: float) -> bool:
        """Count ``nc`` for ``nonce``: False (a replay: nothing recorded) when it is not above the highest yet."""
        seen = self._seen
        while seen:  # forget expired nonces from the least recently used end
            oldest = next(iter(seen.values()))
            if oldest[0] > now:
                break
            seen.popitem(last=False)
        entry = seen.get(nonce)
        if entry is None:
            if len(seen) >= self.max_nonces:
                seen.popitem(last=False)
            seen[nonce] = (now + self.lifetime_s, nc)
            return True
        if nc <= entry[1]:
            return False
        seen[nonce] = (entry[0], nc)
        seen.move_to_end(nonce)
        return True
