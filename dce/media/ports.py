"""RTP/RTCP port-pair allocation from a configured range."""

from __future__ import annotations

from collections import deque
from pathlib import Path

__all__ = ["DescriptorsExhausted", "MediaUnavailable", "PortAllocator", "PortsExhausted", "ephemeral_overlap"]

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class MediaUnavailable(RuntimeError):
    """The media plane cannot take a call now (no ports, no descriptors, no media server answering)."""

    reason = "media unavailable"  # short, generic: for the caller's Reason header and the CDR


class PortsExhausted(MediaUnavailable):
    """No free RTP/RTCP port pair is left in the range."""

    reason = "no media ports left"  # short, generic: for the caller's Reason header and the CDR


class DescriptorsExhausted(PortsExhausted):
    """The process is out of file descriptors (EMFILE/ENFILE): ports may be free, sockets cannot be opened."""

    reason = "out of file descriptors"


def ephemeral_overlap(low: int, high: int, path: Path = EPHEMERAL_RANGE) -> tuple[int, int] | None:
    """The part of ``low..high`` inside the kernel's ephemeral port range, or None (also when unreadable)."""
    try:
        first, last = (int(word) for word in path.read_text().split())
    except (OSError, ValueError):
        return None
    start, end = max(low, first), min(high, last)
    return (start, end) if start <= end else None


class PortAllocator:
    """Hands out RTP/RTCP pairs ``(even, even + 1)`` from ``low..high`` (inclusive).

    ``allocate()`` and ``release()`` are O(1). Free pairs form a FIFO: a released pair goes to the back and
    is handed out again only after every other free pair, so stray late packets for an ended call are
    unlikely to reach the next call on the same ports.
    """

    def __init__(self, low: int, high: int) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"bad port range {low}-{high}")
        first = low + (low & 1)
        if first + 1 > high:
            raise ValueError(f"port range {low}-{high} holds no even/odd RTP/RTCP pair")
        self.low = low
        self.high = high
        self._free: deque[int] = deque(range(first, high, 2))
        self._in_use: set[int] = set()
        self.capacity = len(self._free)

    def allocate(self) -> int:
        """Take the least recently released free pair; return its even (RTP) port."""
        try:
            port = self._free.popleft()
        except IndexError:
            raise PortsExhausted(
                f"no free RTP port pair in {self.low}-{self.high} ({len(self._in_use)} pairs in use)"
            ) from None
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return the pair whose RTP port is ``port``; releasing a pair not in use is an error."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated") from None
        self._free.append(port)

    @property
    def in_use(self) -> int:
        """Number of pairs currently allocated."""
        return len(self._in_use)

    @property
    def available(self) -> int:
        """Number of free pairs."""
        return len(self._free)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use
