"""``LastSeen``: int64 key -> the largest int64 value put for it, in ~16 bytes an entry, forgetting old values.

For history that must be kept for days per caller (the duplicate ledger, fraud's one-call callers): a caller is
an int64 (its E.164 digits), a value is usually a time in seconds. A Python dict of int to int costs ~100 bytes
an entry; here the newest entries sit in a small dict and are frozen, ``batch`` at a time, into sorted numpy
runs (int64 keys, int64 values). Runs merge like an LSM tree (a run is merged into the one before it while that
one is at most twice its size), so there are O(log n) of them and each entry is merged O(log n) times.

``forget_below(cutoff, slack)`` makes values below ``cutoff`` invisible at once; their memory goes when a run is
merged or, for a run whose oldest value has fallen ``slack`` below the cutoff, when it is filtered (so with a
sliding cutoff each run is rewritten about horizon/slack times per horizon, and at most ``slack`` worth of
expired entries is held).

A leaf module (numpy only): the rooms that keep per-caller history (``routing``, ``compliance``) share it.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left

import numpy as np


def number_key(text: str) -> int:
    """A caller as an int64 key: the digits of an E.164 number (``+12125550100`` -> 12125550100), else a negative
    64-bit hash of the text (never equal to a number's key)."""
    digits = text[1:] if text.startswith("+") else ""
    if 0 < len(digits) <= 15 and digits.isdigit() and digits.isascii():
        return int(digits)
    return -1 - (int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1)


class _Run:
    """A frozen, key-sorted run: unique keys, the largest value per key."""

    __slots__ = ("high", "keys", "low", "values", "view")

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys = keys
        self.values = values
        self.view = memoryview(keys)  # bisect over a memoryview: no numpy call per lookup
        self.low = int(values.min()) if values.size else 0
        self.high = int(values.max()) if values.size else 0

    def get(self, key: int) -> int | None:
        i = bisect_left(self.view, key)
        if i < len(self.view) and self.view[i] == key:
            return int(self.values[i])
        return None


def _frozen(keys: np.ndarray, values: np.ndarray, cutoff: int | None) -> _Run:
    """A run of unique ``keys`` in any order, without values below ``cutoff``."""
    if cutoff is not None:
        keep = values >= cutoff
        keys, values = keys[keep], values[keep]
    order = np.argsort(keys)
    return _Run(keys[order], values[order])


def _merged(older: _Run, newer: _Run, cutoff: int | None) -> _Run:
    """One run of two: the largest value per key, none below ``cutoff``. A stable sort of two sorted runs is a
    linear merge (timsort), ~15x faster than sorting by key and value."""
    keys = np.concatenate((older.keys, newer.keys))
    values = np.concatenate((older.values, newer.values))
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    same = keys[1:] == keys[:-1]  # each run holds a key once: at most pairs
    if same.any():
        later = values[1:]
        later[same] = np.maximum(values[:-1][same], later[same])
        keep = np.ones(keys.size, dtype=bool)
        keep[:-1][same] = False
        keys, values = keys[keep], values[keep]
    return _filtered(_Run(keys, values), cutoff)


def _filtered(run: _Run, cutoff: int | None) -> _Run:
    """``run`` without its values below ``cutoff``."""
    if cutoff is None or run.low >= cutoff:
        return run
    keep = run.values >= cutoff
    return _Run(run.keys[keep], run.values[keep])


class LastSeen:
    """The largest value seen per int64 key, compact; values below the ``forget_below`` cutoff are gone."""

    def __init__(self, *, batch: int = 4096) -> None:
        if batch < 1:
            raise ValueError("LastSeen needs batch >= 1")
        self.batch = batch
        self._recent: dict[int, int] = {}
        self._recent_low: int | None = None  # the smallest value in _recent (None: empty)
        self._runs: list[_Run] = []  # oldest first; sizes shrink towards the end
        self._cutoff: int | None = None

    def put(self, key: int, value: int) -> None:
        """Remember ``value`` for ``key`` unless a larger one is known (or it is below the cutoff)."""
        if self._cutoff is not None and value < self._cutoff:
            return
        recent = self._recent
        seen = recent.get(key)
        if seen is None or seen < value:
            recent[key] = value
            if self._recent_low is None or value < self._recent_low:
                self._recent_low = value
            if len(recent) >= self.batch:
                self._freeze()

    def get(self, key: int) -> int | None:
        """The largest value put for ``key`` and not below the cutoff, or None."""
        best = self._recent.get(key)
        for run in self._runs:
            value = run.get(key)
            if value is not None and (best is None or value > best):
                best = value
        if best is not None and self._cutoff is not None and best < self._cutoff:
            return None
        return best

    def forget_below(self, cutoff: int, slack: int = 0) -> int:
        """Forget every value below ``cutoff`` (never lowered); returns how many stored entries were freed.

        A run is rewritten without its expired entries once its oldest value is ``slack`` below the cutoff."""
        if self._cutoff is not None and cutoff <= self._cutoff:
            return 0
        self._cutoff = cutoff
        held = len(self)
        if self._recent_low is not None and self._recent_low < cutoff:  # a slow table: freeze without the stale
            self._freeze()
        runs: list[_Run] = []
        for run in self._runs:
            if run.high < cutoff:
                continue
            if run.low < cutoff - slack:
                run = _filtered(run, cutoff)
            if run.keys.size:
                runs.append(run)
        self._runs = runs
        return held - len(self)

    def __len__(self) -> int:
        """Entries stored (a key may be counted once per run holding it; expired ones until they are freed)."""
        return len(self._recent) + sum(run.keys.size for run in self._runs)

    @property
    def nbytes(self) -> int:
        """Bytes held by the runs' arrays (the small dict of recent entries not counted)."""
        return sum(run.keys.nbytes + run.values.nbytes for run in self._runs)

    def _freeze(self) -> None:
        recent = self._recent
        keys = np.fromiter(recent.keys(), dtype=np.int64, count=len(recent))
        values = np.fromiter(recent.values(), dtype=np.int64, count=len(recent))
        recent.clear()
        self._recent_low = None
        runs = self._runs
        frozen = _frozen(keys, values, self._cutoff)
        if frozen.keys.size:
            runs.append(frozen)
        while len(runs) >= 2 and runs[-2].keys.size <= 2 * runs[-1].keys.size:
            newer = runs.pop()
            older = runs.pop()
            runs.append(_merged(older, newer, self._cutoff))

