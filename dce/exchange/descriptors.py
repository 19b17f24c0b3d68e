"""The process's file-descriptor budget: every TCP connection and every RTP/RTCP port is a descriptor.

A soft limit below what the edge may hold (often 1024 by default) makes calls fail for want of descriptors long
before media ports run out. At start the soft limit is raised toward the hard one, and a shortfall is reported.
"""

from __future__ import annotations

import resource

HEADROOM = 256  # database connections, HTTP clients and server, log files, the event loop's own


def descriptors_needed(*, tcp_max_connections: int, media_ports: int) -> int:
    """Descriptors the SIP edge and the relay may hold at once, plus headroom for the rest."""
    return tcp_max_connections + media_ports + HEADROOM


def ensure_descriptors(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (never above the hard limit, never lower it).

    Returns the soft limit in effect afterwards; below ``needed`` means the hard limit is short.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft
        return target
    return soft
