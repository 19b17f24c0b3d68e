"""Per-source flood limits and bans, in the style of Kamailio's pike module (pure: ``now`` is always given).

Each source IP's requests are counted in a window (``window_s``, 2 s by default); a source that sends more than
``requests_per_window`` in one window is banned for ``ban_s``. Other offences (a scanner's signature, a wrong
digest password) are ``strike``\\ s: ``strikes_to_ban`` of them within ``strike_window_s`` ban the source too.
Trusted networks are counted but never banned, and so are the peers we dial (:meth:`FloodGuard.trust_peer`: a busy
buyer's responses, BYEs and re-INVITEs come from the address we sent its INVITEs to). While banned, everything from
the source is dropped unread.
A source is an IPv4 address, or an IPv6 /64 (one host holds a whole /64: counting its addresses one by one would
let it rotate through them).

Memory is bounded: at most ``max_sources`` windows, strike records, bans and dialled peers each, the oldest
evicted first.
Nothing is swept by a timer: windows reset when their source is next seen, and expired bans and strikes are
pruned from the front of their (time-ordered) tables as requests arrive, at a constant cost per request.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from dce.sip.scanners import is_scanner

log = logging.getLogger(__name__)

BAN_REASONS = frozenset({"flood", "scanner", "strikes"})  # why a source was banned (a metrics label)
DROP_BANNED = "flood_banned"  # drop reasons (``dce_sip_dropped_total``)
DROP_SCANNER = "scanner"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FloodGuard:
    """Counts requests per source and bans the sources over the limit or with too many strikes."""

    def __init__(self, *, requests_per_window: int = 200, window_s: float = 2.0, ban_s: float = 300.0,
                 strikes_to_ban: int = 5, strike_window_s: float = 600.0, max_sources: int = 65536,
                 trusted: Iterable[str] = ()) -> None:
        if requests_per_window < 1 or strikes_to_ban < 1 or max_sources < 1:
            raise ValueError("requests_per_window, strikes_to_ban and max_sources must be >= 1")
        if window_s <= 0 or ban_s <= 0 or strike_window_s <= 0:
            raise ValueError("window_s, ban_s and strike_window_s must be > 0")
        self.requests_per_window = requests_per_window
        self.window_s = window_s
        self.ban_s = ban_s
        self.strikes_to_ban = strikes_to_ban
        self.strike_window_s = strike_window_s
        self.max_sources = max_sources
        self._configured: tuple[Network, ...] = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)
        self.trusted: tuple[Network, ...] = self._configured
        # Insertion-ordered tables: a window or ban is re-inserted when it restarts, so the first entry is always
        # the oldest (the next to expire, the first to evict).
        self._windows: dict[str, list[float]] = {}  # source -> [window start, requests in it]
        self._strikes: dict[str, list[float]] = {}  # source -> [first strike, strikes since]
        self._bans: dict[str, float] = {}  # source -> banned until
        self._peers: dict[str, None] = {}  # sources we dial (least recently dialled first)
        self.bans_total: dict[str, int] = dict.fromkeys(BAN_REASONS, 0)

    # -- the edge's one call per message ----------------------------------------------------------------
    def screen(self, data: bytes, source: str, now: float) -> str | None:
        """Why ``data`` from ``source`` must be dropped unread (a drop reason), or None to let it through.

        Requests are counted; responses only meet the ban (they answer requests we chose to send).
        """
        key = source if ":" not in source else source_key(source)
        bans = self._bans
        if bans:
            self._expire_bans(now)
            if key in bans:
                return DROP_BANNED
        if data[:4] == b"SIP/":
            return None
        if is_scanner(data):
            self.ban(source, now, "scanner")
            return DROP_SCANNER
        if not self._count(key, source, now):
            return DROP_BANNED if key in bans else None
        return None

    def _count(self, key: str, source: str, now: float) -> bool:
        """Count one request; False when it took the source over the limit (banned unless trusted)."""
        windows = self._windows
        window = windows.get(key)
        if window is None or now - window[0] >= self.window_s:
            if window is not None:
                del windows[key]  # re-inserted last: the table stays ordered by window start
            elif len(windows) >= self.max_sources:
                self._evict(windows, now, self.window_s, self.max_sources)
            windows[key] = [now, 1.0]
            return True
        window[1] += 1
        if window[1] <= self.requests_per_window:
            return True
        del windows[key]
        self.ban(source, now, "flood")
        return False

    # -- other offences -------------------------------------------------------------------------------------
    def strike(self, source: str, now: float, *, reason: str = "strikes") -> bool:
        """One offence by ``source`` (e.g. a wrong digest password); True when it got the source banned.

        Its positional signature is ``on_auth_failure(source, now)``'s.
        """
        key = source_key(source)
        strikes = self._strikes
        if strikes:
            self._expire(strikes, now, self.strike_window_s)
        record = strikes.get(key)
        if record is None:
            if len(strikes) >= self.max_sources:
                self._evict(strikes, now, self.strike_window_s, self.max_sources)
            strikes[key] = record = [now, 0.0]
        record[1] += 1
        if record[1] < self.strikes_to_ban:
            return False
        del strikes[key]
        return self.ban(source, now, reason)

    def ban(self, source: str, now: float, reason: str) -> bool:
        """Ban ``source`` for ``ban_s`` (one WARNING); False, banning nothing, when it is trusted."""
        if self.is_trusted(source):
            return False
        key = source_key(source)
        bans = self._bans
        if key in bans:
            del bans[key]
        elif len(bans) >= self.max_sources:
            del bans[next(iter(bans))]  # the ban closest to its end
        bans[key] = now + self.ban_s
        self.bans_total[reason if reason in BAN_REASONS else "strikes"] += 1
        log.warning("SIP source %s banned for %g s: %s", key, self.ban_s, reason)
        return True

    # -- reading ---------------------------------------------------------------------------------------
    def is_banned(self, source: str, now: float) -> bool:
        """Whether ``source`` is banned at ``now`` (e.g. a TCP connection being accepted)."""
        until = self._bans.get(source_key(source))
        return until is not None and now < until

    def trust_peer(self, address: str) -> None:
        """Trust ``address`` (an IPv6 one as its /64), a destination we are sending an INVITE to: a buyer's
        in-dialog requests must not get it banned. Its ban, if any, is lifted (its answers would be dropped).
        The ``max_sources`` most recently dialled are kept."""
        key = source_key(address)
        peers = self._peers
        if key in peers:
            del peers[key]  # re-inserted last: the least recently dialled stays first
        else:
            self._bans.pop(key, None)
            if len(peers) >= self.max_sources:
                del peers[next(iter(peers))]
        peers[key] = None

    def trust_also(self, networks: Iterable[Network]) -> None:
        """Trust ``networks`` besides the configured ones (replacing the last call's: the trunks in force)."""
        self.trusted = self._configured + tuple(networks)

    def is_trusted(self, source: str) -> bool:
        """Whether ``source`` is in a trusted network or a peer we dialled (never banned)."""
        if self._peers and source_key(source) in self._peers:
            return True
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(source.partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    @property
    def banned(self) -> int:
        """Sources banned (as of the last message seen: expired bans are pruned as messages arrive)."""
        return len(self._bans)

    @property
    def tracked(self) -> int:
        """Entries held in all (windows, strike records, bans, dialled peers): at most 4 x ``max_sources``."""
        return len(self._windows) + len(self._strikes) + len(self._bans) + len(self._peers)

    # -- upkeep ----------------------------------------------------------------------------------------
    def _expire_bans(self, now: float) -> None:
        bans = self._bans
        while bans:
            source = next(iter(bans))
            if bans[source] > now:
                return
            del bans[source]

    @staticmethod
    def _expire(table: dict[str, list[float]], now: float, lifetime: float) -> None:
        while table:
            source = next(iter(table))
            if now - table[source][0] < lifetime:
                return
            del table[source]

    @staticmethod
    def _evict(table: dict[str, list[float]], now: float, lifetime: float, cap: int) -> None:
        """Make room for one entry: drop the expired ones at the front, then the oldest if still full."""
        FloodGuard._expire(table, now, lifetime)
        if len(table) >= cap:
            del table[next(iter(table))]


def source_key(source: str) -> str:
    """What a source is counted and banned as: an IPv4 address as is, an IPv6 address as its /64."""
    if ":" not in source:
        return source
    try:
        return str(ipaddress.IPv6Network((source.partition("%")[0], 64), strict=False))
    except ValueError:
        return source
