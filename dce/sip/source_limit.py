"""Concurrent inbound calls per source IP address, counted in memory (no database, no clock)."""

from __future__ import annotations


class SourceLimit:
    """At most ``limit`` calls up at once from one source; 0 means unlimited (and counts nothing).

    Only sources with calls up hold an entry, so memory follows the calls in progress, not every source seen.
    """

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, source: str) -> bool:
        """Take a slot for a new call from ``source``; False when it already has ``limit`` calls up."""
        if not self.limit:
            return True
        count = self._counts.get(source, 0)
        if count >= self.limit:
            return False
        self._counts[source] = count + 1
        return True

    def release(self, source: str) -> None:
        """Give back the slot of a call from ``source`` that has ended."""
        count = self._counts.get(source)
        if count is None:
            return  # taken while unlimited
        if count > 1:
            self._counts[source] = count - 1
        else:
            del self._counts[source]

    def __len__(self) -> int:
        return len(self._counts)
