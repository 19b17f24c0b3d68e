"""Concurrent inbound calls per source IP: over the limit is a 503 with Retry-After before any work."""

from __future__ import annotations

from dce.sip.b2bua import B2BUA, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.source_limit import SourceLimit
from tests.unit.sipfactory import describe, new_branch, parse_outbox, request

BUSY = ("192.0.2.10", 5060)
OTHER = ("192.0.2.77", 5060)


def make(limit: int) -> B2BUA:
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)})
    return B2BUA(endpoint, max_calls_per_source=limit, retry_after_s=7)


def invite(b2bua: B2BUA, source: tuple[str, int], n: int) -> tuple[list[str], list[object], list]:
    data = request("INVITE", branch=new_branch(), call_id=f"call-{n}@{source[0]}", via_host=source[0])
    b2bua.receive(data, "udp", source, float(n))
    sent = parse_outbox(b2bua.datagrams_to_send())
    events = []
    while (event := b2bua.next_event()) is not None:
        events.append(event)
    return describe(sent), events, sent


def test_calls_over_the_per_source_limit_get_503_with_retry_after_and_a_reason() -> None:
    b2bua = make(2)
    calls = []
    for n in range(2):
        labels, events, _ = invite(b2bua, BUSY, n)
        assert labels == ["100"] and isinstance(events[0], CallOffered)
        calls.append(events[0].call)
    labels, events, sent = invite(b2bua, BUSY, 2)
    assert labels == ["100", "503"] and events == []
    refused = sent[1].response
    assert refused.get("Retry-After") == "7"
    assert refused.get("Reason") == 'Q.850;cause=34;text="no circuit/channel available"'
    # another source is not affected
    labels, events, _ = invite(b2bua, OTHER, 3)
    assert labels == ["100"] and isinstance(events[0], CallOffered)
    # a call that ends gives its slot back
    b2bua.reject(calls[0], 486, 4.0)
    b2bua.datagrams_to_send()
    assert b2bua.next_event() is not None  # the rejected call's CallEnded
    labels, events, _ = invite(b2bua, BUSY, 5)
    assert labels == ["100"] and isinstance(events[0], CallOffered)


def test_no_limit_by_default_and_no_state_left_once_calls_end() -> None:
    b2bua = B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)}))
    offered = []
    for n in range(50):
        labels, events, _ = invite(b2bua, BUSY, n)
        assert labels == ["100"]
        offered.append(events[0].call)
    for call in offered:
        b2bua.reject(call, 480, 100.0)
    assert b2bua.active_calls == 0

    limited = make(3)
    calls = [invite(limited, (f"198.51.100.{i}", 5060), i)[1][0].call for i in range(20)]
    assert len(limited.source_limit) == 20
    for call in calls:
        limited.reject(call, 480, 100.0)
    assert len(limited.source_limit) == 0  # one entry per source with calls up, none after


def test_source_limit_counts() -> None:
    limit = SourceLimit(1)
    assert limit.acquire("a") and not limit.acquire("a") and limit.acquire("b")
    limit.release("a")
    assert limit.acquire("a")
    unlimited = SourceLimit(0)
    assert all(unlimited.acquire("a") for _ in range(1000)) and len(unlimited) == 0
