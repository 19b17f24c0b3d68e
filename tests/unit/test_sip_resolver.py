"""RFC 3263 resolution (dce.sip.resolver) against a real DNS server on loopback (dnsmasq)."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time
from collections import Counter

import dns.asyncresolver
import pytest

from dce.sip.resolver import ResolveError, SipResolver, parse_nameserver, weighted_order
from tests.dns_server import Dnsmasq

HOSTS = [("a.buyer.test", "127.0.0.11"), ("b.buyer.test", "127.0.0.12"), ("c.buyer.test", "127.0.0.13"),
         ("plain.test", "127.0.0.20")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver_for(server: Dnsmasq, **kwargs: object) -> SipResolver:
    return SipResolver(nameservers=[server.nameserver], timeout_s=1.0, lifetime_s=2.0, ipv6=False,
                       **kwargs)  # type: ignore[arg-type]


def test_nameserver_text() -> None:
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("10.0.0.2") == ("10.0.0.2", 53)
    assert parse_nameserver("[::1]:5300") == ("::1", 5300)
    assert parse_nameserver("::1") == ("::1", 53)


def test_numeric_host_needs_no_dns() -> None:
    resolver = SipResolver(nameservers=["127.0.0.1:9"])
    assert resolver.cached("sip:bob@127.0.0.1:5070", 0) == [("udp", "127.0.0.1", 5070)]
    assert resolver.cached("sip:bob@127.0.0.1", 0) == [("udp", "127.0.0.1", 5060)]
    assert resolver.cached("sip:bob@127.0.0.1;transport=TCP", 0) == [("tcp", "127.0.0.1", 5060)]
    assert resolver.cached("sips:bob@127.0.0.1", 0) == [("tls", "127.0.0.1", 5061)]
    assert resolver.cached("sip:bob@[::1]:5080", 0) == [("udp", "::1", 5080)]
    assert resolver.cached("sip:bob@buyer.test", 0) is None  # a name: a lookup is needed
    assert resolver.lookups == 0


async def test_naptr_then_srv_by_priority_then_addresses() -> None:
    with Dnsmasq(naptr=[("buyer.test", 20, 10, "s", "SIP+D2T", "_sip._tcp.buyer.test"),
                        ("buyer.test", 10, 10, "s", "SIP+D2U", "_sip._udp.buyer.test"),
                        ("buyer.test", 5, 10, "u", "E2U+sip", "!^.*$!sip:x@y!")],
                 srv=[("_sip._udp.buyer.test", "b.buyer.test", 5072, 20, 10),
                      ("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 10),
                      ("_sip._tcp.buyer.test", "c.buyer.test", 5080, 10, 10)],
                 hosts=HOSTS) as server:
        hops = await resolver_for(server).resolve("sip:buyer@buyer.test")
    # NAPTR order 10 (udp) before 20 (tcp); inside udp, SRV priority 10 before 20; the E2U record is ignored
    assert hops == [("udp", "127.0.0.11", 5070), ("udp", "127.0.0.12", 5072), ("tcp", "127.0.0.13", 5080)]


async def test_sips_uses_only_secure_services() -> None:
    with Dnsmasq(naptr=[("buyer.test", 10, 10, "s", "SIP+D2U", "_sip._udp.buyer.test"),
                        ("buyer.test", 20, 10, "s", "SIPS+D2T", "_sips._tcp.buyer.test")],
                 srv=[("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 10),
                      ("_sips._tcp.buyer.test", "b.buyer.test", 5071, 10, 10)],
                 hosts=HOSTS) as server:
        resolver = resolver_for(server)
        assert await resolver.resolve("sips:buyer@buyer.test") == [("tls", "127.0.0.12", 5071)]
        assert await resolver.resolve("sip:buyer@buyer.test") == [("udp", "127.0.0.11", 5070),
                                                                   ("tls", "127.0.0.12", 5071)]


async def test_no_naptr_falls_back_to_srv_then_to_addresses() -> None:
    with Dnsmasq(srv=[("_sip._tcp.buyer.test", "c.buyer.test", 5080, 10, 10)], hosts=HOSTS) as server:
        resolver = resolver_for(server)
        assert await resolver.resolve("sip:buyer@buyer.test") == [("tcp", "127.0.0.13", 5080)]
        assert await resolver.resolve("sip:x@plain.test") == [("udp", "127.0.0.20", 5060)]
        assert await resolver.resolve("sips:x@plain.test") == [("tls", "127.0.0.20", 5061)]


async def test_explicit_port_skips_srv_and_transport_param_picks_the_srv() -> None:
    with Dnsmasq(srv=[("_sip._udp.a.buyer.test", "b.buyer.test", 5072, 10, 10),
                      ("_sip._tcp.a.buyer.test", "c.buyer.test", 5080, 10, 10)], hosts=HOSTS) as server:
        resolver = resolver_for(server)
        assert await resolver.resolve("sip:x@a.buyer.test:5999") == [("udp", "127.0.0.11", 5999)]
        assert await resolver.resolve("sip:x@a.buyer.test:5999;transport=tcp") == [("tcp", "127.0.0.11", 5999)]
        assert await resolver.resolve("sip:x@a.buyer.test;transport=tcp") == [("tcp", "127.0.0.13", 5080)]
        assert await resolver.resolve("sip:x@a.buyer.test") == [("udp", "127.0.0.12", 5072),
                                                                ("tcp", "127.0.0.13", 5080)]


async def test_srv_target_that_does_not_resolve_is_skipped() -> None:
    with Dnsmasq(srv=[("_sip._udp.buyer.test", "gone.buyer.test", 5070, 10, 10),
                      ("_sip._udp.buyer.test", "b.buyer.test", 5072, 20, 10)], hosts=HOSTS) as server:
        assert await resolver_for(server).resolve("sip:x@buyer.test") == [("udp", "127.0.0.12", 5072)]


async def test_unknown_name_is_a_clear_error_and_cached_negatively() -> None:
    clock = FakeClock()
    with Dnsmasq(hosts=HOSTS) as server:
        resolver = resolver_for(server, monotonic=clock, negative_ttl_s=10)
        with pytest.raises(ResolveError, match=r"no such domain nowhere\.test"):
            await resolver.resolve("sip:x@nowhere.test")
        lookups = resolver.lookups
        with pytest.raises(ResolveError, match="no such domain"):
            resolver.cached("sip:x@nowhere.test", clock.now + 5)
        clock.now += 11
        assert resolver.cached("sip:x@nowhere.test", clock.now) is None
        with pytest.raises(ResolveError):
            await resolver.resolve("sip:x@nowhere.test")
        assert resolver.lookups > lookups


async def test_cache_respects_ttl_and_is_bounded() -> None:
    clock = FakeClock()
    with Dnsmasq(srv=[("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 10)], hosts=HOSTS, ttl=20) as server:
        resolver = resolver_for(server, monotonic=clock, max_entries=2)
        uri = "sip:buyer@buyer.test"
        assert resolver.cached(uri, clock.now) is None
        hops = await resolver.resolve(uri)
        lookups = resolver.lookups
        assert resolver.cached("sip:someone-else@buyer.test", clock.now + 19) == hops  # keyed by host, not user
        assert await resolver.resolve(uri) == hops
        assert resolver.lookups == lookups  # answered from the cache
        clock.now += 21
        assert resolver.cached(uri, clock.now) is None  # the TTL ran out
        await resolver.resolve(uri)
        assert resolver.lookups > lookups
        for name in ("plain.test", "a.buyer.test", "b.buyer.test"):
            await resolver.resolve(f"sip:x@{name}")
        assert len(resolver) == 2  # least recently used dropped


async def test_concurrent_misses_share_one_lookup() -> None:
    with Dnsmasq(srv=[("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 10)], hosts=HOSTS) as server:
        resolver = resolver_for(server)
        results = await asyncio.gather(*(resolver.resolve("sip:x@buyer.test") for _ in range(20)))
        single = SipResolver(nameservers=[server.nameserver], ipv6=False)
        await single.resolve("sip:x@buyer.test")
    assert all(r == [("udp", "127.0.0.11", 5070)] for r in results)
    assert resolver.lookups == single.lookups


async def test_weights_spread_calls_inside_a_priority() -> None:
    with Dnsmasq(srv=[("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 90),
                      ("_sip._udp.buyer.test", "b.buyer.test", 5072, 10, 10),
                      ("_sip._udp.buyer.test", "c.buyer.test", 5080, 20, 10)], hosts=HOSTS) as server:
        resolver = resolver_for(server, rng=random.Random(7))
        await resolver.resolve("sip:x@buyer.test")
    firsts = Counter()
    for _ in range(2000):
        hops = resolver.cached("sip:x@buyer.test", time.monotonic())
        assert hops is not None and len(hops) == 3
        assert hops[2] == ("udp", "127.0.0.13", 5080)  # the lower priority always last
        firsts[hops[0][1]] += 1
    assert 1650 < firsts["127.0.0.11"] < 1950  # ~90 %


def test_weighted_order_zero_weights() -> None:
    rng = random.Random(1)
    records = [(0, (("udp", "1.1.1.1", 1),)), (0, (("udp", "2.2.2.2", 1),))]
    seen = {weighted_order(records, rng)[0][1] for _ in range(50)}
    assert seen == {"1.1.1.1", "2.2.2.2"}  # all zero: still every order possible


async def test_a_silent_server_times_out_without_blocking_the_loop() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        port = blackhole.getsockname()[1]
        resolver = SipResolver(nameservers=[f"127.0.0.1:{port}"], timeout_s=0.3, lifetime_s=0.6)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        with pytest.raises(ResolveError, match=r"timeout|servers failed"):
            await resolver.resolve("sip:x@slow.test")
        elapsed = time.perf_counter() - started
        task.cancel()
    assert 0.25 < elapsed < 2.0
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 15 and max(gaps) < 0.1  # the loop kept running while the lookup waited


def test_bad_transport_param_is_an_error() -> None:
    with pytest.raises(ResolveError, match="transport"):
        SipResolver(nameservers=["127.0.0.1:9"]).cached("sip:x@buyer.test;transport=sctp", 0)


async def test_aaaa_addresses_follow_the_a_ones() -> None:
    with Dnsmasq(srv=[("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 10)],
                 hosts=[("a.buyer.test", "127.0.0.11"), ("a.buyer.test", "::1")]) as server:
        hops = await SipResolver(nameservers=[server.nameserver]).resolve("sip:x@buyer.test")
    assert hops == [("udp", "127.0.0.11", 5070), ("udp", "::1", 5070)]


async def test_no_servers_at_all_is_a_clear_error() -> None:
    resolver = SipResolver(resolver=dns.asyncresolver.Resolver(configure=False), lifetime_s=0.5)
    with pytest.raises(ResolveError, match="DNS"):
        await resolver.resolve("sip:x@buyer.test")


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_lookup_for_others() -> None:
    with Dnsmasq(srv=[("_sip._udp.buyer.test", "a.buyer.test", 5070, 10, 10)], hosts=HOSTS) as server:
        resolver = resolver_for(server)
        first = asyncio.create_task(resolver.resolve("sip:x@buyer.test"))
        second = asyncio.create_task(resolver.resolve("sip:y@buyer.test"))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == [("udp", "127.0.0.11", 5070)]
        with pytest.raises(asyncio.CancelledError):
            await first
        assert resolver.cached("sip:z@buyer.test", time.monotonic()) == [("udp", "127.0.0.11", 5070)]
