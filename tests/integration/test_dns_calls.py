"""Buyers reached by name: a real ``dce serve`` resolving a target through dnsmasq (SRV/NAPTR on loopback) to SIPp
callees, failing over between SRV records; and buyers that challenge the exchange's INVITE (401)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dns_server import Dnsmasq
from tests.externals import require_binary
from tests.integration.sipp import DID, ExchangeProcess, SippUas, fetch_cdrs, run_sipp_uac

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BUYER_URI = "sip:buyer@buyer.test"


@pytest.fixture(autouse=True)
def _externals() -> None:
    require_binary("sipp")
    require_binary("dnsmasq")


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Any]]:
    """Everything started here is stopped at teardown (SIPp callees, dnsmasq, the exchange)."""
    started: list[Any] = []
    yield started
    for peer in reversed(started):
        peer.__exit__(None, None, None)


def start_uas(peers: list[Any], tmp_path: Path, scenario: str, **kwargs: Any) -> SippUas:
    uas = SippUas(scenario, tmp_path, name=f"{scenario}_{len(peers)}", **kwargs)
    peers.append(uas)
    return uas.start()


def start_exchange(peers: list[Any], tmp_path: Path, database_url: str, routes: dict[str, list[str]],
                   nameserver: str, **kwargs: Any) -> ExchangeProcess:
    extra = kwargs.pop("extra_config", {})
    extra.setdefault("sip", {})["dns"] = {"nameservers": [nameserver], "ipv6": False}
    exchange = ExchangeProcess(tmp_path / "dce", database_url, routes, extra_config=extra, **kwargs)
    exchange.start()
    peers.append(exchange)
    return exchange


def assert_sipp_ok(result: Any, exchange: ExchangeProcess) -> None:
    assert result.returncode == 0 and (result.successful, result.failed) == (1, 0), (
        result.describe() + "\n--- exchange log ---\n" + exchange.log(8000))


def test_srv_failover_from_a_503_to_the_next_record_completes_the_call(
        tmp_path: Path, migrated_database_url: str, peers: list[Any]) -> None:
    first = start_uas(peers, tmp_path, "uas_503", calls=1)
    second = start_uas(peers, tmp_path, "uas_answer", calls=1)
    dns = Dnsmasq(naptr=[("buyer.test", 10, 10, "s", "SIP+D2U", "_sip._udp.buyer.test")],
                  srv=[("_sip._udp.buyer.test", "a.buyer.test", first.port, 10, 10),
                       ("_sip._udp.buyer.test", "b.buyer.test", second.port, 20, 10)],
                  hosts=[("a.buyer.test", "127.0.0.1"), ("b.buyer.test", "127.0.0.1")])
    peers.append(dns.__enter__())
    exchange = start_exchange(peers, tmp_path, migrated_database_url, {DID: [BUYER_URI]}, dns.nameserver)

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)

    assert_sipp_ok(caller, exchange)
    refused = first.stop()
    assert_sipp_ok(refused, exchange)  # got the INVITE and answered 503
    assert_sipp_ok(second.stop(), exchange)
    assert "INVITE sip:buyer@buyer.test SIP/2.0" in refused.messages()  # the Request-URI keeps the name
    [cdr] = fetch_cdrs(exchange.http_base, 1)
    assert (cdr["disposition"], cdr["final_code"]) == ("answered", 200)
    assert cdr["destination"] == BUYER_URI


def test_a_name_with_no_records_fails_the_call_with_the_dns_reason(
        tmp_path: Path, migrated_database_url: str, peers: list[Any]) -> None:
    dns = Dnsmasq(hosts=[("a.buyer.test", "127.0.0.1")])
    peers.append(dns.__enter__())
    exchange = start_exchange(peers, tmp_path, migrated_database_url, {DID: ["sip:buyer@gone.test"]},
                              dns.nameserver)

    caller = run_sipp_uac("uac_expect_503", exchange.sip_target, tmp_path, timeout=30)

    assert_sipp_ok(caller, exchange)
    [cdr] = fetch_cdrs(exchange.http_base, 1)
    assert cdr["disposition"] == "failed" and cdr["final_code"] == 503, cdr
    assert cdr["reason"] == "last destination: 503 failed (DNS: no such domain gone.test)"


def test_a_silent_first_srv_record_is_passed_over_for_the_next_with_default_timers(
        tmp_path: Path, migrated_database_url: str, peers: list[Any]) -> None:
    """The first record's host takes the INVITE and never answers (a bound socket: no ICMP unreachable either).
    With default timers (T1 500 ms: timer B 32 s; ring timeout 30 s) only sip.no_response_timeout_s (5 s) moves
    the call to the next record before the ring timeout ends it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(2)
        second = start_uas(peers, tmp_path, "uas_answer", calls=1)
        dns = Dnsmasq(srv=[("_sip._udp.buyer.test", "a.buyer.test", silent.getsockname()[1], 10, 10),
                           ("_sip._udp.buyer.test", "b.buyer.test", second.port, 20, 10)],
                      hosts=[("a.buyer.test", "127.0.0.1"), ("b.buyer.test", "127.0.0.1")])
        peers.append(dns.__enter__())
        exchange = start_exchange(peers, tmp_path, migrated_database_url, {DID: [BUYER_URI]}, dns.nameserver)

        started = time.monotonic()
        caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=40)
        elapsed = time.monotonic() - started

        assert_sipp_ok(caller, exchange)
        assert_sipp_ok(second.stop(), exchange)
        assert silent.recv(65535).startswith(b"INVITE sip:buyer@buyer.test SIP/2.0")  # it was tried first
    # the no-response timer (5 s), the second hop's answer, the 500 ms hold and a loaded machine's slack: well
    # before the 30 s ring timeout that ended the call on the old code
    assert elapsed < 5 + 12, elapsed
    [cdr] = fetch_cdrs(exchange.http_base, 1)
    assert (cdr["disposition"], cdr["final_code"]) == ("answered", 200)
