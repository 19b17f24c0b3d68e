"""The four SIP transaction state machines (RFC 3261 §17, with RFC 6026's Accepted state).

Each transaction is a pure state machine: it is fed messages and timer expiries with the current time, and
answers through its ``TransactionUser``-facing owner (``send`` for wire output, ``deliver`` for what the TU must
see). Timers are plain deadlines in ``deadlines``; the endpoint keeps them in one heap and calls
``handle_timer(now)`` when the earliest one is due. Transitions are explicit: anything not listed is ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from dce.sip.message import Request, Response

Address = tuple[str, int]


@dataclass(slots=True, frozen=True)
class TimerConfig:
    """RFC 3261 timer base values, in seconds (§17.1.1.1; Table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L and M."""
        return 64 * self.t1


class State(enum.Enum):
    """Transaction states across the four machines."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TransactionOwner(Protocol):
    """What a transaction needs from its endpoint."""

    def send(self, data: bytes, transport: str, addr: Address) -> None: ...
    def schedule(self, transaction: Transaction) -> None: ...
    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None: ...
    def on_client_timeout(self, transaction: ClientTransaction, now: float) -> None: ...
    def on_server_timeout(self, transaction: ServerTransaction, now: float) -> None: ...
    def on_terminated(self, transaction: Transaction) -> None: ...


class Transaction:
    """Shared parts: identity, transport, state and named deadlines."""

    __slots__ = ("__weakref__", "_timers", "addr", "deadlines", "heap_deadline", "intervals", "key", "owner",
                 "reliable",
                 "request", "state", "transport", "user_data")

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig, state: State) -> None:
        self.owner = owner
        self.key = key
        self.request = request
        self.transport = transport
        self.addr = addr
        self.reliable = transport != "udp"
        self.state = state
        self.deadlines: dict[str, float] = {}
        self.heap_deadline: float | None = None  # the deadline the endpoint's timer heap holds for us
        self.intervals: dict[str, float] = {}
        self.user_data: object = None  # the TU's handle (e.g. the call leg this transaction belongs to)
        self._timers = timers

    def next_deadline(self) -> float | None:
        """Earliest pending timer, or None."""
        return min(self.deadlines.values()) if self.deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due (in deadline order)."""
        while self.deadlines:
            name, deadline = min(self.deadlines.items(), key=lambda item: item[1])
            if deadline > now:
                break
            del self.deadlines[name]
            self._fire(name, now)
        self.owner.schedule(self)

    def _fire(self, name: str, now: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _set(self, name: str, now: float, interval: float) -> None:
        self.intervals[name] = interval
        self.deadlines[name] = now + interval

    def _terminate(self) -> None:
        if self.state is not State.TERMINATED:
            self.state = State.TERMINATED
            self.deadlines.clear()
            self.owner.on_terminated(self)

    def transport_error(self, now: float) -> None:
        """The transport could not deliver: the transaction ends (§17.1.4, §17.2.4)."""
        self._terminate()


class ClientTransaction(Transaction):
    """Common client-side behaviour: the request, its retransmission and ACK construction."""

    __slots__ = ("wire",)

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig, state: State) -> None:
        super().__init__(owner, key, request, transport, addr, timers, state)
        self.wire = request.serialize()

    def _send_request(self) -> None:
        self.owner.send(self.wire, self.transport, self.addr)


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction (§17.1.1, RFC 6026 §8.4)."""

    __slots__ = ("ack_wire",)

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig) -> None:
        super().__init__(owner, key, request, transport, addr, timers, State.CALLING)
        self.ack_wire: bytes | None = None

    def start(self, now: float) -> None:
        """Send the INVITE and arm timers A (unreliable only) and B."""
        self._send_request()
        if not self.reliable:
            self._set("A", now, self._timers.t1)
        self._set("B", now, self._timers.timeout)
        self.owner.schedule(self)

    def receive(self, response: Response, now: float) -> None:
        """A response matched to this transaction."""
        state = self.state
        status = response.status
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self.deadlines.pop("A", None)
                self.deadlines.pop("B", None)
                self.owner.on_response(self, response, now)
            elif status < 300:
                self.state = State.ACCEPTED
                self.deadlines.clear()
                self._set("M", now, self._timers.timeout)
                self.owner.on_response(self, response, now)
            else:
                self.state = State.COMPLETED
                self.deadlines.clear()
                self.ack_wire = build_non2xx_ack(self.request, response).serialize()
                self.owner.send(self.ack_wire, self.transport, self.addr)
                self._set("D", now, 0.0 if self.reliable else 32.0)
                self.owner.on_response(self, response, now)
        elif state is State.ACCEPTED:
            if 200 <= status < 300:
                self.owner.on_response(self, response, now)  # retransmitted 2xx: the TU re-sends its ACK
        elif state is State.COMPLETED and status >= 300 and self.ack_wire is not None:
            self.owner.send(self.ack_wire, self.transport, self.addr)  # retransmitted final: ACK again
        self.owner.schedule(self)

    def stop_retransmitting(self) -> None:
        """The TU gave up on an INVITE nothing answered: timer A stops; timer B still ends the transaction, and a
        late response is still matched and delivered until then."""
        self.deadlines.pop("A", None)

    def _fire(self, name: str, now: float) -> None:
        if name == "A" and self.state is State.CALLING:
            self._send_request()
            self._set("A", now, self.intervals["A"] * 2)
        elif name == "B" and self.state is State.CALLING:
            self._terminate_with_timeout(now)
        elif name in ("D", "M"):
            self._terminate()

    def _terminate_with_timeout(self, now: float) -> None:
        self.state = State.TERMINATED
        self.deadlines.clear()
        self.owner.on_client_timeout(self, now)
        self.owner.on_terminated(self)


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (§17.1.2)."""

    __slots__ = ()

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig) -> None:
        super().__init__(owner, key, request, transport, addr, timers, State.TRYING)

    def start(self, now: float) -> None:
        """Send the request and arm timers E (unreliable only) and F."""
        self._send_request()
        if not self.reliable:
            self._set("E", now, self._timers.t1)
        self._set("F", now, self._timers.timeout)
        self.owner.schedule(self)

    def receive(self, response: Response, now: float) -> None:
        """A response matched to this transaction."""
        if self.state in (State.TRYING, State.PROCEEDING):
            if response.status < 200:
                self.state = State.PROCEEDING
            else:
                self.state = State.COMPLETED
                self.deadlines.clear()
                self._set("K", now, 0.0 if self.reliable else self._timers.t4)
            self.owner.on_response(self, response, now)
        self.owner.schedule(self)

    def _fire(self, name: str, now: float) -> None:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self._send_request()
            interval = self._timers.t2 if self.state is State.PROCEEDING else min(
                self.intervals["E"] * 2, self._timers.t2)
            self._set("E", now, interval)
        elif name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self.state = State.TERMINATED
            self.deadlines.clear()
            self.owner.on_client_timeout(self, now)
            self.owner.on_terminated(self)
        elif name == "K":
            self._terminate()


class ServerTransaction(Transaction):
    """Common server-side behaviour: the last response and its retransmission."""

    __slots__ = ("last_response", "last_wire")

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig, state: State) -> None:
        super().__init__(owner, key, request, transport, addr, timers, state)
        self.last_response: Response | None = None
        self.last_wire: bytes | None = None

    def _send_response(self, response: Response) -> None:
        self.last_response = response
        self.last_wire = response.serialize()
        self.owner.send(self.last_wire, self.transport, self.addr)

    def _resend(self) -> None:
        if self.last_wire is not None:
            self.owner.send(self.last_wire, self.transport, self.addr)

    @property
    def final_status(self) -> int | None:
        """The final status sent, if any."""
        if self.last_response is not None and self.last_response.status >= 200:
            return self.last_response.status
        return None


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction (§17.2.1, RFC 6026 §8.5-8.7).

    In Accepted, the transaction also retransmits the 2xx until the ACK arrives (the UAS core's duty in §13.3.1.4,
    kept here so every INVITE's retransmission lives in one place); timer L ends it, reporting a missing ACK.
    """

    __slots__ = ("acked",)

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig) -> None:
        super().__init__(owner, key, request, transport, addr, timers, State.PROCEEDING)
        self.acked = False

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmitted INVITE, or the ACK for a non-2xx final response."""
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self.deadlines.clear()
                self._set("I", now, 0.0 if self.reliable else self._timers.t4)
        elif self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend()
        self.owner.schedule(self)

    def receive_2xx_ack(self, now: float) -> None:
        """The ACK for our 2xx arrived (matched by the endpoint through Call-ID and CSeq)."""
        if self.state is State.ACCEPTED:
            self.acked = True
            self.deadlines.pop("G2xx", None)
            self.owner.schedule(self)

    def respond(self, response: Response, now: float) -> None:
        """Send a response from the TU."""
        status = response.status
        if self.state is State.PROCEEDING:
            self._send_response(response)
            if 200 <= status < 300:
                self.state = State.ACCEPTED
                if not self.reliable:
                    self._set("G2xx", now, self._timers.t1)
                self._set("L", now, self._timers.timeout)
            elif status >= 300:
                self.state = State.COMPLETED
                if not self.reliable:
                    self._set("G", now, self._timers.t1)
                self._set("H", now, self._timers.timeout)
        elif self.state is State.ACCEPTED and 200 <= status < 300:
            self._send_response(response)  # RFC 6026: the TU may re-send a 2xx
        self.owner.schedule(self)

    def _fire(self, name: str, now: float) -> None:
        if name == "G" and self.state is State.COMPLETED:
            self._resend()
            self._set("G", now, min(self.intervals["G"] * 2, self._timers.t2))
        elif name == "G2xx" and self.state is State.ACCEPTED and not self.acked:
            self._resend()
            self._set("G2xx", now, min(self.intervals["G2xx"] * 2, self._timers.t2))
        elif name == "H" and self.state is State.COMPLETED:
            self.state = State.TERMINATED
            self.deadlines.clear()
            self.owner.on_server_timeout(self, now)
            self.owner.on_terminated(self)
        elif name == "L":
            if not self.acked:
                self.owner.on_server_timeout(self, now)
            self._terminate()
        elif name == "I":
            self._terminate()


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction (§17.2.2)."""

    __slots__ = ()

    def __init__(self, owner: TransactionOwner, key: tuple, request: Request, transport: str, addr: Address,
                 timers: TimerConfig) -> None:
        super().__init__(owner, key, request, transport, addr, timers, State.TRYING)

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmission of the request."""
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend()

    def respond(self, response: Response, now: float) -> None:
        """Send a response from the TU."""
        if self.state in (State.TRYING, State.PROCEEDING):
            self._send_response(response)
            if response.status < 200:
                self.state = State.PROCEEDING
            else:
                self.state = State.COMPLETED
                self._set("J", now, 0.0 if self.reliable else self._timers.timeout)
        self.owner.schedule(self)

    def _fire(self, name: str, now: float) -> None:
        if name == "J":
            self._terminate()


def build_non2xx_ack(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (§17.1.1.3)."""
    ack = Request(method="ACK", uri=request.uri)
    headers = ack.headers
    via = request.get("Via")
    if via is not None:
        headers.append(("Via", via))
    for key, value in request.headers:
        if key in ("Route", "From", "Call-ID", "Max-Forwards"):
            headers.append((key, value))
    headers.append(("To", response.get("To") or request.get("To") or ""))
    headers.append(("CSeq", f"{request.cseq[0]} ACK"))
    return ack
