"""media.mode rtpengine: calls through a real ``dce serve`` whose media goes through a real userspace rtpengine.

- an early-offer call carries RTP both ways through rtpengine (counted at both ends and on the CDR);
- a delayed-offer caller (INVITE without SDP) gets media both ways through rtpengine (the twin of the relay
  test in test_session_timers.py);
- rtpengine not answering: the call fails at once with 503 + Reason, one CDR, no session left;
- a silent instance is failed over to the next one (weights), and the call goes through.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rtpengine import RtpengineProcess
from tests.integration.sipp import DID, UdpSniffer, fetch_cdrs, free_media_port, free_port, run_sipp_uac
from tests.integration.test_session_timers import wait_for_metric
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    only,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST_NG = {"rtpengine_timeout_s": 0.5, "rtpengine_retransmit_s": 0.1}


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[RtpengineProcess]:
    with RtpengineProcess(tmp_path) as process:
        yield process


def media_config(*ng: str, **extra: Any) -> dict[str, Any]:
    return {"media": {"rtpengine": list(ng), **FAST_NG, **extra}}


def call_with_rtp(scenario: str, exchange: Any, callee: Any, tmp_path: Path) -> tuple[Any, UdpSniffer | None, int]:
    """Run ``scenario`` as the caller with media on a free port, sniffed when raw sockets are allowed."""
    caller_media = free_media_port()
    sniffer = UdpSniffer({caller_media, callee.media_port}) if UdpSniffer.available() else None
    if sniffer is not None:
        with sniffer:
            caller = run_sipp_uac(scenario, exchange.sip_target, tmp_path, media_port=caller_media, timeout=30)
            time.sleep(0.2)
    else:
        caller = run_sipp_uac(scenario, exchange.sip_target, tmp_path, media_port=caller_media, timeout=30)
    return caller, sniffer, caller_media


def assert_media_both_ways(sniffer: UdpSniffer | None, caller_media: int, callee: Any,
                           rtpengine: RtpengineProcess) -> None:
    """Each side received the other's packets from rtpengine's ports, and none bypassed it."""
    if sniffer is None:
        return
    ports = rtpengine.rtp_ports
    to_callee = sniffer.received(callee.media_port, src_range=ports)
    to_caller = sniffer.received(caller_media, src_range=ports)
    assert to_callee > 50, f"callee got {to_callee} RTP packets from rtpengine; seen {dict(sniffer.counts)}"
    assert to_caller > 50, f"caller got {to_caller} RTP packets from rtpengine; seen {dict(sniffer.counts)}"
    assert sniffer.received(callee.media_port, src=caller_media) == 0, dict(sniffer.counts)
    assert sniffer.received(caller_media, src=callee.media_port) == 0, dict(sniffer.counts)


def assert_no_session_left(exchange: Any, rtpengine: RtpengineProcess | None = None) -> None:
    metrics = wait_for_metric(exchange, r"^dce_media_sessions 0\.0$", 5)
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics
    assert re.search(r"^dce_media_sessions 0\.0$", metrics, re.M), metrics
    if rtpengine is not None:
        deadline = time.monotonic() + 3
        while rtpengine.list_calls() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rtpengine.list_calls() == 0, rtpengine.log()


def test_a_call_through_rtpengine_carries_rtp_both_ways(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, rtpengine: RtpengineProcess) -> None:  # noqa: F811
    callee = uas_factory("uas_rtp", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="rtpengine",
                                extra_config=media_config(rtpengine.ng))

    caller, sniffer, caller_media = call_with_rtp("uac_rtp", exchange, callee, tmp_path)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    assert_media_both_ways(sniffer, caller_media, callee, rtpengine)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller")
    assert cdr["packets_relayed"] > 200 and cdr["bytes_relayed"] > 200 * 160, cdr  # rtpengine's delete counts
    assert_no_session_left(exchange, rtpengine)


def test_delayed_offer_media_flows_both_ways_through_rtpengine(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, rtpengine: RtpengineProcess) -> None:  # noqa: F811
    """The caller's INVITE has no SDP: the callee's 200 carries the offer (ng offer from the callee's side), the
    caller's ACK the answer (ng answer), which our ACK to the callee carries. Both play g711a.pcap."""
    callee = uas_factory("uas_rtp", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="rtpengine",
                                extra_config=media_config(rtpengine.ng))

    caller, sniffer, caller_media = call_with_rtp("uac_late_offer_rtp", exchange, callee, tmp_path)

    assert_ok(caller, exchange=exchange)
    result = callee.stop()
    assert_ok(result, exchange=exchange)
    assert_media_both_ways(sniffer, caller_media, callee, rtpengine)
    acks = [m for m in re.split(r"\n-{20,}", result.messages()) if "\nACK " in m]
    assert acks and "m=audio" in acks[0], result.messages()  # the caller's answer reached the callee
    low, high = rtpengine.rtp_ports
    port = int(re.search(r"m=audio (\d+)", acks[0])[1])  # type: ignore[index]
    assert low <= port <= high, acks[0]  # rewritten by rtpengine
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"]) == ("answered", "caller"), cdr
    assert cdr["packets_relayed"] > 100, cdr
    assert_no_session_left(exchange, rtpengine)


def test_rtpengine_not_answering_fails_the_call_with_503_and_one_cdr(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    silent = f"udp:127.0.0.1:{free_port('udp')}"
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="rtpengine", extra_config=media_config(silent))

    started = time.monotonic()
    caller = run_sipp_uac("uac_expect_503", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert time.monotonic() - started < 5
    final = [m for m in re.split(r"\n-{20,}", caller.messages()) if "SIP/2.0 503" in m]
    assert final and 'Reason: Q.850;cause=47;text="media server unavailable"' in final[0], caller.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["reason"]) == ("failed", 503, "media server unavailable")
    assert_no_session_left(exchange)
    assert "INVITE sip:" not in callee.stop(timeout=2).messages(), "the callee was dialled"


def test_a_silent_instance_is_failed_over_and_the_call_goes_through(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, rtpengine: RtpengineProcess) -> None:  # noqa: F811
    callee = uas_factory("uas_rtp", calls=1)
    silent = f"udp:127.0.0.1:{free_port('udp')}=1000"  # nearly every first choice
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="rtpengine",
                                extra_config=media_config(silent, rtpengine.ng))

    caller, sniffer, caller_media = call_with_rtp("uac_rtp", exchange, callee, tmp_path)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    assert_media_both_ways(sniffer, caller_media, callee, rtpengine)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert cdr["disposition"] == "answered" and cdr["packets_relayed"] > 200, cdr
    assert_no_session_left(exchange, rtpengine)


def test_reinvite_hold_and_unhold_through_rtpengine(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, rtpengine: RtpengineProcess) -> None:  # noqa: F811
    """The caller's re-INVITEs (a=sendonly, then a=sendrecv) are ng offers, the callee's 200s ng answers: each
    reaches the other side rewritten by rtpengine, direction kept (uas_reinvite and uac_reinvite_hold check)."""
    callee = uas_factory("uas_reinvite", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="rtpengine",
                                extra_config=media_config(rtpengine.ng))

    caller = run_sipp_uac("uac_reinvite_hold", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    result = callee.stop()
    assert_ok(result, exchange=exchange)
    low, high = rtpengine.rtp_ports
    received = "".join(m for m in re.split(r"\n-{20,}", result.messages()) if "message received" in m)
    offers = re.findall(r"m=audio (\d+)", received)  # what reached the callee: the INVITE and 2 re-INVITEs
    assert len(offers) >= 3 and all(low <= int(port) <= high for port in offers), result.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller")
    assert_no_session_left(exchange, rtpengine)


def test_an_answered_call_without_rtp_ends_at_the_rtp_timeout_through_rtpengine(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, rtpengine: RtpengineProcess) -> None:  # noqa: F811
    """Neither side sends a packet: rtpengine's counts (ng query) stay still, and media.rtp_timeout_s after the
    answer both legs get BYE, reason "media timeout"."""
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="rtpengine", rtp_timeout_s=1.5,
                                extra_config=media_config(rtpengine.ng))

    caller = run_sipp_uac("uac_wait_bye", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("answered", "system", "media timeout")
    assert 1 <= cdr["billable_s"] <= 5 and cdr["packets_relayed"] == 0, cdr
    assert_no_session_left(exchange, rtpengine)
