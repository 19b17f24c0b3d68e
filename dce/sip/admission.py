"""Who may send us an INVITE (sans-IO): the source's trunk, its digest credentials and its call limits.

:meth:`Admission.admit` takes the request, where it came from and ``now`` (wall time for nonces, monotonic for
the limits) and answers :class:`Admit` (the trunk, or None for an allowed unknown source), :class:`Challenged`
(a 401 with one ``WWW-Authenticate`` per algorithm, SHA-256 first) or :class:`Refuse` (403 unknown source or bad
credentials, 503 over a trunk's CPS or concurrency limit, 400 unreadable credentials). It reads no clock and
opens no socket; the B2BUA calls it and answers through its transactions.

Trunks are found by the longest prefix among their networks (one dict per prefix length and family, so a lookup
costs one dict probe per distinct prefix length, however many trunks there are).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from dce.sip.digest import PREFERRED, Algorithm, Challenge, Credentials, NonceCounts, NonceSigner, verify
from dce.sip.message import Request
from dce.sip.trunk_rule import TrunkRule

UnknownSources = Literal["reject", "allow"]
Outcome = Literal["admitted", "challenged", "refused", "limited"]
UNKNOWN_TRUNK = "unknown"  # the metrics label of calls from sources no trunk matches (never the raw address)
QOP = ("auth",)


def _reason(cause: int, text: str) -> str:
    return f'SIP;cause={cause};text="{text}"'


@dataclass(frozen=True, slots=True)
class Admit:
    """Take the call; ``trunk`` is the matched trunk's name (None: an unknown source, allowed)."""

    trunk: str | None


@dataclass(frozen=True, slots=True)
class Challenged:
    """Answer 401 with these ``WWW-Authenticate`` headers; the caller retries with credentials."""

    trunk: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` with a Reason header (and e.g. Retry-After); ``outcome`` is refused or limited."""

    status: int
    reason: str  # human-readable, for the CDR
    headers: tuple[tuple[str, str], ...]
    trunk: str | None
    outcome: Outcome = "refused"


Decision = Admit | Challenged | Refuse


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """``unknown_sources``: what a source no trunk matches gets; ``realm``: for trunks that name none."""

    unknown_sources: UnknownSources = "reject"
    realm: str = "dce"
    retry_after_s: int = 5  # Retry-After of a 503 over a trunk's concurrency limit


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``max(1, rate)`` saved up."""

    __slots__ = ("at", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.tokens = max(1.0, rate)
        self.at = now

    def take(self, rate: float, now: float) -> float:
        """0 when a token was taken; else seconds until one is due."""
        capacity = max(1.0, rate)
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class _Index:
    """Longest-prefix match of an address to trunks: per family, prefix length -> network bits -> rules."""

    def __init__(self, rules: Iterable[TrunkRule]) -> None:
        self._tables: dict[int, list[tuple[int, dict[int, list[TrunkRule]]]]] = {4: [], 6: []}
        by_length: dict[tuple[int, int], dict[int, list[TrunkRule]]] = {}
        for rule in rules:
            for network in rule.networks:
                bits = network.max_prefixlen
                key = int(network.network_address) >> (bits - network.prefixlen)
                by_length.setdefault((network.version, network.prefixlen), {}).setdefault(key, []).append(rule)
        for (version, length), table in sorted(by_length.items(), key=lambda item: -item[0][1]):
            self._tables[version].append((length, table))

    def match(self, version: int, value: int, transport: str) -> TrunkRule | None:
        bits = 32 if version == 4 else 128
        for length, table in self._tables[version]:
            for rule in table.get(value >> (bits - length), ()):
                if rule.transport is None or rule.transport.lower() == transport:
                    return rule
        return None


_V4_MAPPED = bytes(10) + b"\xff\xff"


def parse_source(source: str) -> tuple[int, int] | None:
    """The source address as ``(version, integer)`` (an IPv4-mapped IPv6 one as IPv4); None when it is not one.

    ``inet_pton`` rather than ``ipaddress.ip_address``: this runs for every new INVITE, and is ten times cheaper.
    """
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, source), "big")
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, source.strip("[]").partition("%")[0])
    except OSError:
        return None
    if packed[:12] == _V4_MAPPED:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")


class Admission:
    """Decides, per new INVITE, whether its source may call; holds the per-trunk rate and concurrency counts.

    ``on_auth_failure(source, now_mono)`` hears every wrong username, wrong password or forged nonce (a flood/ban
    module counts them). ``on_outcome(trunk_label, outcome)`` hears every decision (metrics; the label is a
    trunk name or ``"unknown"``).

    Digest nonce counts are checked in this node's memory (:class:`NonceCounts`): a replayed request (an nc not
    above the last one accepted for its nonce) is challenged again with a fresh nonce (``stale=false``), so a
    captured INVITE cannot be sent again while a client that slipped gets a nonce to answer. A UDP retransmission
    of one INVITE never gets here: its server transaction absorbs it.
    """

    def __init__(self, rules: Iterable[TrunkRule], signer: NonceSigner, settings: AdmissionSettings | None = None,
                 *, on_auth_failure: Callable[[str, float], None] | None = None,
                 on_outcome: Callable[[str, Outcome], None] | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self.signer = signer
        self.nonce_counts = NonceCounts(signer.lifetime_s)
        self.on_auth_failure = on_auth_failure
        self.on_outcome = on_outcome
        self._rules: tuple[TrunkRule, ...] = ()
        self._index = _Index(())
        self._buckets: dict[str, _Bucket] = {}
        self._active: dict[str, int] = {}
        self.replace_rules(rules)

    # -- the table -------------------------------------------------------------------------------------
    @property
    def rules(self) -> tuple[TrunkRule, ...]:
        """The trunks in force."""
        return self._rules

    def replace_rules(self, rules: Iterable[TrunkRule]) -> None:
        """Swap in a new trunk table at once; the rate counts of trunks that remain are kept."""
        rules = tuple(rules)
        index = _Index(rules)
        names = {rule.name for rule in rules}
        self._rules, self._index = rules, index
        self._buckets = {name: bucket for name, bucket in self._buckets.items() if name in names}
        # _active keeps every trunk with calls up, even a removed one: its calls still release their slots

    def match(self, source: str, transport: str) -> TrunkRule | None:
        """The trunk ``source`` belongs to over ``transport`` (longest prefix), or None."""
        if not self._rules:
            return None
        address = parse_source(source)
        return self._index.match(*address, transport.lower()) if address is not None else None

    def active(self, trunk: str) -> int:
        """Calls up on ``trunk``."""
        return self._active.get(trunk, 0)

    # -- per INVITE ------------------------------------------------------------------------------------
    def admit(self, request: Request, source: str, transport: str, now_wall: float, now_mono: float) -> Decision:
        """The decision for a new INVITE from ``source`` (an IP address) over ``transport``.

        An :class:`Admit` for a trunk holds one of its concurrent-call slots until :meth:`release`.
        """
        decision = self._decide(request, source, transport, now_wall, now_mono)
        if self.on_outcome is not None:
            trunk = decision.trunk or UNKNOWN_TRUNK
            outcome: Outcome = ("admitted" if isinstance(decision, Admit)
                                else "challenged" if isinstance(decision, Challenged) else decision.outcome)
            self.on_outcome(trunk, outcome)
        return decision

    def release(self, trunk: str) -> None:
        """A call admitted on ``trunk`` has ended: give back its slot."""
        count = self._active.get(trunk)
        if count is None:
            return
        if count > 1:
            self._active[trunk] = count - 1
        else:
            del self._active[trunk]

    def _decide(self, request: Request, source: str, transport: str, now_wall: float, now_mono: float) -> Decision:
        rule = self.match(source, transport)
        if rule is None:
            if self.settings.unknown_sources == "allow":
                return Admit(None)
            return Refuse(403, "unknown source", (("Reason", _reason(403, "unknown source")),), None)
        if rule.username is not None and (rule.ha1_sha256 or rule.ha1_md5):
            checked = self._authenticate(rule, request, source, now_wall, now_mono)
            if checked is not None:
                return checked
        return self._limit(rule, now_mono)

    def _realm(self, rule: TrunkRule) -> str:
        return rule.realm or self.settings.realm

    def _challenge(self, rule: TrunkRule, source: str, now_wall: float, *, stale: bool = False) -> Challenged:
        nonce = self.signer.issue(source, now_wall)
        realm = self._realm(rule)
        offered = [a for a in PREFERRED if _ha1(rule, a) is not None]
        headers = tuple(("WWW-Authenticate", str(Challenge(realm, nonce, algorithm, QOP, stale=stale)))
                        for algorithm in offered)
        return Challenged(rule.name, headers)

    def _authenticate(self, rule: TrunkRule, request: Request, source: str, now_wall: float,
                      now_mono: float) -> Decision | None:
        """None when the request proves the trunk's password; else the challenge or the refusal."""
        realm = self._realm(rule)
        credentials: Credentials | None = None
        for value in request.get_all("Authorization"):
            try:
                parsed = Credentials.parse(value)
            except ValueError as exc:
                if not value.strip().lower().startswith("digest"):
                    continue  # another scheme: not for us
                return Refuse(400, f"bad Authorization header: {exc}",
                              (("Reason", _reason(400, "bad Authorization header")),), rule.name)
            if parsed.realm == realm:
                credentials = parsed
                break
        if credentials is None:
            return self._challenge(rule, source, now_wall)
        # credentials.uri is not compared with the Request-URI: UAs differ in what they put there (SIPp sends the
        # host alone); the digest covers the uri they sent, and the nonce binds the answer to this source and time.
        ha1_hex = _ha1(rule, credentials.algorithm)
        if ha1_hex is None:  # an algorithm this trunk has no HA1 for: offer the ones it has
            return self._challenge(rule, source, now_wall)
        nonce = self.signer.check(credentials.nonce, source, now_wall)
        if (nonce == "invalid" or credentials.username != rule.username
                or not verify(credentials, method=request.method, ha1_hex=ha1_hex)):
            if self.on_auth_failure is not None:
                self.on_auth_failure(source, now_mono)
            return Refuse(403, "bad credentials", (("Reason", _reason(403, "bad credentials")),), rule.name)
        if nonce == "stale":  # the right password on an old nonce: ask again without bothering the user
            return self._challenge(rule, source, now_wall, stale=True)
        if credentials.nc is not None and not self.nonce_counts.advance(credentials.nonce, int(credentials.nc, 16),
                                                                         now_wall):
            return self._challenge(rule, source, now_wall)  # a replay proves nothing: a fresh nonce to answer
        return None

    def _limit(self, rule: TrunkRule, now_mono: float) -> Decision:
        name = rule.name
        if rule.max_cps > 0:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(rule.max_cps, now_mono)
            wait = bucket.take(rule.max_cps, now_mono)
            if wait:
                return Refuse(503, "trunk call rate limit", (
                    ("Retry-After", str(max(1, math.ceil(wait)))),
                    ("Reason", _reason(503, "trunk call rate limit"))), name, "limited")
        active = self._active.get(name, 0)
        if rule.max_concurrent > 0 and active >= rule.max_concurrent:
            return Refuse(503, "trunk concurrent call limit", (
                ("Retry-After", str(self.settings.retry_after_s)),
                ("Reason", _reason(503, "trunk concurrent call limit"))), name, "limited")
        self._active[name] = active + 1
        return Admit(name)


def _ha1(rule: TrunkRule, algorithm: Algorithm) -> str | None:
    return rule.ha1_sha256 if algorithm == "SHA-256" else rule.ha1_md5
