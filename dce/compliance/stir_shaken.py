"""STIR/SHAKEN verification of an inbound call's Identity header (RFC 8224, RFC 8225, RFC 8588).

The verification itself is synchronous and never waits: the caller passes ``now`` (epoch seconds) and the
numbers from the SIP headers. Certificates come from files, or from their x5u URLs through the store's
background fetcher (``dce.compliance.cert_fetch``); a certificate still being fetched makes the call "pending".

- :func:`parse_identity`: the Identity header value -> :class:`Identity` (the PASSporT's protected header and
  claims, its signing input and signature, and the header parameters ``info``, ``alg``, ``ppt``). Accepts the
  RFC 8224 form ``<header.payload.signature>;info=<x5u>;alg=ES256;ppt=shaken`` (parameters in any order,
  optionally quoted, ``info`` optional: the JWS header's ``x5u`` is used instead). The PASSporT *compact form*
  (``..signature``, header and claims left out) is refused: SHAKEN's ``attest`` and ``origid`` cannot be
  rebuilt from SIP. Anything malformed raises a :class:`StirError` subclass whose message says what.
- :class:`CertificateStore`: trust anchors (CA certificates) and signing certificates read once from disk,
  and with fetch settings an x5u fetcher; finds the certificate for an ``x5u`` URL, checks its chain up to a
  trust anchor (:func:`validate_chain`) and its validity at ``now``, and caches both per URL. It also holds
  the cache of verified signatures.
- :func:`verify`: the whole check -> :class:`StirResult` (verstat, attestation, reason code, detail).
- :func:`policy_findings`: a result and a campaign's policy -> the :class:`Finding` list for the verdict.
- :class:`StirCheck`: both as a ``dce.compliance.screen`` check (sets ``verstat``, adds the findings), and
  :meth:`StirCheck.prepare`, awaited before screening, which waits a bounded time for a certificate fetch.

Where an ``x5u`` URL finds its certificate on disk: in the certificates directory,

1. an index file ``x5u.json`` (``{"https://cert.example.org/sp/shaken.pem": "shaken-sp.pem", ...}``), when
   present, maps URLs to file names in that directory; a URL listed there uses that file and nothing else;
2. otherwise, only when the store does not fetch, the file whose name equals the URL's last path segment
   (percent-decoded; query and fragment ignored): ``https://cert.example.org/sp/shaken.pem`` -> ``shaken.pem``.

Certificate files are PEM (``.pem``, ``.crt``, ``.cer``, ``.cert``; other files are ignored): the first
certificate is the signing certificate, any further ones are intermediates of its chain (as a SHAKEN x5u
resource serves them). The chain must lead to one of the trust anchors (the certificates of the trust store's
PEM file or files), checked by cryptography's X.509 path validation at ``now``: CA certificates by the Web PKI
CA profile (basicConstraints CA, keyCertSign), the signing certificate by a SHAKEN one (not a CA,
digitalSignature when it has a key usage, an EC P-256 key for ES256). It must carry a TNAuthList (RFC 8226,
``dce.compliance.tn_auth_list``; optional with ``require_tn_auth_list=False``): a list of SPCs covers the
carrier's numbers, listed numbers or ranges must include ``orig``. Every certificate of the chain must be
valid at ``now`` (checked on every call).

verstat values follow ATIS-1000074 / RFC 8588 usage: ``TN-Validation-Passed-A|B|C`` (the signature verified
and the claims match; the letter is the attestation), ``TN-Validation-Failed`` (an Identity header that does
not verify, is stale, or does not match the call) and ``No-TN-Validation`` (no Identity header, or its
certificate is still being fetched: reason ``stir_pending``).

Numbers compare as digits only (``+``, spaces and visual separators dropped); a 10-digit number also equals
the same number with the NANP country code ``1`` in front (SHAKEN carries ``15551230000``, a SIP From may
carry ``5551230000``).

Cost: an ES256 verification is ~50-100 µs, so signatures that verified are remembered per JWS string (bounded
LRU on the store); ``iat``, ``orig``, ``dest`` and the certificate's validity are still checked on every call.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from jwt.algorithms import ECAlgorithm

from dce.caches import bounded
from dce.compliance.cert_fetch import CertFetcher, FetchSettings
from dce.compliance.screen import ScreenedCall, Screening
from dce.compliance.tn_auth_list import TN_AUTH_LIST_OID, TnAuthList, TnAuthListError, tn_auth_list_of
from dce.compliance.verdict import Action, Finding, ReasonCode

__all__ = [
    "NO_TN_VALIDATION",
    "PENDING_POLICIES",
    "TN_VALIDATION_FAILED",
    "BadSignature",
    "CertificateStore",
    "CertificateStoreError",
    "Identity",
    "MalformedIdentity",
    "PendingCertificate",
    "StirCheck",
    "StirError",
    "StirResult",
    "UncoveredNumber",
    "UnknownCertificate",
    "UnsupportedPassport",
    "UntrustedCertificate",
    "parse_identity",
    "policy_findings",
    "validate_chain",
    "verify",
]

TN_VALIDATION_FAILED = "TN-Validation-Failed"
NO_TN_VALIDATION = "No-TN-Validation"
_PASSED = {"A": "TN-Validation-Passed-A", "B": "TN-Validation-Passed-B", "C": "TN-Validation-Passed-C"}
_ATTESTATION_RANK = {"A": 0, "B": 1, "C": 2}  # lower is stronger
X5U_INDEX = "x5u.json"
_CERT_SUFFIXES = (".pem", ".crt", ".cer", ".cert")
_MAX_CHAIN = 8


# --------------------------------------------------------------------------------------------- errors


class StirError(Exception):
    """An Identity header that cannot be accepted; ``reason`` is the code a call gets for it."""

    reason: ReasonCode = ReasonCode.STIR_INVALID


class MalformedIdentity(StirError):
    """The header or the PASSporT in it does not parse (syntax, base64url, JSON, missing or mistyped claims)."""


class UnsupportedPassport(StirError):
    """A PASSporT this verifier does not accept: not ES256, not ``ppt=shaken``, or the compact form."""


class UnknownCertificate(StirError):
    """No signing certificate in the store for the PASSporT's x5u."""


class UntrustedCertificate(StirError):
    """The signing certificate does not chain to a trust anchor, or is not valid at ``now``."""


class PendingCertificate(StirError):
    """The signing certificate is being fetched: the call cannot be verified yet (verstat No-TN-Validation)."""

    reason = ReasonCode.STIR_PENDING


class UncoveredNumber(StirError):
    """The certificate's TNAuthList lists numbers, and ``orig`` is not one of them."""


class BadSignature(StirError):
    """The ES256 signature does not verify with the certificate's public key."""


class StaleIdentity(StirError):
    """``iat`` is further from ``now`` than ``max_age_s``."""

    reason = ReasonCode.STIR_STALE


class IdentityMismatch(StirError):
    """``orig.tn`` or ``dest.tn`` do not match the call's numbers."""

    reason = ReasonCode.STIR_MISMATCH


class CertificateStoreError(Exception):
    """A trust store or certificates directory that cannot be loaded (raised by :meth:`CertificateStore.load`)."""


# --------------------------------------------------------------------------------------------- parsing


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url(part: str, what: str) -> bytes:
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise MalformedIdentity(f"PASSporT {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise MalformedIdentity(f"PASSporT {what} is not base64url") from None


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(part, what))
    except (ValueError, UnicodeDecodeError):
        raise MalformedIdentity(f"PASSporT {what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedIdentity(f"PASSporT {what} is not a JSON object")
    return value


_NON_DIGITS = re.compile(r"[^0-9]")


def normalise_tn(number: str) -> str:
    """Digits only; a 10-digit (NANP national) number gets its country code 1."""
    digits = number[1:] if number[:1] == "+" else number
    if not digits.isdigit():  # isdigit also accepts non-ASCII digits: the regex below keeps only 0-9
        digits = _NON_DIGITS.sub("", digits)
    return "1" + digits if len(digits) == 10 else digits


def _tn_list(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, dict):
        value = value.get("tn")
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(tn, str) and tn for tn in value):
            return tuple(value)
    raise MalformedIdentity(f"PASSporT claim {what} has no tn")


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """A parsed Identity header: its PASSporT and the header parameters. Not yet verified."""

    jws: str  # header.payload.signature as received
    header: dict[str, Any]  # the JWS protected header
    claims: dict[str, Any]
    signing_input: bytes  # ASCII "header.payload"
    signature: bytes  # raw (r || s)
    info: str | None  # the info parameter (the x5u URL), without the angle brackets
    alg: str  # the alg parameter, else the JWS header's alg
    ppt: str | None  # the ppt parameter, else the JWS header's ppt
    x5u: str  # where the signing certificate lives (info, else the JWS header's x5u)
    attest: str  # "A", "B" or "C"
    iat: float
    orig_tn: str  # as signed
    dest_tns: tuple[str, ...]  # as signed
    origid: str | None
    orig_norm: str = field(repr=False, default="")
    dest_norm: frozenset[str] = field(repr=False, default=frozenset())


def _split_params(value: str) -> tuple[str, dict[str, str]]:
    """``digest;name=value;...`` -> (digest, {name: value}); ``<...>`` and quoted values may hold ``;``.

    The digest (base64url and dots, maybe quoted) holds no ``;``, so only the short parameter tail is scanned
    character by character.
    """
    if value[:1] == '"':
        end = value.find('"', 1)
        if end < 0:
            raise MalformedIdentity("Identity header has an unclosed quote or angle bracket")
        digest, tail = value[1:end], value[end + 1 :].lstrip()
        if tail and tail[0] != ";":
            raise MalformedIdentity("Identity header has text after its quoted PASSporT")
        tail = tail[1:]
    else:
        digest, _, tail = value.partition(";")
    bracket = tail.find("<")
    if '"' not in tail and (bracket < 0 or ";" not in tail[bracket:tail.find(">", bracket)]) \
            and tail.count("<") <= 1 and tail.count(">") == tail.count("<"):
        return digest.strip(), _params(tail.split(";"))  # the usual form: no quotes, no ';' inside <...>
    parts: list[str] = []
    start = 0
    depth = 0
    quoted = False
    for i, ch in enumerate(tail):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0:
            parts.append(tail[start:i])
            start = i + 1
    if quoted or depth:
        raise MalformedIdentity("Identity header has an unclosed quote or angle bracket")
    parts.append(tail[start:])
    return digest.strip(), _params(parts)


def _params(parts: list[str]) -> dict[str, str]:
    """``name=value`` pieces -> {name: value} (names lower-cased, surrounding quotes dropped)."""
    params: dict[str, str] = {}
    for raw in parts:
        name, sep, param = raw.partition("=")
        name = name.strip().lower()
        if not name:
            if raw.strip():
                raise MalformedIdentity(f"Identity header parameter {raw.strip()!r} has no name")
            continue
        param = param.strip()
        if len(param) >= 2 and param[0] == param[-1] == '"':
            param = param[1:-1]
        params[name] = param if sep else ""
    return params


def parse_identity(header_value: str) -> Identity:
    """Parse one Identity header value (RFC 8224 §4); raise a :class:`StirError` subclass when malformed.

    Results are cached per header string (bounded), so a repeated header costs a dictionary lookup.
    """
    return _parse_cached(header_value)


@bounded("stir_identities")
def _parse_cached(header_value: str) -> Identity:
    if not isinstance(header_value, str) or not header_value.strip():
        raise MalformedIdentity("empty Identity header")
    digest, params = _split_params(header_value.strip())
    if not digest:
        raise MalformedIdentity("Identity header has no PASSporT before its parameters")
    pieces = digest.split(".")
    if len(pieces) != 3:
        raise MalformedIdentity(f"PASSporT has {len(pieces)} dot-separated parts, "
                                "expected 3 (header.payload.signature)")
    head_part, claims_part, sig_part = pieces
    if not head_part and not claims_part:
        raise UnsupportedPassport("compact-form PASSporT (header and claims omitted) is not supported for SHAKEN")
    if not head_part or not claims_part or not sig_part:
        raise MalformedIdentity("PASSporT has an empty header, payload or signature")
    header = _json_object(head_part, "header")
    claims = _json_object(claims_part, "payload")
    signature = _b64url(sig_part, "signature")

    info = params.get("info")
    if info is not None:
        if not (len(info) >= 2 and info[0] == "<" and info[-1] == ">"):
            raise MalformedIdentity(f"Identity info parameter {info!r} is not an <absolute-URI>")
        info = info[1:-1].strip()
        if not info:
            raise MalformedIdentity("Identity info parameter is empty")
    header_x5u = header.get("x5u")
    if header_x5u is not None and not isinstance(header_x5u, str):
        raise MalformedIdentity("PASSporT header x5u is not a string")
    if info is not None and header_x5u is not None and info != header_x5u:
        raise MalformedIdentity(f"Identity info <{info}> differs from the PASSporT's x5u {header_x5u}")
    x5u = info or header_x5u
    if not x5u:
        raise MalformedIdentity("no certificate URL: neither an info parameter nor an x5u in the PASSporT header")

    header_alg = header.get("alg")
    alg = params.get("alg") or header_alg
    if not isinstance(alg, str) or not alg:
        raise MalformedIdentity("PASSporT header has no alg")
    if header_alg != alg:
        raise MalformedIdentity(f"Identity alg parameter {alg!r} differs from the PASSporT's alg {header_alg!r}")
    header_ppt = header.get("ppt")
    ppt = params.get("ppt") or header_ppt
    if ppt is not None and header_ppt is not None and ppt != header_ppt:
        raise MalformedIdentity(f"Identity ppt parameter {ppt!r} differs from the PASSporT's ppt {header_ppt!r}")
    typ = header.get("typ")
    if typ is not None and typ != "passport":
        raise MalformedIdentity(f"PASSporT header typ is {typ!r}, expected 'passport'")

    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise MalformedIdentity("PASSporT claim iat is missing or not a number")
    orig_tn = _tn_list(claims.get("orig"), "orig")
    if len(orig_tn) != 1:
        raise MalformedIdentity("PASSporT claim orig must hold exactly one tn")
    dest_tns = _tn_list(claims.get("dest"), "dest")
    attest = claims.get("attest")
    if attest not in _ATTESTATION_RANK:
        raise MalformedIdentity(f"PASSporT claim attest is {attest!r}, expected 'A', 'B' or 'C'")
    origid = claims.get("origid")
    if origid is not None and not isinstance(origid, str):
        raise MalformedIdentity("PASSporT claim origid is not a string")

    orig_norm = normalise_tn(orig_tn[0])
    dest_norm = frozenset(normalise_tn(tn) for tn in dest_tns) - {""}
    if not orig_norm or not dest_norm:
        raise MalformedIdentity("PASSporT orig or dest tn holds no digits")
    return Identity(
        jws=digest,
        header=header,
        claims=claims,
        signing_input=f"{head_part}.{claims_part}".encode("ascii"),
        signature=signature,
        info=info,
        alg=alg,
        ppt=ppt,
        x5u=x5u,
        attest=attest,
        iat=float(iat),
        orig_tn=orig_tn[0],
        dest_tns=dest_tns,
        origid=origid,
        orig_norm=orig_norm,
        dest_norm=dest_norm,
    )


# --------------------------------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class _Signer:
    """What a verified x5u resolves to: the signing key, when the whole chain is valid, and what it may sign."""

    key: ec.EllipticCurvePublicKey
    not_before: float
    not_after: float
    subject: str
    tn_auth: TnAuthList | None = None  # None only when the store does not require a TNAuthList


def _leaf_not_ca(_policy: Policy, _cert: x509.Certificate, value: x509.BasicConstraints | None) -> None:
    if value is not None and value.ca:
        raise ValueError("the signing certificate is a CA certificate")


def _leaf_signs(_policy: Policy, _cert: x509.Certificate, value: x509.KeyUsage | None) -> None:
    if value is not None and not value.digital_signature:
        raise ValueError("the signing certificate's key usage lacks digitalSignature")


# CAs (intermediates, anchors): the Web PKI's CA profile (basicConstraints CA, keyCertSign, ...). The SHAKEN
# signing certificate has no DNS names or EKU, so its own profile: any extensions, not a CA, may sign.
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
_EE_POLICY = (ExtensionPolicy.permit_all()
              .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_not_ca)
              .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_signs))


def validate_chain(x5u: str, chain: Sequence[x509.Certificate], anchors: Store | None, now: float, *,
                   require_tn_auth_list: bool = True) -> _Signer:
    """Check a signing certificate and its intermediates (``chain[0]`` is the signing certificate) at ``now``
    (epoch seconds) against the trust anchors with cryptography's X.509 path validation, and read its
    TNAuthList. Raises :class:`UntrustedCertificate` saying why."""
    leaf = chain[0]
    subject = leaf.subject.rfc4514_string()
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UntrustedCertificate(f"certificate for {x5u} does not hold an EC P-256 key (ES256)")
    if anchors is None:
        raise UntrustedCertificate(f"certificate for {x5u} ({subject}) is not issued by a trusted CA "
                                   "(no trust anchors configured)")
    verifier = (PolicyBuilder().store(anchors).time(dt.datetime.fromtimestamp(now, dt.UTC))
                .max_chain_depth(_MAX_CHAIN).extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                .build_client_verifier())
    try:
        verified = verifier.verify(leaf, list(chain[1:]))
    except VerificationError as exc:
        if any(not low <= now <= high for low, high in map(_window, chain)):
            raise UntrustedCertificate(f"certificate for {x5u} ({subject}) is not valid at this time") from None
        raise UntrustedCertificate(f"certificate for {x5u} ({subject}) is not issued by a trusted CA "
                                   f"(issuer {leaf.issuer.rfc4514_string()}): {exc}") from None
    windows = [_window(cert) for cert in verified.chain]
    tn_auth: TnAuthList | None = None
    try:
        tn_auth = tn_auth_list_of(leaf)
    except TnAuthListError as exc:
        if require_tn_auth_list or _has_tn_auth_list(leaf):
            raise UntrustedCertificate(f"certificate for {x5u} ({subject}): {exc}") from None
    return _Signer(key, max(low for low, _ in windows), min(high for _, high in windows), subject, tn_auth)


def _has_tn_auth_list(cert: x509.Certificate) -> bool:
    return any(ext.oid == TN_AUTH_LIST_OID for ext in cert.extensions)


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
        certs = x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as exc:
        raise CertificateStoreError(f"{path}: not a PEM certificate file ({exc})") from None
    return certs


def _cert_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _CERT_SUFFIXES)


def _window(cert: x509.Certificate) -> tuple[float, float]:
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


def x5u_file_name(x5u: str) -> str:
    """The file name an x5u URL maps to without an index: its last path segment, percent-decoded."""
    path = urlsplit(x5u).path
    return unquote(path.rstrip("/").rsplit("/", 1)[-1]) if path else ""


class CertificateStore:
    """Trust anchors and signing certificates, held in memory; resolves x5u URLs to verified signing keys.

    Build it with :meth:`load` (reads the directories once) or directly from certificates (tests). The files
    never change after construction; its caches do: what each x5u resolved to (a failure is retried after
    ``failure_ttl_s``, the chain check depending on time) and the LRU of verified signatures
    (``verified_cache_size`` JWS strings).

    With ``fetch`` settings, an x5u that no file provides is fetched over HTTPS (``fetcher``, a
    :class:`~dce.compliance.cert_fetch.CertFetcher`): until the fetch completes, :meth:`authority` raises
    :class:`PendingCertificate`; the downloaded chain is validated once, in the background, and cached by the
    fetcher. A URL then finds a file only through the ``x5u.json`` index (a last path segment such as
    ``cert.pem`` is too common across carriers to pick a local file by). ``clock`` (epoch seconds) dates a
    completed fetch.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        certificates: dict[str, list[x509.Certificate]],
        index: dict[str, str] | None = None,
        *,
        verified_cache_size: int = 8192,
        fetch: FetchSettings | None = None,
        require_tn_auth_list: bool = True,
        failure_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.anchors = tuple(anchors)
        self.certificates = dict(certificates)  # file name -> [signing certificate, intermediates...]
        self.index = dict(index or {})  # x5u URL -> file name
        self.require_tn_auth_list = require_tn_auth_list
        self.failure_ttl_s = failure_ttl_s
        self._trust = Store(list(self.anchors)) if self.anchors else None
        self._signers: dict[str, tuple[_Signer | StirError, float]] = {}  # x5u -> (resolution, until)
        self._verified: OrderedDict[str, None] = OrderedDict()
        self._verified_max = verified_cache_size
        self.fetcher: CertFetcher[_Signer] | None = (
            CertFetcher(self._validate_fetched, fetch, clock=clock) if fetch is not None else None)

    @classmethod
    def load(cls, trust_dir: str | os.PathLike[str] | None, cert_dir: str | os.PathLike[str] | None,
             **kwargs: Any) -> CertificateStore:
        """Read every CA certificate under ``trust_dir`` (a directory of PEM files, or one PEM file) and every
        signing certificate under ``cert_dir``.

        Either may be None (nothing trusted / nothing on disk: every signed call then fails verification unless
        fetching finds it). Raises :class:`CertificateStoreError` for a missing path, an unreadable PEM file or a
        bad index. ``kwargs`` go to the constructor.
        """
        anchors: list[x509.Certificate] = []
        if trust_dir is not None:
            trust = Path(trust_dir)
            if trust.is_file():
                anchors.extend(_read_certificates(trust))
            elif trust.is_dir():
                for path in _cert_files(trust):
                    anchors.extend(_read_certificates(path))
            else:
                raise CertificateStoreError(f"STIR trust store {trust} is not a PEM file or a directory")
        certificates: dict[str, list[x509.Certificate]] = {}
        index: dict[str, str] = {}
        if cert_dir is not None:
            certs = Path(cert_dir)
            if not certs.is_dir():
                raise CertificateStoreError(f"STIR certificates directory {certs} is not a directory")
            for path in _cert_files(certs):
                chain = _read_certificates(path)
                if not chain:
                    raise CertificateStoreError(f"{path}: no certificate in it")
                certificates[path.name] = chain
            index_path = certs / X5U_INDEX
            if index_path.exists():
                try:
                    raw = json.loads(index_path.read_text())
                except (OSError, ValueError) as exc:
                    raise CertificateStoreError(f"{index_path}: not JSON ({exc})") from None
                if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in raw.items()):
                    raise CertificateStoreError(f"{index_path}: expected an object of x5u URL -> file name")
                for url, name in raw.items():
                    if name not in certificates:
                        raise CertificateStoreError(f"{index_path}: {url} maps to {name!r}, not a certificate file "
                                                    f"in {certs}")
                index = raw
        return cls(anchors, certificates, index, **kwargs)

    def __repr__(self) -> str:
        return f"CertificateStore({len(self.anchors)} anchors, {len(self.certificates)} signing certificates)"

    def _disk_chain(self, x5u: str) -> list[x509.Certificate] | None:
        name = self.index.get(x5u)
        if name is None and self.fetcher is None:
            name = x5u_file_name(x5u)
        return self.certificates.get(name) if name else None

    def chain_for(self, x5u: str) -> list[x509.Certificate]:
        """The certificate file an x5u URL names (see the module docstring); raises :class:`UnknownCertificate`."""
        chain = self._disk_chain(x5u)
        if chain is None:
            raise UnknownCertificate(f"no signing certificate for x5u {x5u}")
        return chain

    def on_disk(self, x5u: str) -> bool:
        """Whether a certificate file provides ``x5u`` (nothing to fetch)."""
        return self._disk_chain(x5u) is not None

    def _validate_fetched(self, x5u: str, chain: list[x509.Certificate], now: float) -> _Signer:
        return validate_chain(x5u, chain, self._trust, now, require_tn_auth_list=self.require_tn_auth_list)

    def authority(self, x5u: str, now: float) -> _Signer:
        """The verified signing certificate for ``x5u`` at ``now``; raises a :class:`StirError` subclass
        (:class:`PendingCertificate` while its fetch runs).

        Files: the chain check is cached per URL (a failure for ``failure_ttl_s``); fetched certificates: the
        fetcher's cache. Validity is checked against ``now`` on every call.
        """
        cached = self._signers.get(x5u)
        if cached is not None and now < cached[1]:
            entry = cached[0]
        else:
            chain = self._disk_chain(x5u)
            if chain is None and self.fetcher is not None:
                got = self.fetcher.get(x5u, now)
                if got is None:
                    raise PendingCertificate(f"certificate {x5u} is being fetched")
                if isinstance(got, _Signer | StirError):
                    entry = got
                else:
                    entry = UnknownCertificate(f"certificate {x5u} could not be fetched: {got}")
            else:
                if chain is None:
                    entry = UnknownCertificate(f"no signing certificate for x5u {x5u}")
                else:
                    try:
                        entry = validate_chain(x5u, chain, self._trust, now,
                                               require_tn_auth_list=self.require_tn_auth_list)
                    except StirError as exc:
                        entry = exc
                if len(self._signers) >= 4096:  # bounded: unknown URLs from callers must not grow it forever
                    self._signers.clear()
                until = math.inf if isinstance(entry, _Signer) else now + self.failure_ttl_s
                self._signers[x5u] = (entry, until)
        if isinstance(entry, StirError):
            raise type(entry)(*entry.args)
        if not entry.not_before <= now <= entry.not_after:
            raise UntrustedCertificate(f"certificate for {x5u} ({entry.subject}) is not valid at this time")
        return entry

    def signer(self, x5u: str, now: float) -> ec.EllipticCurvePublicKey:
        """The verified signing key for ``x5u`` at ``now`` (see :meth:`authority`)."""
        return self.authority(x5u, now).key

    # signature cache
    def _seen(self, jws: str) -> bool:
        verified = self._verified
        if jws in verified:
            verified.move_to_end(jws)
            return True
        return False

    def _remember(self, jws: str) -> None:
        verified = self._verified
        verified[jws] = None
        if len(verified) > self._verified_max:
            verified.popitem(last=False)


# --------------------------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class StirResult:
    """The outcome of verifying one call's Identity header."""

    verstat: str  # TN-Validation-Passed-A|B|C, TN-Validation-Failed, No-TN-Validation
    attestation: str | None = None  # A, B or C when verification passed
    reason: ReasonCode | None = None  # why it failed (STIR_UNSIGNED when there was no header); None when passed
    detail: str = ""
    origid: str | None = None  # the PASSporT's origination identifier, when verification passed

    @property
    def passed(self) -> bool:
        return self.reason is None

    @property
    def signed(self) -> bool:
        return self.reason is not ReasonCode.STIR_UNSIGNED


UNSIGNED = StirResult(NO_TN_VALIDATION, None, ReasonCode.STIR_UNSIGNED, "no Identity header")
_ES256 = ECAlgorithm(ECAlgorithm.SHA256)
_PASSED_RESULTS: dict[tuple[str, str | None], StirResult] = {}


def _check_signature(identity: Identity, key: ec.EllipticCurvePublicKey) -> None:
    if len(identity.signature) != 64:
        raise BadSignature(f"ES256 signature is {len(identity.signature)} bytes, expected 64")
    if not _ES256.verify(identity.signing_input, key, identity.signature):
        raise BadSignature("ES256 signature does not verify with the signing certificate's key")


def _check(identity: Identity, orig_tn: str | Sequence[str] | None, dest_tns: Sequence[str],
           store: CertificateStore, now: float, max_age_s: float) -> None:
    if identity.alg != "ES256":
        raise UnsupportedPassport(f"PASSporT alg {identity.alg!r} is not ES256")
    if identity.ppt != "shaken":
        raise UnsupportedPassport(f"PASSporT ppt {identity.ppt!r} is not shaken")
    authority = store.authority(identity.x5u, now)
    if not store._seen(identity.jws):
        _check_signature(identity, authority.key)
        store._remember(identity.jws)
    tn_auth = authority.tn_auth
    if tn_auth is not None and tn_auth.lists_numbers and not tn_auth.covers(identity.orig_norm, normalise_tn):
        raise UncoveredNumber(f"orig {identity.orig_tn} is not among the numbers the certificate's TNAuthList "
                              f"covers ({authority.subject})")
    age = now - identity.iat
    if age > max_age_s or age < -max_age_s:
        raise StaleIdentity(f"iat is {age:.0f} s from now (allowed: {max_age_s:g} s)")
    callers: tuple[str, ...] = (orig_tn,) if isinstance(orig_tn, str) else tuple(orig_tn or ())
    if not any(normalise_tn(tn) == identity.orig_norm for tn in callers):
        shown = ", ".join(callers) or "none"
        raise IdentityMismatch(f"orig {identity.orig_tn} is not the caller ({shown})")
    dest_norm = identity.dest_norm
    if not any(normalise_tn(tn) in dest_norm for tn in dest_tns):
        raise IdentityMismatch(f"dest {','.join(identity.dest_tns)} is not the called number "
                               f"({', '.join(dest_tns) or 'none'})")


def verify(identity_header: str | None, *, orig_tn: str | Sequence[str] | None, dest_tns: Sequence[str],
           store: CertificateStore, now: float, max_age_s: float = 60.0) -> StirResult:
    """Verify an inbound call's Identity header against the call and the store.

    ``orig_tn``: the caller's number (the P-Asserted-Identity user when present, else the From user); a
    sequence matches when any of its numbers equals the PASSporT's ``orig``. ``dest_tns``: the called numbers
    (To user, Request-URI user); one of them must be among the PASSporT's ``dest`` numbers. ``now`` is epoch
    seconds. Never raises for bad input: failures come back as ``TN-Validation-Failed`` with a reason code
    (STIR_INVALID for syntax, certificate and signature problems, STIR_STALE, STIR_MISMATCH), a missing
    header as ``No-TN-Validation`` with STIR_UNSIGNED, and a certificate still being fetched as
    ``No-TN-Validation`` with STIR_PENDING.
    """
    if not identity_header or not identity_header.strip():
        return UNSIGNED
    try:
        identity = _parse_cached(identity_header)
        _check(identity, orig_tn, dest_tns, store, now, max_age_s)
    except PendingCertificate as exc:
        return StirResult(NO_TN_VALIDATION, None, exc.reason, str(exc))
    except StirError as exc:
        return StirResult(TN_VALIDATION_FAILED, None, exc.reason, str(exc))
    key = (identity.attest, identity.origid)
    result = _PASSED_RESULTS.get(key)
    if result is None:
        result = StirResult(_PASSED[identity.attest], identity.attest, None, "", identity.origid)
        if len(_PASSED_RESULTS) < 65536:
            _PASSED_RESULTS[key] = result
    return result


# --------------------------------------------------------------------------------------------- policy

_ACTIONS = {"allow": Action.ALLOW, "flag": Action.FLAG, "reject": Action.REJECT}


def _action(value: str, what: str) -> Action:
    try:
        return _ACTIONS[str(value).lower()]
    except KeyError:
        raise ValueError(f"{what} must be one of allow, flag, reject; got {value!r}") from None


def policy_findings(result: StirResult, *, min_attestation: str | None, on_failure: str,
                    on_unsigned: str, on_pending: str | None = None) -> list[Finding]:
    """A campaign's STIR/SHAKEN policy applied to a verification result.

    - no Identity header -> ``on_unsigned`` with STIR_UNSIGNED;
    - certificate still being fetched -> ``on_pending`` (default: ``on_unsigned``) with STIR_PENDING;
    - verification failed -> ``on_failure`` with the result's reason code;
    - passed, but the attestation is weaker than ``min_attestation`` ("A" > "B" > "C") -> ``on_failure`` with
      STIR_LOW_ATTESTATION.

    Actions are "allow", "flag" or "reject" (StirAction values work too). An "allow" produces no finding.
    """
    if result.reason is ReasonCode.STIR_UNSIGNED:
        action = _action(on_unsigned, "on_unsigned")
        return [Finding(action, ReasonCode.STIR_UNSIGNED, result.detail)] if action else []
    if result.reason is ReasonCode.STIR_PENDING:
        action = _action(on_unsigned if on_pending is None else on_pending, "on_pending")
        return [Finding(action, ReasonCode.STIR_PENDING, result.detail)] if action else []
    if result.reason is not None:
        action = _action(on_failure, "on_failure")
        return [Finding(action, result.reason, result.detail)] if action else []
    if min_attestation is not None:
        required = _ATTESTATION_RANK.get(str(min_attestation).upper())
        if required is None:
            raise ValueError(f"min_attestation must be 'A', 'B' or 'C'; got {min_attestation!r}")
        got = _ATTESTATION_RANK.get(result.attestation or "", 3)
        if got > required:
            action = _action(on_failure, "on_failure")
            if action:
                return [Finding(action, ReasonCode.STIR_LOW_ATTESTATION,
                                f"attestation {result.attestation}, campaign requires {min_attestation.upper()}"
                                f"{' or better' if min_attestation.upper() != 'A' else ''}")]
    return []


# --------------------------------------------------------------------------------------------- screening check


PENDING_POLICIES = ("unsigned", "failure", "allow", "flag", "reject")
"""What a call whose certificate is still being fetched gets: the campaign's action for unsigned calls, its
action for failed verification, or one action for every campaign."""


class StirCheck:
    """The STIR/SHAKEN check for :class:`dce.compliance.screen.Screener`.

    Verifies ``call.identity`` with the caller's numbers (``call.asserted`` — the P-Asserted-Identity user —
    and ``call.ani`` — the From user; ``orig`` may equal either) and the DID as the called number, records the
    verstat on the screening, and adds the findings of the campaign's policy carried on the call.

    With a fetching store, :meth:`prepare` (awaited before screening) starts the fetch of an unknown x5u and
    waits up to ``wait_s`` for it; a call screened while the fetch still runs gets ``pending`` (one of
    :data:`PENDING_POLICIES`).
    """

    __slots__ = ("max_age_s", "pending", "store", "wait_s")

    def __init__(self, store: CertificateStore, *, max_age_s: float = 60.0, pending: str = "unsigned",
                 wait_s: float = 0.0) -> None:
        if pending not in PENDING_POLICIES:
            raise ValueError(f"pending must be one of {', '.join(PENDING_POLICIES)}; got {pending!r}")
        self.store = store
        self.max_age_s = max_age_s
        self.pending = pending
        self.wait_s = wait_s

    async def prepare(self, call: ScreenedCall, now: float) -> None:
        """Before screening ``call``: when its certificate is neither on disk nor cached, start fetching it and
        wait up to ``wait_s`` (no wait at all on a cache hit, a malformed header or without fetching)."""
        fetcher = self.store.fetcher
        if fetcher is None or not call.identity:
            return
        try:
            x5u = parse_identity(call.identity).x5u
        except StirError:
            return
        if not self.store.on_disk(x5u):
            await fetcher.wait(x5u, self.wait_s, now)

    def __call__(self, call: ScreenedCall, now: float, out: Screening) -> None:
        if call.asserted and call.ani and call.asserted != call.ani:
            callers: tuple[str, ...] | str | None = (call.asserted, call.ani)
        else:
            callers = call.asserted or call.ani
        result = verify(call.identity, orig_tn=callers, dest_tns=(call.did,), store=self.store, now=now,
                        max_age_s=self.max_age_s)
        out.verstat = result.verstat
        pending = self.pending
        on_pending = (call.stir_on_unsigned if pending == "unsigned" else
                      call.stir_on_failure if pending == "failure" else pending)
        out.extend(policy_findings(result, min_attestation=call.stir_min_attestation,
                                   on_failure=call.stir_on_failure, on_unsigned=call.stir_on_unsigned,
                                   on_pending=on_pending))
