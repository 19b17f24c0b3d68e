"""STIR/SHAKEN with fetched certificates: the x5u certificate comes from a local HTTPS server (aiohttp over TLS,
its certificate from a TLS CA made in the test and trusted through ``FetchSettings.ca_file``); the signing
certificates come from a test STI-CA the store trusts.

Covered: fetched and verified; one request for several calls (sequential and concurrent); http: refused without a
request; a redirect to another host refused, one on the same host followed; oversized answers refused (announced
and chunked); an untrusted chain and a missing TNAuthList fail with their reason; a 404 is cached for the failure
period; a slow server delays neither another call's screening (measured) nor, beyond its budget, its own call
(the pending policy applies, and a later call verifies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dce.compliance.cert_fetch import FetchSettings
from dce.compliance.screen import ScreenedCall, Screener
from dce.compliance.stir_shaken import CertificateStore, StirCheck, StirResult, verify
from dce.compliance.verdict import Action, ReasonCode
from tests.stir_pki import Authority, Signer, StirPki
from tests.x5u_server import TlsPki, X5uServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CALLER = "+15551230000"
DID = "+18005550100"


@pytest.fixture
def tls(tmp_path: Path) -> TlsPki:
    return TlsPki.create(tmp_path / "tls")


@pytest.fixture
def pki(tmp_path: Path) -> StirPki:
    return StirPki(tmp_path / "sti")


@pytest.fixture
async def server(tls: TlsPki) -> AsyncIterator[X5uServer]:
    async with X5uServer(tls) as running:
        yield running


def make_store(pki: StirPki, tls: TlsPki, clock: Any = time.time, **settings: Any) -> CertificateStore:
    return CertificateStore.load(pki.trust_dir, None, clock=clock,
                                 fetch=FetchSettings(ca_file=str(tls.ca_file), **settings))


def publish(pki: StirPki, server: X5uServer, name: str, **issue: Any) -> Signer:
    """A signing certificate served (not on disk) at https://127.0.0.1:<port>/<name>.pem."""
    signer = pki.issue(name, write=False, x5u=server.url(f"/{name}.pem"), **issue)
    server.serve(f"/{name}.pem", signer.pem)
    return signer


async def fetched(store: CertificateStore, signer: Signer, *, wait_s: float = 5.0, now: float | None = None,
                  orig: str = CALLER) -> StirResult:
    """Verify a call signed by ``signer``, waiting for its certificate as a call would (``StirCheck.prepare``)."""
    now = time.time() if now is None else now
    header = signer.identity(orig, [DID], iat=now)
    await StirCheck(store, wait_s=wait_s).prepare(ScreenedCall(ani=orig, did=DID, identity=header), now)
    return verify(header, orig_tn=orig, dest_tns=[DID], store=store, now=now)


async def test_fetched_certificate_verifies_and_one_request_serves_many_calls(
        pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls)
    signer = publish(pki, server, "sp-a")
    assert (await fetched(store, signer)).verstat == "TN-Validation-Passed-A"
    assert (await fetched(store, signer)).passed
    assert server.requests["/sp-a.pem"] == 1
    assert store.fetcher is not None and store.fetcher.downloads == 1

    other = publish(pki, server, "sp-b")  # concurrent first calls share one fetch
    results = await asyncio.gather(*(fetched(store, other) for _ in range(5)))
    assert all(result.passed for result in results)
    assert server.requests["/sp-b.pem"] == 1
    await store.fetcher.close()


async def test_chain_with_an_intermediate_is_fetched_whole(pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls)
    signer = publish(pki, server, "via-int", intermediate=pki.intermediate("Fetched Intermediate"))
    assert signer.pem.count(b"BEGIN CERTIFICATE") == 2
    assert (await fetched(store, signer)).passed
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_plain_http_x5u_is_refused_without_a_request(pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls)
    signer = pki.issue("plain", write=False, x5u=server.url("/plain.pem").replace("https:", "http:"))
    server.serve("/plain.pem", signer.pem)
    result = await fetched(store, signer)
    assert (result.verstat, result.reason) == ("TN-Validation-Failed", ReasonCode.STIR_INVALID)
    assert "not an https: URL" in result.detail
    assert server.requests["/plain.pem"] == 0 and store.fetcher.downloads == 0  # type: ignore[union-attr]
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_redirect_to_another_host_is_refused_same_host_followed(
        pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls)
    signer = publish(pki, server, "target")
    away = pki.issue("away", write=False, x5u=server.redirect("/away.pem", server.url("/target.pem", "localhost")))
    result = await fetched(store, away)
    assert result.reason is ReasonCode.STIR_INVALID and "another host" in result.detail
    assert server.requests["/target.pem"] == 0

    moved = Signer(signer.key, signer.cert, server.redirect("/moved.pem", "/target.pem", status=301))
    assert (await fetched(store, moved)).passed
    assert server.requests["/target.pem"] == 1
    await store.fetcher.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_answer_is_refused(pki: StirPki, tls: TlsPki, server: X5uServer, chunked: bool) -> None:
    store = make_store(pki, tls, max_bytes=4096)
    signer = pki.issue("big", write=False, x5u=server.url("/big.pem"))
    server.serve("/big.pem", signer.pem + b"#" * 5000, chunked=chunked)
    result = await fetched(store, signer)
    assert result.reason is ReasonCode.STIR_INVALID and "4096 byte limit" in result.detail
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_untrusted_chain_fails_with_its_reason(pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls)
    rogue = publish(pki, server, "rogue", ca=Authority.create("Untrusted CA"))
    result = await fetched(store, rogue)
    assert (result.verstat, result.reason) == ("TN-Validation-Failed", ReasonCode.STIR_INVALID)
    assert "not issued by a trusted CA" in result.detail
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_missing_tn_auth_list_fails(pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls)
    bare = publish(pki, server, "bare", tn_auth=None)
    result = await fetched(store, bare)
    assert result.reason is ReasonCode.STIR_INVALID and "no TNAuthList" in result.detail
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_server_certificate_not_trusted_for_https(pki: StirPki, tls: TlsPki, server: X5uServer,
                                                        tmp_path: Path) -> None:
    other_tls = TlsPki.create(tmp_path / "other-tls")  # the client trusts another TLS CA
    store = make_store(pki, other_tls)
    signer = publish(pki, server, "sp")
    result = await fetched(store, signer)
    assert result.reason is ReasonCode.STIR_INVALID and "could not be fetched" in result.detail
    assert "certificate" in result.detail.lower()
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_failure_is_cached_for_the_failure_period(pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    now = [time.time()]
    store = make_store(pki, tls, clock=lambda: now[0], failure_ttl_s=30)
    signer = pki.issue("late", write=False, x5u=server.url("/late.pem"))  # not served yet: 404
    result = await fetched(store, signer, now=now[0])
    assert result.reason is ReasonCode.STIR_INVALID and "HTTP 404" in result.detail
    server.serve("/late.pem", signer.pem)
    now[0] += 10
    assert "HTTP 404" in (await fetched(store, signer, now=now[0])).detail  # still the cached failure
    assert server.requests["/late.pem"] == 1
    now[0] += 25
    assert (await fetched(store, signer, now=now[0])).passed
    assert server.requests["/late.pem"] == 2
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_cache_lifetime_follows_max_age_then_refreshes_in_the_background(
        pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    now = [time.time()]
    store = make_store(pki, tls, clock=lambda: now[0], min_ttl_s=1)
    signer = pki.issue("aged", write=False, x5u=server.url("/aged.pem"))
    server.serve("/aged.pem", signer.pem, headers={"Cache-Control": "public, max-age=120"})
    assert (await fetched(store, signer, now=now[0])).passed
    now[0] += 100
    assert (await fetched(store, signer, now=now[0])).passed
    assert server.requests["/aged.pem"] == 1
    now[0] += 30  # expired: still used, refreshed behind the call
    assert (await fetched(store, signer, now=now[0], wait_s=0)).passed
    for _ in range(100):
        if server.requests["/aged.pem"] == 2 and not store.fetcher.pending(signer.x5u):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    assert server.requests["/aged.pem"] == 2
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_timeout(pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    store = make_store(pki, tls, timeout_s=0.2)
    signer = pki.issue("stuck", write=False, x5u=server.url("/stuck.pem"))
    server.serve("/stuck.pem", signer.pem, delay_s=2)
    result = await fetched(store, signer)
    assert result.reason is ReasonCode.STIR_INVALID and "within 0.2 s" in result.detail
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_slow_server_delays_no_other_call_and_pending_policy_applies(
        pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    """Call 1's certificate takes 0.8 s to arrive; it waits up to 0.3 s then gets the pending policy. Call 2,
    whose certificate is cached, screens meanwhile in under 10 ms."""
    store = make_store(pki, tls)
    known = publish(pki, server, "known")
    assert (await fetched(store, known)).passed  # cached
    slow = pki.issue("slow", write=False, x5u=server.url("/slow.pem"))
    server.serve("/slow.pem", slow.pem, delay_s=0.8)

    check = StirCheck(store, wait_s=0.3, pending="reject")
    screener = Screener([check])

    async def screen(signer: Signer) -> tuple[Any, float]:
        now = time.time()
        call = ScreenedCall(ani=CALLER, did=DID, identity=signer.identity(CALLER, [DID], iat=now),
                            stir_on_unsigned="allow")
        start = time.perf_counter()
        await check.prepare(call, now)
        verdict = screener.screen(call, now)
        return verdict, time.perf_counter() - start

    first = asyncio.create_task(screen(slow))
    await asyncio.sleep(0.05)  # call 1 is waiting on the fetch
    assert store.fetcher is not None and store.fetcher.pending(slow.x5u)
    second, second_s = await screen(known)
    assert not first.done()
    assert second.verstat == "TN-Validation-Passed-A" and second.action is Action.ALLOW
    assert second_s < 0.010, f"a cached call took {second_s * 1000:.1f} ms while another waited"

    verdict, first_s = await first
    assert 0.25 < first_s < 0.7, first_s  # waited its budget, not the whole fetch
    assert (verdict.action, verdict.verstat, verdict.codes) == (Action.REJECT, "No-TN-Validation",
                                                                (ReasonCode.STIR_PENDING,))
    assert "being fetched" in verdict.reason

    for _ in range(200):  # the fetch completes in the background; the next call verifies
        if not store.fetcher.pending(slow.x5u):
            break
        await asyncio.sleep(0.01)
    later, _ = await screen(slow)
    assert later.verstat == "TN-Validation-Passed-A" and later.action is Action.ALLOW
    assert server.requests["/slow.pem"] == 1
    await store.fetcher.close()


@pytest.mark.parametrize(("pending", "action"), [("unsigned", Action.FLAG), ("failure", Action.REJECT),
                                                 ("allow", Action.ALLOW)])
async def test_pending_policy_follows_the_campaign(pki: StirPki, tls: TlsPki, server: X5uServer, pending: str,
                                                   action: Action) -> None:
    store = make_store(pki, tls)
    slow = pki.issue("slow", write=False, x5u=server.url("/slow.pem"))
    server.serve("/slow.pem", slow.pem, delay_s=0.5)
    check = StirCheck(store, wait_s=0, pending=pending)
    now = time.time()
    call = ScreenedCall(ani=CALLER, did=DID, identity=slow.identity(CALLER, [DID], iat=now),
                        stir_on_unsigned="flag", stir_on_failure="reject")
    await check.prepare(call, now)
    verdict = Screener([check]).screen(call, now)
    assert (verdict.action, verdict.verstat) == (action, "No-TN-Validation")
    await store.fetcher.close()  # type: ignore[union-attr]


async def test_disk_certificates_found_only_through_the_index_when_fetching(
        pki: StirPki, tls: TlsPki, server: X5uServer) -> None:
    """With fetching on, an x5u whose last path segment happens to name a local file is fetched, not matched."""
    local = pki.issue("cert")  # certs/cert.pem
    remote = publish(pki, server, "cert")  # another key, same file name at the server
    store = CertificateStore.load(pki.trust_dir, pki.cert_dir,
                                  fetch=FetchSettings(ca_file=str(tls.ca_file)))
    assert (await fetched(store, remote)).passed
    assert server.requests["/cert.pem"] == 1
    assert local.cert != remote.cert
    await store.fetcher.close()  # type: ignore[union-attr]
