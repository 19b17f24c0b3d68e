"""Calls that always end, and carriers that ask for more, through a real ``dce serve`` between SIPp peers.

- a caller that vanishes (no BYE, no RTP, no refresh) is ended by its session timer (RFC 4028), in passthrough
  mode where no media timeout can see it; a burst where half the callers vanish leaves no call up;
- an answered call that never sends RTP is ended at media.rtp_timeout_s in relay mode;
- a delayed-offer caller (INVITE without SDP) gets media both ways through the in-process relay;
- a caller that requires 100rel gets a reliable 180 and its PRACK is answered (RFC 3262).

Session timers here use test values below RFC 4028's 90 s minimum (sip.session_expires_s 10, sip.min_se_s 5).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import (
    DID,
    UdpSniffer,
    fetch_cdrs,
    free_media_port,
    run_sipp_uac,
)
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_cdr_common,
    assert_ok,
    exchange_factory,
    only,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SHORT_TIMERS = {"sip": {"session_expires_s": 10, "min_se_s": 5}}
EXPIRED = "session timer expired"


def wait_for_metric(exchange: Any, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        metrics = exchange.metrics()
        if re.search(pattern, metrics, re.M) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.2)


def bye_reasons(messages: str) -> list[str]:
    return [m for m in messages.split("\n\n") if m.lstrip().startswith("BYE ")]


def test_a_vanished_caller_is_ended_by_its_session_timer(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """Passthrough: the caller negotiates Session-Expires 10 s as refresher, ACKs and is gone. Without a refresh
    the exchange BYEs both legs min(32, 10/3) s before expiry: the call is over ~6.7 s after the answer."""
    callee = uas_factory("uas_timer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="passthrough", extra_config=SHORT_TIMERS)

    started = time.monotonic()
    caller = run_sipp_uac("uac_vanish_timer", exchange.sip_target, tmp_path, timeout=30)
    assert_ok(caller, exchange=exchange)  # our 200 said Session-Expires: 10;refresher=uac and Require: timer
    result = callee.stop(timeout=30)  # its INVITE offered Session-Expires; it gets our BYE
    elapsed = time.monotonic() - started
    assert_ok(result, exchange=exchange)
    assert 5.5 <= elapsed <= 15, f"the call ended {elapsed:.1f} s after the INVITE"
    byes = bye_reasons(result.messages())
    assert byes and all(f'Reason: SIP;cause=200;text="{EXPIRED}"' in m for m in byes), result.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("answered", "system", EXPIRED), cdr
    assert 5 <= cdr["billable_s"] <= 9, cdr
    metrics = wait_for_metric(exchange, r"^dce_active_calls 0\.0$", 5)
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics


def test_a_vanished_caller_without_timer_support_is_ended_when_our_refresh_goes_unanswered(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """Passthrough, the common carrier: no session timers of its own. Our 200 makes us the refresher
    (refresher=uas); at half the interval we re-INVITE it, nobody answers, and when that transaction times out
    (64*T1, here T1 = 50 ms: before the session expires) both legs get BYE: reason "session refresh failed"."""
    callee = uas_factory("uas_timer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="passthrough",
                         extra_config={"sip": {**SHORT_TIMERS["sip"], "t1_ms": 50}})

    started = time.monotonic()
    caller = run_sipp_uac("uac_vanish", exchange.sip_target, tmp_path, timeout=30)
    assert_ok(caller, exchange=exchange)
    result = callee.stop(timeout=40)
    elapsed = time.monotonic() - started
    assert_ok(result, exchange=exchange)
    assert 5 + 3 <= elapsed <= 25, f"the call ended {elapsed:.1f} s after the INVITE"
    byes = bye_reasons(result.messages())
    assert byes and all('text="session refresh failed"' in m for m in byes), result.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("answered", "system",
                                                                      "session refresh failed"), cdr
    metrics = wait_for_metric(exchange, r"^dce_active_calls 0\.0$", 5)
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics


def test_after_a_burst_where_half_the_callers_vanish_no_call_is_left_up(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """20 calls at 10 CPS, half from callers that vanish after the ACK, half that hang up after 1 s. Once the
    session timers run out, /metrics shows no active call and every call has exactly one CDR."""
    per_kind = 10
    callee = uas_factory("uas_timer", calls=2 * per_kind)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="passthrough", extra_config={
        **SHORT_TIMERS, "compliance": {"fraud": {"enabled": False}}})  # one caller number, 20 calls: no velocity

    with ThreadPoolExecutor(2) as pool:
        vanishing = pool.submit(run_sipp_uac, "uac_vanish_timer", exchange.sip_target, tmp_path,
                                calls=per_kind, rate=10, timeout=60)
        hanging_up = pool.submit(run_sipp_uac, "uac_basic", exchange.sip_target, tmp_path,
                                 calls=per_kind, rate=10, hold_ms=1000, timeout=60)
        assert_ok(vanishing.result(), calls=per_kind, exchange=exchange)
        assert_ok(hanging_up.result(), calls=per_kind, exchange=exchange)
    metrics = wait_for_metric(exchange, r"^dce_active_calls 0\.0$", 20)
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics
    assert_ok(callee.stop(timeout=20), calls=2 * per_kind, exchange=exchange)
    cdrs = fetch_cdrs(exchange.http_base, 2 * per_kind)
    assert len(cdrs) == 2 * per_kind, cdrs
    assert len({c["a_leg_call_id"] for c in cdrs}) == 2 * per_kind  # one CDR per call
    endings = sorted((c["hangup_side"], c["reason"]) for c in cdrs)
    assert endings.count(("system", EXPIRED)) == per_kind, endings
    assert endings.count(("caller", "bye")) == per_kind, endings
    assert re.search(r"^dce_calls_reaped_total 0\.0$", metrics, re.M), metrics


def test_an_answered_call_that_never_sends_rtp_ends_at_the_rtp_timeout(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """Relay mode: neither side ever sends a packet. The inactivity timeout counts from the answer, so the call
    is hung up media.rtp_timeout_s after it (BYE to both, reason "media timeout")."""
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="relay", rtp_timeout_s=1.5)

    caller = run_sipp_uac("uac_wait_bye", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    for peer in (caller, callee.result):
        assert peer is not None
        byes = bye_reasons(peer.messages())
        assert byes and all('text="media timeout"' in m for m in byes), peer.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("answered", "system", "media timeout")
    assert 1 <= cdr["billable_s"] <= 4 and cdr["packets_relayed"] == 0, cdr
    metrics = wait_for_metric(exchange, r"^dce_media_sessions 0\.0$", 5)
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics
    assert re.search(r"^dce_media_sessions 0\.0$", metrics, re.M), metrics


def test_delayed_offer_media_flows_both_ways_through_the_relay(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """The caller's INVITE has no SDP: the callee's 200 carries the offer (rewritten to the relay), the caller's
    ACK the answer, which our ACK to the callee carries (rewritten). Both play g711a.pcap: each side receives
    the other's packets from the relay, and none bypass it."""
    callee = uas_factory("uas_rtp", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="relay")
    caller_media = free_media_port()
    sniffer = UdpSniffer({caller_media, callee.media_port}) if UdpSniffer.available() else None

    if sniffer is not None:
        with sniffer:
            caller = run_sipp_uac("uac_late_offer_rtp", exchange.sip_target, tmp_path, media_port=caller_media,
                                  timeout=30)
            time.sleep(0.2)
    else:
        caller = run_sipp_uac("uac_late_offer_rtp", exchange.sip_target, tmp_path, media_port=caller_media,
                              timeout=30)

    assert_ok(caller, exchange=exchange)
    result = callee.stop()
    assert_ok(result, exchange=exchange)
    acks = [m for m in re.split(r"\n-{20,}", result.messages()) if "\nACK " in m]
    assert acks and "m=audio" in acks[0], result.messages()  # the caller's answer reached the callee
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"]) == ("answered", "caller"), cdr
    assert cdr["packets_relayed"] > 100, cdr
    if sniffer is not None:
        relay = exchange.rtp_ports
        to_callee = sniffer.received(callee.media_port, src_range=relay)
        to_caller = sniffer.received(caller_media, src_range=relay)
        assert to_callee > 50, f"callee got {to_callee} RTP packets from the relay; seen {dict(sniffer.counts)}"
        assert to_caller > 50, f"caller got {to_caller} RTP packets from the relay; seen {dict(sniffer.counts)}"
        assert sniffer.received(callee.media_port, src=caller_media) == 0, dict(sniffer.counts)
        assert sniffer.received(caller_media, src=callee.media_port) == 0, dict(sniffer.counts)


def test_a_caller_requiring_100rel_gets_a_reliable_180_and_its_prack_answered(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    """Require: 100rel is not 420: the 180 carries Require: 100rel and RSeq, the PRACK gets 200, the call goes on;
    the callee never sees Require: 100rel."""
    callee = uas_factory("uas_ring_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]})

    caller = run_sipp_uac("uac_100rel", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)

    assert_ok(caller, exchange=exchange)
    result = callee.stop()
    assert_ok(result, exchange=exchange)
    invites = [m for m in re.split(r"\n-{20,}", result.messages()) if "\nINVITE " in m]
    assert invites and not re.search(r"^(Require|Supported):.*100rel", invites[0], re.M), result.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"]) == ("answered", "caller"), cdr
    assert cdr["ring_at"], cdr
