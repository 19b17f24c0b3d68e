"""TLS settings for SIP (RFC 3261 §26.3.1, RFC 5630): the two ``ssl.SSLContext`` objects the transport uses.

Both allow TLS 1.2 and later only. The server context presents our certificate and, for mutual TLS, requires
a client certificate that chains to ``client_ca_file``. The client context checks a destination's certificate
and host name against ``ca_file`` (the system's CAs when None) unless verification is explicitly turned off,
and presents our certificate when we have one (carriers that require mutual TLS ask for it).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsSetupError(OSError):
    """A certificate, key or CA file that cannot be used (names the file and why): like a port in use, a fault
    of the machine's setup, reported at start without a traceback."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What the TLS contexts are built from (``sip.tls`` in the configuration)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    verify_clients: bool = False
    ca_file: Path | None = None
    verify_server: bool = True


def server_context(settings: TlsSettings, *, section: str = "sip.tls") -> ssl.SSLContext:
    """The context of our tls: listeners (and of the side API's HTTPS, ``section`` "http.tls"): our
    certificate; a required client certificate for mutual TLS."""
    if settings.cert_file is None or settings.key_file is None:
        raise TlsSetupError(f"a TLS listener needs {section}.cert_file and {section}.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, settings.cert_file, settings.key_file, section)
    if settings.verify_clients:
        if settings.client_ca_file is None:
            raise TlsSetupError("sip.tls.verify_clients needs sip.tls.client_ca_file")
        _load_cas(context, settings.client_ca_file, "sip.tls.client_ca_file")
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of our outbound connections: the peer's certificate and host name checked unless
    ``verify_server`` is False (logged as a warning: anyone on the path can then read and change the calls)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    if settings.verify_server:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if settings.ca_file is not None:
            _load_cas(context, settings.ca_file, "sip.tls.ca_file")
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        log.warning("sip.tls.verify_server is false: certificates of sips:/TLS destinations are NOT checked")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file is not None and settings.key_file is not None:
        _load_chain(context, settings.cert_file, settings.key_file, "sip.tls")
    return context


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path, section: str) -> None:
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load {section}.cert_file {cert_file} / key_file {key_file}: {exc}") from exc


def _load_cas(context: ssl.SSLContext, ca_file: Path, key: str) -> None:
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load {key} {ca_file}: {exc}") from exc


def describe_failure(exc: BaseException) -> str:
    """A short, fixed-vocabulary-first reason for a failed outbound TLS connection (for logs and CDRs)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "TLS connect timed out"
    return f"TLS connect failed: {exc.strerror or exc}" if isinstance(exc, OSError) else f"TLS connect failed: {exc}"
