"""Media planes: SDP rewriting and the in-process RTP relay (see ARCHITECTURE.md, "Media planes")."""

from dce.media.ports import PortAllocator, PortsExhausted
from dce.media.relay import (
    DirectionStats,
    MediaPlane,
    MediaRelay,
    MediaSession,
    MediaStats,
    PassthroughMedia,
    PassthroughSession,
    RelaySession,
)
from dce.media.sdp import SdpError, SessionDescription, parse_sdp, rewrite_sdp

__all__ = [
    "DirectionStats",
    "MediaPlane",
    "MediaRelay",
    "MediaSession",
    "MediaStats",
    "PassthroughMedia",
    "PassthroughSession",
    "PortAllocator",
    "PortsExhausted",
    "RelaySession",
    "SdpError",
    "SessionDescription",
    "parse_sdp",
    "rewrite_sdp",
]
