"""Calls through a real ``dce serve`` between SIPp peers: SIPp's counts and the CDR rows.

Each test starts its own exchange on free ports (``migrated_database_url``: SQLite, or PostgreSQL in CI)
and its own SIPp callees; scenarios live in sip-test-scenarios/ (see its README).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.externals import require_binary
from tests.integration.sipp import (
    CALLER,
    DID,
    HOST,
    ExchangeProcess,
    SippResult,
    SippUas,
    UdpSniffer,
    fetch_cdrs,
    free_media_port,
    free_port,
    run_sipp_uac,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

UNKNOWN_DID = "+18005550199"


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_binary("sipp")


@pytest.fixture
def exchange_factory(tmp_path: Path, migrated_database_url: str) -> Iterator[Any]:
    """Start exchanges on free ports; all are stopped (and checked not to have crashed) at teardown."""
    started: list[ExchangeProcess] = []

    def start(routes: dict[str, list[str]], **kwargs: Any) -> ExchangeProcess:
        database_url = kwargs.pop("database_url", migrated_database_url)  # e.g. the same database via a proxy
        exchange = ExchangeProcess(tmp_path / f"dce{len(started)}", database_url, routes, **kwargs)
        exchange.start()  # raises with the exchange's log when it does not come up
        started.append(exchange)
        return exchange

    yield start
    for exchange in started:
        alive = exchange.alive()
        exchange.stop()
        assert alive, f"the exchange died during the test:\n{exchange.log()}"


@pytest.fixture
def uas_factory(tmp_path: Path) -> Iterator[Any]:
    peers: list[SippUas] = []

    def start(scenario_name: str, **kwargs: Any) -> SippUas:
        kwargs.setdefault("name", f"{scenario_name}_{len(peers)}")
        peer = SippUas(scenario_name, tmp_path, **kwargs)
        peers.append(peer)
        return peer.start()

    yield start
    for peer in peers:
        peer.__exit__(None, None, None)


def assert_ok(result: SippResult, calls: int = 1, exchange: ExchangeProcess | None = None) -> None:
    log = f"\n--- exchange log ---\n{exchange.log(8000)}" if exchange is not None else ""
    assert result.returncode == 0, result.describe() + log
    assert (result.successful, result.failed) == (calls, 0), result.describe() + log


def only(cdrs: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(cdrs) == 1, cdrs
    return cdrs[0]


def assert_cdr_common(cdr: dict[str, Any], did: str = DID) -> None:
    assert cdr["did"] == did
    assert cdr["called"] == did
    assert cdr["caller"] == CALLER
    assert cdr["a_leg_call_id"]
    assert cdr["invite_at"] and cdr["end_at"]
    assert cdr["end_at"] >= cdr["invite_at"]


# ------------------------------------------------------------------------------------------- answered calls


@pytest.mark.parametrize("mode", ["passthrough", "relay"])
def test_basic_call_caller_hangs_up(tmp_path: Path, exchange_factory: Any, uas_factory: Any, mode: str) -> None:
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode=mode)

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=1500, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert cdr["disposition"] == "answered"
    assert cdr["final_code"] == 200
    assert cdr["hangup_side"] == "caller"
    assert cdr["destination"] == callee.uri
    assert cdr["b_leg_call_id"] and cdr["b_leg_call_id"] != cdr["a_leg_call_id"]
    assert cdr["ring_at"] and cdr["answer_at"]
    assert cdr["invite_at"] <= cdr["ring_at"] <= cdr["answer_at"] <= cdr["end_at"]
    assert 1 <= cdr["billable_s"] <= 3, cdr
    assert cdr["duration_s"] >= cdr["billable_s"]

    metrics = exchange.metrics()
    assert re.search(r'^dce_calls_total\{status="answered"\} 1\.0$', metrics, re.M), metrics
    assert re.search(r'^dce_sip_messages_total\{direction="in",method="INVITE"\} [1-9]', metrics, re.M), metrics
    assert re.search(r"^dce_exchange_added_delay_seconds_count [1-9]", metrics, re.M), metrics
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics


def test_callee_hangs_up(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    callee = uas_factory("uas_hangup", calls=1)
    exchange = exchange_factory({DID: [callee.uri]})

    caller = run_sipp_uac("uac_wait_bye", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "callee")
    assert 1 <= cdr["billable_s"] <= 3, cdr  # uas_hangup hangs up 1.5 s after the ACK


@pytest.mark.parametrize("mode", ["passthrough", "relay"])
def test_reinvite_hold_and_unhold(tmp_path: Path, exchange_factory: Any, uas_factory: Any, mode: str) -> None:
    # uas_reinvite checks the offers carry a=sendonly then a=sendrecv; uac_reinvite_hold checks the answers.
    callee = uas_factory("uas_reinvite", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode=mode)

    caller = run_sipp_uac("uac_reinvite_hold", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller")


def test_rtp_crosses_the_relay(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    callee = uas_factory("uas_rtp", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="relay")
    caller_media = free_media_port()
    sniff = UdpSniffer.available()
    sniffer = UdpSniffer({caller_media, callee.media_port}) if sniff else None

    if sniffer is not None:
        with sniffer:
            caller = run_sipp_uac("uac_rtp", exchange.sip_target, tmp_path, media_port=caller_media, timeout=30)
            time.sleep(0.2)
    else:
        caller = run_sipp_uac("uac_rtp", exchange.sip_target, tmp_path, media_port=caller_media, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller")
    # about 4 s of g711a.pcap each way plus a DTMF event: ~100+ packets per direction
    assert cdr["packets_relayed"] > 100, cdr
    assert cdr["bytes_relayed"] > 100 * 160, cdr
    if sniffer is not None:
        relay = exchange.rtp_ports
        to_callee = sniffer.received(callee.media_port, src_range=relay)
        to_caller = sniffer.received(caller_media, src_range=relay)
        assert to_callee > 50, f"callee got {to_callee} RTP packets from the relay; seen {dict(sniffer.counts)}"
        assert to_caller > 50, f"caller got {to_caller} RTP packets from the relay; seen {dict(sniffer.counts)}"
        # nothing bypassed the relay
        assert sniffer.received(callee.media_port, src=caller_media) == 0, dict(sniffer.counts)
        assert sniffer.received(caller_media, src=callee.media_port) == 0, dict(sniffer.counts)
        assert to_callee + to_caller <= cdr["packets_relayed"], (dict(sniffer.counts), cdr)


@pytest.mark.parametrize(("caller_transport", "callee_transport"), [("t1", "u1"), ("t1", "t1"), ("u1", "t1")])
def test_tcp_call(
    tmp_path: Path, exchange_factory: Any, uas_factory: Any, caller_transport: str, callee_transport: str
) -> None:
    callee = uas_factory("uas_answer", calls=1, transport=callee_transport)
    exchange = exchange_factory({DID: [callee.uri]})

    caller = run_sipp_uac(
        "uac_basic", exchange.sip_target, tmp_path, hold_ms=1000, transport=caller_transport, timeout=30
    )

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller")


# ------------------------------------------------------------------------------------------- failures


def test_callee_busy(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    callee = uas_factory("uas_busy", calls=1)
    exchange = exchange_factory({DID: [callee.uri]})

    caller = run_sipp_uac("uac_expect_486", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)  # it got its ACK
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["final_code"]) == ("busy", 486)
    assert cdr["billable_s"] == 0
    assert cdr["answer_at"] is None


def test_no_answer_times_out(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    callee = uas_factory("uas_no_answer", calls=1)  # succeeds only if it is CANCELled and gets the ACK of its 487
    exchange = exchange_factory({DID: [callee.uri]}, ring_timeout_s=1.5)

    started = time.monotonic()
    caller = run_sipp_uac("uac_expect_noanswer", exchange.sip_target, tmp_path, timeout=30)
    elapsed = time.monotonic() - started

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    assert 1.4 <= elapsed <= 10, f"final response after {elapsed:.1f} s with ring_timeout_s=1.5"
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert cdr["disposition"] == "no_answer", cdr
    assert cdr["final_code"] in (408, 480), cdr
    assert cdr["ring_at"] is not None and cdr["answer_at"] is None
    assert cdr["billable_s"] == 0


def test_caller_cancels_while_ringing(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    callee = uas_factory("uas_no_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]})

    caller = run_sipp_uac("uac_cancel", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)  # B was CANCELled and ACKed its 487
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("cancelled", 487, "caller")
    assert cdr["billable_s"] == 0


def test_unknown_did_gets_404(tmp_path: Path, exchange_factory: Any) -> None:
    exchange = exchange_factory({DID: [f"sip:{HOST}:{free_port('udp')}"]})

    caller = run_sipp_uac("uac_expect_404", exchange.sip_target, tmp_path, service=UNKNOWN_DID, timeout=30)

    assert_ok(caller, exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr, did=UNKNOWN_DID)
    assert (cdr["disposition"], cdr["final_code"]) == ("rejected", 404)


def test_all_destinations_busy_gives_486(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    first = uas_factory("uas_busy", calls=1)
    second = uas_factory("uas_busy", calls=1)
    exchange = exchange_factory({DID: [first.uri, second.uri]})

    caller = run_sipp_uac("uac_expect_486", exchange.sip_target, tmp_path, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(first.stop(), exchange=exchange)
    assert_ok(second.stop(), exchange=exchange)  # both were tried, in order
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert (cdr["disposition"], cdr["final_code"]) == ("busy", 486)
    assert cdr["destination"] == second.uri


# ------------------------------------------------------------------------------------------- failover


@pytest.mark.parametrize("first_scenario", ["uas_busy", "uas_503", "uas_no_answer"])
def test_failover_to_second_destination(
    tmp_path: Path, exchange_factory: Any, uas_factory: Any, first_scenario: str
) -> None:
    first = uas_factory(first_scenario, calls=1)
    second = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({DID: [first.uri, second.uri]}, ring_timeout_s=1.5)

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=1000, timeout=30)

    assert_ok(caller, exchange=exchange)
    assert_ok(first.stop(), exchange=exchange)
    assert_ok(second.stop(), exchange=exchange)
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["final_code"], cdr["hangup_side"]) == ("answered", 200, "caller")
    assert cdr["destination"] == second.uri


# ------------------------------------------------------------------------------------------- raw SIP over UDP


def _udp_exchange(exchange: ExchangeProcess, payload: bytes, wait: float = 2.0) -> list[bytes]:
    """Send one datagram to the exchange's SIP port; collect what comes back within ``wait`` seconds."""
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.2)
        sock.sendto(payload, (HOST, exchange.sip_port))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                replies.append(sock.recv(65535))
            except TimeoutError:
                if replies:
                    break
    return replies


def _request(method: str, uri: str, port: int, extra: str = "", branch: str | None = None) -> tuple[bytes, str]:
    branch = branch or f"z9hG4bK-{uuid.uuid4().hex[:12]}"
    call_id = f"{uuid.uuid4().hex}@{HOST}"
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch={branch};rport\r\n"
        f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 7 {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    )
    return text.encode(), call_id


def _status(reply: bytes) -> int:
    first = reply.split(b"\r\n", 1)[0].decode(errors="replace")
    assert first.startswith("SIP/2.0 "), first
    return int(first.split()[1])


def test_options_ping_out_of_dialog(exchange_factory: Any) -> None:
    exchange = exchange_factory({DID: [f"sip:{HOST}:{free_port('udp')}"]})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    payload, call_id = _request("OPTIONS", f"sip:{HOST}:{exchange.sip_port}", port)

    replies = _udp_exchange(exchange, payload)

    finals = [r for r in replies if _status(r) >= 200]
    assert finals, f"no final response to OPTIONS; got {replies!r}\n{exchange.log(4000)}"
    assert _status(finals[0]) == 200, finals[0]
    assert f"Call-ID: {call_id}".encode() in finals[0] or f"i: {call_id}".encode() in finals[0], finals[0]
    assert b"CSeq: 7 OPTIONS" in finals[0], finals[0]


def test_malformed_messages_do_not_kill_the_exchange(tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]

    # A request with a usable Via and Call-ID but a broken CSeq and From: a 400 can be formed, so one is due.
    text, _ = _request("INVITE", f"sip:{DID}@{HOST}:{exchange.sip_port}", port)
    broken = text.replace(b"CSeq: 7 INVITE", b"CSeq: seven INVITE").replace(b"From: <sip:probe@", b"From: <probe@@")
    replies = _udp_exchange(exchange, broken)
    assert replies, "no 400 to a malformed INVITE whose Via is usable"
    assert [_status(reply) for reply in replies] == [400] * len(replies), replies
    # Garbage of every kind: answered 400 or dropped, and none of it may take the exchange down.
    for junk in (
        b"\x00\xff\xfe garbage",
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\nshort",
        b"OPTIONS sip:" + b"a" * 4000 + b" SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1\r\n\r\n",
        b"\r\n\r\n",
    ):
        for reply in _udp_exchange(exchange, junk, wait=0.5):
            assert _status(reply) == 400, (junk, reply)
    assert exchange.alive(), exchange.log()

    # ... and the next call still works.
    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)
    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    cdrs = fetch_cdrs(exchange.http_base, 1)
    assert [c["disposition"] for c in cdrs] == ["answered"], cdrs


# ------------------------------------------------------------------------------------------- calls always end


def test_a_call_ringing_past_the_rtp_timeout_keeps_ringing_and_ends_with_one_cdr(
    tmp_path: Path, exchange_factory: Any, uas_factory: Any
) -> None:
    """Two callees ring without answering (no RTP: no early media) far longer than media.rtp_timeout_s.

    The inactivity timeout is for answered calls: both are rung to their ring timeout, the caller gets the
    no-answer status, and the call has exactly one CDR with every gauge back to 0.
    """
    first = uas_factory("uas_no_answer", calls=1)
    second = uas_factory("uas_no_answer", calls=1)
    exchange = exchange_factory({DID: [first.uri, second.uri]}, media_mode="relay", ring_timeout_s=2.5,
                                rtp_timeout_s=1.0)

    started = time.monotonic()
    caller = run_sipp_uac("uac_expect_noanswer", exchange.sip_target, tmp_path, timeout=30)
    elapsed = time.monotonic() - started

    assert_ok(caller, exchange=exchange)
    assert_ok(first.stop(), exchange=exchange)  # CANCELled at its ring timeout, not at the RTP timeout
    assert_ok(second.stop(), exchange=exchange)  # and the second callee was rung too
    assert elapsed >= 2 * 2.5 - 0.3, f"the caller got its final response after {elapsed:.1f} s"
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["destination"]) == ("no_answer", second.uri), cdr
    metrics = exchange.metrics()
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics
    assert re.search(r"^dce_media_sessions 0\.0$", metrics, re.M), metrics
    assert re.search(r"^dce_calls_reaped_total 0\.0$", metrics, re.M), metrics


def test_a_passthrough_call_nobody_hangs_up_ends_at_the_max_call_duration(
    tmp_path: Path, exchange_factory: Any, uas_factory: Any
) -> None:
    """No BYE from anyone and no RTP to time out: routing.max_call_duration_s BYEs both legs, naming the limit."""
    callee = uas_factory("uas_answer", calls=1)  # waits for our BYE
    exchange = exchange_factory({DID: [callee.uri]}, media_mode="passthrough",
                                extra_config={"routing": {"max_call_duration_s": 2}})

    caller = run_sipp_uac("uac_wait_bye", exchange.sip_target, tmp_path, timeout=30)  # waits for our BYE

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
    for peer in (caller, callee.result):
        assert peer is not None
        byes = [m for m in peer.messages().split("\n\n") if m.lstrip().startswith("BYE ")]
        assert byes and all('Reason: SIP;cause=200;text="max call duration"' in m for m in byes), peer.messages()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("answered", "system", "max call duration")
    assert 1 <= cdr["billable_s"] <= 3, cdr
    metrics = exchange.metrics()
    assert re.search(r"^dce_active_calls 0\.0$", metrics, re.M), metrics
    assert re.search(r"^dce_media_sessions 0\.0$", metrics, re.M), metrics


def test_a_call_ringing_at_shutdown_is_ended_and_recorded(
    tmp_path: Path, exchange_factory: Any, uas_factory: Any
) -> None:
    """SIGTERM while a call rings: the caller gets its final response, the callee a CANCEL, the call its CDR."""
    callee = uas_factory("uas_no_answer", calls=1)
    exchange = exchange_factory({DID: [callee.uri]}, ring_timeout_s=60)
    with ThreadPoolExecutor(1) as pool:
        calling = pool.submit(run_sipp_uac, "uac_expect_noanswer", exchange.sip_target, tmp_path, timeout=30)
        deadline = time.monotonic() + 10
        while not re.search(r"^dce_active_calls 1\.0$", exchange.metrics(), re.M):
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.1)
        time.sleep(0.5)  # ringing
        assert exchange.stop() == 0, exchange.log()
        caller = calling.result(timeout=60)

    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)  # CANCELled
    assert "calls still running" not in exchange.log(), exchange.log()
    exchange.start()
    cdr = only(fetch_cdrs(exchange.http_base, 1))
    assert_cdr_common(cdr)
    assert (cdr["disposition"], cdr["hangup_side"], cdr["reason"]) == ("failed", "system", "exchange shutting down")
