"""Locating SIP servers (RFC 3263 §4): a SIP URI -> the ordered next hops ``(transport, ip, port)`` to try.

    numeric host                     -> that address (transport from ``transport=``, else udp; tls for sips:)
    name with an explicit port       -> A/AAAA of the name, that port (§4.2: no SRV)
    name with ``transport=``          -> SRV of that transport, else A/AAAA with the default port
    name alone                       -> NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T) -> SRV -> A/AAAA; no NAPTR: SRV of each
                                        transport; no SRV: A/AAAA, udp (tls for sips:)

SRV records are ordered by priority, and within a priority by RFC 2782's weighted random selection (redrawn on
every lookup, so a buyer's weights spread the calls). Lookups go through dnspython's asyncio resolver; answers
are cached by TTL in a bounded LRU, with a synchronous :meth:`SipResolver.cached` for the hot path (a hit costs a
dict lookup) and :meth:`SipResolver.resolve` for misses, which never block the loop; concurrent misses for the
same name share one lookup. Failures (no such name, no records, the servers not answering) raise
:class:`ResolveError` with a readable reason and are cached for ``negative_ttl_s``.

``tls`` next hops (sips:, ``_sips._tcp``, ``SIPS+D2T``) are returned as such: dialling them over TLS is the
transport's business.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from dce.sip.endpoint import is_ip_literal
from dce.sip.message import uri_hostport

log = logging.getLogger(__name__)

NextHop = tuple[str, str, int]  # (transport: udp | tcp | tls, IP address, port)

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
MAX_HOPS_PER_TARGET = 4  # failover stops here: each hop may take up to timer B, and the call's life is bounded


class ResolveError(Exception):
    """The URI's host cannot be turned into any next hop; ``str()`` says why (for the CDR's reason)."""


@dataclass(frozen=True, slots=True)
class _SrvGroup:
    """The SRV records of one priority: each record's weight and the next hops its target resolved to."""

    records: tuple[tuple[int, tuple[NextHop, ...]], ...]


@dataclass(slots=True)
class _Entry:
    expires: float
    fixed: tuple[NextHop, ...] | None  # the answer when no weighted choice is left to draw
    groups: tuple[_SrvGroup, ...]
    error: str | None = None


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"``, ``"::1"`` or ``"10.0.0.2"`` -> (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, 53


def weighted_order(records: Sequence[tuple[int, tuple[NextHop, ...]]], rng: random.Random) -> list[NextHop]:
    """RFC 2782: repeatedly pick a record with probability weight/sum of those left (zero weights last, unless
    all left are zero: then an equal chance each); the picked records' hops in that order."""
    pool = list(records)
    total = sum(weight for weight, _ in pool)
    draw_uniform = rng.random
    hops: list[NextHop] = []
    while len(pool) > 1:
        index = len(pool) - 1
        if total == 0:
            index = int(draw_uniform() * len(pool))
        else:
            draw, running = draw_uniform() * total, 0
            for position, (weight, _) in enumerate(pool):
                running += weight
                if running > draw:
                    index = position
                    break
        weight, picked = pool.pop(index)
        hops.extend(picked)
        total -= weight
    if pool:
        hops.extend(pool[0][1])
    return hops


class SipResolver:
    """RFC 3263 next hops for SIP URIs, cached by TTL. ``monotonic`` is the clock the cache's expiries read."""

    def __init__(self, *, nameservers: Iterable[str] = (), timeout_s: float = 2.0, lifetime_s: float = 4.0,
                 max_entries: int = 10_000, max_ttl_s: float = 3600.0, negative_ttl_s: float = 30.0,
                 ipv6: bool = True, monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, resolver: dns.asyncresolver.Resolver | None = None) -> None:
        servers = [parse_nameserver(item) for item in nameservers]
        if resolver is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=not servers)
            except dns.resolver.NoResolverConfiguration:  # no usable resolv.conf: every name fails, clearly
                log.warning("no DNS servers: /etc/resolv.conf is unusable and sip.dns.nameservers is empty")
                resolver = dns.asyncresolver.Resolver(configure=False)
            if servers:
                resolver.nameservers = [host for host, _ in servers]
                resolver.nameserver_ports = {host: port for host, port in servers}
        resolver.timeout = timeout_s
        resolver.lifetime = lifetime_s
        self._dns = resolver
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.ipv6 = ipv6
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self._cache: OrderedDict[tuple[str, str, int | None, str | None], _Entry] = OrderedDict()
        # URI text -> its cache key, or the next hop itself for a numeric host (parsing is most of a hit's cost)
        self._parsed: dict[str, tuple[str, str, int | None, str | None] | NextHop] = {}
        self._inflight: dict[tuple[str, str, int | None, str | None], asyncio.Task[_Entry]] = {}
        self.lookups = 0  # DNS queries sent (for tests and the bench)

    # -- the hot path ----------------------------------------------------------------------------------
    def cached(self, uri: str, now: float) -> list[NextHop] | None:
        """The next hops for ``uri`` without waiting: a numeric host at once, a name from the cache; None when a
        lookup is needed. Raises :class:`ResolveError` for a name whose failure is cached."""
        key = self._parsed.get(uri)
        if key is None:
            key = self._parse(uri)
        if len(key) == 3:  # a numeric host: the next hop itself
            return [key]  # type: ignore[list-item]
        entry = self._cache.get(key)  # type: ignore[arg-type]
        if entry is None:
            return None
        if entry.expires <= now:
            del self._cache[key]  # type: ignore[arg-type]
            return None
        self._cache.move_to_end(key)  # type: ignore[arg-type]
        if entry.error is not None:
            raise ResolveError(entry.error)
        if entry.fixed is not None:
            return list(entry.fixed)
        return self._order(entry.groups)

    async def resolve(self, uri: str) -> list[NextHop]:
        """The next hops for ``uri``, looking names up when the cache has none (raises :class:`ResolveError`)."""
        hops = self.cached(uri, self.monotonic())
        if hops is not None:
            return hops
        key = _key(uri)
        lookup = self._inflight.get(key)
        if lookup is None:  # one lookup per name, its own task: a caller that goes away does not cancel it
            lookup = asyncio.get_running_loop().create_task(self._lookup_and_store(key))
            self._inflight[key] = lookup
        entry = await asyncio.shield(lookup)
        if entry.error is not None:
            raise ResolveError(entry.error)
        return list(entry.fixed) if entry.fixed is not None else self._order(entry.groups)

    async def _lookup_and_store(self, key: tuple[str, str, int | None, str | None]) -> _Entry:
        try:
            entry = await self._lookup(key)
        finally:
            self._inflight.pop(key, None)
        self._store(key, entry)
        return entry

    def _parse(self, uri: str) -> tuple[str, str, int | None, str | None] | NextHop:
        """``uri``'s cache key, or its one next hop when the host is numeric; remembered (bounded)."""
        key = _key(uri)
        scheme, host, port, transport = key
        parsed: tuple[str, str, int | None, str | None] | NextHop = key
        if is_ip_literal(host.strip("[]")):
            kind = transport or ("tls" if scheme == "sips" else "udp")
            parsed = (kind, host.strip("[]"), port or DEFAULT_PORTS.get(kind, 5060))
        if len(self._parsed) >= self.max_entries * 4:
            self._parsed.clear()
        self._parsed[uri] = parsed
        return parsed

    def clear(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    # -- lookups ---------------------------------------------------------------------------------------
    async def _lookup(self, key: tuple[str, str, int | None, str | None]) -> _Entry:
        scheme, host, port, transport = key
        name = host.rstrip(".")
        secure = scheme == "sips"
        ttl = [self.max_ttl_s]
        try:
            if port is not None:  # §4.2: an explicit port means no SRV
                kind = transport or ("tls" if secure else "udp")
                hops = tuple(await self._addresses(name, kind, port, ttl))
                return self._entry(_fixed(hops), (), ttl, f"no address for {name}" if not hops else None)
            if transport is not None:
                groups = await self._srv(SRV_PREFIX[transport] + name, transport, ttl)
            else:
                groups = await self._naptr(name, secure, ttl)
                if not groups:
                    kinds = ("tls",) if secure else ("udp", "tcp")
                    for kind in kinds:  # udp before tcp when both have SRV records (the NAPTR-less default)
                        groups += await self._srv(SRV_PREFIX[kind] + name, kind, ttl)
            if groups:
                return self._entry(_fixed_groups(groups), groups, ttl, None)
            kind = transport or ("tls" if secure else "udp")
            hops = tuple(await self._addresses(name, kind, DEFAULT_PORTS[kind], ttl))
            return self._entry(_fixed(hops), (), ttl, f"no address for {name}" if not hops else None)
        except dns.resolver.NXDOMAIN:
            return self._entry(None, (), [self.negative_ttl_s], f"DNS: no such domain {name}")
        except dns.exception.Timeout:
            return self._entry(None, (), [min(self.negative_ttl_s, 5.0)], f"DNS: no answer for {name} (timeout)")
        except dns.resolver.NoNameservers:
            return self._entry(None, (), [min(self.negative_ttl_s, 5.0)], f"DNS: servers failed for {name}")
        except dns.exception.DNSException as exc:
            return self._entry(None, (), [min(self.negative_ttl_s, 5.0)], f"DNS: {type(exc).__name__} for {name}")

    def _entry(self, fixed: tuple[NextHop, ...] | None, groups: tuple[_SrvGroup, ...], ttl: list[float],
               error: str | None) -> _Entry:
        if error is not None:
            ttl = [min(min(ttl), self.negative_ttl_s)]
        return _Entry(self.monotonic() + max(0.0, min(ttl)), fixed, groups, error)

    def _store(self, key: tuple[str, str, int | None, str | None], entry: _Entry) -> None:
        if entry.expires <= self.monotonic():
            return  # TTL 0: not cached
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _query(self, name: str, rdtype: str, ttl: list[float]) -> list[object]:
        """One query's records (empty for NODATA); NXDOMAIN and server failures raise."""
        self.lookups += 1
        try:
            answer = await self._dns.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return []
        if answer.rrset is not None:
            ttl.append(answer.rrset.ttl)
        return list(answer)

    async def _naptr(self, name: str, secure: bool, ttl: list[float]) -> tuple[_SrvGroup, ...]:
        """NAPTR -> the SRV groups of the services we speak, in NAPTR order then preference."""
        try:
            records = await self._query(name, "NAPTR", ttl)
        except dns.resolver.NXDOMAIN:
            raise
        except dns.exception.DNSException:
            return ()  # a server refusing NAPTR: fall back to SRV (§4.1)
        chosen = []
        for record in records:
            service = record.service.decode().upper()  # type: ignore[attr-defined]
            kind = NAPTR_SERVICES.get(service)
            if kind is None or (secure and kind != "tls"):
                continue
            if record.flags.decode().lower() != "s":  # type: ignore[attr-defined]
                continue  # only "s" (SRV follows) is defined for SIP
            chosen.append((record.order, record.preference, kind,  # type: ignore[attr-defined]
                           record.replacement.to_text(omit_final_dot=True)))  # type: ignore[attr-defined]
        groups: tuple[_SrvGroup, ...] = ()
        for _, _, kind, replacement in sorted(chosen, key=lambda item: (item[0], item[1])):
            groups += await self._srv(replacement, kind, ttl)
        return groups

    async def _srv(self, name: str, kind: str, ttl: list[float]) -> tuple[_SrvGroup, ...]:
        """SRV records of ``name`` -> groups by priority, each record's target resolved to addresses."""
        try:
            records = await self._query(name, "SRV", ttl)
        except dns.resolver.NXDOMAIN:
            return ()
        live = [r for r in records if r.target.to_text() != "."]  # type: ignore[attr-defined]
        targets = await asyncio.gather(*(
            self._addresses(r.target.to_text(omit_final_dot=True), kind, r.port, ttl)  # type: ignore[attr-defined]
            for r in live), return_exceptions=True)
        by_priority: dict[int, list[tuple[int, tuple[NextHop, ...]]]] = {}
        for record, hops in zip(live, targets, strict=True):
            if isinstance(hops, BaseException):
                if not isinstance(hops, dns.exception.DNSException):
                    raise hops
                continue  # one target that does not resolve: the others still serve
            if hops:
                by_priority.setdefault(record.priority, []).append(  # type: ignore[attr-defined]
                    (record.weight, tuple(hops)))  # type: ignore[attr-defined]
        return tuple(_SrvGroup(tuple(by_priority[p])) for p in sorted(by_priority))

    async def _addresses(self, name: str, kind: str, port: int, ttl: list[float]) -> list[NextHop]:
        """A (then AAAA) records of ``name`` as next hops; a name that is an address stands for itself."""
        if is_ip_literal(name):
            return [(kind, name, port)]
        queries = [self._query(name, "A", ttl)]
        if self.ipv6:
            queries.append(self._query(name, "AAAA", ttl))
        answers = await asyncio.gather(*queries, return_exceptions=True)
        hops: list[NextHop] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, dns.exception.DNSException):
                    raise answer
                continue
            hops.extend((kind, record.address, port) for record in answer)  # type: ignore[attr-defined]
        if not hops and all(isinstance(a, dns.resolver.NXDOMAIN) for a in answers):
            raise dns.resolver.NXDOMAIN
        if not hops and answers and all(isinstance(a, dns.exception.Timeout) for a in answers):
            raise dns.exception.Timeout
        return hops

    def _order(self, groups: tuple[_SrvGroup, ...]) -> list[NextHop]:
        hops: list[NextHop] = []
        for group in groups:
            if len(group.records) == 1:
                hops.extend(group.records[0][1])
            else:
                hops.extend(weighted_order(group.records, self.rng))
        return hops


def _key(uri: str) -> tuple[str, str, int | None, str | None]:
    """(scheme, host, port, transport) of a sip:/sips: URI: what its next hops depend on."""
    scheme = uri[:5].lower()
    scheme = "sips" if scheme == "sips:" else "sip"
    host, port, params = uri_hostport(uri)
    transport = params.get("transport")
    if transport is not None:
        transport = transport.lower()
        if transport not in DEFAULT_PORTS:
            raise ResolveError(f"unsupported transport={transport}")
    if scheme == "sips" and transport in (None, "tcp"):
        transport = "tls" if transport == "tcp" else None
    if not host:
        raise ResolveError(f"no host in {uri!r}")
    return scheme, host.lower(), port, transport


def _fixed(hops: tuple[NextHop, ...]) -> tuple[NextHop, ...] | None:
    return hops if hops else None


def _fixed_groups(groups: tuple[_SrvGroup, ...]) -> tuple[NextHop, ...] | None:
    """The whole answer when no group has a weighted choice to draw (the common single-record case)."""
    if all(len(group.records) == 1 for group in groups):
        return tuple(hop for group in groups for hop in group.records[0][1])
    return None
