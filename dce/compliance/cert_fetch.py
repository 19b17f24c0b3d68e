"""Fetch STIR/SHAKEN signing certificates from their x5u URLs over HTTPS, and keep them in a bounded cache.

A call must never wait on the network unless its policy says so, so the cache answers synchronously:
:meth:`CertFetcher.get` returns what a URL resolves to, or None while a fetch runs (it starts one in the
background on a miss). :meth:`CertFetcher.wait` lets a call wait a bounded time for a fetch in flight. Concurrent
misses for one URL share one fetch.

What is cached is what ``validate(url, chain, now)`` makes of the downloaded chain (the verified signing key, in
``dce.compliance.stir_shaken``), or the exception it or the download raised:

- a success for the answer's HTTP lifetime (``Cache-Control: s-maxage``/``max-age``, else ``Expires`` against
  ``Date``, less ``Age``; ``no-store``/``no-cache`` count as 0; none of them: ``default_ttl_s``), clamped to
  ``[min_ttl_s, max_ttl_s]`` so a carrier's ``no-cache`` cannot make every call wait. After that lifetime it is
  still used for ``stale_s`` while a refresh runs in the background (a failed refresh keeps it and retries after
  ``failure_ttl_s``);
- a failure for ``failure_ttl_s`` (negative caching: a dead URL costs one fetch per period, not one per call).

The cache holds at most ``cache_size`` certificates (least recently used first out), and failures apart in a
second LRU of the same size, so a flood of bogus x5u URLs cannot evict the carriers' certificates. At most
``max_in_flight`` fetches run at once (a miss beyond that stays pending and is retried by a later call). With
``allowed_hosts``, only those hosts (``"cert.example.org"``, or ``".example.org"`` for any host under it) are
fetched from: the others are refused without a request.

The download refuses: a URL that is not ``https:`` (or has credentials or no host), a redirect to another host
or port (same-host redirects are followed up to ``max_redirects``), any status but 200, an answer larger than
``max_bytes`` (announced or read), and anything slower than ``timeout_s`` in all. The server's certificate is
checked against ``ca_file`` when given, else the system's trust store. The body is PEM (one or more
certificates: the signing certificate first, then its intermediates) or one DER certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
from cryptography import x509

__all__ = ["CertFetcher", "FetchError", "FetchSettings", "cache_lifetime", "check_url", "host_allowed",
           "parse_certificates"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "application/pem-certificate-chain, application/x-pem-file;q=0.9, application/pkix-cert;q=0.8, */*;q=0.1"
_MAX_URL = 2048


class FetchError(Exception):
    """A certificate that could not be fetched; the message says why (refused URL, HTTP status, size, time)."""


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """Limits of the fetch and of its cache (see the module docstring)."""

    timeout_s: float = 2.0
    max_bytes: int = 65536
    max_redirects: int = 3
    cache_size: int = 1024
    default_ttl_s: float = 3600.0
    min_ttl_s: float = 60.0
    max_ttl_s: float = 86400.0
    failure_ttl_s: float = 30.0
    stale_s: float = 3600.0
    max_in_flight: int = 64
    ca_file: str | None = None
    allowed_hosts: tuple[str, ...] | None = None  # None: any host


def check_url(url: str) -> SplitResult:
    """The parts of an x5u URL the fetcher accepts: ``https:``, a host, no user info; else :class:`FetchError`."""
    if len(url) > _MAX_URL:
        raise FetchError(f"x5u URL is longer than {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise FetchError(f"x5u {url!r} is not a URL ({exc})") from None
    if parts.scheme.lower() != "https":
        raise FetchError(f"x5u {url} is not an https: URL")
    if not parts.hostname:
        raise FetchError(f"x5u {url} has no host")
    if parts.username is not None or parts.password is not None:
        raise FetchError(f"x5u {url} carries credentials")
    return parts


def host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    """Whether ``host`` is one of ``allowed`` (exact names, or ``.suffix`` for any host under a domain)."""
    if allowed is None:
        return True
    host = host.lower().rstrip(".")
    return any(host == entry.lower() or (entry.startswith(".") and host.endswith(entry.lower()))
               for entry in allowed)


def _origin(parts: SplitResult) -> tuple[str, int]:
    return (parts.hostname or "").lower(), parts.port or 443


def _seconds(value: str) -> float | None:
    value = value.strip().strip('"')
    return float(value) if value.isdigit() else None


def cache_lifetime(headers: Mapping[str, str], now: float, settings: FetchSettings) -> float:
    """How many seconds an answer with these headers may be used (clamped to the settings' bounds)."""
    ttl: float | None = None
    control = headers.get("Cache-Control")
    if control:
        directives: dict[str, str] = {}
        for item in control.split(","):
            name, _, arg = item.partition("=")
            directives[name.strip().lower()] = arg
        if "no-store" in directives or "no-cache" in directives:
            ttl = 0.0
        elif "s-maxage" in directives:
            ttl = _seconds(directives["s-maxage"])
        elif "max-age" in directives:
            ttl = _seconds(directives["max-age"])
    if ttl is None and (expires := headers.get("Expires")) is not None:
        try:
            at = email.utils.parsedate_to_datetime(expires).timestamp()
        except (TypeError, ValueError, IndexError):
            at = None  # an invalid Expires means "already expired" (RFC 9111 §5.3)
        base = now
        if (date := headers.get("Date")) is not None:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                base = email.utils.parsedate_to_datetime(date).timestamp()
        ttl = 0.0 if at is None else at - base
    if ttl is None:
        ttl = settings.default_ttl_s
    age = _seconds(headers.get("Age") or "")
    if age is not None:
        ttl -= age
    return min(max(ttl, settings.min_ttl_s), settings.max_ttl_s)


def parse_certificates(body: bytes) -> list[x509.Certificate]:
    """The certificates of an x5u answer: PEM (a chain) or one DER certificate; :class:`FetchError` otherwise."""
    try:
        if b"-----BEGIN" in body:
            certs = x509.load_pem_x509_certificates(body)
        else:
            certs = [x509.load_der_x509_certificate(body)]
    except ValueError as exc:
        raise FetchError(f"answer is not a PEM or DER certificate ({exc})") from None
    if not certs:  # pragma: no cover - load_pem_x509_certificates raises instead
        raise FetchError("answer holds no certificate")
    return certs


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T | Exception
    fresh_until: float
    usable_until: float  # a success is still used (and refreshed) until then; a failure: == fresh_until


class CertFetcher(Generic[T]):
    """The x5u certificate cache and its background fetches.

    ``validate(url, chain, now)`` turns a downloaded chain into the cached value (or raises: the exception is
    cached as a failure). ``clock`` gives epoch seconds when a fetch completes (the same scale as the ``now``
    callers pass). ``session``: an aiohttp session to use (tests); by default one is made on the first fetch
    and closed by :meth:`close`.
    """

    def __init__(self, validate: Callable[[str, list[x509.Certificate], float], T],
                 settings: FetchSettings | None = None, *, clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings or FetchSettings()
        self._validate = validate
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._cache: OrderedDict[str, _Entry[T]] = OrderedDict()  # certificates (or what validate made of them)
        self._failed: OrderedDict[str, _Entry[T]] = OrderedDict()  # failures, apart
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.downloads = 0  # HTTP fetches started (a cache hit starts none)

    def __repr__(self) -> str:
        return f"CertFetcher({len(self._cache)} cached, {len(self._failed)} failed, {len(self._tasks)} in flight)"

    # -- the call path: synchronous, never waits ------------------------------------------------------------------

    def get(self, url: str, now: float) -> T | Exception | None:
        """What ``url`` resolves to at ``now``: the cached value, the cached failure, or None while it is being
        fetched (a miss starts the fetch)."""
        entry = self._cache.get(url)
        if entry is not None:
            if now < entry.fresh_until:
                self._cache.move_to_end(url)
                return entry.value
            if now < entry.usable_until:
                self._start(url)  # stale: keep using it while it is refreshed
                return entry.value
            del self._cache[url]
        failed = self._failed.get(url)
        if failed is not None:
            if now < failed.fresh_until:
                return failed.value
            del self._failed[url]
        try:
            parts = check_url(url)
            if not host_allowed(parts.hostname or "", self.settings.allowed_hosts):
                raise FetchError(f"x5u host {parts.hostname} is not among the allowed hosts")
        except FetchError as exc:
            self._put(url, _Entry(exc, now + self.settings.failure_ttl_s, now + self.settings.failure_ttl_s))
            return exc
        self._start(url)
        return None

    def pending(self, url: str) -> bool:
        """Whether a fetch of ``url`` is in flight."""
        return url in self._tasks

    async def wait(self, url: str, timeout_s: float, now: float) -> None:
        """Start fetching ``url`` when needed and wait up to ``timeout_s`` for it (not at all on a cache hit).
        The fetch goes on in the background when the wait ends first (or is cancelled)."""
        if self.get(url, now) is not None:
            return
        task = self._tasks.get(url)
        if task is None or timeout_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout_s)

    # -- background fetches -----------------------------------------------------------------------------------------

    def _start(self, url: str) -> None:
        if url in self._tasks or len(self._tasks) >= self.settings.max_in_flight:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): nothing can be fetched now
            return
        task = loop.create_task(self._fetch(url), name=f"x5u-fetch {url[:80]}")
        self._tasks[url] = task
        task.add_done_callback(lambda _t: self._tasks.pop(url, None))

    async def _fetch(self, url: str) -> None:
        settings = self.settings
        try:
            body, headers = await self.download(url)
            now = self._clock()
            ttl = cache_lifetime(headers, now, settings)
            value = self._validate(url, parse_certificates(body), now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            now = self._clock()
            log.info("x5u certificate %s not usable: %s", url, exc)
            old = self._cache.get(url)
            if old is not None and not isinstance(old.value, Exception) and now < old.usable_until:
                old.fresh_until = now + settings.failure_ttl_s  # keep the stale certificate, retry later
                return
            self._put(url, _Entry(exc, now + settings.failure_ttl_s, now + settings.failure_ttl_s))
            return
        self._put(url, _Entry(value, now + ttl, now + ttl + settings.stale_s))

    def _put(self, url: str, entry: _Entry[T]) -> None:
        if isinstance(entry.value, Exception):
            cache = self._failed
            self._cache.pop(url, None)
        else:
            cache = self._cache
            self._failed.pop(url, None)
        cache[url] = entry
        cache.move_to_end(url)
        while len(cache) > self.settings.cache_size:
            cache.popitem(last=False)

    # -- HTTPS ---------------------------------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            connector = aiohttp.TCPConnector(ssl=context, limit=self.settings.max_in_flight)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def download(self, url: str) -> tuple[bytes, Mapping[str, str]]:
        """One HTTPS GET of ``url`` under the module's rules: the body and the final answer's headers."""
        origin = _origin(check_url(url))
        settings = self.settings
        session = self._client()
        self.downloads += 1
        try:
            async with asyncio.timeout(settings.timeout_s):
                for _hop in range(settings.max_redirects + 1):
                    async with session.get(url, allow_redirects=False, headers={"Accept": _ACCEPT}) as resp:
                        if resp.status in _REDIRECTS:
                            location = resp.headers.get("Location")
                            if not location:
                                raise FetchError(f"HTTP {resp.status} redirect without a Location")
                            target = urljoin(url, location)
                            parts = check_url(target)
                            if _origin(parts) != origin:
                                raise FetchError(f"redirect from {url} to another host ({parts.netloc}) refused")
                            url = target
                            continue
                        if resp.status != 200:
                            raise FetchError(f"HTTP {resp.status} from {url}")
                        if resp.content_length is not None and resp.content_length > settings.max_bytes:
                            raise FetchError(f"answer of {resp.content_length} bytes is over the "
                                             f"{settings.max_bytes} byte limit")
                        body = bytearray()
                        async for chunk in resp.content.iter_chunked(16384):
                            body += chunk
                            if len(body) > settings.max_bytes:
                                raise FetchError(f"answer is over the {settings.max_bytes} byte limit")
                        return bytes(body), resp.headers
                raise FetchError(f"more than {settings.max_redirects} redirects")
        except TimeoutError:
            raise FetchError(f"no complete answer from {url} within {settings.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise FetchError(str(exc) or type(exc).__name__) from None

    async def close(self) -> None:
        """Stop the fetches in flight and close the HTTP session this fetcher made."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
