"""REGISTER through the B2BUA: the registrar answers it through a transaction when agents exist, binding expiries
run on the endpoint's one timer heap, and without agents REGISTER keeps its non-registrar 405."""

from __future__ import annotations

from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.registrar import Account, Registrar
from tests.unit.sipfactory import describe, request
from tests.unit.test_b2bua import Harness

SECRET = b"0123456789abcdef0123456789abcdef"
DOMAIN = "sip:10.0.0.1"
AGENT = Account("a1", "alice", "dce", ha1("alice", "dce", "pw-alice-1", "SHA-256"),
                ha1("alice", "dce", "pw-alice-1", "MD5"))


def harness(*accounts: Account) -> tuple[Harness, Registrar]:
    h = Harness()
    registrar = Registrar(NonceSigner(SECRET))
    registrar.replace_accounts(accounts)
    h.b2bua.registrar = registrar
    h.b2bua.wall_offset = 1_767_600_000.0
    return h, registrar


def register(cseq: int, *extra: tuple[str, str], user: str = "alice") -> bytes:
    return request("REGISTER", DOMAIN, to_uri=f"sip:{user}@10.0.0.1", from_uri=f"sip:{user}@10.0.0.1",
                   call_id="reg@192.0.2.10", cseq=cseq, extra=extra)


def test_register_with_digest_binds_and_the_binding_expires_on_the_endpoint_timer() -> None:
    h, registrar = harness(AGENT)
    contact = ("Contact", "<sip:alice@192.0.2.10:5060>;expires=120")
    sent = h.feed(register(1, contact))
    assert describe(sent) == ["401"] and sent[0].response.to_tag
    challenge = Challenge.parse(sent[0].response.get_all("WWW-Authenticate")[0])
    credentials = authorization(challenge, username="alice", password="pw-alice-1", method="REGISTER", uri=DOMAIN,
                                cnonce="c1")
    sent = h.feed(register(2, contact, ("Authorization", str(credentials))))
    assert describe(sent) == ["200"]
    assert sent[0].response.get_all("Contact") == ["<sip:alice@192.0.2.10:5060>;expires=120"]
    assert [b.uri for b in registrar.bindings("a1", h.now)] == ["sip:alice@192.0.2.10:5060"]
    assert h.events() == [] and h.b2bua.active_calls == 0  # no call, no CDR
    h.advance(h.now + 121)
    assert registrar.store.get("a1") == ()  # swept by the endpoint's timer, not only hidden


def test_unknown_user_is_challenged_and_refused_like_a_wrong_password() -> None:
    h, _ = harness(AGENT)
    sent = h.feed(register(1, ("Contact", "<sip:x@192.0.2.10>"), user="mallory"))
    assert describe(sent) == ["401"]
    challenge = Challenge.parse(sent[0].response.get_all("WWW-Authenticate")[0])
    credentials = authorization(challenge, username="mallory", password="guess-123", method="REGISTER", uri=DOMAIN,
                                cnonce="c1")
    sent = h.feed(register(2, ("Contact", "<sip:x@192.0.2.10>"), ("Authorization", str(credentials)),
                           user="mallory"))
    assert describe(sent) == ["403"]


def test_without_agents_register_gets_the_non_registrar_405() -> None:
    h, _ = harness()
    assert describe(h.feed(register(1, ("Contact", "<sip:alice@192.0.2.10>")))) == ["405"]
    h.b2bua.registrar = None
    assert describe(h.feed(register(2, ("Contact", "<sip:alice@192.0.2.10>")))) == ["405"]
