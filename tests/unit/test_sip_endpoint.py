"""SipEndpoint: the sans-IO core's stateless answers, matching and Via handling."""

from __future__ import annotations

from dce.sip.b2bua import B2BUA
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, Response, make_response, parse
from dce.sip.transaction import ClientTransaction, ServerInviteTransaction, ServerTransaction
from tests.unit.sipfactory import Sent, describe, new_branch, parse_outbox, request, response_to

LOCAL = {"udp": ("10.0.0.1", 5060), "tcp": ("10.0.0.1", 5060)}
ALICE = ("192.0.2.10", 5060)


class RecordingTU:
    """A transaction user that records every callback (and answers nothing unless told)."""

    def __init__(self) -> None:
        self.requests: list[ServerTransaction] = []
        self.acks: list[Request] = []
        self.cancels: list[tuple[ServerInviteTransaction, Request]] = []
        self.responses: list[tuple[ClientTransaction, Response]] = []
        self.stray: list[Response] = []
        self.client_timeouts: list[ClientTransaction] = []
        self.server_timeouts: list[ServerTransaction] = []

    def on_request(self, txn: ServerTransaction, now: float) -> None:
        self.requests.append(txn)

    def on_ack(self, request: Request, now: float) -> None:
        self.acks.append(request)

    def on_cancel(self, invite_txn: ServerInviteTransaction, cancel: Request, now: float) -> None:
        self.cancels.append((invite_txn, cancel))

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        self.responses.append((txn, response))

    def on_stray_response(self, response: Response, now: float) -> None:
        self.stray.append(response)

    def on_client_timeout(self, txn: ClientTransaction, now: float) -> None:
        self.client_timeouts.append(txn)

    def on_server_timeout(self, txn: ServerTransaction, now: float) -> None:
        self.server_timeouts.append(txn)


class CountingObserver:
    def __init__(self) -> None:
        self.dropped_reasons: list[str] = []
        self.messages: list[tuple[str, str]] = []

    def message(self, direction: str, method: str) -> None:
        self.messages.append((direction, method))

    def dropped(self, reason: str) -> None:
        self.dropped_reasons.append(reason)


def make() -> tuple[SipEndpoint, RecordingTU, CountingObserver]:
    observer = CountingObserver()
    endpoint = SipEndpoint(local=LOCAL, observer=observer)
    tu = RecordingTU()
    endpoint.tu = tu
    return endpoint, tu, observer


def out(endpoint: SipEndpoint) -> list[Sent]:
    return parse_outbox(endpoint.datagrams_to_send())


def test_invite_gets_100_trying_at_once_and_reaches_tu_once() -> None:
    endpoint, tu, _ = make()
    invite = request("INVITE")
    endpoint.receive(invite, "udp", ALICE, 0.0)
    sent = out(endpoint)
    assert describe(sent) == ["100"]
    assert sent[0].response.to_tag is None and sent[0].addr == ALICE
    assert len(tu.requests) == 1
    endpoint.receive(invite, "udp", ALICE, 0.5)  # retransmission: 100 again, TU not told
    assert describe(out(endpoint)) == ["100"]
    assert len(tu.requests) == 1


def test_retransmitted_invite_after_final_gets_the_final_again() -> None:
    endpoint, tu, _ = make()
    invite = request("INVITE")
    endpoint.receive(invite, "udp", ALICE, 0.0)
    txn = tu.requests[0]
    endpoint.respond(txn, make_response(txn.request, 486, to_tag="x"), 0.1)
    out(endpoint)
    endpoint.receive(invite, "udp", ALICE, 0.6)
    assert describe(out(endpoint)) == ["486"]
    assert len(tu.requests) == 1


def test_non_invite_gets_no_100_and_tu_answers() -> None:
    endpoint, tu, _ = make()
    endpoint.receive(request("OPTIONS"), "udp", ALICE, 0.0)
    assert out(endpoint) == []
    assert [t.request.method for t in tu.requests] == ["OPTIONS"]


def test_cancel_matching_pending_invite() -> None:
    endpoint, tu, _ = make()
    branch = new_branch()
    endpoint.receive(request("INVITE", branch=branch), "udp", ALICE, 0.0)
    out(endpoint)
    endpoint.receive(request("CANCEL", branch=branch), "udp", ALICE, 1.0)
    sent = out(endpoint)
    assert describe(sent) == ["200"]
    assert sent[0].response.cseq == (1, "CANCEL")
    assert len(tu.cancels) == 1 and tu.cancels[0][0] is tu.requests[0]


def test_unmatched_cancel_gets_481() -> None:
    endpoint, tu, _ = make()
    endpoint.receive(request("CANCEL"), "udp", ALICE, 0.0)
    assert describe(out(endpoint)) == ["481"]
    assert tu.cancels == [] and tu.requests == []


def test_cancel_after_final_gets_200_but_tu_not_told() -> None:
    endpoint, tu, _ = make()
    branch = new_branch()
    endpoint.receive(request("INVITE", branch=branch), "udp", ALICE, 0.0)
    endpoint.respond(tu.requests[0], make_response(tu.requests[0].request, 486, to_tag="x"), 0.1)
    out(endpoint)
    endpoint.receive(request("CANCEL", branch=branch), "udp", ALICE, 1.0)
    assert describe(out(endpoint)) == ["200"]
    assert tu.cancels == []


def test_merged_request_gets_482() -> None:
    endpoint, tu, _ = make()
    endpoint.receive(request("INVITE", branch=new_branch()), "udp", ALICE, 0.0)
    out(endpoint)
    # same Call-ID, From tag and CSeq, different branch (forked upstream, arrived twice)
    endpoint.receive(request("INVITE", branch=new_branch(), via_host="192.0.2.11"), "udp",
                     ("192.0.2.11", 5060), 0.1)
    sent = out(endpoint)
    assert describe(sent) == ["482"]
    assert sent[0].response.to_tag is not None
    assert len(tu.requests) == 1


def test_malformed_request_with_routable_headers_gets_400_with_warning() -> None:
    endpoint, tu, observer = make()
    data = request("OPTIONS", cseq_method="INVITE")  # CSeq method mismatch
    endpoint.receive(data, "udp", ALICE, 0.0)
    sent = out(endpoint)
    assert describe(sent) == ["400"]
    assert (sent[0].response.get("Warning") or "").startswith('399 dce "CSeq method')
    assert sent[0].addr == ALICE
    assert tu.requests == [] and observer.dropped_reasons == ["malformed_answered"]


def test_malformed_ack_is_never_answered() -> None:
    endpoint, _, observer = make()
    endpoint.receive(request("ACK", cseq_method="INVITE"), "udp", ALICE, 0.0)
    assert out(endpoint) == [] and observer.dropped_reasons == ["malformed"]


def test_unroutable_garbage_dropped_and_counted() -> None:
    endpoint, tu, observer = make()
    endpoint.receive(b"\x00\x01garbage\r\n\r\n", "udp", ALICE, 0.0)
    endpoint.receive(request("INVITE").replace(b"Call-ID", b"X-Call-ID"), "udp", ALICE, 0.0)
    assert out(endpoint) == []
    assert observer.dropped_reasons == ["malformed", "malformed"]
    assert tu.requests == []


def test_keepalive_is_silently_ignored() -> None:
    endpoint, _, observer = make()
    endpoint.receive(b"\r\n\r\n", "udp", ALICE, 0.0)
    assert out(endpoint) == [] and observer.dropped_reasons == [] and observer.messages == []


def test_oversized_datagram_dropped() -> None:
    endpoint, tu, observer = make()
    data = request("MESSAGE", body=b"x" * 70_000, content_type="text/plain")
    endpoint.receive(data, "udp", ALICE, 0.0)
    assert out(endpoint) == [] and tu.requests == [] and observer.dropped_reasons == ["too_large"]


def test_message_size_bound_is_configurable() -> None:
    endpoint = SipEndpoint(local=LOCAL, max_message_bytes=2048)
    endpoint.receive(request("INVITE", body=b"x" * 1000), "udp", ALICE, 0.0)
    endpoint.receive(request("INVITE", body=b"x" * 3000, call_id="big"), "udp", ALICE, 0.0)
    assert [s.message.call_id for s in out(endpoint)] == ["call-1@192.0.2.10"]  # only the small one: 100


def test_via_received_and_rport_and_response_goes_to_source_port() -> None:
    endpoint, tu, _ = make()
    # behind NAT: Via says 192.0.2.10:5060, the packet came from 203.0.113.5:40000
    endpoint.receive(request("INVITE", rport=True), "udp", ("203.0.113.5", 40000), 0.0)
    sent = out(endpoint)
    via = sent[0].response.top_via
    assert via.params["received"] == "203.0.113.5" and via.params["rport"] == "40000"
    assert sent[0].addr == ("203.0.113.5", 40000)
    assert tu.requests[0].request.top_via.params["rport"] == "40000"


def test_via_received_without_rport_goes_to_via_port() -> None:
    endpoint, _, _ = make()
    endpoint.receive(request("INVITE", via_port=5070), "udp", ("203.0.113.5", 40000), 0.0)
    sent = out(endpoint)
    via = sent[0].response.top_via
    assert via.params["received"] == "203.0.113.5" and "rport" not in via.params
    assert sent[0].addr == ("203.0.113.5", 5070)


def test_via_matching_source_is_left_alone() -> None:
    endpoint, _, _ = make()
    data = request("INVITE")
    endpoint.receive(data, "udp", ALICE, 0.0)
    sent = out(endpoint)
    assert sent[0].response.get("Via") == parse(data).get("Via")


def test_tcp_response_goes_back_on_the_connection() -> None:
    endpoint, _, _ = make()
    endpoint.receive(request("INVITE", transport="TCP"), "tcp", ("192.0.2.10", 51000), 0.0, stream=True)
    sent = out(endpoint)
    assert (sent[0].transport, sent[0].addr) == ("tcp", ("192.0.2.10", 51000))


def test_response_matched_by_branch_and_method() -> None:
    endpoint, tu, _ = make()
    invite = Request(method="INVITE", uri="sip:bob@198.51.100.20")
    for name, value in (("From", "<sip:x@10.0.0.1>;tag=ours"), ("To", "<sip:bob@198.51.100.20>"),
                        ("Call-ID", "out-1"), ("CSeq", "1 INVITE")):
        invite.add(name, value)
    txn = endpoint.send_request(invite, "udp", ("198.51.100.20", 5060), 0.0)
    sent = out(endpoint)
    assert describe(sent) == ["INVITE"] and sent[0].addr == ("198.51.100.20", 5060)
    assert sent[0].request.top_via.params == {"branch": txn.key[0], "rport": None}
    assert sent[0].request.get("Max-Forwards") == "70"
    # same branch, wrong method: not ours
    wrong = response_to(sent[0].request, 200, to_tag="b").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    endpoint.receive(wrong, "udp", ("198.51.100.20", 5060), 0.1)
    assert tu.responses == [] and len(tu.stray) == 1
    endpoint.receive(response_to(sent[0].request, 180, to_tag="b"), "udp", ("198.51.100.20", 5060), 0.2)
    assert [(t, r.status) for t, r in tu.responses] == [(txn, 180)]


def test_timers_drive_retransmission_through_next_timer() -> None:
    endpoint, tu, _ = make()
    bye = Request(method="BYE", uri="sip:bob@198.51.100.20")
    for name, value in (("From", "<sip:x@10.0.0.1>;tag=a"), ("To", "<sip:bob@h>;tag=b"),
                        ("Call-ID", "c"), ("CSeq", "2 BYE")):
        bye.add(name, value)
    endpoint.send_request(bye, "udp", ("198.51.100.20", 5060), 0.0)
    out(endpoint)
    now, resent = 0.0, 0
    while (deadline := endpoint.next_timer()) is not None:
        now = deadline
        endpoint.handle_timer(now)
        resent += len(out(endpoint))
    assert resent == 10  # E at 0.5, 1.5, 3.5, 7.5, then every 4 s until F at 32 s
    assert now == 32.0 and len(tu.client_timeouts) == 1
    assert endpoint.client_transactions == {}


def test_2xx_ack_reaches_tu_and_stops_retransmission() -> None:
    endpoint, tu, _ = make()
    invite = request("INVITE")
    endpoint.receive(invite, "udp", ALICE, 0.0)
    txn = tu.requests[0]
    ok = make_response(txn.request, 200, to_tag="ours")
    endpoint.respond(txn, ok, 0.0)
    out(endpoint)
    endpoint.handle_timer(0.5)
    assert describe(out(endpoint)) == ["200"]  # retransmitted until ACKed
    endpoint.receive(request("ACK", to_tag="ours"), "udp", ALICE, 0.6)
    assert len(tu.acks) == 1
    endpoint.handle_timer(10.0)
    assert out(endpoint) == []


def test_options_ping_answered_200_by_b2bua() -> None:
    endpoint = SipEndpoint(local=LOCAL)
    B2BUA(endpoint)
    endpoint.receive(request("OPTIONS", uri="sip:10.0.0.1"), "udp", ALICE, 0.0)
    sent = out(endpoint)
    assert describe(sent) == ["200"]
    assert sent[0].response.to_tag is not None
    assert "INVITE" in (sent[0].response.get("Allow") or "")


def test_in_dialog_request_for_unknown_dialog_gets_481() -> None:
    endpoint = SipEndpoint(local=LOCAL)
    B2BUA(endpoint)
    endpoint.receive(request("BYE", to_tag="nope"), "udp", ALICE, 0.0)
    assert describe(out(endpoint)) == ["481"]
    endpoint.receive(request("INVITE", to_tag="nope", cseq=2), "udp", ALICE, 0.0)
    assert describe(out(endpoint)) == ["100", "481"]


def test_rfc2543_peer_without_magic_cookie_matches_retransmissions() -> None:
    endpoint, tu, _ = make()
    invite = request("INVITE", branch="oldstyle1")
    endpoint.receive(invite, "udp", ALICE, 0.0)
    endpoint.receive(invite, "udp", ALICE, 0.5)
    assert describe(out(endpoint)) == ["100", "100"] and len(tu.requests) == 1
