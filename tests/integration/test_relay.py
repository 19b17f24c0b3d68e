"""MediaRelay over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

import pytest

from dce.media.ports import PortsExhausted
from dce.media.relay import MediaRelay, PassthroughMedia, RelaySession
from dce.media.sdp import SdpError, parse_sdp

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
WAIT = 2.0  # bound for awaiting a packet that should arrive


class Endpoint(asyncio.DatagramProtocol):
    """A fake phone: one UDP socket, received datagrams queued."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport

    @classmethod
    async def open(cls, port: int = 0) -> Endpoint:
        loop = asyncio.get_running_loop()
        _, ep = await loop.create_datagram_endpoint(cls, local_addr=(HOST, port))
        return ep

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    def send(self, data: bytes, port: int) -> None:
        self.transport.sendto(data, (HOST, port))

    async def recv(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    async def nothing(self, within: float = 0.15) -> None:
        """Assert that no datagram arrives within ``within`` seconds."""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.queue.get(), within)

    def close(self) -> None:
        self.transport.close()


def rtp(seq: int, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + payload


def sdp(
    port: int, *, rtcp: int | None = None, direction: str = "sendrecv", video: int | None = None
) -> bytes:
    body = f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    if rtcp is not None:
        body += f"a=rtcp:{rtcp}\r\n"
    body += f"a={direction}\r\n"
    if video is not None:
        body += f"m=video {video} RTP/AVP 96\r\n"
    return body.encode()


def relay_port(session_sdp: bytes, index: int = 0) -> int:
    desc = parse_sdp(session_sdp)
    assert desc.media_address(index) == HOST
    return desc.media[index].port


@pytest.fixture
async def relay():
    r = MediaRelay(address=HOST, port_range=(41000, 41999), rtp_timeout_s=30)
    yield r
    await r.close()
    assert r.ports.in_use == 0


@pytest.fixture
async def endpoints():
    opened: list[Endpoint] = []

    async def make(port: int = 0) -> Endpoint:
        ep = await Endpoint.open(port)
        opened.append(ep)
        return ep

    yield make
    for ep in opened:
        ep.close()


def noop() -> None:
    pass


async def until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Poll a counter-based condition (there is no event to await for a dropped packet)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), within)


async def bridge(relay: MediaRelay, a: Endpoint, b: Endpoint) -> tuple[RelaySession, int, int]:
    """Offer from A, answer from B; return the session and the relay ports A and B must send to."""
    session = await relay.allocate("call-1", noop)
    to_b = session.rewrite_from_a(sdp(a.port))
    to_a = session.rewrite_from_b(sdp(b.port))
    return session, relay_port(to_a), relay_port(to_b)


async def test_both_ways_with_latching_and_counters(relay: MediaRelay, endpoints) -> None:
    a_sdp, a_real, b = await endpoints(), await endpoints(), await endpoints()
    session = await relay.allocate("call-1", noop)
    to_b = session.rewrite_from_a(sdp(a_sdp.port))  # A announces a_sdp but sends from a_real (NAT)
    to_a = session.rewrite_from_b(sdp(b.port))
    b_target, a_target = relay_port(to_b), relay_port(to_a)
    assert b_target % 2 == 0 and a_target % 2 == 0 and a_target != b_target

    b.send(rtp(1), b_target)  # before A sent anything: goes to A's SDP address
    data, src = await a_sdp.recv()
    assert data == rtp(1) and src == (HOST, a_target)

    a_real.send(rtp(10), a_target)  # A's first packet latches A to a_real's port
    data, src = await b.recv()
    assert data == rtp(10) and src == (HOST, b_target)
    for seq in range(2, 7):
        b.send(rtp(seq), b_target)
    for seq in range(2, 7):
        data, src = await a_real.recv()
        assert data == rtp(seq) and src == (HOST, a_target)
    await a_sdp.nothing()

    stats = session.stats
    size = len(rtp(0))
    assert (stats.a_to_b.rtp_packets, stats.a_to_b.rtp_bytes) == (1, size)
    assert (stats.b_to_a.rtp_packets, stats.b_to_a.rtp_bytes) == (6, 6 * size)
    assert stats.a_to_b.dropped_packets == stats.b_to_a.dropped_packets == 0
    assert stats.a_to_b.rtcp_packets == stats.b_to_a.rtcp_packets == 0


async def test_packets_before_other_side_known_are_dropped(relay: MediaRelay, endpoints) -> None:
    a, b = await endpoints(), await endpoints()
    session = await relay.allocate("call-d", noop)
    session.rewrite_from_a(sdp(a.port))
    assert session.ports[0] is not None
    a_target = session.ports[0][0]  # A learns it only from the answer; early media anyway
    for seq in range(3):
        a.send(rtp(seq), a_target)
    b.send(b"probe", a_target)  # a packet we can await: same socket, FIFO, also dropped
    await until(lambda: session.stats.a_to_b.dropped_packets >= 4)
    assert session.stats.a_to_b.dropped_packets == 4
    assert session.stats.a_to_b.rtp_packets == 0
    to_a = session.rewrite_from_b(sdp(b.port))
    assert relay_port(to_a) == a_target
    a.send(rtp(5), a_target)  # A latched on its first (dropped) packet; now B is known
    assert (await b.recv())[0] == rtp(5)


async def test_rtcp_forwarded_on_odd_ports(relay: MediaRelay, endpoints) -> None:
    a = await endpoints()
    a_rtcp = await endpoints()
    b = await endpoints()
    b_rtcp = await endpoints()
    session = await relay.allocate("call-rtcp", noop)
    to_b = session.rewrite_from_a(sdp(a.port, rtcp=a_rtcp.port))  # RFC 3605 a=rtcp
    to_a = session.rewrite_from_b(sdp(b.port))  # implicit RTCP = RTP + 1 (we won't listen there)
    assert parse_sdp(to_b).media[0].rtcp == (relay_port(to_b) + 1, None)
    assert parse_sdp(to_a).media[0].rtcp is None
    b_rtcp_target = relay_port(to_b) + 1
    a_rtcp_target = relay_port(to_a) + 1

    report = b"\x81\xc8\x00\x06" + b"\x00" * 24
    b_rtcp.send(report, b_rtcp_target)  # B's RTCP source latches; goes to A's a=rtcp port
    data, src = await a_rtcp.recv()
    assert data == report and src == (HOST, a_rtcp_target)
    a_rtcp.send(report + b"x", a_rtcp_target)
    data, src = await b_rtcp.recv()  # back to B's latched RTCP source, not b.port + 1
    assert data == report + b"x" and src == (HOST, b_rtcp_target)
    stats = session.stats
    assert (stats.b_to_a.rtcp_packets, stats.b_to_a.rtcp_bytes) == (1, len(report))
    assert (stats.a_to_b.rtcp_packets, stats.a_to_b.rtcp_bytes) == (1, len(report) + 1)
    assert stats.a_to_b.rtp_packets == stats.b_to_a.rtp_packets == 0


async def test_reinvite_moves_b(relay: MediaRelay, endpoints) -> None:
    a, b, b2 = await endpoints(), await endpoints(), await endpoints()
    session, a_target, b_target = await bridge(relay, a, b)
    b.send(rtp(1), b_target)
    assert (await a.recv())[0] == rtp(1)
    a.send(rtp(2), a_target)
    assert (await b.recv())[0] == rtp(2)

    # B re-INVITEs: media moves to b2 (and puts A on hold). Same relay ports both ways.
    to_a = session.rewrite_from_b(sdp(b2.port, direction="sendonly"))
    assert relay_port(to_a) == a_target
    assert b"a=sendonly" in to_a
    answer = session.rewrite_from_a(sdp(a.port, direction="recvonly"))
    assert relay_port(answer) == b_target
    a.send(rtp(3), a_target)
    assert (await b2.recv())[0] == rtp(3)
    await b.nothing()
    b2.send(rtp(4), b_target)
    assert (await a.recv())[0] == rtp(4)


async def test_failover_second_callee_and_stray_packets(relay: MediaRelay, endpoints) -> None:
    a, b1, b2 = await endpoints(), await endpoints(), await endpoints()
    session, a_target, b_target = await bridge(relay, a, b1)  # B1's 183
    first_to_a = session.rewrite_from_b(sdp(b1.port))
    assert session.rewrite_from_b(sdp(b1.port)) == first_to_a  # same content, same o= version
    to_a = session.rewrite_from_b(sdp(b2.port) + b"a=ptime:30\r\n")  # B2's 200 after B1 failed
    assert relay_port(to_a) == a_target
    origin = [parse_sdp(x).lines[1][1].split() for x in (first_to_a, to_a)]
    assert origin[0][1] == origin[1][1] and int(origin[1][2]) == int(origin[0][2]) + 1  # same id, new version

    b1.send(rtp(1), b_target)  # stray late packet from B1 latches first...
    assert (await a.recv())[0] == rtp(1)
    b2.send(rtp(2), b_target)  # ...but B2 sends from the address it announced, so B2 wins
    assert (await a.recv())[0] == rtp(2)
    a.send(rtp(3), a_target)
    assert (await b2.recv())[0] == rtp(3)
    await b1.nothing()


async def test_identical_sdp_keeps_origin_version(relay: MediaRelay, endpoints) -> None:
    a = await endpoints()
    session = await relay.allocate("call-o", noop)
    first, again = session.rewrite_from_a(sdp(a.port)), session.rewrite_from_a(sdp(a.port))
    assert first == again


async def test_multiple_m_lines_and_port_zero(relay: MediaRelay, endpoints) -> None:
    a, av, b, bv = await endpoints(), await endpoints(), await endpoints(), await endpoints()
    session = await relay.allocate("call-av", noop)
    offer = session.rewrite_from_a(sdp(a.port, video=av.port))
    answer = session.rewrite_from_b(sdp(b.port, video=0))  # B rejects video
    assert parse_sdp(answer).media[1].port == 0
    assert session.ports[1] is not None  # bound when A offered it
    assert relay.ports.in_use == 4
    # A re-offers audio only with video disabled: nothing new is bound
    session.rewrite_from_a(sdp(a.port, video=0))
    assert relay.ports.in_use == 4
    a.send(rtp(1), relay_port(answer))
    assert (await b.recv())[0] == rtp(1)
    video_ports = session.ports[1]
    assert video_ports is not None and relay_port(offer, 1) == video_ports[1]
    av.send(rtp(2), video_ports[0])  # video A->B: B rejected it, so no address: dropped
    await until(lambda: session.stats.a_to_b.dropped_packets == 1)
    await bv.nothing()
    bv.send(rtp(3), video_ports[1])  # video B->A: A disabled it in its re-offer: dropped too
    await until(lambda: session.stats.b_to_a.dropped_packets == 1)
    await av.nothing()


async def test_inactivity_timeout_fires_once_and_resets_on_packets(endpoints) -> None:
    relay = MediaRelay(address=HOST, port_range=(41000, 41999), rtp_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    done = asyncio.Event()
    session: RelaySession | None = None

    def on_timeout() -> None:
        fired.append(loop.time())
        done.set()

    try:
        a, b = await endpoints(), await endpoints()
        start = loop.time()
        session = await relay.allocate("call-t", on_timeout)
        to_b = session.rewrite_from_a(sdp(a.port))
        session.rewrite_from_b(sdp(b.port))
        session.answered()
        last_packet = start
        for seq in range(6):  # keep media flowing for ~0.6 s: no timeout meanwhile
            b.send(rtp(seq), relay_port(to_b))
            await a.recv()
            last_packet = loop.time()  # the relay saw it slightly earlier: allow 50 ms below
            await asyncio.sleep(0.1)
        assert not fired
        await asyncio.wait_for(done.wait(), WAIT)
        assert fired[0] - last_packet >= 0.3 - 0.05
        assert fired[0] - start >= 0.6
        await asyncio.sleep(0.7)  # more than two timeout periods: still only once
        assert len(fired) == 1
        session.close()
        assert relay.ports.in_use == 0
    finally:
        await relay.close()


async def test_timeout_then_close_from_callback_releases_ports() -> None:
    relay = MediaRelay(address=HOST, port_range=(41000, 41999), rtp_timeout_s=0.3)
    done = asyncio.Event()
    holder: list[RelaySession] = []

    def on_timeout() -> None:  # what the B2BUA does: BYE both legs, close the media
        holder[0].close()
        done.set()

    holder.append(await relay.allocate("call-t2", on_timeout))
    holder[0].answered()
    ports = holder[0].ports[0]
    assert relay.ports.in_use == 2
    await asyncio.wait_for(done.wait(), WAIT)
    assert relay.ports.in_use == 0 and relay.active_sessions == 0
    assert ports is not None
    for port in (*ports, ports[0] + 1, ports[1] + 1):  # really closed: rebindable
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, port))
    await relay.close()


async def test_no_timeout_while_ringing_only_from_answer() -> None:
    """A call that rings sends no RTP: the inactivity timeout counts from the answer, never before it."""
    relay = MediaRelay(address=HOST, port_range=(41000, 41999), rtp_timeout_s=0.2)
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    try:
        session = await relay.allocate("call-r", lambda: fired.append(loop.time()))
        await asyncio.sleep(0.5)  # ringing for more than two timeout periods
        assert fired == []
        answered_at = loop.time()
        session.answered()
        session.answered()  # idempotent: the timer is armed once
        await until(lambda: bool(fired))
        assert fired[0] - answered_at >= 0.2 - 0.02
        await asyncio.sleep(0.3)
        assert len(fired) == 1
    finally:
        await relay.close()


async def test_close_is_idempotent_and_stops_everything(relay: MediaRelay, endpoints) -> None:
    a, b = await endpoints(), await endpoints()
    fired: list[int] = []
    session = await relay.allocate("call-c", lambda: fired.append(1))
    session.rewrite_from_a(sdp(a.port))
    to_a = session.rewrite_from_b(sdp(b.port))
    assert relay.active_sessions == 1 and relay.ports.in_use == 2
    session.close()
    session.close()
    assert session.closed and relay.active_sessions == 0 and relay.ports.in_use == 0
    b.send(rtp(1), relay_port(to_a))
    await a.nothing()
    with pytest.raises(RuntimeError, match="closed"):
        session.rewrite_from_a(sdp(a.port))
    assert not fired


async def test_relay_close_closes_all_sessions(relay: MediaRelay) -> None:
    sessions = [await relay.allocate(f"call-{i}", noop) for i in range(5)]
    assert relay.active_sessions == 5 and relay.ports.in_use == 10
    await relay.close()
    assert all(s.closed for s in sessions)
    assert relay.active_sessions == 0 and relay.ports.in_use == 0


async def test_exhaustion_midway_releases_session_ports() -> None:
    relay = MediaRelay(address=HOST, port_range=(41100, 41107), rtp_timeout_s=30)  # 4 pairs = 2 streams
    try:
        s1 = await relay.allocate("call-x", noop)
        session = await relay.allocate("call-y", noop)
        assert relay.ports.in_use == 4
        s1.close()
        # 2 free pairs: enough for the video stream; a third m= line cannot be bound
        session.rewrite_from_a(sdp(40000, video=40002))
        assert relay.ports.in_use == 4
        with pytest.raises(PortsExhausted, match="no bindable RTP port pair"):
            session.rewrite_from_a(sdp(40000, video=40002) + b"m=video 40004 RTP/AVP 96\r\n")
        assert session.closed and relay.ports.in_use == 0 and relay.active_sessions == 0
        await relay.allocate("call-z1", noop)
        await relay.allocate("call-z2", noop)
        with pytest.raises(PortsExhausted, match="no bindable"):
            await relay.allocate("call-z3", noop)
        assert relay.ports.in_use == 4 and relay.active_sessions == 2
    finally:
        await relay.close()
    assert relay.ports.in_use == 0


async def test_port_taken_by_another_process_is_skipped() -> None:
    relay = MediaRelay(address=HOST, port_range=(41200, 41209), rtp_timeout_s=30)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, 41201))  # the RTCP half of the first pair
    try:
        session = await relay.allocate("call-s", noop)
        assert session.ports[0] is not None and 41200 not in session.ports[0]
        assert relay.ports.in_use == 2
    finally:
        squatter.close()
        await relay.close()


async def test_bad_sdp_raises_and_keeps_session(relay: MediaRelay) -> None:
    session = await relay.allocate("call-bad", noop)
    with pytest.raises(SdpError):
        session.rewrite_from_a(b"not sdp")
    with pytest.raises(SdpError, match="IPv6"):
        session.rewrite_from_a(b"v=0\r\nc=IN IP6 ::1\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert not session.closed


async def test_null_address_hold_sends_nothing_until_latched(relay: MediaRelay, endpoints) -> None:
    a, b = await endpoints(), await endpoints()
    session, _, b_target = await bridge(relay, a, b)
    to_b = session.rewrite_from_a(sdp(a.port).replace(f"c=IN IP4 {HOST}".encode(), b"c=IN IP4 0.0.0.0"))
    assert b"c=IN IP4 0.0.0.0" in to_b
    b.send(rtp(1), b_target)
    await a.nothing()
    assert session.stats.b_to_a.dropped_packets == 1


async def test_passthrough() -> None:
    media = PassthroughMedia()
    session = await media.allocate("call-p", noop)
    body = sdp(4000)
    assert session.rewrite_from_a(body) is body and session.rewrite_from_b(body) is body
    assert media.active_sessions == 1
    assert session.stats.a_to_b.rtp_packets == 0
    await media.close()
    assert media.active_sessions == 0
