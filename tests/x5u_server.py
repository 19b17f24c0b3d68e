"""A local HTTPS server publishing STIR certificates at x5u URLs, for fetch tests.

    tls = TlsPki.create(tmp_path)                # a TLS CA (tls.ca_file) and a server certificate for 127.0.0.1
    async with X5uServer(tls) as server:         # https://127.0.0.1:<port>/
        server.serve("/sp.pem", signer.pem, headers={"Cache-Control": "max-age=600"})
        server.redirect("/old.pem", "https://localhost:<port>/sp.pem")
        server.serve("/slow.pem", pem, delay_s=1.0)
        ... server.requests["/sp.pem"] ...       # how many GETs each path got

``ThreadedX5uServer`` runs the same server on its own event loop in a thread, for synchronous tests (a
``dce serve`` subprocess fetching from it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass
class TlsPki:
    """A TLS CA and a server certificate for 127.0.0.1 and localhost, as files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> TlsPki:
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x5u test TLS CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address(HOST))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        pki = cls(directory / "tls-ca.pem", directory / "tls-server.pem", directory / "tls-server.key")
        pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pki.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        return pki

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class _Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False


class X5uServer:
    """An aiohttp HTTPS server answering GETs from a table of routes (see the module docstring)."""

    def __init__(self, tls: TlsPki, port: int = 0) -> None:
        self.tls = tls
        self.port = port
        self.routes: dict[str, _Route] = {}
        self.requests: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None

    def url(self, path: str, host: str = HOST) -> str:
        return f"https://{host}:{self.port}{path}"

    def serve(self, path: str, body: bytes, *, status: int = 200, headers: dict[str, str] | None = None,
              delay_s: float = 0.0, chunked: bool = False) -> str:
        """Answer GET ``path`` with ``body``; returns its URL."""
        self.routes[path] = _Route(status, body, dict(headers or {}), delay_s, chunked)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = _Route(status, b"", {"Location": location})
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path] += 1
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found")
        if route.delay_s:
            await asyncio.sleep(route.delay_s)
        if route.chunked:  # no Content-Length: the client must count what it reads
            response = web.StreamResponse(status=route.status, headers=route.headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(route.body), 8192):
                await response.write(route.body[i:i + 8192])
            await response.write_eof()
            return response
        return web.Response(status=route.status, body=route.body, headers=route.headers,
                            content_type="application/pem-certificate-chain")

    async def start(self) -> X5uServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, ssl_context=self.tls.server_context())
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> X5uServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class ThreadedX5uServer(X5uServer):
    """The server on its own event loop in a daemon thread (``start_thread`` / ``stop_thread``)."""

    def start_thread(self) -> ThreadedX5uServer:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="x5u-server", daemon=True)
        self._thread.start()
        assert ready.wait(10), "x5u server did not start"
        return self

    def stop_thread(self) -> None:
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
