"""A throwaway STIR/SHAKEN PKI for tests: a test STI-CA, signing certificates, and signed PASSporTs.

    pki = StirPki(tmp_path)                       # trust/ca.pem, certs/ (empty)
    sp = pki.issue("sp-a")                        # certs/sp-a.pem, x5u https://certs.example.test/sp-a.pem
    header = sp.identity("+15551230000", ["+18005550100"], attest="A", iat=time.time())
    # -> "<jws>;info=<https://certs.example.test/sp-a.pem>;alg=ES256;ppt=shaken"
    rogue = pki.issue("rogue", ca=Authority.create("Untrusted CA"))  # in certs/, chained to an untrusted CA

Signing certificates carry a TNAuthList of one SPC (``tn_auth``: other SPCs, numbers or ranges; None leaves the
extension out). ``Signer.pem`` is the chain as an x5u resource serves it; ``issue(..., write=False)`` keeps a
certificate off the disk (a fetch test serves it over HTTPS at an ``x5u`` of its choosing).

``pki.trust_dir`` and ``pki.cert_dir`` go to ``compliance.stir.trust_store`` / ``certificates`` (or to
``CertificateStore.load``). Certificates are valid 2000-01-01 .. 2099-12-31 unless told otherwise, so any
test ``now`` in between works.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dce.compliance.tn_auth_list import TN_AUTH_LIST_OID

X5U_BASE = "https://certs.example.test/"
NOT_BEFORE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2099, 12, 31, tzinfo=dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DCE tests")])


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


@dataclass(frozen=True)
class TnAuth:
    """A TNAuthList's entries (RFC 8226): SPCs, single numbers, (start, count) ranges."""

    spcs: tuple[str, ...] = ("DCE1",)
    numbers: tuple[str, ...] = ()
    ranges: tuple[tuple[str, int], ...] = ()

    def der(self) -> bytes:
        """The extension value, DER with the module's explicit tags."""
        entries = [_der(0xA0, _der(0x16, spc.encode())) for spc in self.spcs]
        entries += [_der(0xA1, _der(0x30, _der(0x16, start.encode())
                                    + _der(0x02, count.to_bytes((count.bit_length() + 8) // 8, "big"))))
                    for start, count in self.ranges]
        entries += [_der(0xA2, _der(0x16, number.encode())) for number in self.numbers]
        return _der(0x30, b"".join(entries))


SPC_ONLY = TnAuth()


@dataclass
class Authority:
    """A CA: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "DCE Test STI-CA") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue_cert(self, common_name: str, key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                   not_before: dt.datetime = NOT_BEFORE, not_after: dt.datetime = NOT_AFTER,
                   tn_auth: TnAuth | None = None) -> x509.Certificate:
        """A CA certificate (``ca``: with keyCertSign) or a signing certificate (with ``tn_auth`` when given)."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                         crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
        )
        if tn_auth is not None:
            builder = builder.add_extension(x509.UnrecognizedExtension(TN_AUTH_LIST_OID, tn_auth.der()),
                                            critical=False)
        return builder.sign(self.key, hashes.SHA256())


@dataclass
class Signer:
    """A service provider's signing key and certificate, published (in the test) at ``x5u``."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    x5u: str
    pem: bytes = b""  # the certificate and its intermediates, as the x5u resource serves them

    def jws(self, orig: str, dest: Sequence[str], *, attest: str = "A", iat: float, origid: str | None = None,
            header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None) -> str:
        """A signed SHAKEN PASSporT (full form, header.payload.signature). Numbers lose their '+' as SHAKEN
        writes them; ``header``/``claims`` override or add fields."""
        payload: dict[str, Any] = {
            "attest": attest,
            "dest": {"tn": [d.lstrip("+") for d in dest]},
            "iat": int(iat),
            "orig": {"tn": orig.lstrip("+")},
            "origid": origid or str(uuid.uuid4()),
        }
        payload.update(claims or {})
        head = {"alg": "ES256", "typ": "passport", "ppt": "shaken", "x5u": self.x5u, **(header or {})}
        return jwt.encode(payload, self.key, algorithm="ES256", headers=head)

    def identity(self, orig: str, dest: Sequence[str], **kwargs: Any) -> str:
        """The Identity header value: ``<jws>;info=<x5u>;alg=ES256;ppt=shaken``."""
        return identity_header(self.jws(orig, dest, **kwargs), self.x5u)


def identity_header(jws: str, x5u: str) -> str:
    return f"{jws};info=<{x5u}>;alg=ES256;ppt=shaken"


def tamper(jws: str) -> str:
    """The same PASSporT with one bit of its signature flipped (still valid base64url, still 64 bytes)."""
    head, payload, sig = jws.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


class StirPki:
    """A test CA in ``root/trust`` and signing certificates in ``root/certs`` (file name = x5u's last segment)."""

    def __init__(self, root: Path, ca: Authority | None = None) -> None:
        self.trust_dir = root / "trust"
        self.cert_dir = root / "certs"
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or Authority.create()
        (self.trust_dir / "ca.pem").write_bytes(_pem(self.ca.cert))

    def issue(self, name: str, *, ca: Authority | None = None, intermediate: Authority | None = None,
              not_before: dt.datetime = NOT_BEFORE, not_after: dt.datetime = NOT_AFTER,
              tn_auth: TnAuth | None = SPC_ONLY, write: bool = True, x5u: str | None = None) -> Signer:
        """A signing certificate from ``ca`` (default: the trusted test CA), written to ``certs/<name>.pem``
        unless ``write`` is false; its x5u is ``x5u`` or ``X5U_BASE + <name>.pem``.

        With ``intermediate`` (an Authority whose certificate ``ca`` issued), the leaf is issued by the
        intermediate and the file holds leaf + intermediate.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        issuer = intermediate or ca or self.ca
        cert = issuer.issue_cert(f"SHAKEN {name}", key, not_before=not_before, not_after=not_after, tn_auth=tn_auth)
        chain = [cert] if intermediate is None else [cert, intermediate.cert]
        pem = _pem(*chain)
        if write:
            (self.cert_dir / f"{name}.pem").write_bytes(pem)
        return Signer(key, cert, x5u or f"{X5U_BASE}{name}.pem", pem)

    def intermediate(self, name: str) -> Authority:
        """An intermediate CA issued by the test CA (not written anywhere: pass it to :meth:`issue`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        return Authority(key, self.ca.issue_cert(name, key, ca=True))
