"""A compact set of E.164 numbers: sorted int64 digits with a small add/remove overlay.

An E.164 number is ``+`` and at most 15 digits whose first (the country code's) is never 0, so its digits read
as an integer are unique and fit an int64: ``+12125550100`` is stored as ``12125550100``. 10M numbers take 80 MB
in the sorted array plus a bucket table of at most ~5 MB.

Lookups run from Python per call, where a numpy call costs about 1 µs by itself: the set bisects a
``memoryview`` of the array inside a bucket (a power-of-two slice of the value range) found from a small int32
table of bucket starts, so a lookup is a handful of comparisons (~0.5 µs). Mutations go to two small Python sets
(``add``/``discard``) that are folded into the array (``compact``) when they grow past ``OVERLAY_LIMIT``.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

import numpy as np

MAX_E164 = 10**15 - 1  # 15 digits
MIN_E164 = 10  # a country code digit and at least one more
OVERLAY_LIMIT = 4096  # pending adds/removes before compact() folds them into the array
_BUCKET_TARGET = 8  # numbers per bucket aimed at when sizing the bucket table

_EMPTY = np.empty(0, dtype=np.int64)


def e164_to_int(number: str) -> int | None:
    """``+12125550100`` -> ``12125550100``; None unless ``number`` is ``+`` and 2-15 digits, the first not 0."""
    if len(number) < 3 or len(number) > 16 or number[0] != "+" or number[1] == "0":
        return None
    digits = number[1:]
    if not (digits.isdigit() and digits.isascii()):
        return None
    return int(digits)


def int_to_e164(value: int) -> str:
    """``12125550100`` -> ``+12125550100``."""
    if not MIN_E164 <= value <= MAX_E164:
        raise ValueError(f"not an E.164 number: {value}")
    return f"+{value}"


def sorted_unique(values: np.ndarray | Iterable[int]) -> np.ndarray:
    """``values`` as a sorted int64 array without repeats."""
    array = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.int64)
    if array.dtype != np.int64:
        array = array.astype(np.int64)
    if array.size == 0:
        return _EMPTY
    array = np.sort(array)  # np.unique hashes in numpy 2 and is ~10x slower than sorting for 10M int64
    keep = np.empty(array.size, dtype=bool)
    keep[0] = True
    np.not_equal(array[1:], array[:-1], out=keep[1:])
    return array if keep.all() else array[keep]


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted union of two sorted int64 arrays without repeats."""
    if b.size == 0:
        return a
    if a.size == 0:
        return b
    return sorted_unique(np.concatenate((a, b)))


class NumberSet:
    """A set of E.164 numbers held as int digits (see the module doc). ``x in s`` takes an int."""

    __slots__ = ("_added", "_array", "_lo", "_n", "_nbuckets", "_removed", "_shift", "_starts", "_view")

    def __init__(self, numbers: np.ndarray | Iterable[int] = (), *, assume_sorted_unique: bool = False) -> None:
        """``numbers``: ints (or an int64 array; with ``assume_sorted_unique`` it is used as is, not copied)."""
        if assume_sorted_unique and isinstance(numbers, np.ndarray) and numbers.dtype == np.int64:
            array = numbers
        else:
            array = sorted_unique(numbers)
        self._added: set[int] = set()
        self._removed: set[int] = set()
        self._set_array(array)

    @classmethod
    def from_e164(cls, numbers: Iterable[str]) -> NumberSet:
        """A set of E.164 strings; raises ValueError on one that is not E.164."""
        values = []
        for number in numbers:
            value = e164_to_int(number)
            if value is None:
                raise ValueError(f"not an E.164 number: {number!r}")
            values.append(value)
        return cls(values)

    # ------------------------------------------------------------------------------------------ internals

    def _set_array(self, array: np.ndarray) -> None:
        if array.size and (array[0] < MIN_E164 or array[-1] > MAX_E164):
            raise ValueError("numbers must be E.164 digits (10 .. 10**15-1)")
        array.flags.writeable = False  # shared with readers; never changed in place
        self._array = array
        self._view = memoryview(array)
        self._n = n = int(array.size)
        if n == 0:
            self._lo, self._shift, self._nbuckets = 0, 0, 0
            self._starts = memoryview(np.zeros(1, dtype=np.int32))
            return
        lo = int(array[0])
        span = int(array[-1]) - lo + 1
        target = max(1, n // _BUCKET_TARGET)
        shift = max(0, (span // target).bit_length())
        nbuckets = ((span - 1) >> shift) + 1
        buckets = (array - lo) >> shift
        starts = np.searchsorted(buckets, np.arange(nbuckets + 1, dtype=np.int64)).astype(np.int32)
        self._lo, self._shift, self._nbuckets = lo, shift, nbuckets
        self._starts = memoryview(starts)

    def _in_array(self, value: int) -> bool:
        bucket = (value - self._lo) >> self._shift
        if bucket < 0 or bucket >= self._nbuckets:
            return False
        starts = self._starts
        hi = starts[bucket + 1]
        i = bisect_left(self._view, value, starts[bucket], hi)
        return i < hi and self._view[i] == value

    # ------------------------------------------------------------------------------------------ reading

    def __contains__(self, value: object) -> bool:
        if self._added or self._removed:
            if value in self._added:
                return True
            if value in self._removed:
                return False
        if type(value) is not int:
            return isinstance(value, int) and self._in_array(int(value))
        # _in_array, inlined: this is the call path's lookup
        bucket = (value - self._lo) >> self._shift
        if bucket < 0 or bucket >= self._nbuckets:
            return False
        starts = self._starts
        hi = starts[bucket + 1]
        view = self._view
        i = bisect_left(view, value, starts[bucket], hi)
        return i < hi and view[i] == value

    def contains_e164(self, number: str) -> bool:
        """Whether the E.164 string ``number`` is in the set (False for anything not E.164)."""
        value = e164_to_int(number)
        return value is not None and value in self

    def __len__(self) -> int:
        return self._n + len(self._added) - len(self._removed)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.to_array().tolist())

    def __repr__(self) -> str:
        return f"NumberSet({len(self)} numbers)"

    def to_array(self) -> np.ndarray:
        """The numbers, sorted, as a read-only int64 array (the overlay folded in; the set is unchanged)."""
        if not (self._added or self._removed):
            return self._array
        array = self._array
        if self._removed:
            array = array[~np.isin(array, np.fromiter(self._removed, dtype=np.int64))]
        if self._added:
            array = union(array, sorted_unique(np.fromiter(self._added, dtype=np.int64)))
        array.flags.writeable = False
        return array

    @property
    def nbytes(self) -> int:
        """Bytes held by the array and the bucket table (the overlay not counted)."""
        return int(self._array.nbytes) + self._starts.nbytes

    @property
    def pending(self) -> int:
        """Adds and removes not yet folded into the array."""
        return len(self._added) + len(self._removed)

    # ------------------------------------------------------------------------------------------ writing

    def add(self, value: int) -> bool:
        """Add one number; True when it was not there."""
        if not MIN_E164 <= value <= MAX_E164:
            raise ValueError(f"not an E.164 number: {value}")
        if value in self._removed:
            self._removed.discard(value)
            return True
        if value in self._added or self._in_array(value):
            return False
        self._added.add(value)
        self._maybe_compact()
        return True

    def discard(self, value: int) -> bool:
        """Remove one number; True when it was there."""
        if value in self._added:
            self._added.discard(value)
            return True
        if value in self._removed or not self._in_array(value):
            return False
        self._removed.add(value)
        self._maybe_compact()
        return True

    def update(self, values: np.ndarray | Iterable[int]) -> int:
        """Add many numbers at once (folded straight into the array); how many were new."""
        incoming = sorted_unique(values)
        if incoming.size == 0:
            return 0
        if incoming[0] < MIN_E164 or incoming[-1] > MAX_E164:
            raise ValueError("numbers must be E.164 digits (10 .. 10**15-1)")
        before = len(self)
        self.compact()
        self._set_array(union(self._array, incoming))
        return len(self) - before

    def compact(self) -> None:
        """Fold the overlay into the array."""
        if self._added or self._removed:
            array = self.to_array()
            self._added = set()
            self._removed = set()
            self._set_array(array)

    def _maybe_compact(self) -> None:
        if len(self._added) + len(self._removed) > OVERLAY_LIMIT:
            self.compact()
