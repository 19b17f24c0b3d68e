"""The sans-IO SIP endpoint: transport-facing core that owns the transaction layer.

A transport adapter feeds it ``receive(data, transport, addr, now)`` and ``handle_timer(now)``, then sends
``datagrams_to_send()`` and re-arms one timer at ``next_timer()``. It never reads a clock or touches a socket.

Above it sits a transaction user (the B2BUA) that it calls back synchronously (``TransactionUser``). The endpoint
itself answers what needs no application: 100 Trying at once for INVITE, 200 to CANCEL (481 when nothing matches),
482 for merged requests, 400 for malformed requests, and absorbs retransmissions.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import weakref
from typing import Protocol

from dce.sip.message import (
    Request,
    Response,
    SipParseError,
    Via,
    make_response,
    parse,
    split_list,
)
from dce.sip.transaction import (
    Address,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    State,
    TimerConfig,
    Transaction,
)

MAX_MESSAGE = 65535  # the default bound on one message, datagram or framed (what UDP can carry)
BRANCH_MAGIC = "z9hG4bK"
DEFAULT_PORTS = {"tls": 5061}  # RFC 3261 §19.1.2: 5061 for sips/TLS, 5060 otherwise


def default_port(transport: str) -> int:
    """The port of a URI or Via that names none, for ``transport``."""
    return DEFAULT_PORTS.get(transport, 5060)


def host_port(host: str, port: int) -> str:
    """``host:port`` with an IPv6 host in brackets (RFC 3261 §25.1, RFC 5118)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TransactionUser(Protocol):
    """Callbacks from the endpoint to the layer above it (the B2BUA)."""

    def on_request(self, txn: ServerTransaction, now: float) -> None: ...
    def on_ack(self, request: Request, now: float) -> None: ...
    def on_cancel(self, invite_txn: ServerInviteTransaction, cancel: Request, now: float) -> None: ...
    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None: ...
    def on_stray_response(self, response: Response, now: float) -> None: ...
    def on_client_timeout(self, txn: ClientTransaction, now: float) -> None: ...
    def on_transport_error(self, txn: ClientTransaction, now: float, reason: str = "") -> None: ...
    def on_server_timeout(self, txn: ServerTransaction, now: float) -> None: ...


class Timed(Protocol):
    """Anything the endpoint's timer heap can drive."""

    heap_deadline: float | None

    def next_deadline(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class Observer(Protocol):
    """Counting hooks (metrics); every method must be cheap."""

    def message(self, direction: str, method: str) -> None: ...
    def dropped(self, reason: str) -> None: ...


class _NullObserver:
    def message(self, direction: str, method: str) -> None:
        pass

    def dropped(self, reason: str) -> None:
        pass


def new_token() -> str:
    """A random token for tags and Call-IDs."""
    return os.urandom(8).hex()


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (what a transport can send to without DNS)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


class _Unreachable:
    """Client transactions to destinations no transport can use (a hostname: no DNS yet).

    They fail with a transport error through the timer heap, due at once: by then their TU has finished the
    bookkeeping of the send that created them, and nothing else in that batch is affected.
    """

    __slots__ = ("__weakref__", "deadline", "endpoint", "heap_deadline", "pending")

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.heap_deadline: float | None = None
        self.deadline: float | None = None
        self.pending: list[ClientTransaction] = []

    def add(self, txn: ClientTransaction, now: float) -> None:
        self.pending.append(txn)
        if self.deadline is None:
            self.deadline = now
            self.endpoint.schedule(self)

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        pending, self.pending, self.deadline = self.pending, [], None
        for txn in pending:
            self.endpoint.fail_transaction(txn, now)


class SipEndpoint:
    """Transaction layer plus stateless answers, driven by datagrams and time."""

    def __init__(self, *, local: dict[str, Address], timers: TimerConfig | None = None,
                 user_agent: str = "dce", observer: Observer | None = None,
                 max_message_bytes: int = MAX_MESSAGE) -> None:
        self.local = local  # transport -> sent-by (host, port) we put in our Via headers
        self.local6: dict[str, Address] = {}  # the same for IPv6 destinations, when we listen on IPv6 too
        self.timers = timers or TimerConfig()
        self.user_agent = user_agent
        self.tu: TransactionUser | None = None
        self.observer: Observer = observer or _NullObserver()
        self.max_message_bytes = max_message_bytes
        self.server_transactions: dict[tuple, ServerTransaction] = {}
        self.client_transactions: dict[tuple, ClientTransaction] = {}
        self._merge_index: dict[tuple, tuple] = {}  # (call-id, from-tag, cseq) -> server txn key, no To tag
        self._accepted: dict[tuple[str, int], ServerInviteTransaction] = {}  # awaiting the ACK for a 2xx
        self._outbox: list[tuple[bytes, str, Address]] = []
        # Weak references: the heap must not keep ended calls and legs alive until their stale deadlines.
        self._heap: list[tuple[float, int, weakref.ref[Timed]]] = []
        self._seq = itertools.count()
        self._branches = itertools.count(1)
        self._branch_prefix = BRANCH_MAGIC + new_token()
        self._unreachable = _Unreachable(self)
        self.aliases: list[tuple[str, Address, Address]] = []  # RFC 5923 (transport, alias, flow) for the adapter

    # -- adapter-facing API --------------------------------------------------------------------------
    def invites_awaiting_final(self) -> int:
        """Outbound INVITEs with no final response yet (e.g. CANCELled, the 487 still to come and be ACKed)."""
        return sum(1 for txn in self.client_transactions.values()
                   if isinstance(txn, ClientInviteTransaction) and txn.state in (State.CALLING, State.PROCEEDING))

    def receive(self, data: bytes, transport: str, addr: Address, now: float, *, stream: bool = False) -> None:
        """Feed one datagram (or one framed stream message) received from ``addr``."""
        if len(data) > self.max_message_bytes:
            self.observer.dropped("too_large")
            return
        if not data.strip(b"\r\n"):
            return  # keep-alive
        try:
            message = parse(data, stream=stream)
        except SipParseError as exc:
            self._reject_malformed(exc, transport, addr)
            return
        if isinstance(message, Request):
            self.observer.message("in", message.method)
            self._receive_request(message, transport, addr, now)
        else:
            self.observer.message("in", "response")
            self._receive_response(message, now)

    def datagrams_to_send(self) -> list[tuple[bytes, str, Address]]:
        """Take everything queued for the wire: (data, transport, address)."""
        out, self._outbox = self._outbox, []
        return out

    def next_timer(self) -> float | None:
        """The earliest deadline of anything scheduled."""
        heap = self._heap
        while heap:
            item = heap[0][2]()
            if item is not None and item.heap_deadline == heap[0][0]:
                return heap[0][0]
            heapq.heappop(heap)  # stale entry, or its owner is gone
        return None

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, ref = heapq.heappop(heap)
            item = ref()
            if item is None or item.heap_deadline != deadline:
                continue
            item.heap_deadline = None
            item.handle_timer(now)
            self.schedule(item)

    def transport_error(self, transport: str, addr: Address, now: float, reason: str = "") -> None:
        """Nothing can be sent to ``addr`` (e.g. a refused TCP connect, a TLS certificate refused): its client
        transactions fail now (§17.1.4) instead of waiting for timer B or F; ``reason`` says why."""
        for txn in list(self.client_transactions.values()):
            if txn.transport == transport and txn.addr == addr:
                self.fail_transaction(txn, now, reason)

    def fail_transaction(self, txn: ClientTransaction, now: float, reason: str = "") -> None:
        """Nothing can be sent for ``txn``: tell the TU, then end it (§17.1.4)."""
        if txn.state is State.TERMINATED:
            return
        if self.tu is not None:
            self.tu.on_transport_error(txn, now, reason)
        txn.transport_error(now)

    def sent_by(self, transport: str, addr: Address) -> str:
        """Our ``host:port`` for a message over ``transport`` to ``addr`` (the IPv6 listener's for an IPv6 one)."""
        local = self.local6.get(transport) if ":" in addr[0] else None
        host, port = local or self.local[transport]
        return host_port(host, port)

    def take_aliases(self) -> list[tuple[str, Address, Address]]:
        """Connection aliases learnt since the last call: (transport, alias address, flow address)."""
        aliases, self.aliases = self.aliases, []
        return aliases

    # -- transaction-owner API (called by transactions) ------------------------------------------------
    def send(self, data: bytes, transport: str, addr: Address) -> None:
        """Queue bytes for the wire."""
        space = data.find(b" ")
        first = data[:space]
        self.observer.message("out", "response" if first == b"SIP/2.0" else first.decode())
        self._outbox.append((data, transport, addr))

    def schedule(self, item: Timed) -> None:
        """(Re)register something with deadlines in the timer heap.

        The heap holds it weakly: its owner keeps it alive (transactions live in the endpoint's tables until they
        terminate; call legs in their calls), and what nobody holds any more has nothing left to time.
        """
        deadline = item.next_deadline()
        if deadline is None:
            item.heap_deadline = None
            return
        if item.heap_deadline is not None and item.heap_deadline <= deadline:
            return  # an earlier (or equal) entry is already in the heap; handle_timer re-schedules
        item.heap_deadline = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), weakref.ref(item)))

    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        if self.tu is not None:
            self.tu.on_response(transaction, response, now)

    def on_client_timeout(self, transaction: ClientTransaction, now: float) -> None:
        if self.tu is not None:
            self.tu.on_client_timeout(transaction, now)

    def on_server_timeout(self, transaction: ServerTransaction, now: float) -> None:
        if self.tu is not None:
            self.tu.on_server_timeout(transaction, now)

    def on_terminated(self, transaction: Transaction) -> None:
        transaction.user_data = None  # the TU's handle: nothing more will be reported, and it may form a cycle
        if isinstance(transaction, ServerTransaction):
            self.server_transactions.pop(transaction.key, None)
            request = transaction.request
            self._merge_index.pop((request.call_id, request.from_tag, request.get("CSeq")), None)
            if isinstance(transaction, ServerInviteTransaction):
                self._accepted.pop((request.call_id, request.cseq[0]), None)
        else:
            self.client_transactions.pop(transaction.key, None)

    # -- TU-facing API ---------------------------------------------------------------------------------
    def send_request(self, request: Request, transport: str, addr: Address, now: float,
                     *, branch: str | None = None) -> ClientTransaction:
        """Start a client transaction for ``request`` (we add the top Via).

        One to a destination no transport can use (a hostname; a transport we do not listen on) fails with a
        transport error through the timer."""
        branch = branch or self.new_branch()
        usable = transport in self.local
        sent_by = self.sent_by(transport if usable else "udp", addr)
        request.prepend("Via", f"SIP/2.0/{transport.upper()} {sent_by};branch={branch};rport")
        if not request.has("Max-Forwards"):
            request.add("Max-Forwards", "70")
        method = request.method
        key = (branch, method)
        cls = ClientInviteTransaction if method == "INVITE" else ClientNonInviteTransaction
        txn = cls(self, key, request, transport, addr, self.timers)
        self.client_transactions[key] = txn
        if not usable:
            self.observer.dropped("no_listener_for_transport")
            self._unreachable.add(txn, now)
        elif is_ip_literal(addr[0]):
            txn.start(now)
        else:
            self.observer.dropped("unresolvable_destination")
            self._unreachable.add(txn, now)
        return txn

    def cancel(self, invite: ClientInviteTransaction, now: float, reason: str | None = None) -> ClientTransaction:
        """Send a CANCEL for a pending client INVITE (§9.1): same branch, Request-URI, Call-ID, From, To."""
        original = invite.request
        cancel = Request(method="CANCEL", uri=original.uri)
        for key, value in original.headers:
            if key in ("Route", "From", "To", "Call-ID", "Max-Forwards"):
                cancel.headers.append((key, value))
        cancel.add("CSeq", f"{original.cseq[0]} CANCEL")
        if reason:
            cancel.add("Reason", reason)
        branch = invite.key[0]
        return self.send_request(cancel, invite.transport, invite.addr, now, branch=branch)

    def send_stateless(self, request: Request, transport: str, addr: Address) -> None:
        """Send a request outside any transaction (the ACK for a 2xx, §13.2.2.4)."""
        if not is_ip_literal(addr[0]):
            self.observer.dropped("unresolvable_destination")
            return
        if transport not in self.local:
            self.observer.dropped("no_listener_for_transport")
            return
        request.prepend("Via", f"SIP/2.0/{transport.upper()} {self.sent_by(transport, addr)};"
                               f"branch={self.new_branch()};rport")
        if not request.has("Max-Forwards"):
            request.add("Max-Forwards", "70")
        self.send(request.serialize(), transport, addr)

    def respond(self, txn: ServerTransaction, response: Response, now: float) -> None:
        """Send a response through its server transaction."""
        if txn.state is State.TERMINATED:
            return
        if not response.has("Server"):
            response.add("Server", self.user_agent)
        txn.respond(response, now)
        if isinstance(txn, ServerInviteTransaction) and txn.state is State.ACCEPTED:
            request = txn.request
            self._accepted[(request.call_id, request.cseq[0])] = txn

    def new_branch(self) -> str:
        """A unique RFC 3261 branch."""
        return f"{self._branch_prefix}.{next(self._branches)}"

    # -- receiving -------------------------------------------------------------------------------------
    def _receive_request(self, request: Request, transport: str, addr: Address, now: float) -> None:
        via = request.top_via
        response_addr = self._stamp_via(request, via, transport, addr)
        if transport != "udp" and "alias" in via.params:
            self._learn_alias(via, transport, addr)
        method = request.method
        branch = via.branch
        if branch and branch.startswith(BRANCH_MAGIC):
            base = (branch, via.sent_by)
        else:  # RFC 2543 peer: match on the dialog-identifying fields instead (§17.2.3)
            base = (request.call_id, request.from_tag, request.cseq[0], via.sent_by)
        key = (*base, "INVITE" if method == "ACK" else method)
        txn = self.server_transactions.get(key)
        if txn is not None:
            if method == "ACK" and isinstance(txn, ServerInviteTransaction) and txn.state is State.ACCEPTED:
                pass  # ACK for a 2xx reusing the INVITE's branch (non-compliant but seen): treat as 2xx ACK
            else:
                txn.receive_request(request, now)
                return
        if method == "ACK":
            accepted = self._accepted.get((request.call_id, request.cseq[0]))
            if accepted is not None:
                accepted.receive_2xx_ack(now)
            if self.tu is not None:
                self.tu.on_ack(request, now)
            return
        if method == "CANCEL":
            self._receive_cancel(request, key, base, transport, response_addr, now)
            return
        if request.to_tag is None:
            merge_id = (request.call_id, request.from_tag, request.get("CSeq"))
            existing = self._merge_index.get(merge_id)
            if existing is not None and existing != key:
                self._respond_stateless(request, 482, transport, response_addr)
                return
            self._merge_index[merge_id] = key
        cls = ServerInviteTransaction if method == "INVITE" else ServerNonInviteTransaction
        server_txn = cls(self, key, request, transport, response_addr, self.timers)
        self.server_transactions[key] = server_txn
        if method == "INVITE":
            self.respond(server_txn, make_response(request, 100), now)
        if self.tu is not None:
            self.tu.on_request(server_txn, now)

    def _receive_cancel(self, cancel: Request, key: tuple, base: tuple, transport: str, addr: Address,
                        now: float) -> None:
        cancel_txn = ServerNonInviteTransaction(self, key, cancel, transport, addr, self.timers)
        self.server_transactions[key] = cancel_txn
        invite = self.server_transactions.get((*base, "INVITE"))
        if not isinstance(invite, ServerInviteTransaction) or invite.state is not State.PROCEEDING:
            self.respond(cancel_txn, make_response(cancel, 481 if invite is None else 200), now)
            return
        self.respond(cancel_txn, make_response(cancel, 200), now)
        if self.tu is not None:
            self.tu.on_cancel(invite, cancel, now)

    def _receive_response(self, response: Response, now: float) -> None:
        via = response.top_via
        key = (via.branch, response.cseq[1])
        txn = self.client_transactions.get(key)
        if txn is None:
            if self.tu is not None:
                self.tu.on_stray_response(response, now)
            return
        txn.receive(response, now)  # type: ignore[attr-defined]

    # -- helpers ---------------------------------------------------------------------------------------
    def _learn_alias(self, via: Via, transport: str, addr: Address) -> None:
        """RFC 5923: the peer asks us to reuse this connection for requests to its Via sent-by. Only for its
        own IP address (a peer may not capture another host's traffic)."""
        host = via.host.strip("[]")
        alias = (host, via.port or default_port(transport))
        if host == addr[0] and alias != addr and len(self.aliases) < 64:
            self.aliases.append((transport, alias, addr))

    @staticmethod
    def _stamp_via(request: Request, via: Via, transport: str, addr: Address) -> Address:
        """Add received/rport to the top Via (RFC 3261 §18.2.1, RFC 3581) and return where responses go."""
        params = via.params
        rport_requested = "rport" in params
        if via.host.strip("[]") == addr[0] and not rport_requested:
            return addr if transport != "udp" else (addr[0], via.port or 5060)
        value = request.get("Via") or ""
        head, _, tail = value.partition(";")
        kept = [p for p in tail.split(";") if p and p.split("=", 1)[0].strip().lower() not in ("received", "rport")]
        kept.append(f"received={addr[0]}")
        if rport_requested:
            kept.append(f"rport={addr[1]}")
        _replace_first_via(request, head + ";" + ";".join(kept))
        if transport != "udp" or rport_requested:
            return addr
        return addr[0], via.port or 5060

    def _respond_stateless(self, request: Request, status: int, transport: str, addr: Address,
                           extra: list[tuple[str, str]] | None = None) -> None:
        response = make_response(request, status, to_tag=new_token(), extra=extra)
        response.add("Server", self.user_agent)
        self.send(response.serialize(), transport, addr)

    def _reject_malformed(self, exc: SipParseError, transport: str, addr: Address) -> None:
        request = exc.request
        if request is None or request.method == "ACK":
            self.observer.dropped("malformed")
            return
        self.observer.dropped("malformed_answered")
        try:
            via = request.top_via
        except ValueError:
            return
        response_addr = addr if transport != "udp" else (addr[0], via.port or 5060)
        if "rport" in via.params:
            response_addr = addr
        warning = str(exc).replace('"', "'")[:120]
        self._respond_stateless(_answerable_copy(request), exc.status, transport, response_addr,
                                extra=[("Warning", f'399 dce "{warning}"')])


def _answerable_copy(request: Request) -> Request:
    """The parts of a malformed request a response copies: only the (parsed) top Via, one of each other field.

    Echoing every Via or a second CSeq/Call-ID would make our 400 as malformed as the request it answers.
    """
    copy = Request(method=request.method, uri=request.uri)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        value = request.get(name)
        if value is not None:
            copy.headers.append((name, value))
    return copy


def _replace_first_via(message: Request | Response, first_value: str) -> None:
    for i, (key, value) in enumerate(message.headers):
        if key == "Via":
            rest = split_list(value)[1:]
            message.headers[i] = ("Via", ", ".join([first_value, *rest]))
            return

