"""RFC 4028 session timers, pure: header values in, terms and deadlines out (no clock, no messages sent).

A dialog's session is refreshed by a re-INVITE or UPDATE every ``interval`` seconds by one side, the refresher.
The refresher sends its refresh at half the interval; the other side, hearing none, ends the session a little
before the interval is up: ``min(32, interval / 3)`` seconds early (§10). The B2BUA keeps one
:class:`SessionTimer` per leg and asks it for the next deadline and what is due then.

- :func:`negotiate_uas`: our answer to a request that may carry ``Session-Expires``/``Min-SE``/``Supported: timer``
  (the carrier's INVITE, or any refresh): the terms for our 2xx, or :class:`TooSmall` (answer 422 with Min-SE).
- :func:`uac_terms`: what the peer's 2xx to our request says (no ``Session-Expires``: we keep refreshing).
- :func:`retry_after_422`: the Min-SE to retry with after a 422 (once), or None to give up.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

RFC_MIN_SE = 90  # §4: the smallest Min-SE a UA may require on the wire (config may go lower, for tests only)
BYE_MARGIN_MAX_S = 32.0  # §10: the non-refresher ends the session min(32, interval/3) before it expires


class Role(enum.StrEnum):
    """Who refreshes, in the terms of the request that set it: the UAC or the UAS of that transaction."""

    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A ``Session-Expires`` value: the interval in seconds and the optional ``refresher`` parameter."""

    interval: int
    refresher: Role | None = None

    def __str__(self) -> str:
        return f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)


@dataclass(frozen=True, slots=True)
class TimerPolicy:
    """Our side's wishes: the interval we offer and the smallest we accept (``sip.session_expires_s``,
    ``sip.min_se_s``)."""

    session_expires_s: int = 1800
    min_se_s: int = RFC_MIN_SE

    def __post_init__(self) -> None:
        if not 0 < self.min_se_s <= self.session_expires_s:
            raise ValueError(f"need 0 < min_se_s <= session_expires_s, got {self.min_se_s}, "
                             f"{self.session_expires_s}")


@dataclass(frozen=True, slots=True)
class TooSmall:
    """The request's interval is below our minimum: answer 422 with this ``Min-SE``."""

    min_se: int


@dataclass(frozen=True, slots=True)
class UasTerms:
    """What our 2xx says: ``Session-Expires`` (refresher always set), and whether to add ``Require: timer``
    (only when the peer supports the extension)."""

    session_expires: SessionExpires
    require_timer: bool

    @property
    def we_refresh(self) -> bool:
        """We are the UAS of this transaction: we refresh when the refresher is ``uas``."""
        return self.session_expires.refresher is Role.UAS

    def headers(self) -> list[tuple[str, str]]:
        """Header lines for the 2xx."""
        lines = [("Session-Expires", str(self.session_expires))]
        if self.require_timer:
            lines.append(("Require", "timer"))
        return lines


def parse_session_expires(value: str | None) -> SessionExpires | None:
    """``delta-seconds *(;param)``; None when absent. Raises ValueError when malformed."""
    if value is None:
        return None
    head, *params = value.split(";")
    head = head.strip()
    if not (head.isascii() and head.isdigit()) or len(head) > 10 or int(head) <= 0:
        raise ValueError(f"bad Session-Expires {value[:40]!r}")
    refresher: Role | None = None
    for param in params:
        name, _, text = param.partition("=")
        if name.strip().lower() == "refresher":
            try:
                refresher = Role(text.strip().lower())
            except ValueError:
                raise ValueError(f"bad refresher in Session-Expires {value[:40]!r}") from None
    return SessionExpires(int(head), refresher)


def parse_min_se(value: str | None) -> int | None:
    """``Min-SE: delta-seconds *(;param)``; None when absent. Raises ValueError when malformed."""
    if value is None:
        return None
    head = value.split(";")[0].strip()
    if not (head.isascii() and head.isdigit()) or len(head) > 10:
        raise ValueError(f"bad Min-SE {value[:40]!r}")
    return int(head)


def supports_timer(options: Iterable[str]) -> bool:
    """Whether a ``Supported``/``Require`` option list names ``timer``."""
    return any(option.strip().lower() == "timer" for option in options)


def negotiate_uas(session_expires: str | None, min_se: str | None, peer_supports: bool, policy: TimerPolicy,
                  *, peer_refreshed: bool = True) -> UasTerms | TooSmall:
    """Our terms as UAS of a request (§9). Raises ValueError on a malformed header (answer 400).

    - Its ``Session-Expires`` below our minimum: :class:`TooSmall` (422 with our Min-SE, or theirs if larger).
    - Otherwise the interval is theirs, lowered to our ``session_expires_s`` but never below either Min-SE.
    - No ``Session-Expires``: our ``session_expires_s`` (raised to their Min-SE).
    - The refresher is the one they named; unnamed, the peer refreshes when it supports the extension and
      ``peer_refreshed`` (it did so far: the default for a new session), else we do. A peer that does not
      support the extension is never made the refresher: we refresh it ourselves, so its session still ends
      when it vanishes.
    """
    offered = parse_session_expires(session_expires)
    floor = max(policy.min_se_s, parse_min_se(min_se) or 0)
    if offered is not None and offered.interval < policy.min_se_s:
        return TooSmall(floor)
    interval = min(offered.interval, policy.session_expires_s) if offered else policy.session_expires_s
    interval = max(interval, floor)
    refresher = offered.refresher if offered is not None else None
    if not peer_supports:
        refresher = Role.UAS
    elif refresher is None:
        refresher = Role.UAC if peer_refreshed else Role.UAS
    return UasTerms(SessionExpires(interval, refresher), require_timer=peer_supports)


def uac_terms(session_expires: str | None, offered: int) -> tuple[int, bool]:
    """``(interval, we_refresh)`` from the 2xx to our request, which offered ``offered`` seconds (§7.2).

    With ``Session-Expires`` the peer's terms hold (no refresher: we are it, as UAC). Without one the peer does
    not do session timers; we keep our interval and refresh ourselves, so a vanished peer is still noticed.
    A malformed value counts as absent.
    """
    try:
        answered = parse_session_expires(session_expires)
    except ValueError:
        answered = None
    if answered is None:
        return offered, True
    return answered.interval, answered.refresher is not Role.UAS


def retry_after_422(min_se: str | None, offered: int) -> int | None:
    """The interval to retry with after a 422 to our offer of ``offered`` seconds: the peer's Min-SE when it is
    larger; None (give up) when the 422 names none, an unreadable one, or one not larger."""
    try:
        wanted = parse_min_se(min_se)
    except ValueError:
        return None
    if wanted is None or wanted <= offered:
        return None
    return wanted


@dataclass(slots=True)
class SessionTimer:
    """One leg's session timer: when to refresh (if we refresh) and when the session is over.

    ``expires_at`` moves on every successful refresh (``refreshed``). ``refreshing`` is set while our refresh is
    in flight, so it is sent once per interval.
    """

    interval: float
    we_refresh: bool
    expires_at: float
    refreshing: bool = False
    not_before: float = 0.0  # a refused refresh is tried again no earlier than this

    @classmethod
    def start(cls, interval: float, we_refresh: bool, now: float) -> SessionTimer:
        """A session confirmed at ``now``."""
        return cls(interval, we_refresh, now + interval)

    @property
    def refresh_at(self) -> float | None:
        """When we send our refresh (half the interval), or None when the peer refreshes or one is in flight."""
        if not self.we_refresh or self.refreshing:
            return None
        return max(self.expires_at - self.interval / 2, self.not_before)

    @property
    def end_at(self) -> float:
        """When the session is over for us: the expiry when we refresh; else expiry - min(32, interval/3)."""
        if self.we_refresh:
            return self.expires_at
        return self.expires_at - min(BYE_MARGIN_MAX_S, self.interval / 3)

    def next_deadline(self) -> float:
        """The earliest of ``refresh_at`` and ``end_at``."""
        refresh = self.refresh_at
        return self.end_at if refresh is None else min(refresh, self.end_at)

    def due(self, now: float) -> str | None:
        """What is due at ``now``: ``"expired"``, ``"refresh"`` or None."""
        if now >= self.end_at:
            return "expired"
        refresh = self.refresh_at
        if refresh is not None and now >= refresh:
            return "refresh"
        return None

    def refreshed(self, now: float, interval: float | None = None, we_refresh: bool | None = None) -> None:
        """A refresh succeeded at ``now`` (either side's), possibly with new terms."""
        if interval is not None:
            self.interval = interval
        if we_refresh is not None:
            self.we_refresh = we_refresh
        self.expires_at = now + self.interval
        self.refreshing = False
        self.not_before = 0.0

    def retry(self, now: float, delay: float) -> None:
        """Our refresh was refused (e.g. 491): try again ``delay`` seconds from ``now`` (if still in time)."""
        self.refreshing = False
        self.not_before = now + delay
