"""The four RFC 3261 §17 transaction machines (plus RFC 6026 Accepted), driven by a virtual clock."""

from __future__ import annotations

import itertools

import pytest

from dce.sip.message import Request, Response, make_response, parse
from dce.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    TimerConfig,
    Transaction,
)
from tests.unit.sipfactory import request

ADDR = ("192.0.2.20", 5060)


class FakeOwner:
    """Records what transactions send and report; runs their timers on a virtual clock."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.responses: list[int] = []
        self.client_timeouts = 0
        self.server_timeouts = 0
        self.terminated = 0
        self.txn: Transaction | None = None
        self.now = 0.0

    # TransactionOwner
    def send(self, data: bytes, transport: str, addr: tuple[str, int]) -> None:
        self.sent.append((self.now, data))

    def schedule(self, transaction: Transaction) -> None:
        self.txn = transaction

    def on_response(self, transaction: object, response: Response, now: float) -> None:
        self.responses.append(response.status)

    def on_client_timeout(self, transaction: object, now: float) -> None:
        self.client_timeouts += 1

    def on_server_timeout(self, transaction: object, now: float) -> None:
        self.server_timeouts += 1

    def on_terminated(self, transaction: object) -> None:
        self.terminated += 1

    # clock
    def run_until(self, end: float) -> None:
        """Fire every timer due up to ``end`` at its own deadline."""
        txn = self.txn
        assert txn is not None
        while (deadline := txn.next_deadline()) is not None and deadline <= end:
            self.now = deadline
            txn.handle_timer(deadline)
        self.now = end

    def send_times(self) -> list[float]:
        return [round(t, 6) for t, _ in self.sent]


def _req(method: str) -> Request:
    message = parse(request(method))
    assert isinstance(message, Request)
    return message


def _resp(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag="callee")


def _transport(reliable: bool) -> str:
    return "tcp" if reliable else "udp"


# -- INVITE client ----------------------------------------------------------------------------------------
def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    owner = FakeOwner()
    txn = ClientInviteTransaction(owner, ("b", "INVITE"), _req("INVITE"), "udp", ADDR, TimerConfig())
    txn.start(0.0)
    owner.run_until(40.0)
    # A: 0.5, 1, 2, 4, 8, 16 (doubling, not capped); B at 64*T1 = 32 s
    assert owner.send_times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert owner.client_timeouts == 1 and owner.terminated == 1
    assert txn.state is State.TERMINATED


def test_invite_client_tcp_no_retransmission_but_timer_b() -> None:
    owner = FakeOwner()
    txn = ClientInviteTransaction(owner, ("b", "INVITE"), _req("INVITE"), "tcp", ADDR, TimerConfig())
    txn.start(0.0)
    owner.run_until(31.9)
    assert owner.send_times() == [0.0] and owner.client_timeouts == 0
    owner.run_until(32.0)
    assert owner.client_timeouts == 1


def test_invite_client_custom_timers() -> None:
    owner = FakeOwner()
    txn = ClientInviteTransaction(owner, ("b", "INVITE"), _req("INVITE"), "udp", ADDR,
                                  TimerConfig(t1=0.1, t2=1.0, t4=2.0))
    txn.start(0.0)
    owner.run_until(10.0)
    assert owner.send_times() == [0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3]  # A from T1=0.1; B = 6.4 s
    assert owner.client_timeouts == 1
    assert owner.now == 10.0 and txn.state is State.TERMINATED


def test_invite_client_provisional_stops_a_and_b() -> None:
    owner = FakeOwner()
    req = _req("INVITE")
    txn = ClientInviteTransaction(owner, ("b", "INVITE"), req, "udp", ADDR, TimerConfig())
    txn.start(0.0)
    owner.run_until(0.6)
    txn.receive(_resp(req, 180), 0.6)
    assert txn.state is State.PROCEEDING and owner.responses == [180]
    owner.run_until(300.0)
    assert len(owner.sent) == 2 and owner.client_timeouts == 0  # no A, no B in Proceeding


@pytest.mark.parametrize(("reliable", "timer_d"), [(False, 32.0), (True, 0.0)])
def test_invite_client_non2xx_acks_and_timer_d(reliable: bool, timer_d: float) -> None:
    owner = FakeOwner()
    req = _req("INVITE")
    txn = ClientInviteTransaction(owner, ("b", "INVITE"), req, _transport(reliable), ADDR, TimerConfig())
    txn.start(0.0)
    busy = _resp(req, 486)
    txn.receive(busy, 1.0)
    assert txn.state is State.COMPLETED and owner.responses == [486]
    ack = parse(owner.sent[-1][1])
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.get("Via") == req.get("Via")  # same branch as the INVITE (§17.1.1.3)
    assert ack.to_tag == "callee" and ack.cseq == (1, "ACK")
    txn.receive(busy, 2.0)  # retransmitted 486: ACK again, not passed up
    assert len(owner.sent) == 3 and owner.responses == [486]
    owner.run_until(1.0 + timer_d - 0.01 if timer_d else 0.99)
    assert txn.state is State.COMPLETED
    owner.run_until(1.0 + timer_d)
    assert txn.state is State.TERMINATED and owner.terminated == 1


def test_invite_client_2xx_accepted_passes_retransmissions_up_until_timer_m() -> None:
    owner = FakeOwner()
    req = _req("INVITE")
    txn = ClientInviteTransaction(owner, ("b", "INVITE"), req, "udp", ADDR, TimerConfig())
    txn.start(0.0)
    ok = _resp(req, 200)
    txn.receive(ok, 1.0)
    assert txn.state is State.ACCEPTED
    txn.receive(ok, 2.0)
    txn.receive(_resp(req, 486), 2.5)  # a non-2xx in Accepted is ignored
    assert owner.responses == [200, 200]
    assert len(owner.sent) == 1  # the transaction never ACKs a 2xx itself
    owner.run_until(1.0 + 32.0 - 0.01)
    assert txn.state is State.ACCEPTED
    owner.run_until(33.0)
    assert txn.state is State.TERMINATED and owner.client_timeouts == 0


# -- non-INVITE client ------------------------------------------------------------------------------------
def test_non_invite_client_timer_e_capped_at_t2_and_timer_f() -> None:
    owner = FakeOwner()
    txn = ClientNonInviteTransaction(owner, ("b", "BYE"), _req("BYE"), "udp", ADDR, TimerConfig())
    txn.start(0.0)
    owner.run_until(40.0)
    times = owner.send_times()
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]  # 0.5, 1, 2, 4, then capped at T2=4
    assert all(b - a == pytest.approx(4.0) for a, b in itertools.pairwise(times[4:]))
    assert times[-1] < 32.0
    assert owner.client_timeouts == 1 and txn.state is State.TERMINATED


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    owner = FakeOwner()
    req = _req("BYE")
    txn = ClientNonInviteTransaction(owner, ("b", "BYE"), req, "udp", ADDR, TimerConfig())
    txn.start(0.0)
    txn.receive(_resp(req, 100), 0.1)
    assert txn.state is State.PROCEEDING and owner.responses == [100]
    owner.run_until(9.0)
    assert owner.send_times() == [0.0, 0.5, 4.5, 8.5]  # the pending E fires, then every T2


@pytest.mark.parametrize(("reliable", "timer_k"), [(False, 5.0), (True, 0.0)])
def test_non_invite_client_completed_timer_k(reliable: bool, timer_k: float) -> None:
    owner = FakeOwner()
    req = _req("BYE")
    txn = ClientNonInviteTransaction(owner, ("b", "BYE"), req, _transport(reliable), ADDR, TimerConfig())
    txn.start(0.0)
    txn.receive(_resp(req, 200), 1.0)
    txn.receive(_resp(req, 200), 1.5)  # retransmission absorbed
    assert owner.responses == [200] and txn.state is State.COMPLETED
    owner.run_until(100.0)
    assert len(owner.sent) == 1  # no E after the final response
    assert txn.state is State.TERMINATED
    assert owner.now == 100.0


def test_non_invite_client_custom_t4() -> None:
    owner = FakeOwner()
    req = _req("BYE")
    txn = ClientNonInviteTransaction(owner, ("b", "BYE"), req, "udp", ADDR, TimerConfig(t4=1.0))
    txn.start(0.0)
    txn.receive(_resp(req, 200), 1.0)
    assert txn.next_deadline() == 2.0


def test_non_invite_client_tcp_no_e_but_f() -> None:
    owner = FakeOwner()
    txn = ClientNonInviteTransaction(owner, ("b", "BYE"), _req("BYE"), "tcp", ADDR, TimerConfig(t1=1.0))
    txn.start(0.0)
    owner.run_until(100.0)
    assert owner.send_times() == [0.0] and owner.client_timeouts == 1


# -- INVITE server ----------------------------------------------------------------------------------------
def _server_invite(reliable: bool = False, timers: TimerConfig | None = None
                   ) -> tuple[FakeOwner, ServerInviteTransaction, Request]:
    owner = FakeOwner()
    req = _req("INVITE")
    txn = ServerInviteTransaction(owner, ("b", "INVITE"), req, _transport(reliable), ADDR,
                                  timers or TimerConfig())
    owner.txn = txn
    return owner, txn, req


def test_invite_server_retransmitted_invite_gets_last_provisional() -> None:
    owner, txn, req = _server_invite()
    txn.receive_request(req, 0.0)  # nothing sent yet: nothing to repeat
    assert owner.sent == []
    txn.respond(_resp(req, 100), 0.0)
    txn.respond(_resp(req, 180), 0.1)
    txn.receive_request(req, 0.5)
    assert [parse(d).status for _, d in owner.sent] == [100, 180, 180]  # type: ignore[union-attr]


def test_invite_server_timer_g_and_h_without_ack() -> None:
    owner, txn, req = _server_invite()
    txn.respond(_resp(req, 486), 0.0)
    owner.run_until(40.0)
    # G: 0.5, 1, 2, 4, then capped at T2=4 until H at 32 s
    times = owner.send_times()
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert times[-1] < 32.0
    assert owner.server_timeouts == 1 and txn.state is State.TERMINATED


@pytest.mark.parametrize(("reliable", "timer_i"), [(False, 5.0), (True, 0.0)])
def test_invite_server_ack_confirms_and_timer_i(reliable: bool, timer_i: float) -> None:
    owner, txn, req = _server_invite(reliable)
    txn.respond(_resp(req, 486), 0.0)
    txn.receive_request(req, 0.2)  # retransmitted INVITE in Completed: the 486 again
    assert len(owner.sent) == 2
    ack = Request(method="ACK", uri=req.uri)
    txn.receive_request(ack, 0.3)
    assert txn.state is State.CONFIRMED
    sent_before = len(owner.sent)
    txn.receive_request(req, 0.4)  # in Confirmed, retransmissions are absorbed
    txn.receive_request(ack, 0.4)
    assert len(owner.sent) == sent_before
    owner.run_until(0.3 + timer_i)
    assert txn.state is State.TERMINATED
    assert owner.server_timeouts == 0
    assert len(owner.sent) == sent_before  # no G after the ACK


def test_invite_server_tcp_no_timer_g() -> None:
    owner, txn, req = _server_invite(reliable=True)
    txn.respond(_resp(req, 486), 0.0)
    owner.run_until(40.0)
    assert owner.send_times() == [0.0] and owner.server_timeouts == 1


def test_invite_server_accepted_retransmits_2xx_until_ack_then_timer_l() -> None:
    owner, txn, req = _server_invite()
    txn.respond(_resp(req, 200), 0.0)
    assert txn.state is State.ACCEPTED
    owner.run_until(2.0)
    assert owner.send_times() == [0.0, 0.5, 1.5]
    txn.receive_request(req, 2.0)  # retransmitted INVITE in Accepted: absorbed (RFC 6026 §8.7)
    assert len(owner.sent) == 3
    txn.receive_2xx_ack(2.1)
    owner.run_until(31.9)
    assert len(owner.sent) == 3 and txn.state is State.ACCEPTED
    owner.run_until(32.0)
    assert txn.state is State.TERMINATED and owner.server_timeouts == 0


def test_invite_server_accepted_without_ack_reports_timeout_at_l() -> None:
    owner, txn, req = _server_invite(timers=TimerConfig(t1=0.25, t2=1.0))
    txn.respond(_resp(req, 200), 0.0)
    owner.run_until(20.0)
    times = owner.send_times()
    assert times[:5] == [0.0, 0.25, 0.75, 1.75, 2.75]  # doubling from the custom T1, capped at T2=1
    assert owner.server_timeouts == 1 and txn.state is State.TERMINATED
    assert owner.now == 20.0 and max(times) < 16.0  # L = 64*T1 = 16 s


def test_invite_server_tu_may_resend_2xx_in_accepted() -> None:
    owner, txn, req = _server_invite(reliable=True)
    txn.respond(_resp(req, 200), 0.0)
    txn.respond(_resp(req, 200), 1.0)
    txn.respond(_resp(req, 486), 1.5)  # a failure after a 2xx is ignored
    assert [parse(d).status for _, d in owner.sent] == [200, 200]  # type: ignore[union-attr]


# -- non-INVITE server ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("reliable", "timer_j"), [(False, 32.0), (True, 0.0)])
def test_non_invite_server_absorbs_then_repeats_final_and_timer_j(reliable: bool, timer_j: float) -> None:
    owner = FakeOwner()
    req = _req("BYE")
    txn = ServerNonInviteTransaction(owner, ("b", "BYE"), req, _transport(reliable), ADDR, TimerConfig())
    owner.txn = txn
    txn.receive_request(req, 0.0)  # Trying: absorbed, nothing to send yet
    assert owner.sent == []
    txn.respond(_resp(req, 100), 0.1)
    txn.receive_request(req, 0.2)  # Proceeding: the provisional again
    txn.respond(_resp(req, 200), 0.3)
    txn.receive_request(req, 0.4)  # Completed: the final again
    txn.respond(_resp(req, 500), 0.5)  # a second final is ignored
    assert [parse(d).status for _, d in owner.sent] == [100, 100, 200, 200]  # type: ignore[union-attr]
    assert txn.final_status == 200
    owner.run_until(0.3 + timer_j)
    assert txn.state is State.TERMINATED and owner.terminated == 1


def test_non_invite_server_custom_t1_sets_j() -> None:
    owner = FakeOwner()
    req = _req("OPTIONS")
    txn = ServerNonInviteTransaction(owner, ("b", "OPTIONS"), req, "udp", ADDR, TimerConfig(t1=0.1))
    txn.respond(_resp(req, 200), 1.0)
    assert txn.next_deadline() == pytest.approx(1.0 + 6.4)


def test_transport_error_terminates() -> None:
    owner = FakeOwner()
    txn = ClientNonInviteTransaction(owner, ("b", "BYE"), _req("BYE"), "udp", ADDR, TimerConfig())
    txn.start(0.0)
    txn.transport_error(0.1)
    assert txn.state is State.TERMINATED and txn.next_deadline() is None and owner.terminated == 1
