"""The rtpengine ng client core on a virtual clock: cookies, retransmission, timeout, failover, weights, errors."""

from __future__ import annotations

import bencodepy
import pytest

from dce.media.ng import NgClient, NgError, NgFailure, NgInstance, NgReply, NgUnavailable, parse_instance

ONE = NgInstance("127.0.0.1", 2223)
TWO = NgInstance("127.0.0.1", 2224)


def reply_to(data: bytes, body: dict[str, object]) -> bytes:
    cookie = data.partition(b" ")[0]
    return cookie + b" " + bencodepy.encode(body)


def client(*instances: NgInstance, rng: float = 0.0, **kw: float) -> NgClient:
    return NgClient(list(instances) or [ONE], timeout_s=kw.get("timeout_s", 1.0),
                    retransmit_s=kw.get("retransmit_s", 0.25), down_s=kw.get("down_s", 10.0),
                    cookie_prefix="t-", rng=lambda: rng)


def test_a_request_is_cookie_space_bencode_and_its_reply_is_matched_by_cookie() -> None:
    ng = client()
    first = ng.request({"command": "ping"}, 0.0)
    second = ng.request({"command": "query", "call-id": "c1"}, 0.0)
    (d1, addr1), (d2, _) = ng.datagrams_to_send()
    assert addr1 == ("127.0.0.1", 2223)
    assert d1 == b"t-1 d7:command4:pinge" and d2.startswith(b"t-2 d")
    assert bencodepy.decode(d2.partition(b" ")[2]) == {b"command": b"query", b"call-id": b"c1"}
    ng.receive(reply_to(d2, {"result": "ok", "totals": {}}), addr1, 0.01)  # out of order: matched by cookie
    ng.receive(reply_to(d1, {"result": "pong"}), addr1, 0.02)
    events = [ng.next_event(), ng.next_event()]
    assert [(type(e), e.id) for e in events if e] == [(NgReply, second), (NgReply, first)]
    assert ng.next_timer() is None and ng.next_event() is None


def test_unknown_cookies_and_garbage_are_ignored() -> None:
    ng = client()
    ng.request({"command": "ping"}, 0.0)
    ng.datagrams_to_send()
    ng.receive(b"zz d6:result4:ponge", ONE.address, 0.1)
    ng.receive(b"t-1 not-bencode", ONE.address, 0.1)
    assert ng.next_event() is None and ng.next_timer() == 0.25


def test_retransmits_with_the_same_cookie_until_the_timeout_then_fails() -> None:
    ng = client()
    request_id = ng.request({"command": "ping"}, 0.0)
    (sent, _), = ng.datagrams_to_send()
    times = []
    while (at := ng.next_timer()) is not None:
        ng.handle_timer(at)
        for data, _ in ng.datagrams_to_send():
            assert data == sent
            times.append(at)
    assert times == [0.25, 0.5, 0.75]
    event = ng.next_event()
    assert isinstance(event, NgFailure) and event.id == request_id
    assert isinstance(event.error, NgUnavailable) and "udp:127.0.0.1:2223" in str(event.error)
    assert ng.is_down(ONE, 1.0) and not ng.is_down(ONE, 11.0)


def test_an_error_reply_fails_the_request_with_its_reason() -> None:
    ng = client()
    ng.request({"command": "offer", "sdp": "garbage"}, 0.0)
    (data, addr), = ng.datagrams_to_send()
    ng.receive(reply_to(data, {"result": "error", "error-reason": "Failed to parse SDP"}), addr, 0.01)
    event = ng.next_event()
    assert isinstance(event, NgFailure) and isinstance(event.error, NgError)
    assert "Failed to parse SDP" in str(event.error)
    assert isinstance(event.error, ValueError)  # a refused offer reads like an unreadable one


def test_a_silent_instance_is_marked_down_and_the_request_fails_over_to_the_next() -> None:
    ng = client(ONE, TWO)  # rng 0.0: the first instance first
    request_id = ng.request({"command": "offer"}, 0.0)
    assert [a for _, a in ng.datagrams_to_send()] == [ONE.address]
    ng.handle_timer(1.0)
    resent = ng.datagrams_to_send()
    assert [a for _, a in resent] == [TWO.address]
    ng.receive(reply_to(resent[0][0], {"result": "ok"}), TWO.address, 1.1)
    event = ng.next_event()
    assert isinstance(event, NgReply) and (event.id, event.instance) == (request_id, TWO)
    # while ONE is down, new requests go to TWO at once; after down_s, ONE is tried again
    ng.request({"command": "ping"}, 2.0)
    assert [a for _, a in ng.datagrams_to_send()] == [TWO.address]
    ng.request({"command": "ping"}, 11.5)
    assert [a for _, a in ng.datagrams_to_send()] == [ONE.address]


def test_a_pinned_request_does_not_fail_over() -> None:
    ng = client(ONE, TWO)
    request_id = ng.request({"command": "delete"}, 0.0, instance=TWO)
    assert [a for _, a in ng.datagrams_to_send()] == [TWO.address]
    ng.handle_timer(1.0)
    assert ng.datagrams_to_send() == []
    event = ng.next_event()
    assert isinstance(event, NgFailure) and event.id == request_id and isinstance(event.error, NgUnavailable)


def test_every_instance_down_still_probes_them() -> None:
    ng = client(ONE, TWO)
    ng.request({"command": "ping"}, 0.0)
    ng.datagrams_to_send()
    ng.handle_timer(1.0)
    ng.handle_timer(2.0)
    assert isinstance(ng.next_event(), NgFailure)
    ng.datagrams_to_send()
    ng.request({"command": "ping"}, 3.0)
    assert [a for _, a in ng.datagrams_to_send()] == [ONE.address]


@pytest.mark.parametrize(("point", "expected"), [(0.0, ONE), (0.24, ONE), (0.26, TWO), (0.99, TWO)])
def test_the_choice_is_weighted(point: float, expected: NgInstance) -> None:
    heavy = NgInstance("127.0.0.1", 2224, weight=3)
    ng = client(ONE, heavy, rng=point)
    ng.request({"command": "ping"}, 0.0)
    assert [a for _, a in ng.datagrams_to_send()] == [expected.address]


def test_parse_instance() -> None:
    assert parse_instance("udp:127.0.0.1:2223") == ONE
    assert parse_instance("udp:rtp.example:2223=5") == NgInstance("rtp.example", 2223, 5)
    assert parse_instance("udp:[::1]:2223") == NgInstance("::1", 2223)
    for bad in ("127.0.0.1:2223", "tcp:127.0.0.1:2223", "udp:127.0.0.1", "udp:h:70000", "udp:h:1=0"):
        with pytest.raises(ValueError, match=r"udp:HOST:PORT|out of range|weight"):
            parse_instance(bad)
