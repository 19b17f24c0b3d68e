"""Number lists in memory: DNC (national, state, internal), per-buyer suppression, litigators, blocked ANI/DID.

A :class:`ListBook` holds every list as a :class:`~dce.compliance.numberset.NumberSet` and answers the INVITE
path's question in a few set lookups (:meth:`ListBook.screen`): which lists reject this caller or this DID, and
which buyers suppress this caller. It is immutable once built; a reload builds a new book and swaps it in.

Pure: no I/O. Numbers are E.164 strings at the edges (``+12125550100``) and int digits inside.
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import phonenumbers

from dce.caches import bounded
from dce.compliance.numberset import NumberSet, e164_to_int
from dce.compliance.verdict import Action, Finding, ReasonCode

DEFAULT_REGION = "US"
_STATE = re.compile(r"^[A-Z]{2}$")
_SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")


class ListKind(enum.StrEnum):
    """What a list is for; ``scope`` qualifies the state DNC lists (state) and suppression lists (buyer id)."""

    DNC_NATIONAL = "dnc_national"
    DNC_STATE = "dnc_state"  # scope: two-letter state, e.g. "CA"
    DNC_INTERNAL = "dnc_internal"
    SUPPRESSION = "suppression"  # scope: buyer id
    LITIGATOR = "litigator"
    BLOCKED_ANI = "blocked_ani"
    BLOCKED_DID = "blocked_did"

    @property
    def scope_name(self) -> str | None:
        """What the scope means for this kind (``state``, ``buyer_id``), or None when it takes none."""
        return _SCOPE_NAMES.get(self)

    @property
    def reason(self) -> ReasonCode:
        """The reason code a hit on a list of this kind reports."""
        return _REASONS[self]


_SCOPE_NAMES = {ListKind.DNC_STATE: "state", ListKind.SUPPRESSION: "buyer_id"}
_REASONS = {
    ListKind.DNC_NATIONAL: ReasonCode.DNC_NATIONAL,
    ListKind.DNC_STATE: ReasonCode.DNC_STATE,
    ListKind.DNC_INTERNAL: ReasonCode.DNC_INTERNAL,
    ListKind.SUPPRESSION: ReasonCode.SUPPRESSED,
    ListKind.LITIGATOR: ReasonCode.LITIGATOR,
    ListKind.BLOCKED_ANI: ReasonCode.BLOCKED_ANI,
    ListKind.BLOCKED_DID: ReasonCode.BLOCKED_DID,
}
# The caller's lists that reject a call, in the order their findings are reported.
_ANI_REJECT_KINDS = (ListKind.BLOCKED_ANI, ListKind.LITIGATOR, ListKind.DNC_NATIONAL, ListKind.DNC_INTERNAL)


def check_scope(kind: ListKind, scope: str | None) -> str | None:
    """The normalised scope for ``kind`` (states upper-cased); ValueError when it is missing, bad or unexpected."""
    name = kind.scope_name
    if name is None:
        if scope not in (None, ""):
            raise ValueError(f"a {kind} list takes no scope")
        return None
    if not scope:
        raise ValueError(f"a {kind} list needs a scope ({name})")
    if kind is ListKind.DNC_STATE:
        state = scope.strip().upper()
        if not _STATE.match(state):
            raise ValueError(f"expected a two-letter state, got {scope!r}")
        return state
    if not _SCOPE.match(scope):
        raise ValueError(f"expected a {name} of letters, digits and _.:@- (at most 64), got {scope!r}")
    return scope


def number_key(number: str, region: str = DEFAULT_REGION) -> int | None:
    """A number as the int digits of its E.164 form (``+12125550100`` and ``(212) 555-0100`` -> 12125550100), or
    None when it is not a (possible) phone number. E.164 input is read directly; other forms go through
    phonenumbers, cached per number."""
    if number[:1] == "+":
        value = e164_to_int(number)
        if value is not None:
            return value
    return _parsed_key(number, region)


@bounded("numbers")
def _parsed_key(number: str, region: str) -> int | None:
    text = number.split(";", 1)[0].strip()
    if not text or not any(ch.isdigit() for ch in text):
        return None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return e164_to_int(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


@dataclass(frozen=True, slots=True)
class NumberList:
    """One list as the book holds it."""

    id: str
    kind: ListKind
    scope: str | None
    numbers: NumberSet
    name: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    """A list holding a number."""

    kind: ListKind
    scope: str | None
    list_id: str


@dataclass(slots=True)
class _Suppression:
    """Every suppression list merged: sorted numbers (repeats allowed) with the index of their buyer."""

    numbers: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    owners: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    buyers: tuple[str, ...] = ()
    view: memoryview = field(init=False)
    owner_view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.view = memoryview(self.numbers)
        self.owner_view = memoryview(self.owners)

    @classmethod
    def merge(cls, lists: Iterable[NumberList]) -> _Suppression:
        buyers: dict[str, int] = {}
        parts: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        for number_list in lists:
            array = number_list.numbers.to_array()
            if array.size == 0:
                continue
            owner = buyers.setdefault(number_list.scope or "", len(buyers))
            parts.append(array)
            owners.append(np.full(array.size, owner, dtype=np.int32))
        if not parts:
            return cls()
        numbers = np.concatenate(parts)
        order = np.argsort(numbers, kind="stable")
        return cls(numbers[order], np.concatenate(owners)[order], tuple(buyers))

    def buyers_of(self, value: int) -> frozenset[str]:
        view = self.view
        n = len(view)
        i = bisect_left(view, value)
        if i >= n or view[i] != value:
            return frozenset()
        found = []
        while i < n and view[i] == value:
            found.append(self.buyers[self.owner_view[i]])
            i += 1
        return frozenset(found)


class ListBook:
    """Every number list, in memory, indexed for the call path. Build it once per reload; do not mutate it."""

    def __init__(self, lists: Iterable[NumberList] = (), *, version: int = 0) -> None:
        self.version = version
        self._lists: dict[str, NumberList] = {}
        by_kind: dict[tuple[ListKind, str | None], list[NumberList]] = {}
        for number_list in lists:
            if number_list.id in self._lists:
                raise ValueError(f"duplicate list id {number_list.id!r}")
            self._lists[number_list.id] = number_list
            by_kind.setdefault((number_list.kind, number_list.scope), []).append(number_list)
        self._by_kind = {key: tuple(value) for key, value in by_kind.items()}
        kind_sets: dict[ListKind, list[NumberSet]] = {}
        for (kind, _scope), same in self._by_kind.items():
            kind_sets.setdefault(kind, []).extend(nl.numbers for nl in same)
        self._kind_sets = {kind: tuple(sets) for kind, sets in kind_sets.items()}
        self._scoped_sets = {key: tuple(nl.numbers for nl in same) for key, same in self._by_kind.items()}
        # The screening path's view: (reason finding, set) pairs, empty lists left out.
        self._ani_checks = tuple(
            (_finding(kind, nl), nl.numbers)
            for kind in _ANI_REJECT_KINDS
            for nl in self._lists_of(kind)
            if nl.numbers
        )
        states: dict[str, list[tuple[Finding, NumberSet]]] = {}
        for nl in self._lists_of(ListKind.DNC_STATE):
            if nl.numbers and nl.scope:
                states.setdefault(nl.scope, []).append((_finding(ListKind.DNC_STATE, nl), nl.numbers))
        self._state_checks = {state: tuple(checks) for state, checks in states.items()}
        self._did_checks = tuple(
            (_finding(ListKind.BLOCKED_DID, nl), nl.numbers)
            for nl in self._lists_of(ListKind.BLOCKED_DID)
            if nl.numbers
        )
        self._suppression = _Suppression.merge(self._lists_of(ListKind.SUPPRESSION))

    def _lists_of(self, kind: ListKind) -> list[NumberList]:
        return [nl for (k, _scope), lists in self._by_kind.items() if k is kind for nl in lists]

    # ------------------------------------------------------------------------------------------ hot path

    def screen(self, ani: str | None, did: str, state: str | None = None) -> tuple[list[Finding], frozenset[str]]:
        """The call's list findings (REJECTs: blocked/litigator/DNC for the caller, blocked for the DID) and the
        buyers whose suppression list holds the caller (their targets are to be skipped; not a reject).

        ``ani``/``did`` are E.164 (other forms are normalised, cached); ``state`` is the caller's two-letter
        state for the state DNC lists. An ANI that is not a number matches nothing here (fraud checks judge it).
        """
        findings: list[Finding] = []
        suppressed: frozenset[str] = frozenset()
        caller = number_key(ani) if ani else None
        if caller is not None:
            for finding, numbers in self._ani_checks:
                if caller in numbers:
                    findings.append(finding)
            if state is not None and self._state_checks:
                for finding, numbers in self._state_checks.get(state, ()):
                    if caller in numbers:
                        findings.append(finding)
            if self._suppression.buyers:
                suppressed = self._suppression.buyers_of(caller)
        if self._did_checks:
            called = number_key(did) if did else None
            if called is not None:
                for finding, numbers in self._did_checks:
                    if called in numbers:
                        findings.append(finding)
        return findings, suppressed

    # ------------------------------------------------------------------------------------------ queries

    def contains(self, kind: ListKind | str, number: str | int, scope: str | None = None) -> bool:
        """Whether any list of ``kind`` (and ``scope``; None: any scope) holds ``number``."""
        if type(kind) is not ListKind:
            kind = ListKind(kind)
        value = number if type(number) is int else number_key(number)  # type: ignore[arg-type]
        if value is None:
            return False
        if scope is None:
            sets = self._kind_sets.get(kind, ())
        else:
            sets = self._scoped_sets.get((kind, check_scope(kind, scope)), ())
        for numbers in sets:  # noqa: SIM110 - a loop beats any() and its generator here
            if value in numbers:
                return True
        return False

    def hits(self, number: str | int) -> list[Hit]:
        """Every list holding ``number`` (ordered by kind, scope, list id)."""
        value = number if isinstance(number, int) else number_key(number)
        if value is None:
            return []
        found = [Hit(nl.kind, nl.scope, nl.id) for nl in self._lists.values() if value in nl.numbers]
        order = list(ListKind)
        return sorted(found, key=lambda h: (order.index(h.kind), h.scope or "", h.list_id))

    def get(self, list_id: str) -> NumberList | None:
        return self._lists.get(list_id)

    @property
    def lists(self) -> Mapping[str, NumberList]:
        return self._lists

    def __len__(self) -> int:
        """Numbers over every list."""
        return sum(len(nl.numbers) for nl in self._lists.values())

    def __repr__(self) -> str:
        return f"ListBook({len(self._lists)} lists, {len(self)} numbers, version {self.version})"


def _finding(kind: ListKind, number_list: NumberList) -> Finding:
    where = f" ({number_list.scope})" if number_list.scope else ""
    return Finding(Action.REJECT, kind.reason, f"on {kind} list {number_list.id}{where}")


EMPTY_BOOK = ListBook()
