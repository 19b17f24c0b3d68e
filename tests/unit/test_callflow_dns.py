"""The CallFlow dialling by name: RFC 3263 next hops, failover inside a target, DNS failures, credentials."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.fernet import Fernet

from dce.billing.cdr import Disposition
from dce.clock import VirtualClock
from dce.exchange.config import Settings
from dce.exchange.outbound import credentials_box, resolver_from
from dce.routing.model import PlannedTarget, RoutingPlan, TargetAuth
from dce.sip.digest import Challenge, Credentials, ha1, verify
from dce.sip.endpoint import is_ip_literal
from dce.sip.message import parse, uri_hostport
from dce.sip.resolver import NextHop, ResolveError
from dce.sip.secret_box import SecretBox, SecretBoxError
from tests.unit.sipfactory import request, response_to
from tests.unit.test_callflow import CALLER, DID, Harness, PlannedRouter, invite, requests_of, statuses

HOP_1 = ("udp", "127.0.0.1", 5070)
HOP_2 = ("udp", "127.0.0.2", 5072)


class FakeResolver:
    """Next hops by host name; ``slow`` names answer only when the test releases them."""

    def __init__(self, table: dict[str, list[NextHop]], slow: frozenset[str] = frozenset()) -> None:
        self.table = table
        self.slow = slow
        self.release = asyncio.Event()
        self.hits = self.misses = 0

    def cached(self, uri: str, now: float) -> list[NextHop] | None:
        host, port, _ = uri_hostport(uri)
        if is_ip_literal(host):
            return [("udp", host, port or 5060)]
        if host in self.slow:
            return None
        self.hits += 1
        if host not in self.table:
            raise ResolveError(f"DNS: no such domain {host}")
        return list(self.table[host])

    async def resolve(self, uri: str) -> list[NextHop]:
        self.misses += 1
        await self.release.wait()
        return list(self.table[uri_hostport(uri)[0]])


def harness(targets: list[PlannedTarget], resolver: FakeResolver) -> tuple[Harness, PlannedRouter]:
    h = Harness({})
    router = PlannedRouter(RoutingPlan(tuple(targets)))
    h.flow.router = router
    h.flow.resolver = resolver  # type: ignore[assignment]
    return h, router


async def test_a_503_fails_over_to_the_next_hop_of_the_same_target() -> None:
    h, router = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20)],
                        FakeResolver({"buyer.test": [HOP_1, HOP_2]}))
    [first] = requests_of(await h.feed(invite()), "INVITE")
    assert first.addr == HOP_1[1:] and first.request.uri == "sip:buyer@buyer.test"
    sent = await h.feed(response_to(first.request, 503, to_tag="x"), addr=first.addr)
    [second] = requests_of(sent, "INVITE")
    assert second.addr == HOP_2[1:] and second.request.uri == "sip:buyer@buyer.test"
    assert statuses(sent) == []  # the caller hears nothing of the failover
    await h.feed(response_to(second.request, 200, to_tag="y", contact="<sip:b@127.0.0.2:5072>", body=b"v=0\r\n"),
                 addr=second.addr)
    assert router.log[:2] == ["acquire t1", "connected t1"]  # one slot for the target, whichever hop answered


async def test_a_busy_hop_is_the_targets_answer_and_the_next_target_is_dialled() -> None:
    h, router = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20),
                         PlannedTarget("t2", "sip:127.0.0.9:5090", 1, 20)],
                        FakeResolver({"buyer.test": [HOP_1, HOP_2]}))
    [first] = requests_of(await h.feed(invite()), "INVITE")
    sent = await h.feed(response_to(first.request, 486, to_tag="x"), addr=first.addr)
    [second] = requests_of(sent, "INVITE")
    assert second.addr == ("127.0.0.9", 5090)
    assert router.log == ["acquire t1", "release t1", "acquire t2"]


async def test_every_hop_failing_fails_the_target_with_the_last_status() -> None:
    h, _ = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20)],
                   FakeResolver({"buyer.test": [HOP_1, HOP_2]}))
    [first] = requests_of(await h.feed(invite()), "INVITE")
    [second] = requests_of(await h.feed(response_to(first.request, 503, to_tag="x"), addr=first.addr), "INVITE")
    sent = await h.feed(response_to(second.request, 503, to_tag="y"), addr=second.addr)
    assert statuses(sent, CALLER) == [503]
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.FAILED and cdr.reason == "last destination: 503 failed"


async def test_a_name_that_does_not_resolve_fails_the_target_with_a_clear_reason() -> None:
    h, router = harness([PlannedTarget("t1", "sip:buyer@nowhere.test", 1, 20)], FakeResolver({}))
    sent = await h.feed(invite())
    assert requests_of(sent, "INVITE") == []
    assert statuses(sent) == [100, 503]
    assert 'text="destination failed"' in (sent[-1].response.get("Reason") or "")  # DNS details stay ours
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.FAILED
    assert cdr.reason == "last destination: 503 failed (DNS: no such domain nowhere.test)"
    assert router.log == ["acquire t1", "release t1"]


async def test_a_cache_miss_does_not_hold_up_other_calls() -> None:
    resolver = FakeResolver({"slow.test": [HOP_1]}, slow=frozenset({"slow.test"}))
    h, _ = harness([PlannedTarget("t1", "sip:buyer@slow.test", 1, 20)], resolver)
    assert requests_of(await h.feed(invite()), "INVITE") == []  # waiting for DNS
    h.flow.router = PlannedRouter(RoutingPlan((PlannedTarget("t2", "sip:127.0.0.9:5090", 1, 20),)))
    other = invite().replace(b"call-1@192.0.2.10", b"call-2@192.0.2.10")
    [leg] = requests_of(await h.feed(other), "INVITE")  # the second call is dialled meanwhile
    assert leg.addr == ("127.0.0.9", 5090)
    resolver.release.set()
    await h.pump()
    [late] = requests_of(h.out(), "INVITE")
    assert late.addr == HOP_1[1:] and resolver.misses == 1


async def test_the_targets_credentials_answer_the_buyers_challenge() -> None:
    auth = TargetAuth("acct", password="pw")  # plain (as a static route would give it); sealed: see test below
    h, _ = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20, auth=auth)],
                   FakeResolver({"buyer.test": [HOP_1]}))
    [first] = requests_of(await h.feed(invite()), "INVITE")
    challenge = Challenge("buyer.test", "n1", "MD5", ("auth",))
    sent = await h.feed(response_to(first.request, 401, to_tag="x", extra=[("WWW-Authenticate", str(challenge))]),
                        addr=first.addr)
    [retry] = requests_of(sent, "INVITE")
    credentials = Credentials.parse(retry.request.get("Authorization") or "")
    assert verify(credentials, method="INVITE", ha1_hex=ha1("acct", "buyer.test", "pw", "MD5"))
    assert retry.request.call_id == first.request.call_id and retry.request.cseq == (2, "INVITE")
    sent = await h.feed(response_to(retry.request, 401, to_tag="x", extra=[("WWW-Authenticate", str(challenge))]),
                        addr=first.addr)
    assert requests_of(sent, "INVITE") == [] and statuses(sent) == [401]  # a definite client error passed on
    [cdr] = h.cdrs
    assert cdr.final_code == 401 and cdr.reason == "last destination: 401 failed"


async def test_a_caller_leaving_during_the_lookup_is_recorded_once_and_nothing_is_dialled() -> None:
    resolver = FakeResolver({"slow.test": [HOP_1]}, slow=frozenset({"slow.test"}))
    h, router = harness([PlannedTarget("t1", "sip:buyer@slow.test", 1, 20)], resolver)
    offer = invite()
    await h.feed(offer)
    branch = parse(offer).top_via.branch  # type: ignore[union-attr]
    sent = await h.feed(request("CANCEL", f"sip:{DID}@10.0.0.1", branch=branch, cseq=1,
                                from_uri="sip:+13125550199@192.0.2.10"))
    assert 487 in statuses(sent)
    resolver.release.set()
    await h.pump()
    assert requests_of(h.out(), "INVITE") == []
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.CANCELLED
    assert router.log == ["acquire t1", "release t1"]


async def test_a_sealed_password_is_opened_with_the_box_and_ha1_answers_its_realm() -> None:
    box = SecretBox.from_secret("a secret of some length for tests")
    sealed = TargetAuth("acct", sealed_password=box.seal("pw"))
    hashed = TargetAuth("acct", realm="buyer.test", ha1=(("MD5", ha1("acct", "buyer.test", "pw", "MD5")),))
    for auth in (sealed, hashed):
        h, _ = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20, auth=auth)],
                       FakeResolver({"buyer.test": [HOP_1]}))
        h.flow.credentials_box = box
        [first] = requests_of(await h.feed(invite()), "INVITE")
        challenge = Challenge("buyer.test", "n1", "MD5", ("auth",))
        sent = await h.feed(response_to(first.request, 401, to_tag="x",
                                        extra=[("WWW-Authenticate", str(challenge))]), addr=first.addr)
        [retry] = requests_of(sent, "INVITE")
        assert verify(Credentials.parse(retry.request.get("Authorization") or ""), method="INVITE",
                      ha1_hex=ha1("acct", "buyer.test", "pw", "MD5"))


async def test_a_seal_the_box_cannot_open_fails_the_challenged_leg_not_the_exchange() -> None:
    other = SecretBox.from_secret("another secret of some length")
    auth = TargetAuth("acct", sealed_password=other.seal("pw"))
    h, _ = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20, auth=auth)],
                   FakeResolver({"buyer.test": [HOP_1]}))
    h.flow.credentials_box = SecretBox.from_secret("a secret of some length for tests")
    [first] = requests_of(await h.feed(invite()), "INVITE")
    sent = await h.feed(response_to(first.request, 401, to_tag="x", extra=[(
        "WWW-Authenticate", str(Challenge("buyer.test", "n1")))]), addr=first.addr)
    assert statuses(sent) == [401]


def test_secret_box_round_trip_and_keys() -> None:
    key = Fernet.generate_key().decode()
    box = SecretBox.from_secret(key)
    sealed = box.seal("pässword")
    assert "pässword" not in sealed and box.open(sealed) == "pässword"
    with pytest.raises(SecretBoxError):
        SecretBox.from_secret("x" * 40).open(sealed)
    with pytest.raises(ValueError):
        SecretBox.from_secret("short")


async def test_a_failover_extends_the_calls_longest_life_by_one_more_leg() -> None:
    h, _ = harness([PlannedTarget("t1", "sip:buyer@buyer.test", 1, 20)], FakeResolver({"buyer.test": [HOP_1, HOP_2]}))
    [first] = requests_of(await h.feed(invite()), "INVITE")
    [watched] = list(h.flow.watchdog._watched.values())
    before = watched.deadline
    await h.feed(response_to(first.request, 503, to_tag="x"), addr=first.addr)
    assert watched.deadline == before + 20 + h.flow.watchdog.bounds.leg_guard_s


def test_the_credentials_key_comes_from_secrets_else_from_the_auth_secret() -> None:
    assert credentials_box(Settings()) is None
    own = credentials_box(Settings(secrets={"target_credentials_key": Fernet.generate_key().decode()}))
    derived = credentials_box(Settings(auth={"secret": "x" * 40}))
    assert own is not None and derived is not None
    assert derived.open(credentials_box(Settings(auth={"secret": "x" * 40})).seal("pw")) == "pw"  # type: ignore[union-attr]
    settings = Settings(sip={"dns": {"nameservers": ["127.0.0.1:5353"], "enabled": True}})
    assert resolver_from(settings.sip.dns, VirtualClock()) is not None
    assert resolver_from(Settings(sip={"dns": {"enabled": False}}).sip.dns, VirtualClock()) is None

