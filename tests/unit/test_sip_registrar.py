"""The registrar core (RFC 3261 §10.3) on a virtual clock: digest, bindings with expiry, several devices,
unregister, refresh, Call-ID/CSeq ordering, 423, sweeping by deadline, and answers that reveal no usernames."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from dce.http_api.metrics import REGISTRATION_OUTCOMES
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.message import Request, parse
from dce.sip.registrar import OUTCOMES, Account, Binding, MemoryBindings, Registrar, RegistrarSettings, Reply
from tests.unit.sipfactory import request

WALL = 1_767_600_000.0
T0 = 1000.0
SECRET = b"0123456789abcdef0123456789abcdef"
PHONE = ("192.0.2.10", 5060)
PASSWORD = "agent-secret-1"
DOMAIN = "sip:exchange.example"


def account(agent_id: str = "a1", username: str = "alice", password: str = PASSWORD, realm: str = "dce") -> Account:
    return Account(agent_id, username, realm, ha1(username, realm, password, "SHA-256"),
                   ha1(username, realm, password, "MD5"), buyer_id="b1")


def make(*accounts: Account, **settings: object) -> Registrar:
    registrar = Registrar(NonceSigner(SECRET), RegistrarSettings(**settings))  # type: ignore[arg-type]
    registrar.replace_accounts(accounts or (account(),))
    return registrar


def register(*contacts: str, user: str = "alice", call_id: str = "reg-1", cseq: int = 1,
             extra: Iterable[tuple[str, str]] = ()) -> Request:
    headers = [*(("Contact", c) for c in contacts), *extra]
    message = parse(request("REGISTER", DOMAIN, to_uri=f"sip:{user}@exchange.example",
                            from_uri=f"sip:{user}@exchange.example", call_id=call_id, cseq=cseq, extra=headers))
    assert isinstance(message, Request)
    return message


def answered(reply: Reply, req: Request, *, username: str = "alice", password: str = PASSWORD,
             index: int = 0) -> Request:
    """``req`` again with the answer to ``reply``'s challenge (CSeq + 1, as a UA does)."""
    assert reply.status == 401
    challenge = Challenge.parse(reply.headers[index][1])
    credentials = authorization(challenge, username=username, password=password, method="REGISTER", uri=DOMAIN,
                                cnonce="c0ffee")
    again = parse(request("REGISTER", DOMAIN, to_uri=req.get("To", "").strip("<>"),
                          from_uri=req.get("From", "").split(";")[0].strip("<>"), call_id=req.call_id,
                          cseq=req.cseq[0] + 1,
                          extra=[*((n, v) for n, v in req.headers if n in ("Contact", "Expires", "User-Agent")),
                                 ("Authorization", str(credentials))]))
    assert isinstance(again, Request)
    return again


def authed(registrar: Registrar, req: Request, now: float = T0, addr: tuple[str, int] = PHONE) -> Reply:
    """Send ``req``, answer its challenge, and return the second reply."""
    first = registrar.register(req, addr, "udp", now, WALL + now)
    return registrar.register(answered(first, req), addr, "udp", now, WALL + now)


def contacts(reply: Reply) -> dict[str, int]:
    found = {}
    for name, value in reply.headers:
        if name == "Contact":
            uri, _, expires = value.partition(";expires=")
            found[uri.strip("<>")] = int(expires)
    return found


# -- digest --------------------------------------------------------------------------------------------
def test_challenge_then_200_with_the_binding() -> None:
    registrar = make()
    req = register("<sip:alice@192.0.2.10:5060>", extra=[("Expires", "600")])
    first = registrar.register(req, PHONE, "udp", T0, WALL)
    assert first.status == 401 and first.agent_id is None
    assert [Challenge.parse(v).algorithm for _, v in first.headers] == ["SHA-256", "MD5"]
    assert all(Challenge.parse(v).qop == ("auth",) for _, v in first.headers)
    ok = registrar.register(answered(first, req), PHONE, "udp", T0, WALL)
    assert ok.status == 200 and ok.agent_id == "a1" and ok.outcome == "registered"
    assert contacts(ok) == {"sip:alice@192.0.2.10:5060": 600}
    [binding] = registrar.bindings("a1", T0)
    assert binding.source == "192.0.2.10:5060" and binding.transport == "udp" and binding.expires_at == T0 + 600


def test_md5_answer_is_accepted_too() -> None:
    registrar = make()
    req = register("<sip:alice@192.0.2.10>")
    first = registrar.register(req, PHONE, "udp", T0, WALL)
    ok = registrar.register(answered(first, req, index=1), PHONE, "udp", T0, WALL)
    assert ok.status == 200


def test_wrong_password_401_then_403_and_the_failure_is_reported() -> None:
    failures: list[str] = []
    registrar = make()
    registrar.on_auth_failure = lambda source, now: failures.append(source)
    req = register("<sip:alice@192.0.2.10>")
    first = registrar.register(req, PHONE, "udp", T0, WALL)
    refused = registrar.register(answered(first, req, password="wrong-one"), PHONE, "udp", T0, WALL)
    assert refused.status == 403 and refused.agent_id is None and failures == ["192.0.2.10"]
    assert registrar.bindings("a1", T0) == ()


def test_unknown_user_gets_the_same_shape_as_a_known_one() -> None:
    registrar = make()
    known = register("<sip:alice@192.0.2.10>")
    unknown = register("<sip:mallory@192.0.2.10>", user="mallory")
    a = registrar.register(known, PHONE, "udp", T0, WALL)
    b = registrar.register(unknown, PHONE, "udp", T0, WALL)

    def shape(reply: Reply) -> tuple[object, ...]:  # nonces are salted per challenge: compare all but the nonce
        headers = tuple((k, re.sub(r'nonce="[^"]*"', 'nonce=""', v)) for k, v in reply.headers)
        return (reply.status, reply.reason, headers)

    assert shape(a) == shape(b)  # same realm and algorithms
    wrong = registrar.register(answered(a, known, password="nope-nope"), PHONE, "udp", T0, WALL)
    stranger = registrar.register(answered(b, unknown, username="mallory"), PHONE, "udp", T0, WALL)
    assert (wrong.status, wrong.reason, wrong.headers) == (stranger.status, stranger.reason, stranger.headers)


def test_registering_as_someone_else_is_refused() -> None:
    registrar = make(account(), account("a2", "bob", "bob-password"))
    req = register("<sip:alice@192.0.2.10>")  # To: alice, credentials of bob
    first = registrar.register(req, PHONE, "udp", T0, WALL)
    assert registrar.register(answered(first, req, username="bob", password="bob-password"), PHONE, "udp", T0,
                              WALL).status == 403


def test_nonce_from_another_source_is_refused_and_a_stale_one_rechallenged() -> None:
    registrar = make()
    req = register("<sip:alice@192.0.2.10>")
    first = registrar.register(req, PHONE, "udp", T0, WALL)
    assert registrar.register(answered(first, req), ("198.51.100.9", 5060), "udp", T0, WALL).status == 403
    stale = registrar.register(answered(first, req), PHONE, "udp", T0 + 400, WALL + 400)
    assert stale.status == 401 and "stale=true" in stale.headers[0][1]


def test_unreadable_credentials_are_a_400() -> None:
    registrar = make()
    req = register("<sip:alice@192.0.2.10>", extra=[("Authorization", "Digest username=alice")])
    assert registrar.register(req, PHONE, "udp", T0, WALL).status == 400


# -- bindings ------------------------------------------------------------------------------------------
def test_expiry_from_header_contact_param_default_and_max() -> None:
    registrar = make(max_expires=3600, default_expires=1800)
    reply = authed(registrar, register("<sip:alice@192.0.2.10:5060>;expires=120", "<sip:alice@192.0.2.11>",
                                       "sip:alice@192.0.2.12;expires=99999", extra=[("Expires", "300")]))
    assert contacts(reply) == {"sip:alice@192.0.2.10:5060": 120, "sip:alice@192.0.2.11": 300,
                               "sip:alice@192.0.2.12": 3600}
    reply = authed(registrar, register("<sip:alice@192.0.2.13>", call_id="other"))
    assert contacts(reply)["sip:alice@192.0.2.13"] == 1800


def test_too_brief_is_423_with_min_expires() -> None:
    registrar = make(min_expires=60)
    reply = authed(registrar, register("<sip:alice@192.0.2.10>", extra=[("Expires", "30")]))
    assert (reply.status, reply.reason) == (423, "Interval Too Brief")
    assert ("Min-Expires", "60") in reply.headers and registrar.bindings("a1", T0) == ()


def test_two_devices_expire_and_are_swept_by_deadline() -> None:
    registrar = make()
    authed(registrar, register("<sip:alice@192.0.2.10>", extra=[("Expires", "100")]))
    reply = authed(registrar, register("<sip:alice@192.0.2.20>", call_id="desk", extra=[("Expires", "200")]),
                   addr=("192.0.2.20", 5060))
    assert set(contacts(reply)) == {"sip:alice@192.0.2.10", "sip:alice@192.0.2.20"}  # several devices
    assert registrar.next_timer() == T0 + 100
    assert registrar.handle_timer(T0 + 99) == []
    assert registrar.handle_timer(T0 + 100) == ["a1"]
    assert [b.uri for b in registrar.bindings("a1", T0 + 100)] == ["sip:alice@192.0.2.20"]
    assert registrar.next_timer() == T0 + 200
    assert registrar.handle_timer(T0 + 200) == ["a1"]
    assert registrar.store.get("a1") == () and registrar.next_timer() is None


def test_refresh_moves_the_deadline() -> None:
    registrar = make()
    authed(registrar, register("<sip:alice@192.0.2.10>", extra=[("Expires", "100")]))
    authed(registrar, register("<sip:alice@192.0.2.10>", cseq=5, extra=[("Expires", "100")]), now=T0 + 90)
    assert registrar.handle_timer(T0 + 100) == []  # the old deadline passes: the refreshed binding stays
    assert registrar.next_timer() == T0 + 190
    assert registrar.handle_timer(T0 + 190) == ["a1"]


def test_unregister_one_contact_and_star() -> None:
    registrar = make()
    authed(registrar, register("<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>"))
    reply = authed(registrar, register("<sip:alice@192.0.2.10>;expires=0", cseq=3))
    assert set(contacts(reply)) == {"sip:alice@192.0.2.11"}
    reply = authed(registrar, register("*", cseq=5, extra=[("Expires", "0")]))
    assert reply.status == 200 and contacts(reply) == {} and reply.outcome == "unregistered"
    assert registrar.bindings("a1", T0) == ()


@pytest.mark.parametrize(("contact", "expires"), [("*", None), ("*", "60"), ("*, <sip:alice@192.0.2.1>", "0")])
def test_star_needs_expires_zero_and_no_other_contact(contact: str, expires: str | None) -> None:
    registrar = make()
    extra = [("Expires", expires)] if expires is not None else []
    assert authed(registrar, register(contact, cseq=3, extra=extra)).status == 400


def test_no_contact_is_a_query() -> None:
    registrar = make()
    authed(registrar, register("<sip:alice@192.0.2.10>", extra=[("Expires", "100")]))
    reply = authed(registrar, register(cseq=3), now=T0 + 40)
    assert reply.status == 200 and contacts(reply) == {"sip:alice@192.0.2.10": 60} and reply.outcome == "queried"


def test_same_call_id_with_an_old_cseq_is_refused_another_call_id_replaces() -> None:
    registrar = make()
    authed(registrar, register("<sip:alice@192.0.2.10>", call_id="c1", cseq=10))  # stored with CSeq 11
    stale = authed(registrar, register("<sip:alice@192.0.2.10>;expires=0", call_id="c1", cseq=5))  # CSeq 6
    assert stale.status == 500 and registrar.bindings("a1", T0)
    star = authed(registrar, register("*", call_id="c1", cseq=5, extra=[("Expires", "0")]))
    assert star.status == 500 and registrar.bindings("a1", T0)
    other = authed(registrar, register("<sip:alice@192.0.2.10>;expires=0", call_id="c2", cseq=1))
    assert other.status == 200 and registrar.bindings("a1", T0) == ()


def test_too_many_devices() -> None:
    registrar = make(max_bindings=2)
    assert authed(registrar, register("<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>")).status == 200
    reply = authed(registrar, register("<sip:alice@192.0.2.3>", call_id="x"))
    assert reply.status == 403 and len(registrar.bindings("a1", T0)) == 2


def test_bad_expires_is_a_400() -> None:
    registrar = make()
    assert authed(registrar, register("<sip:alice@192.0.2.1>", extra=[("Expires", "soon")])).status == 400
    assert authed(registrar, register("<sip:alice@192.0.2.1>;expires=-5")).status == 400


def test_removed_agent_loses_its_bindings() -> None:
    registrar = make(account(), account("a2", "bob"))
    authed(registrar, register("<sip:alice@192.0.2.1>"))
    registrar.replace_accounts([account("a2", "bob")])
    assert registrar.bindings("a1", T0) == () and registrar.account("a1") is None
    assert registrar.has_accounts
    registrar.store.put("a9", (Binding("sip:x@192.0.2.9", T0 + 60, "c", 1, "192.0.2.9:5060", "udp"),))
    registrar.replace_accounts([])  # a9's bindings (another node's agent this one does not know yet) stay
    assert not registrar.has_accounts and registrar.store.get("a9")


def test_store_is_pluggable() -> None:
    store = MemoryBindings()
    registrar = Registrar(NonceSigner(SECRET), store=store)
    registrar.replace_accounts([account()])
    authed(registrar, register("<sip:alice@192.0.2.1>"))
    [(agent_id, bindings)] = [(a, store.get(a)) for a in store.agents()]
    assert agent_id == "a1" and isinstance(bindings[0], Binding)


def test_offered_algorithms_follow_the_settings() -> None:
    registrar = make(algorithms=("MD5",))
    for user in ("alice", "mallory"):
        reply = registrar.register(register("<sip:x@192.0.2.1>", user=user), PHONE, "udp", T0, WALL)
        assert [Challenge.parse(v).algorithm for _, v in reply.headers] == ["MD5"]


def test_every_outcome_is_heard_and_is_a_metrics_label() -> None:
    heard: list[str] = []
    registrar = make()
    registrar.on_outcome = heard.append
    authed(registrar, register("<sip:alice@192.0.2.1>"))
    authed(registrar, register("*", cseq=3, extra=[("Expires", "0")]))
    assert heard == ["challenged", "registered", "challenged", "unregistered"]
    assert set(OUTCOMES) == REGISTRATION_OUTCOMES
    assert registrar.binding_count() == 0


def test_a_replayed_answer_is_challenged_again_not_bound() -> None:
    """The same Authorization (same nonce, same nc) sent a second time is a replay: a fresh challenge, no binding."""
    registrar = make()
    req = register("<sip:alice@192.0.2.10>")
    first = registrar.register(req, PHONE, "udp", T0, WALL)
    answer = answered(first, req)
    assert registrar.register(answer, PHONE, "udp", T0, WALL).status == 200
    replayed = registrar.register(answer, PHONE, "udp", T0 + 1, WALL + 1)
    assert replayed.status == 401 and "stale=true" not in replayed.headers[0][1]
    assert Challenge.parse(replayed.headers[0][1]).nonce != Challenge.parse(first.headers[0][1]).nonce
