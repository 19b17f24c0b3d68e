"""A marketplace target that points at an agent, on a real ``dce serve``: while the agent is not registered a
carrier call gets the campaign's no-target answer (480) and the decision says why; once a SIPp device registers as
the agent over UDP or TCP, the next call rings that device's contact, the agent answers, and the CDR is billed to the
target like any other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sipp import DID, ExchangeProcess, fetch_cdrs, free_port, run_sipp_uac
from tests.integration.test_marketplace_calls import api
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD = "agent-secret-123"


def _configure(exchange: ExchangeProcess) -> None:
    """Buyer ``b1`` with agent ``a1`` (``alice``); campaign ``c1`` on the test DID whose one target is ``agent:a1``."""
    api(exchange, "POST", "/publishers", {"id": "p1", "name": "Publisher One"})
    api(exchange, "POST", "/buyers", {"id": "b1", "name": "Call centre"})
    api(exchange, "POST", "/agents", {"id": "a1", "buyer_id": "b1", "username": "alice", "password": PASSWORD})
    api(exchange, "POST", "/targets", {"id": "t1", "buyer_id": "b1", "name": "Alice", "destination": "agent:a1",
                                       "revenue": "9.00"})
    api(exchange, "POST", "/campaigns", {"id": "c1", "name": "Insurance", "publisher_ids": ["p1"],
                                         "target_ids": ["t1"]})
    api(exchange, "POST", "/numbers", {"did": DID, "campaign_id": "c1", "publisher_id": "p1"})


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_a_call_reaches_a_registered_agent_and_not_an_unregistered_one(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, transport: str) -> None:  # noqa: F811
    exchange = exchange_factory({}, extra_config={"sip": {"registrar": {"algorithms": ["MD5"]}}})  # SIPp 3.6: MD5
    _configure(exchange)
    time.sleep(1.0)  # API changes reach live routing within 1 s

    unanswered = run_sipp_uac("uac_expect_480", exchange.sip_target, tmp_path, timeout=30)
    assert_ok(unanswered, exchange=exchange)
    assert 'text="no eligible target: 1 no registered agent"' in unanswered.messages()
    [first] = fetch_cdrs(exchange.http_base, 1)
    assert (first["disposition"], first["final_code"]) == ("no_route", 480)
    assert first["reason"] == "no eligible target: 1 no registered agent"

    kind = "udp" if transport == "u1" else "tcp"
    device_port = free_port(kind)
    registered = run_sipp_uac("uac_register_only", exchange.sip_target, tmp_path, service="alice", timeout=15,
                              port=device_port, transport=transport, extra=["-au", "alice", "-ap", PASSWORD])
    assert_ok(registered, exchange=exchange)
    [binding] = exchange.get_json("/api/v1/agents/a1/registrations")["items"]
    assert binding["uri"] == f"sip:alice@127.0.0.1:{device_port};transport={kind.upper()}"
    assert binding["transport"] == kind
    # the device answers where it registered (over TCP its REGISTER's connection is closed: the exchange connects
    # anew, to that address or else to the Contact)
    agent = uas_factory("uas_answer", calls=1, port=device_port, transport=transport)

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)
    assert_ok(caller, exchange=exchange)
    answered = agent.stop()
    assert_ok(answered, exchange=exchange)
    assert "INVITE sip:alice@127.0.0.1" in answered.messages()
    cdrs = fetch_cdrs(exchange.http_base, 2)
    [second] = [cdr for cdr in cdrs if cdr["call_id"] != first["call_id"]]
    assert (second["disposition"], second["destination"]) == ("answered", "agent:a1")
    assert second["extra"]["target_id"] == "t1" and second["extra"]["revenue_micros"] == "9000000"
    assert second["buyer_id"] == "b1" and second["revenue"] == "9.00", second


def test_an_agents_two_devices_ring_together_and_the_one_not_answering_is_cancelled(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    exchange = exchange_factory({}, extra_config={"sip": {"registrar": {"algorithms": ["MD5"]}}})
    _configure(exchange)
    ports = [free_port("udp"), free_port("udp")]
    for index, port in enumerate(ports):
        registered = run_sipp_uac("uac_register_only", exchange.sip_target, tmp_path, service="alice", timeout=15,
                                  port=port, extra=["-au", "alice", "-ap", PASSWORD], name=f"register-{index}")
        assert_ok(registered, exchange=exchange)
    assert len(exchange.get_json("/api/v1/agents/a1/registrations")["items"]) == 2
    desk = uas_factory("uas_ring_answer", calls=1, port=ports[0])
    browser = uas_factory("uas_no_answer", calls=1, port=ports[1])
    time.sleep(1.0)  # API changes reach live routing within 1 s

    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=500, timeout=30)
    assert_ok(caller, exchange=exchange)
    assert_ok(desk.stop(), exchange=exchange)
    cancelled = browser.stop()
    assert_ok(cancelled, exchange=exchange)  # it rang, then got CANCEL (and answered 487)
    assert "Call completed elsewhere" in cancelled.messages()
    [cdr] = fetch_cdrs(exchange.http_base, 1)
    assert (cdr["disposition"], cdr["extra"]["agent_id"]) == ("answered", "a1")
