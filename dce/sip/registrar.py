"""A SIP registrar (RFC 3261 §10.3), sans-IO: REGISTER + source + ``now`` in, the answer to send out.

Agents (:class:`Account`: a username, its realm and HA1s) register their devices' Contacts under their own address
of record: the To URI's user is the agent's username. :meth:`Registrar.register` authenticates with digest
(stateless HMAC nonces, :class:`~dce.sip.digest.NonceSigner`) and then adds, refreshes or removes bindings, each
with its own expiry; :meth:`Registrar.next_timer` / :meth:`Registrar.handle_timer` sweep expired ones by deadline.
It reads no clock and opens no socket: ``now`` is the caller's monotonic clock (binding expiry) and ``now_wall``
the wall clock (nonces, shared between nodes).

Nothing tells a stranger which usernames exist: an unknown user is challenged exactly like a known one (same realm,
same algorithms) and any answer to that challenge is the same 403 as a wrong password.

Bindings live in a :class:`BindingStore`; :class:`MemoryBindings` is the in-process one. A store shared between
nodes (:class:`dce.db.redis_bindings.RedisBindings`) implements the same synchronous interface over a local replica
it keeps fresh, writing each ``put`` behind.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from dce.sip.digest import PREFERRED, Algorithm, Challenge, Credentials, NonceCounts, NonceSigner, verify
from dce.sip.message import Request, header_uri, parse_params, split_list, uri_user

QOP = ("auth",)
Outcome = Literal["registered", "unregistered", "queried", "challenged", "refused", "invalid", "too_brief",
                  "out_of_order", "too_many"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
CONNECTION_BOUND = ("ws", "wss")  # transports whose bindings live as long as their connection (RFC 7118 §5.3)
_CONTACT_PARAMS = re.compile(r">\s*(;.*)\Z", re.DOTALL)


def _reason(cause: int, text: str) -> str:
    return f'SIP;cause={cause};text="{text}"'


@dataclass(frozen=True, slots=True)
class Account:
    """An agent as the registrar sees it: who may register as ``username`` (HA1s for ``realm``)."""

    id: str
    username: str
    realm: str
    ha1_sha256: str | None
    ha1_md5: str | None
    buyer_id: str | None = None
    max_concurrent: int = 1

    def ha1(self, algorithm: Algorithm) -> str | None:
        return self.ha1_sha256 if algorithm == "SHA-256" else self.ha1_md5


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered device: its Contact URI, until when (registrar clock), and the request that set it."""

    uri: str
    expires_at: float
    call_id: str
    cseq: int
    source: str  # host:port the REGISTER came from
    transport: str
    q: str | None = None
    user_agent: str | None = None

    def expires_in(self, now: float) -> int:
        """Whole seconds left (0 once due)."""
        return max(0, int(self.expires_at - now + 0.5))

    @property
    def next_hop(self) -> tuple[str, str, int]:
        """Where requests to this device go: ``(transport, ip, port)`` of the flow its REGISTER came over (for a
        WebSocket device, RFC 7118 §5.3, the only way to reach it: its Contact names an ``.invalid`` host)."""
        host, _, port = self.source.rpartition(":")
        return self.transport, host, int(port)


class BindingStore(Protocol):
    """Where bindings live, per agent id. ``put`` with no bindings removes the agent's entry."""

    def get(self, agent_id: str) -> tuple[Binding, ...]: ...

    def put(self, agent_id: str, bindings: tuple[Binding, ...]) -> None: ...

    def agents(self) -> Iterable[str]: ...


class MemoryBindings:
    """The in-process :class:`BindingStore`."""

    def __init__(self) -> None:
        self._bindings: dict[str, tuple[Binding, ...]] = {}

    def get(self, agent_id: str) -> tuple[Binding, ...]:
        return self._bindings.get(agent_id, ())

    def put(self, agent_id: str, bindings: tuple[Binding, ...]) -> None:
        if bindings:
            self._bindings[agent_id] = bindings
        else:
            self._bindings.pop(agent_id, None)

    def agents(self) -> Iterator[str]:
        return iter(list(self._bindings))


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """``realm`` challenges users no account names; ``algorithms`` are offered in this order (one challenge each);
    expiries in seconds; ``max_bindings`` devices per agent."""

    realm: str = "dce"
    algorithms: tuple[Algorithm, ...] = PREFERRED
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200
    max_bindings: int = 10


@dataclass(frozen=True, slots=True)
class Reply:
    """The response to send: ``status`` (reason phrase None: the default) and extra headers.

    ``agent_id`` is the authenticated agent (None before authentication); ``outcome`` a closed-set label for metrics.
    """

    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    agent_id: str | None
    outcome: Outcome


class Registrar:
    """Registers agents' devices. ``on_auth_failure(source, now)`` hears wrong usernames/passwords and forged
    nonces (the flood guard counts them); ``on_outcome(outcome)`` every REGISTER's outcome (metrics: one of
    :data:`OUTCOMES`)."""

    def __init__(self, signer: NonceSigner, settings: RegistrarSettings | None = None,
                 store: BindingStore | None = None, *,
                 on_auth_failure: Callable[[str, float], None] | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.signer = signer
        self.nonce_counts = NonceCounts(signer.lifetime_s)  # replayed answers (nc not growing), per node
        self.settings = settings or RegistrarSettings()
        self.store: BindingStore = store if store is not None else MemoryBindings()
        self.on_auth_failure = on_auth_failure
        self.on_outcome = on_outcome
        self._accounts: dict[str, Account] = {}
        self._by_id: dict[str, Account] = {}
        self._deadlines: list[tuple[float, str]] = []  # (expires_at, agent id), stale entries skipped
        # Connection-bound flows (WebSocket, RFC 7118 §5.3) -> the agents that registered over them here
        self._flows: dict[tuple[str, str], set[str]] = {}
        self.heap_deadline: float | None = None  # an endpoint's timer heap may drive it (dce.sip.endpoint.Timed)

    # -- accounts -------------------------------------------------------------------------------------
    def replace_accounts(self, accounts: Iterable[Account]) -> None:
        """Swap in the agents allowed to register; the bindings of agents removed since the last call are dropped
        (only those: a shared store may hold bindings of an agent another node knows of first)."""
        accounts = tuple(accounts)
        removed = self._by_id.keys() - {account.id for account in accounts}
        self._accounts = {account.username: account for account in accounts}
        self._by_id = {account.id: account for account in accounts}
        for agent_id in removed:
            if self.store.get(agent_id):
                self._put(agent_id, ())

    @property
    def has_accounts(self) -> bool:
        """Whether any agent may register (with none, the B2BUA answers REGISTER as a non-registrar)."""
        return bool(self._accounts)

    def account(self, agent_id: str) -> Account | None:
        return self._by_id.get(agent_id)

    def binding_count(self) -> int:
        """Bindings held, the expired ones not yet swept included (a gauge read at scrape time)."""
        return sum(len(self.store.get(agent_id)) for agent_id in self.store.agents())

    def bindings(self, agent_id: str, now: float) -> tuple[Binding, ...]:
        """The agent's bindings not yet expired at ``now``."""
        return tuple(b for b in self.store.get(agent_id) if b.expires_at > now)

    def drop_flow(self, transport: str, addr: tuple[str, int]) -> list[str]:
        """The connection ``(transport, addr)`` ended: the bindings registered over it go (a WebSocket device is
        reachable only through its connection); the agents whose bindings changed."""
        source = f"{addr[0]}:{addr[1]}"
        changed: list[str] = []
        for agent_id in sorted(self._flows.pop((transport, source), ())):
            current = self.store.get(agent_id)
            kept = tuple(b for b in current if b.source != source or b.transport != transport)
            if len(kept) != len(current):
                self._put(agent_id, kept)
                changed.append(agent_id)
        return changed

    def reachable(self, binding: Binding) -> bool:
        """Whether this node can send to ``binding``'s device: any binding but a connection-bound one (WebSocket)
        whose connection is held by another node (listed here through a shared store)."""
        return binding.transport not in CONNECTION_BOUND or (binding.transport, binding.source) in self._flows

    # -- timers ---------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When the earliest binding expires (None: no bindings)."""
        return self._deadlines[0][0] if self._deadlines else None

    def next_deadline(self) -> float | None:
        """:meth:`next_timer`, as an endpoint's timer heap asks it."""
        return self.next_timer()

    def handle_timer(self, now: float) -> list[str]:
        """Drop the bindings expired at ``now``; the agents whose bindings changed."""
        changed: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, agent_id = heapq.heappop(self._deadlines)
            current = self.store.get(agent_id)
            kept = tuple(b for b in current if b.expires_at > now)
            if len(kept) != len(current):
                self._put(agent_id, kept)
                changed.append(agent_id)
        return changed

    def _put(self, agent_id: str, bindings: tuple[Binding, ...]) -> None:
        self.store.put(agent_id, bindings)
        if bindings:  # the earliest expiry of the new set; entries of earlier sets are skipped when due
            heapq.heappush(self._deadlines, (min(b.expires_at for b in bindings), agent_id))

    # -- REGISTER -------------------------------------------------------------------------------------
    def register(self, request: Request, addr: tuple[str, int], transport: str, now: float, now_wall: float) -> Reply:
        """The answer to a REGISTER from ``addr`` (IP address, port) over ``transport``."""
        reply = self._register(request, addr, transport, now, now_wall)
        if self.on_outcome is not None:
            self.on_outcome(reply.outcome)
        return reply

    def _register(self, request: Request, addr: tuple[str, int], transport: str, now: float,
                  now_wall: float) -> Reply:
        source = addr[0]
        username = uri_user(header_uri(request.get("To") or ""))
        account = self._accounts.get(username)
        realm = account.realm if account is not None else self.settings.realm
        credentials: Credentials | None = None
        for value in request.get_all("Authorization"):
            try:
                parsed = Credentials.parse(value)
            except ValueError:
                if not value.strip().lower().startswith("digest"):
                    continue  # another scheme: not for us
                return Reply(400, "Bad Authorization Header",
                             (("Reason", _reason(400, "bad Authorization header")),), None, "invalid")
            if parsed.realm == realm:
                credentials = parsed
                break
        if credentials is None:
            return self._challenge(account, realm, source, now_wall)
        ha1_hex = account.ha1(credentials.algorithm) if account is not None else None
        nonce = self.signer.check(credentials.nonce, source, now_wall)
        if (account is None or ha1_hex is None or nonce == "invalid" or credentials.username != account.username
                or not verify(credentials, method="REGISTER", ha1_hex=ha1_hex)):
            if self.on_auth_failure is not None:
                self.on_auth_failure(source, now)
            return Reply(403, None, (("Reason", _reason(403, "bad credentials")),), None, "refused")
        if nonce == "stale":  # the right password on an old nonce: ask again without bothering the user
            return self._challenge(account, realm, source, now_wall, stale=True)
        if credentials.nc is not None and not self.nonce_counts.advance(credentials.nonce, int(credentials.nc, 16),
                                                                         now_wall):
            return self._challenge(account, realm, source, now_wall)  # a replay proves nothing: a fresh nonce
        return self._update(account, request, f"{source}:{addr[1]}", transport, now)

    def _challenge(self, account: Account | None, realm: str, source: str, now_wall: float, *,
                   stale: bool = False) -> Reply:
        nonce = self.signer.issue(source, now_wall)
        offered = [a for a in self.settings.algorithms if account is None or account.ha1(a) is not None]
        headers = tuple(("WWW-Authenticate", str(Challenge(realm, nonce, algorithm, QOP, stale=stale)))
                        for algorithm in offered)
        return Reply(401, "Unauthorized", headers, None, "challenged")

    def _update(self, account: Account, request: Request, source: str, transport: str, now: float) -> Reply:
        """RFC 3261 §10.3 steps 6-8, for an authenticated agent."""
        agent_id = account.id
        try:
            contacts = _contacts(request)
            default = _expires(request.get("Expires"), self.settings.default_expires)
        except ValueError as exc:
            return self._bad(agent_id, str(exc))
        call_id, cseq = request.call_id, request.cseq[0]
        current = [b for b in self.store.get(agent_id) if b.expires_at > now]
        if contacts is None:  # no Contact: a query
            return self._ok(agent_id, tuple(current), now, "queried")
        if contacts == "*":
            if default != 0 or request.get("Expires") is None:
                return self._bad(agent_id, "Contact: * needs Expires: 0")
            if any(b.call_id == call_id and cseq <= b.cseq for b in current):
                return _out_of_order(agent_id)
            self._put(agent_id, ())
            return self._ok(agent_id, (), now, "unregistered")
        bindings = {b.uri: b for b in current}
        user_agent = request.get("User-Agent")
        for uri, params in contacts:
            try:
                expires = _expires(params.get("expires"), default)
            except ValueError as exc:
                return self._bad(agent_id, str(exc))
            if 0 < expires < self.settings.min_expires:
                return Reply(423, "Interval Too Brief", (("Min-Expires", str(self.settings.min_expires)),),
                             agent_id, "too_brief")
            expires = min(expires, self.settings.max_expires)
            old = bindings.get(uri)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return _out_of_order(agent_id)
            if expires == 0:
                bindings.pop(uri, None)
            else:
                bindings[uri] = Binding(uri, now + expires, call_id, cseq, source, transport, params.get("q"),
                                        user_agent[:128] if user_agent else None)
        if len(bindings) > self.settings.max_bindings:
            return Reply(403, None, (("Reason", _reason(403, "too many devices registered")),), agent_id,
                         "too_many")
        updated = tuple(bindings.values())
        if updated != tuple(current):
            self._put(agent_id, updated)
        if transport in CONNECTION_BOUND and updated:
            self._flows.setdefault((transport, source), set()).add(agent_id)
        return self._ok(agent_id, updated, now, "registered" if updated else "unregistered")

    def _ok(self, agent_id: str, bindings: tuple[Binding, ...], now: float, outcome: Outcome) -> Reply:
        headers = tuple(("Contact", f"<{b.uri}>;expires={b.expires_in(now)}") for b in bindings)
        return Reply(200, None, headers, agent_id, outcome)

    def _bad(self, agent_id: str, why: str) -> Reply:
        return Reply(400, None, (("Reason", _reason(400, why.replace('"', "'"))),), agent_id, "invalid")


def _out_of_order(agent_id: str) -> Reply:
    """RFC 3261 §10.3 step 7: the same Call-ID with a CSeq not above the stored one."""
    return Reply(500, "Server Internal Error", (("Reason", _reason(500, "CSeq out of order")),), agent_id,
                 "out_of_order")


def _expires(text: str | None, default: int) -> int:
    if text is None:
        return default
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        raise ValueError(f"bad expires value {text[:20]!r}")
    return int(text)


def _contacts(request: Request) -> list[tuple[str, dict[str, str | None]]] | str | None:
    """The Contacts as (URI, header params), ``"*"``, or None when there are none; ValueError when malformed."""
    values = [part for value in request.get_all("Contact") for part in split_list(value)]
    if not values:
        return None
    if any(value.strip() == "*" for value in values):
        if len(values) != 1:
            raise ValueError("Contact: * must be the only Contact")
        return "*"
    contacts: list[tuple[str, dict[str, str | None]]] = []
    for value in values:
        uri = header_uri(value)
        if not uri or ":" not in uri or len(uri) > 512:
            raise ValueError("bad Contact URI")
        if "<" in value:
            match = _CONTACT_PARAMS.search(value)
            params = parse_params(match.group(1)) if match else {}
        else:
            params = parse_params(value.partition(";")[2])
        contacts.append((uri, params))
    return contacts

