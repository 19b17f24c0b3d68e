"""Fraud signals and the risk score: pure, in memory, time injected (``now`` in seconds, never a clock read).

One call is one ``FraudScorer.assess``: it reads the signals for that call *and* records the call for the
velocity and duplicate counters. Finished answered calls feed ``record_completed`` (conversion clusters).
Several nodes: ``assess`` may also be given the velocity counts every node shares (``SharedVelocity``, e.g. from
Redis); a velocity signal then fires when either those or this node's own exact counts are over the limit.

Signals and their weights (``WEIGHTS``)::

    blocked_ani         1.00   the lists room says the ANI is blacklisted (input flag)
    velocity_ani        0.75   the caller is over ani_calls_per_minute (60 s) or ani_calls_per_hour (3600 s)
    velocity_publisher  0.65   the publisher is over publisher_calls_per_minute (60 s)
    invalid_ani         0.50   digits, but not a valid/allocated number (phonenumbers.is_valid_number)
    conversion_cluster  0.40   the publisher's recent answered calls cluster just past the conversion duration
    anonymous_ani       0.35   no caller number: None, "anonymous", "restricted", ... (nothing with a digit)
    duplicate_caller    0.30   same ANI, same campaign, within duplicate_window_s

Combination: noisy-OR, ``risk = 1 - prod(1 - w_i)`` over the signals that fired. It stays in [0, 1], never
falls when a signal is added, and treats the signals as independent pieces of evidence. With the seed
thresholds (medium 0.6, high 0.8) that means, for example:

    anonymous 0.35, invalid 0.50, duplicate 0.30, cluster 0.40 alone     -> allow (risk returned, no findings)
    velocity_ani 0.75, velocity_publisher 0.65 alone                     -> flag
    invalid + duplicate 0.65, anonymous + cluster 0.61                   -> flag
    velocity_ani + duplicate 0.825 (a flood into one campaign)           -> reject
    velocity_ani + invalid 0.875, velocity_ani + velocity_publisher 0.91 -> reject
    blocked_ani (with anything)                                          -> reject (1.0)

Findings: risk >= high -> ``REJECT fraud_risk`` first, then one ``FLAG`` finding per signal; medium <= risk < high
-> ``FLAG fraud_risk`` then the signals as ``FLAG``; below medium -> no findings (``FraudAssessment.signals`` still
lists what fired, for metrics and the CDR).

Memory: most callers call once, so a first call is kept compactly in a ``LastSeen`` (int64 caller -> its time in
milliseconds and a campaign slot packed in one int64: ~16 bytes a caller, where a Python object per caller cost
~400); a second call inside the horizon promotes the caller to a ``_Caller`` in an ``OrderedDict`` ordered by
last call. ``assess`` drops up to two promoted callers idle past the longest window from its head, and forgets
first calls past the horizon every ``_ONCE_SWEEP`` new callers; ``expire(now)`` sweeps everything (ANIs, idle
publishers, idle cluster rings). Each promoted ANI keeps at most ``max(ani_calls_per_minute,
ani_calls_per_hour)`` timestamps; each publisher keeps ``publisher_calls_per_minute`` timestamps and a ring of
its last ``cluster_window_calls`` answered calls.
``now`` is expected not to go backwards (``loop.time()``).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import phonenumbers

from dce.caches import bounded
from dce.compliance.verdict import Action, Finding, ReasonCode
from dce.lastseen import LastSeen, number_key

__all__ = [
    "WEIGHTS",
    "AniClass",
    "FraudAssessment",
    "FraudScorer",
    "FraudSettings",
    "SharedVelocity",
    "classify_ani",
    "combine",
]

MINUTE: Final = 60.0
HOUR: Final = 3600.0

WEIGHTS: Final[Mapping[ReasonCode, float]] = {
    ReasonCode.BLOCKED_ANI: 1.0,
    ReasonCode.VELOCITY_ANI: 0.75,
    ReasonCode.VELOCITY_PUBLISHER: 0.65,
    ReasonCode.INVALID_ANI: 0.5,
    ReasonCode.CONVERSION_CLUSTER: 0.4,
    ReasonCode.ANONYMOUS_ANI: 0.35,
    ReasonCode.DUPLICATE_CALLER: 0.3,
}


def combine(signals: Iterable[ReasonCode], weights: Mapping[ReasonCode, float] = WEIGHTS) -> float:
    """Noisy-OR of the signals' weights: ``1 - prod(1 - w)``; 0.0 for no signals.

    Each distinct signal counts once, multiplied in a fixed order, so the same signals give the same float
    whatever order a set iterates in (and one more signal never lowers the risk by a rounding error).
    """
    keep = 1.0
    for code in sorted(set(signals)):
        keep *= 1.0 - weights[code]
    return 1.0 - keep


@dataclass(frozen=True, slots=True)
class FraudSettings:
    """The fraud section of the configuration, as this room sees it (mirrors ``FraudConfig``).

    The last three fields are not in ``FraudConfig``; their defaults apply unless the mapping carries them.
    """

    enabled: bool = True
    low: float = 0.3  # below: allow silently (informational band up to ``medium``)
    medium: float = 0.6  # at or above: flag
    high: float = 0.8  # at or above: reject
    ani_calls_per_minute: int = 5
    ani_calls_per_hour: int = 20
    publisher_calls_per_minute: int = 600
    duplicate_window_s: float = 3600.0
    cluster_margin_s: float = 10.0
    cluster_share: float = 0.5
    cluster_min_calls: int = 20
    region: str = "US"  # region for ANIs without a leading "+"
    cluster_window_calls: int = 100  # the cluster signal looks at this many of a publisher's last answered calls
    cluster_idle_s: float = 7 * 86400.0  # expire() forgets a publisher's cluster ring after this long without calls

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.medium <= self.high <= 1.0:
            raise ValueError(f"fraud thresholds need 0 <= low <= medium <= high <= 1, got "
                             f"{self.low}/{self.medium}/{self.high}")
        for name in ("ani_calls_per_minute", "ani_calls_per_hour", "publisher_calls_per_minute",
                     "cluster_min_calls", "cluster_window_calls"):
            if getattr(self, name) <= 0:
                raise ValueError(f"fraud {name} must be > 0")
        if self.duplicate_window_s <= 0 or self.cluster_margin_s < 0 or not 0 < self.cluster_share <= 1:
            raise ValueError("fraud duplicate_window_s > 0, cluster_margin_s >= 0, 0 < cluster_share <= 1")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> FraudSettings:
        """Settings from a plain mapping (e.g. ``FraudConfig.model_dump()``); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(mapping) - names
        if unknown:
            raise TypeError(f"unknown fraud settings: {', '.join(sorted(unknown))}")
        return cls(**mapping)

    @property
    def ani_horizon_s(self) -> float:
        """How long a caller's history can still matter to some window."""
        return max(HOUR, MINUTE, self.duplicate_window_s)


class AniClass:
    """What the caller number is: the three answers of ``classify_ani``."""

    VALID: Final = 0
    INVALID: Final = 1
    ANONYMOUS: Final = 2


@bounded("numbers")
def classify_ani(ani: str | None, region: str = "US") -> tuple[int, str]:
    """``(AniClass, key)`` for a caller number; cached per number (phonenumbers costs ~25 µs).

    Anonymous: None or nothing with a digit in it ("anonymous", "restricted", "", ...); key "".
    Invalid: digits that don't parse or aren't a valid, allocated number; key the digits.
    Valid: key the E.164 form, so "+12125551234" and "2125551234" count as one caller.
    """
    if ani is None:
        return AniClass.ANONYMOUS, ""
    text = ani.split(";", 1)[0].strip()
    if not any(ch.isdigit() for ch in text):
        return AniClass.ANONYMOUS, ""
    digits = "".join(ch for ch in text if ch.isdigit() or ch == "+")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return AniClass.INVALID, digits
    if not phonenumbers.is_valid_number(number):
        return AniClass.INVALID, digits
    return AniClass.VALID, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class FraudAssessment(NamedTuple):
    """The fraud answer for one call (shared between calls with the same signals: immutable).

    ``risk`` is the combined score (0..1); ``findings`` are what the verdict should carry (empty below
    ``medium``); ``signals`` lists every signal that fired, whatever the risk.
    """

    risk: float
    findings: tuple[Finding, ...] = ()
    signals: tuple[ReasonCode, ...] = ()
    action: Action = Action.ALLOW  # the strongest action among the findings


CLEAN: Final = FraudAssessment(0.0)


class SharedVelocity(NamedTuple):
    """Calls counted by every node (e.g. in Redis) in the windows ending now, this call included; None where
    not counted. ``assess`` fires a velocity signal when these or this node's own counts are over a limit."""

    ani_minute: float | None = None
    ani_hour: float | None = None
    publisher_minute: float | None = None

# The signals as bits, in the order ``assess`` checks them (and reports them); every subset's answer is precomputed.
_SIGNAL_ORDER: Final = (
    ReasonCode.BLOCKED_ANI,
    ReasonCode.ANONYMOUS_ANI,
    ReasonCode.INVALID_ANI,
    ReasonCode.VELOCITY_ANI,
    ReasonCode.DUPLICATE_CALLER,
    ReasonCode.VELOCITY_PUBLISHER,
    ReasonCode.CONVERSION_CLUSTER,
)
_BLOCKED, _ANONYMOUS, _INVALID, _VELOCITY_ANI, _DUPLICATE, _VELOCITY_PUBLISHER, _CLUSTER = (
    1 << i for i in range(len(_SIGNAL_ORDER)))

# A first call, packed: its time in integer milliseconds above _SLOT_BITS bits of campaign slot (0: no campaign).
_SLOT_BITS: Final = 16
_SLOT_MASK: Final = (1 << _SLOT_BITS) - 1
_ONCE_SWEEP: Final = 4096  # new callers between sweeps of first calls past the horizon


class _Caller:
    """One ANI's recent history: its last call times (bounded) and its last call time per campaign.

    Most callers call once, so the first call is held in scalar slots; the list of times and the per-campaign
    map are made on the second call and the second campaign (about 190 bytes a one-call caller, not 440).
    """

    __slots__ = ("camp", "camp_at", "camps", "last", "times")

    def __init__(self, now: float, campaign_id: str | None) -> None:
        self.last = now
        self.times: list[float] | None = None
        self.camp = campaign_id
        self.camp_at = now
        self.camps: dict[str, float] | None = None


class _Cluster:
    """A publisher's last answered calls as a ring of hit/miss (ended within the conversion margin)."""

    __slots__ = ("filled", "firing", "hits", "last", "pos", "ring")

    def __init__(self, size: int) -> None:
        self.ring = bytearray(size)
        self.pos = 0
        self.filled = 0
        self.hits = 0
        self.firing = False
        self.last = 0.0


class FraudScorer:
    """Fraud signals over sliding windows, combined into a risk score and an allow/flag/reject answer."""

    _CAMPAIGNS_PRUNE_AT: Final = 16  # a caller's per-campaign map is pruned of stale entries past this size

    def __init__(self, settings: FraudSettings | None = None, *,
                 weights: Mapping[ReasonCode, float] = WEIGHTS) -> None:
        self.settings = s = settings or FraudSettings()
        missing = set(WEIGHTS) - set(weights)
        if missing or any(not 0.0 <= w <= 1.0 for w in weights.values()):
            raise ValueError("fraud weights: one per signal, each within [0, 1]")
        self.weights = dict(weights)
        self._callers: OrderedDict[str, _Caller] = OrderedDict()  # callers seen at least twice
        self._once = LastSeen()  # callers seen once: number_key -> ms << _SLOT_BITS | campaign slot
        self._once_added = 0
        self._slots: dict[str, int] = {}  # campaign id -> its slot in a packed first call
        self._slot_ids: list[str | None] = [None]
        self._publishers: dict[str, deque[float]] = {}
        self._clusters: dict[str, _Cluster] = {}
        self._clustering: set[str] = set()  # publishers whose cluster signal fires
        self._ani_keep = max(s.ani_calls_per_minute, s.ani_calls_per_hour)
        self._horizon = s.ani_horizon_s
        # Each signal's finding is built once: per call only the fraud_risk finding (with the score) is new.
        self._flags = {
            ReasonCode.BLOCKED_ANI: Finding(Action.FLAG, ReasonCode.BLOCKED_ANI, "blacklisted caller"),
            ReasonCode.ANONYMOUS_ANI: Finding(Action.FLAG, ReasonCode.ANONYMOUS_ANI, "no caller number"),
            ReasonCode.INVALID_ANI: Finding(Action.FLAG, ReasonCode.INVALID_ANI, "invalid or unallocated number"),
            ReasonCode.VELOCITY_ANI: Finding(
                Action.FLAG, ReasonCode.VELOCITY_ANI,
                f"over {s.ani_calls_per_minute} calls/min or {s.ani_calls_per_hour} calls/h"),
            ReasonCode.VELOCITY_PUBLISHER: Finding(
                Action.FLAG, ReasonCode.VELOCITY_PUBLISHER, f"over {s.publisher_calls_per_minute} calls/min"),
            ReasonCode.DUPLICATE_CALLER: Finding(
                Action.FLAG, ReasonCode.DUPLICATE_CALLER, f"same campaign within {s.duplicate_window_s:g} s"),
            ReasonCode.CONVERSION_CLUSTER: Finding(
                Action.FLAG, ReasonCode.CONVERSION_CLUSTER,
                f">= {s.cluster_share:.0%} of recent calls end within {s.cluster_margin_s:g} s past conversion"),
        }
        self._answers = [
            self._answer(tuple(code for bit, code in enumerate(_SIGNAL_ORDER) if mask >> bit & 1))
            for mask in range(1 << len(_SIGNAL_ORDER))
        ]

    # -- the hot path -------------------------------------------------------------------------------------

    def assess(self, ani: str | None, *, publisher_id: str | None, campaign_id: str | None, now: float,
               blacklisted: bool = False, shared: SharedVelocity | None = None) -> FraudAssessment:
        """Score one call and record it for the velocity and duplicate signals (one call, one assess).

        ``shared``: the velocity counts of every node for this call (see ``SharedVelocity``), when known.
        """
        s = self.settings
        if not s.enabled:
            return CLEAN
        mask = _BLOCKED if blacklisted else 0
        if shared is not None:
            mask |= self._shared_mask(shared)

        kind, key = classify_ani(ani, s.region)
        if kind == AniClass.ANONYMOUS:
            mask |= _ANONYMOUS
        else:
            if kind == AniClass.INVALID:
                mask |= _INVALID
            callers = self._callers
            caller = callers.get(key)
            if caller is None:
                caller = self._first_or_promote(key, now, campaign_id)
            else:
                callers.move_to_end(key)
            if caller is not None:
                times = caller.times
                if times is None:
                    times = caller.times = [caller.last]
                n = len(times)
                lim_m = s.ani_calls_per_minute
                lim_h = s.ani_calls_per_hour
                # Over the limit when `limit` earlier calls already fall inside the window (this one is limit+1).
                if (n >= lim_m and times[-lim_m] > now - MINUTE) or (n >= lim_h and times[-lim_h] > now - HOUR):
                    mask |= _VELOCITY_ANI
                if n >= self._ani_keep:
                    del times[0]
                times.append(now)
                caller.last = now
                if campaign_id is not None:
                    camps = caller.camps
                    if camps is None:  # one campaign so far, held in two slots
                        if caller.camp == campaign_id:
                            if now - caller.camp_at < s.duplicate_window_s:
                                mask |= _DUPLICATE
                            caller.camp_at = now
                        elif caller.camp is None:
                            caller.camp = campaign_id
                            caller.camp_at = now
                        else:
                            caller.camps = {caller.camp: caller.camp_at, campaign_id: now}
                            caller.camp = None
                    else:
                        seen = camps.get(campaign_id)
                        if seen is not None and now - seen < s.duplicate_window_s:
                            mask |= _DUPLICATE
                        camps[campaign_id] = now
                        if len(camps) > self._CAMPAIGNS_PRUNE_AT:
                            cutoff = now - s.duplicate_window_s
                            for cid in [c for c, t in camps.items() if t <= cutoff]:
                                del camps[cid]
            # Amortised expiry: drop up to two callers idle past every window (this call added at most one).
            cutoff = now - self._horizon
            head = next(iter(callers), None)
            if head is not None and callers[head].last <= cutoff:
                del callers[head]
                head = next(iter(callers), None)
                if head is not None and callers[head].last <= cutoff:
                    del callers[head]

        if publisher_id is not None:
            window = self._publishers.get(publisher_id)
            if window is None:
                window = self._publishers[publisher_id] = deque(maxlen=s.publisher_calls_per_minute)
            elif len(window) == window.maxlen and window[0] > now - MINUTE:
                mask |= _VELOCITY_PUBLISHER
            window.append(now)
            if publisher_id in self._clustering:
                mask |= _CLUSTER

        return self._answers[mask]

    def _first_or_promote(self, key: str, now: float, campaign_id: str | None) -> _Caller | None:
        """A caller not among the promoted: record its first call compactly (None), or, when its first call is
        still inside the horizon, promote it to a ``_Caller`` holding that first call (to be updated by this one).
        """
        number = number_key(key)
        at = round(now * 1000)
        first = self._once.get(number)
        if first is not None and (first >> _SLOT_BITS) > at - self._horizon * 1000:
            caller = _Caller((first >> _SLOT_BITS) / 1000, self._slot_ids[first & _SLOT_MASK])
            self._callers[key] = caller
            return caller
        slot = self._slot(campaign_id)
        if slot is None or at < 0:  # beyond the slots (or a negative clock): hold it as a full caller
            self._callers[key] = _Caller(now, campaign_id)
            return None
        self._once.put(number, at << _SLOT_BITS | slot)
        self._once_added += 1
        if self._once_added >= _ONCE_SWEEP:
            self._once_added = 0
            self._forget_once(now)
        return None

    def _slot(self, campaign_id: str | None) -> int | None:
        """The campaign's slot in a packed first call (0 for none), None when every slot is taken."""
        if campaign_id is None:
            return 0
        slot = self._slots.get(campaign_id)
        if slot is None and len(self._slot_ids) <= _SLOT_MASK:
            slot = self._slots[campaign_id] = len(self._slot_ids)
            self._slot_ids.append(campaign_id)
        return slot

    def _forget_once(self, now: float) -> int:
        """Forget first calls past the horizon (their memory once they are 1/32 of a horizon older)."""
        horizon_ms = round(self._horizon * 1000)
        cutoff = round(now * 1000) - horizon_ms
        return self._once.forget_below(max(cutoff, 0) << _SLOT_BITS, (horizon_ms // 32) << _SLOT_BITS)

    def _shared_mask(self, shared: SharedVelocity) -> int:
        """The velocity signals the counts of every node fire (counts include this call: over means > limit)."""
        s = self.settings
        mask = 0
        if (shared.ani_minute is not None and shared.ani_minute > s.ani_calls_per_minute) or (
                shared.ani_hour is not None and shared.ani_hour > s.ani_calls_per_hour):
            mask |= _VELOCITY_ANI
        if shared.publisher_minute is not None and shared.publisher_minute > s.publisher_calls_per_minute:
            mask |= _VELOCITY_PUBLISHER
        return mask

    def _answer(self, signals: tuple[ReasonCode, ...]) -> FraudAssessment:
        """The assessment for a set of signals (risk and findings depend on nothing else)."""
        if not signals:
            return CLEAN
        s = self.settings
        risk = combine(signals, self.weights)
        if risk < s.medium:
            return FraudAssessment(risk, (), signals)
        action = Action.REJECT if risk >= s.high else Action.FLAG
        detail = f"risk {risk:.2f}: {', '.join(signals)}"
        findings = (Finding(action, ReasonCode.FRAUD_RISK, detail), *(self._flags[code] for code in signals))
        return FraudAssessment(risk, findings, signals, action)

    # -- fed by finished calls --------------------------------------------------------------------------------

    def record_completed(self, publisher_id: str, billable_s: float, conversion_s: float | None,
                         now: float) -> bool:
        """Record a finished answered call of a publisher; returns whether its cluster signal now fires.

        A call "clusters" when it ended within [conversion_s, conversion_s + cluster_margin_s]. The signal fires
        once the publisher has at least ``cluster_min_calls`` answered calls on record and at least
        ``cluster_share`` of its last ``max(cluster_window_calls, cluster_min_calls)`` cluster. Calls of
        campaigns without a conversion duration (None or <= 0) say nothing and are not recorded.
        """
        s = self.settings
        cluster = self._clusters.get(publisher_id)
        if conversion_s is None or conversion_s <= 0:
            return cluster is not None and cluster.firing
        if cluster is None:
            cluster = self._clusters[publisher_id] = _Cluster(max(s.cluster_window_calls, s.cluster_min_calls))
        hit = 1 if conversion_s <= billable_s <= conversion_s + s.cluster_margin_s else 0
        ring = cluster.ring
        pos = cluster.pos
        if cluster.filled == len(ring):
            cluster.hits -= ring[pos]
        else:
            cluster.filled += 1
        ring[pos] = hit
        cluster.hits += hit
        cluster.pos = (pos + 1) % len(ring)
        cluster.last = now
        cluster.firing = cluster.filled >= s.cluster_min_calls and cluster.hits >= s.cluster_share * cluster.filled
        if cluster.firing:
            self._clustering.add(publisher_id)
        else:
            self._clustering.discard(publisher_id)
        return cluster.firing

    def cluster_share(self, publisher_id: str) -> tuple[int, int]:
        """``(clustered, answered)`` over the publisher's recorded window (for reports and tests)."""
        cluster = self._clusters.get(publisher_id)
        return (cluster.hits, cluster.filled) if cluster is not None else (0, 0)

    def forget_publisher(self, publisher_id: str) -> None:
        """Drop everything held about a publisher (e.g. when it is deleted)."""
        self._publishers.pop(publisher_id, None)
        self._clusters.pop(publisher_id, None)
        self._clustering.discard(publisher_id)

    # -- housekeeping ----------------------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Forget what no window can still see; returns how many entries were dropped. Call it every few s."""
        dropped = 0
        callers = self._callers
        cutoff = now - self._horizon
        while callers:
            head = next(iter(callers))
            if callers[head].last > cutoff:
                break
            del callers[head]
            dropped += 1
        dropped += self._forget_once(now)
        stale = [p for p, w in self._publishers.items() if not w or w[-1] <= now - MINUTE]
        for publisher_id in stale:
            del self._publishers[publisher_id]
        idle = [p for p, c in self._clusters.items() if c.last <= now - self.settings.cluster_idle_s]
        for publisher_id in idle:
            del self._clusters[publisher_id]
            self._clustering.discard(publisher_id)
        return dropped + len(stale) + len(idle)

    def sizes(self) -> dict[str, int]:
        """How many callers, publisher windows and cluster rings are held (for metrics and tests)."""
        return {"callers": len(self._callers) + len(self._once), "publishers": len(self._publishers),
                "clusters": len(self._clusters)}
