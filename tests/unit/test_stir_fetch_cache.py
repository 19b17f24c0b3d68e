"""The x5u certificate cache without a network: HTTP cache lifetimes, URL rules, answer formats, the LRU bound,
shared and bounded fetches (``download`` replaced by a fake), and the wiring from ``compliance.stir`` config to
the check and the gate."""

from __future__ import annotations

import asyncio
import email.utils
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from dce.compliance.cert_fetch import (
    CertFetcher,
    FetchError,
    FetchSettings,
    cache_lifetime,
    check_url,
    host_allowed,
    parse_certificates,
)
from dce.compliance.screen import Screener
from dce.exchange.compliance_setup import build_stir
from dce.exchange.config import StirConfig
from dce.exchange.router import CallRequest, Routed
from dce.exchange.screening import CallGate
from dce.routing.model import RoutingPlan
from tests.stir_pki import StirPki

SETTINGS = FetchSettings(default_ttl_s=3600, min_ttl_s=60, max_ttl_s=86400)
NOW = 1_750_000_000.0


# ------------------------------------------------------------------------------------------- cache lifetime


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


@pytest.mark.parametrize(("headers", "ttl"), [
    ({}, 3600),
    ({"Cache-Control": "public, max-age=600"}, 600),
    ({"Cache-Control": "max-age=600, s-maxage=1200"}, 1200),
    ({"Cache-Control": 'max-age="900"'}, 900),
    ({"Cache-Control": "max-age=600", "Age": "100"}, 500),
    ({"Cache-Control": "no-cache"}, 60),  # clamped up: a certificate is kept at least min_ttl_s
    ({"Cache-Control": "no-store, max-age=600"}, 60),
    ({"Cache-Control": "max-age=999999999"}, 86400),
    ({"Cache-Control": "max-age=abc"}, 3600),
    ({"Expires": http_date(NOW + 7200)}, 7200),  # against now
    ({"Expires": http_date(NOW + 7200), "Date": http_date(NOW + 3600)}, 3600),  # against the server's Date
    ({"Expires": "0"}, 60),  # invalid: already expired
    ({"Cache-Control": "max-age=300", "Expires": http_date(NOW + 7200)}, 300),  # max-age wins
])
def test_cache_lifetime(headers: dict[str, str], ttl: float) -> None:
    assert cache_lifetime(headers, NOW, SETTINGS) == pytest.approx(ttl)


@pytest.mark.parametrize(("url", "words"), [
    ("http://cert.example/a.pem", "not an https: URL"),
    ("ftp://cert.example/a.pem", "not an https: URL"),
    ("https:///a.pem", "no host"),
    ("https://user:pw@cert.example/a.pem", "credentials"),
    ("https://cert.example:99999/a.pem", "not a URL"),
    ("https://cert.example/" + "a" * 3000, "longer than"),
])
def test_refused_urls(url: str, words: str) -> None:
    with pytest.raises(FetchError, match=words):
        check_url(url)
    assert check_url("HTTPS://Cert.Example:8443/sp/a.pem?v=1").hostname == "cert.example"


def test_answers_in_pem_or_der(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    intermediate = pki.intermediate("Intermediate")
    signer = pki.issue("sp", intermediate=intermediate)
    assert parse_certificates(signer.pem) == [signer.cert, intermediate.cert]
    assert parse_certificates(signer.cert.public_bytes(serialization.Encoding.DER)) == [signer.cert]
    for junk in (b"", b"<html>not found</html>", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(FetchError, match="not a PEM or DER certificate"):
            parse_certificates(junk)


# ------------------------------------------------------------------------------------------- cache and fetches


class FakeFetcher(CertFetcher[str]):
    """Downloads answered from a table, each released when the test says so."""

    def __init__(self, settings: FetchSettings, clock: list[float]) -> None:
        super().__init__(self.validate, settings, clock=lambda: clock[0])
        self.gates: dict[str, asyncio.Event] = {}
        self.answers: dict[str, bytes | Exception] = {}

    @staticmethod
    def validate(url: str, chain: list[x509.Certificate], now: float) -> str:
        return f"ok {url}"

    async def download(self, url: str) -> tuple[bytes, dict[str, str]]:
        self.downloads += 1
        await self.gates.setdefault(url, asyncio.Event()).wait()
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer, {}


@pytest.fixture
def pem(tmp_path: Path) -> bytes:
    return StirPki(tmp_path).issue("sp").pem


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_misses_share_one_fetch_and_hits_need_none(pem: bytes) -> None:
    clock = [NOW]
    fetcher = FakeFetcher(FetchSettings(), clock)
    url = "https://a.example/sp.pem"
    fetcher.answers[url] = pem
    assert fetcher.get(url, NOW) is None and fetcher.get(url, NOW) is None
    assert fetcher.pending(url)
    await settle()
    assert fetcher.downloads == 1
    fetcher.gates[url].set()
    await settle()
    assert fetcher.get(url, NOW + 1) == f"ok {url}" and not fetcher.pending(url)
    assert fetcher.downloads == 1
    await fetcher.close()


async def test_wait_is_bounded_and_leaves_the_fetch_running(pem: bytes) -> None:
    fetcher = FakeFetcher(FetchSettings(), [NOW])
    url = "https://a.example/sp.pem"
    fetcher.answers[url] = pem
    await fetcher.wait(url, 0.02, NOW)
    assert fetcher.get(url, NOW) is None and fetcher.pending(url)
    fetcher.gates[url].set()
    await fetcher.wait(url, 1.0, NOW)
    assert fetcher.get(url, NOW) == f"ok {url}"
    await fetcher.close()


async def test_cache_is_a_bounded_lru(pem: bytes) -> None:
    fetcher = FakeFetcher(FetchSettings(cache_size=2), [NOW])
    urls = [f"https://a.example/{i}.pem" for i in range(3)]
    for url in urls:
        fetcher.answers[url] = pem
        fetcher.gates[url] = asyncio.Event()
        fetcher.gates[url].set()
    for url in urls[:2]:
        await fetcher.wait(url, 1, NOW)
    assert fetcher.get(urls[0], NOW) is not None  # 0 is now the most recently used
    await fetcher.wait(urls[2], 1, NOW)  # evicts 1
    assert fetcher.get(urls[0], NOW) is not None and fetcher.get(urls[2], NOW) is not None
    assert fetcher.get(urls[1], NOW) is None  # gone: fetched again
    assert len(fetcher._cache) == 2
    await fetcher.close()


async def test_fetches_in_flight_are_bounded(pem: bytes) -> None:
    fetcher = FakeFetcher(FetchSettings(max_in_flight=2), [NOW])
    urls = [f"https://a.example/{i}.pem" for i in range(4)]
    for url in urls:
        assert fetcher.get(url, NOW) is None
    assert [fetcher.pending(url) for url in urls] == [True, True, False, False]
    await fetcher.close()
    assert not any(fetcher.pending(url) for url in urls)


async def test_a_failed_refresh_keeps_the_stale_certificate(pem: bytes) -> None:
    clock = [NOW]
    fetcher = FakeFetcher(FetchSettings(min_ttl_s=0, default_ttl_s=100, stale_s=1000, failure_ttl_s=30), clock)
    url = "https://a.example/sp.pem"
    fetcher.answers[url] = pem
    fetcher.gates[url] = asyncio.Event()
    fetcher.gates[url].set()
    await fetcher.wait(url, 1, NOW)
    clock[0] = NOW + 150
    fetcher.answers[url] = FetchError("HTTP 503")
    assert fetcher.get(url, clock[0]) == f"ok {url}"  # stale, refresh started
    await settle()
    assert fetcher.downloads == 2 and not fetcher.pending(url)
    assert fetcher.get(url, clock[0] + 10) == f"ok {url}"  # kept; no new fetch before failure_ttl_s
    assert fetcher.downloads == 2
    assert fetcher.get(url, clock[0] + 31) == f"ok {url}"  # retried
    await settle()
    assert fetcher.downloads == 3
    assert fetcher.get(url, NOW + 100 + 1000 + 1) is None  # beyond stale_s: a miss again
    await fetcher.close()


async def test_failures_have_their_own_lru_and_cannot_evict_certificates(pem: bytes) -> None:
    fetcher = FakeFetcher(FetchSettings(cache_size=2), [NOW])
    good = "https://a.example/good.pem"
    fetcher.answers[good] = pem
    fetcher.gates[good] = asyncio.Event()
    fetcher.gates[good].set()
    await fetcher.wait(good, 1, NOW)
    for i in range(10):  # a flood of refused URLs
        assert isinstance(fetcher.get(f"http://bogus.example/{i}.pem", NOW), FetchError)
    assert fetcher.get(good, NOW) == f"ok {good}"
    assert (len(fetcher._cache), len(fetcher._failed)) == (1, 2)
    await fetcher.close()


def test_allowed_hosts() -> None:
    allowed = ("cert.example.org", ".sti.example")
    assert host_allowed("cert.example.org", allowed) and host_allowed("CERT.example.org.", allowed)
    assert host_allowed("a.b.sti.example", allowed)
    assert not host_allowed("sti.example", allowed) and not host_allowed("evil-sti.example", allowed)
    assert not host_allowed("x.cert.example.org", allowed) and not host_allowed("10.0.0.1", allowed)
    assert host_allowed("anything", None)
    fetcher = FakeFetcher(FetchSettings(allowed_hosts=allowed), [NOW])
    refused = fetcher.get("https://10.0.0.1/internal.pem", NOW)
    assert isinstance(refused, FetchError) and "not among the allowed hosts" in str(refused)
    assert fetcher.downloads == 0


def test_without_an_event_loop_a_miss_stays_pending() -> None:
    fetcher = FakeFetcher(FetchSettings(), [NOW])
    assert fetcher.get("https://a.example/sp.pem", NOW) is None
    assert not fetcher.pending("https://a.example/sp.pem")
    assert isinstance(fetcher.get("http://a.example/sp.pem", NOW), FetchError)  # refused at once, and cached


# ------------------------------------------------------------------------------------------- wiring


def test_stir_config_builds_the_check(tmp_path: Path) -> None:
    pki = StirPki(tmp_path)
    check = build_stir(StirConfig(trust_store=str(pki.trust_dir), fetch=True, fetch_ca_file=None, pending="reject",
                                  pending_wait_ms=250, fetch_cache_size=10, require_tn_auth_list=False,
                                  fetch_allowed_hosts=[".sti.example"]))
    assert check.store.fetcher is not None and check.store.fetcher.settings.cache_size == 10
    assert check.store.fetcher.settings.allowed_hosts == (".sti.example",)
    assert (check.pending, check.wait_s, check.store.require_tn_auth_list) == ("reject", 0.25, False)
    assert build_stir(StirConfig(trust_store=str(pki.trust_dir))).store.fetcher is None
    with pytest.raises(ValidationError, match="pending"):
        StirConfig(pending="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="fetch_min_ttl_s"):
        StirConfig(fetch_min_ttl_s=100, fetch_max_ttl_s=10)


async def test_gate_prepares_only_signed_calls() -> None:
    seen: list[Any] = []

    async def prepare(call: Any, now: float) -> None:
        seen.append((call.identity, now))

    gate = CallGate(Screener([lambda call, now, out: None]), prepare=prepare)
    routed = Routed(RoutingPlan(()))
    await gate.screen_shared(CallRequest("+18005550100", "+15551230000"), routed, NOW)
    assert seen == []
    signed = CallRequest("+18005550100", "+15551230000", (("Identity", "a.b.c;info=<https://x/y.pem>"),))
    await gate.screen_shared(signed, routed, NOW)
    assert seen == [("a.b.c;info=<https://x/y.pem>", NOW)]
