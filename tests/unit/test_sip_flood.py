"""The SIP edge's flood guard: per-source request windows, bans, strikes, trusted networks, scanner signatures,
bounded memory; wired into the driver (before parsing) and the TCP accept path; its metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime

import pytest

from dce.clock import VirtualClock
from dce.exchange.config import ConfigError, load_settings
from dce.exchange.sip_driver import SipDriver
from dce.http_api.metrics import ExchangeMetrics, label_violations
from dce.sip.b2bua import B2BUA
from dce.sip.endpoint import SipEndpoint
from dce.sip.flood import FloodGuard
from dce.sip.scanners import is_scanner
from dce.sip.transport import SipTransport
from tests.unit.sipfactory import describe, new_branch, parse_outbox, request
from tests.unit.test_callflow import RecordedSockets, VirtualTimer

FLOODER = "203.0.113.66"
OTHER = "198.51.100.7"


def options(ua: str | None = None, *, from_display: str | None = None) -> bytes:
    extra = [("User-Agent", ua)] if ua is not None else []
    branch = new_branch()
    data = request("OPTIONS", branch=branch, call_id=f"{branch}@192.0.2.10", extra=extra)
    if from_display is not None:
        data = data.replace(b"From: <", f'From: "{from_display}" <'.encode(), 1)
    return data


# -- windows and bans -------------------------------------------------------------------------------------
def test_a_source_over_its_window_limit_is_banned_and_dropped_until_the_ban_ends() -> None:
    guard = FloodGuard(requests_per_window=10, window_s=2.0, ban_s=300.0)
    message = options()
    assert [guard.screen(message, FLOODER, 100.0 + i * 0.01) for i in range(10)] == [None] * 10
    assert guard.screen(message, FLOODER, 100.2) == "flood_banned"  # the 11th in the window
    assert guard.is_banned(FLOODER, 100.2) and guard.banned == 1
    assert guard.bans_total["flood"] == 1
    assert guard.screen(message, OTHER, 100.3) is None  # nobody else is affected
    assert guard.screen(b"SIP/2.0 200 OK\r\n\r\n", FLOODER, 150.0) == "flood_banned"  # responses too
    assert guard.screen(message, FLOODER, 399.0) == "flood_banned"
    assert guard.screen(message, FLOODER, 400.3) is None  # the ban is over
    assert guard.banned == 0


def test_windows_reset_so_a_steady_sender_under_the_rate_is_never_banned() -> None:
    guard = FloodGuard(requests_per_window=10, window_s=2.0)
    message = options()
    for i in range(1000):  # 4.5 requests per second: 9 per 2 s window
        assert guard.screen(message, OTHER, i / 4.5) is None
    assert guard.bans_total["flood"] == 0


def test_responses_are_not_counted() -> None:
    guard = FloodGuard(requests_per_window=3)
    response = b"SIP/2.0 180 Ringing\r\nVia: x\r\n\r\n"
    assert all(guard.screen(response, OTHER, 1.0) is None for _ in range(100))


def test_one_warning_per_ban_not_per_dropped_message(caplog: pytest.LogCaptureFixture) -> None:
    guard = FloodGuard(requests_per_window=5)
    with caplog.at_level(logging.INFO, logger="dce.sip.flood"):
        for i in range(1000):
            guard.screen(options(), FLOODER, 1.0 + i * 1e-4)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert FLOODER in warnings[0].getMessage() and "flood" in warnings[0].getMessage()


def test_an_ipv6_source_is_its_slash_64() -> None:
    guard = FloodGuard(requests_per_window=10)
    for i in range(11):  # one host rotating through its /64
        verdict = guard.screen(options(), f"2001:db8:1:2::{i + 1:x}", 1.0 + i * 0.01)
    assert verdict == "flood_banned"
    assert guard.is_banned("2001:db8:1:2:ffff::1", 1.5)
    assert not guard.is_banned("2001:db8:1:3::1", 1.5)  # the next /64 is someone else
    assert guard.screen(options(), "2001:db8:1:3::1", 1.6) is None


# -- strikes ------------------------------------------------------------------------------------------------
def test_strikes_ban_after_strikes_to_ban_within_the_strike_window() -> None:
    guard = FloodGuard(strikes_to_ban=3, strike_window_s=60.0, ban_s=30.0)
    on_auth_failure = guard.strike  # what the digest check calls: on_auth_failure(source, now)
    assert not on_auth_failure(FLOODER, 1.0)
    assert not on_auth_failure(FLOODER, 2.0)
    assert on_auth_failure(FLOODER, 3.0)
    assert guard.screen(options(), FLOODER, 4.0) == "flood_banned"
    assert guard.bans_total["strikes"] == 1
    # strikes spread wider than the strike window never add up to a ban
    assert not any(guard.strike(OTHER, t) for t in (0.0, 61.0, 122.0, 183.0))


# -- trusted networks ------------------------------------------------------------------------------------
def test_trusted_networks_are_never_banned() -> None:
    guard = FloodGuard(requests_per_window=5, strikes_to_ban=1, trusted=["192.0.2.0/24", "2001:db8::/32"])
    for i in range(100):
        assert guard.screen(options(), "192.0.2.10", 1.0 + i * 1e-3) is None
    assert not guard.strike("2001:db8::5", 2.0)
    assert guard.screen(options("friendly-scanner"), "192.0.2.10", 3.0) == "scanner"  # dropped, not banned
    assert guard.banned == 0 and not guard.is_banned("192.0.2.10", 3.0)
    assert guard.strike("192.0.3.1", 4.0)  # outside the trusted networks


def test_a_peer_we_dial_is_trusted_its_ban_lifted_and_the_peers_kept_are_bounded() -> None:
    guard = FloodGuard(requests_per_window=5, strikes_to_ban=1, max_sources=3)
    assert guard.strike(OTHER, 1.0) and guard.is_banned(OTHER, 1.0)  # banned before we ever dialled it
    guard.trust_peer(OTHER)
    assert not guard.is_banned(OTHER, 1.1)  # else its answers to our INVITE would be dropped
    for i in range(100):  # a busy buyer's BYEs and re-INVITEs
        assert guard.screen(options(), OTHER, 2.0 + i * 1e-3) is None
    assert not guard.strike(OTHER, 3.0) and guard.banned == 0
    guard.trust_peer("2001:db8:1::5")
    assert guard.is_trusted("2001:db8:1::9")  # an IPv6 peer is its /64, as bans are
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        guard.trust_peer(address)
    assert not guard.is_trusted(OTHER) and guard.is_trusted("192.0.2.3")  # the least recently dialled went first
    assert guard.tracked <= 4 * 3


# -- scanners ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ua", ["friendly-scanner", "Friendly-Scanner", "sipcli/v1.8", "SIPVicious 0.3.4",
                                "VaxSIPUserAgent/3.1", "iWar", "sip-scan", "sundayddr", "pplsip"])
def test_scanner_user_agents_are_recognised(ua: str) -> None:
    assert is_scanner(options(ua))


def test_scanner_from_display_names_are_recognised() -> None:
    assert is_scanner(options(from_display="sipvicious"))
    assert is_scanner(options(from_display="SIPVicious").replace(b"From:", b"f:", 1))  # compact form


@pytest.mark.parametrize("ua", ["Linphone/5.2", "sipsak 0.9.8", "SIPp", "Siwar's phone", "Asterisk PBX",
                                "friendly-scanners-detector"])
def test_ordinary_user_agents_are_not_scanners(ua: str) -> None:
    assert not is_scanner(options(ua))


def test_a_signature_outside_user_agent_and_from_or_in_the_body_is_not_a_scanner() -> None:
    assert not is_scanner(options().replace(b"Call-ID: ", b"Call-ID: friendly-scanner-", 1))
    body = request("INVITE", body=b"v=0\r\ns=friendly-scanner\r\n")
    assert not is_scanner(body)


def test_a_scanner_is_dropped_and_banned_at_once() -> None:
    guard = FloodGuard()
    assert guard.screen(options("friendly-scanner"), FLOODER, 1.0) == "scanner"
    assert guard.bans_total["scanner"] == 1
    assert guard.screen(options(), FLOODER, 2.0) == "flood_banned"  # whatever it sends next


# -- bounded memory ------------------------------------------------------------------------------------
def test_memory_is_bounded_by_max_sources_with_the_oldest_evicted() -> None:
    guard = FloodGuard(requests_per_window=1, max_sources=100, ban_s=1e6)
    message = options()
    for i in range(10_000):  # a spray of sources, each banned on its second request
        source = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        guard.screen(message, source, 1.0 + i * 1e-6)
        guard.screen(message, source, 1.0 + i * 1e-6)
        guard.strike(source, 1.0)
    assert guard.tracked <= 300
    assert guard.banned == 100
    assert guard.is_banned("10.0.39.15", 2.0)  # the last source (i = 9999) is still banned
    assert not guard.is_banned("10.0.0.0", 2.0)  # the oldest ban was evicted for the newest


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FloodGuard(requests_per_window=0)
    with pytest.raises(ValueError):
        FloodGuard(window_s=0)
    with pytest.raises(ValueError):
        FloodGuard(trusted=["not-a-network"])


# -- configuration -------------------------------------------------------------------------------------
def test_config_defaults_and_validation() -> None:
    flood = load_settings().sip.flood
    assert (flood.enabled, flood.requests_per_window, flood.window_s, flood.ban_s, flood.strikes_to_ban) == (
        True, 200, 2.0, 300.0, 5)
    assert flood.trusted == []
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"sip": {"flood": {"trusted": ["10.0.0.0/33"]}}})
    assert info.value.key == "sip.flood.trusted"
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"sip": {"flood": {"requests_per_window": 0}}})
    assert info.value.key == "sip.flood.requests_per_window"


def test_from_config_builds_the_guard_or_none() -> None:
    async def build(flood: dict) -> FloodGuard | None:
        sip = load_settings(overrides={"sip": {"flood": flood}}).sip
        clock = VirtualClock(datetime(2026, 3, 8, tzinfo=UTC), monotonic=1.0)
        return SipDriver.from_config(sip, clock=clock).flood

    guard = asyncio.run(build({"requests_per_window": 7, "ban_s": 9, "trusted": ["10.0.0.0/8"]}))
    assert guard is not None and (guard.requests_per_window, guard.ban_s) == (7, 9)
    assert guard.is_trusted("10.1.2.3")
    assert asyncio.run(build({"enabled": False})) is None


# -- the driver: before parsing ------------------------------------------------------------------------
class Drops:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def driver(guard: FloodGuard) -> tuple[SipDriver, RecordedSockets, Drops, VirtualClock]:
    clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
    wire = RecordedSockets()
    drops = Drops()
    core = B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)}))
    return SipDriver(core, clock=clock, sockets=wire, timers=VirtualTimer(), on_error=drops, flood=guard), \
        wire, drops, clock


def test_the_driver_drops_a_banned_source_silently_before_the_core_reads_it() -> None:
    guard = FloodGuard(requests_per_window=3)
    drv, wire, drops, _ = driver(guard)
    parsed: list[bytes] = []
    receive = drv.core.receive
    drv.core.receive = lambda data, *a, **k: (parsed.append(data), receive(data, *a, **k))  # type: ignore
    for _ in range(3):
        drv.receive(options(), "udp", (FLOODER, 5060))
    assert describe(parse_outbox(wire.take())) == ["200", "200", "200"]
    for _ in range(50):
        drv.receive(options(), "udp", (FLOODER, 5060))
        drv.receive(b"\x00garbage that would not parse", "udp", (FLOODER, 5060))
    assert wire.take() == []  # no answer
    assert len(parsed) == 3  # never parsed
    assert drops.reasons == ["flood_banned"] * 100
    drv.receive(options("friendly-scanner"), "udp", (OTHER, 5060))
    assert wire.take() == [] and drops.reasons[-1] == "scanner" and guard.is_banned(OTHER, 100.0)
    drv.receive(options(), "tcp", ("192.0.2.200", 5060), stream=True)  # an ordinary source: answered
    assert describe(parse_outbox(wire.take())) == ["200"]


def test_the_driver_trusts_the_buyers_it_dials() -> None:
    guard = FloodGuard(requests_per_window=3)
    drv, wire, drops, _ = driver(guard)
    events: list[object] = []
    drv.deliver_to(events.append)
    drv.receive(request("INVITE"), "udp", ("192.0.2.10", 5060))
    [offered] = events
    drv.dial(offered.call, f"sip:buyer@{OTHER}:5080", ring_timeout=30, max_duration=None)  # type: ignore[attr-defined]
    assert describe(parse_outbox(wire.take())) == ["100", "INVITE"]
    for _ in range(20):  # far over its window: a busy buyer's own requests from the address we dial
        drv.receive(options(), "udp", (OTHER, 5080))
    assert describe(parse_outbox(wire.take())) == ["200"] * 20
    assert drops.reasons == [] and not guard.is_banned(OTHER, 100.0)


def test_the_driver_without_a_guard_screens_nothing() -> None:
    clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
    wire = RecordedSockets()
    drv = SipDriver(B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)})), clock=clock, sockets=wire,
                    timers=VirtualTimer())
    drv.receive(options("friendly-scanner"), "udp", (FLOODER, 5060))
    assert describe(parse_outbox(wire.take())) == ["200"]
    assert drv.admits(FLOODER)


# -- the TCP accept path -------------------------------------------------------------------------------
def test_a_tcp_connection_from_a_banned_source_is_closed_at_accept() -> None:
    async def scenario() -> None:
        guard = FloodGuard()
        clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
        drops = Drops()
        core = B2BUA(SipEndpoint(local={"udp": ("127.0.0.1", 5060)}))
        drv = SipDriver(core, clock=clock, timers=VirtualTimer(), on_error=drops, flood=guard)
        assert isinstance(drv.sockets, SipTransport)
        address = await drv.sockets.listen_tcp("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        try:
            guard.ban("127.0.0.1", 100.0, "flood")
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 100), 2.0)
            except ConnectionError:
                data = b""
            assert data == b""  # reset/closed without a word
            sock.close()
            assert "flood_banned" in drops.reasons
            assert drv.sockets.tcp_connections == 0
            clock.advance(301)  # the ban is over: accepted again
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            await asyncio.sleep(0.05)
            assert drv.sockets.tcp_connections == 1
            sock.close()
        finally:
            await drv.close()

    asyncio.run(scenario())


# -- metrics -------------------------------------------------------------------------------------------
def test_ban_metrics_are_read_off_the_guard() -> None:
    metrics = ExchangeMetrics()
    guard = FloodGuard(requests_per_window=1)
    metrics.flood_from(guard)
    guard.screen(options(), FLOODER, 1.0)
    guard.screen(options(), FLOODER, 1.1)
    guard.screen(options("sipcli"), OTHER, 1.2)
    metrics.sip_dropped("flood_banned")
    text = metrics.render()[0].decode()
    assert 'dce_sip_bans_total{reason="flood"} 1.0' in text
    assert 'dce_sip_bans_total{reason="scanner"} 1.0' in text
    assert "dce_sip_banned_sources 2.0" in text
    assert 'dce_sip_dropped_total{reason="flood_banned"} 1.0' in text
    assert label_violations(metrics) == []
    ExchangeMetrics().flood_from(None)  # flood limits off: nothing registered, no error
