"""Targets that point at an agent or an agent group: eligibility (registered, enabled, idle), the reason a call gets
when no agent can take it, the groups' ring strategies on a virtual clock, and the CallFlow hunting through them."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from dce.billing.cdr import Disposition
from dce.clock import VirtualClock
from dce.exchange.agent_lines import AgentLines
from dce.exchange.agent_presence import RegistrarPresence
from dce.exchange.callflow import CallFlow
from dce.exchange.router import StaticRouter
from dce.media.relay import PassthroughMedia
from dce.routing.agents import (
    AGENT_DISABLED,
    AGENTS_BUSY,
    NO_REGISTERED_AGENT,
    AgentDirectory,
    AgentInfo,
    Contact,
    GroupInfo,
    Ring,
    agent_reference,
)
from dce.routing.counters import InMemoryCounters
from dce.routing.duplicates import DuplicateLedger
from dce.routing.engine import RoutingEngine
from dce.routing.model import CallerContext
from dce.routing.static import StaticRoutes
from dce.sip.digest import NonceSigner
from dce.sip.registrar import Binding, Registrar
from tests.unit.routing_fixtures import DID, market, target
from tests.unit.sipfactory import ack_for, new_branch, request, response_to
from tests.unit.test_callflow import CALLER, Harness, invite, requests_of, statuses

NOW = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)


class Registered:
    """A presence view the test sets: agent id -> its contacts' URIs (reached at the URI's host)."""

    def __init__(self, **contacts: tuple[str, ...]) -> None:
        self.by_agent = dict(contacts)

    def contacts(self, agent_id: str) -> tuple[Contact, ...]:
        return tuple(Contact(uri) for uri in self.by_agent.get(agent_id, ()))


def directory(presence: Registered, *agents: AgentInfo, groups: tuple[GroupInfo, ...] = (),
              now: float = 0.0) -> AgentDirectory:
    d = AgentDirectory(presence)
    d.replace(agents, groups, now)
    return d


def test_agent_reference_reads_agent_and_group_destinations_only():
    assert agent_reference("agent:a1") == ("agent", "a1")
    assert agent_reference("group:g1") == ("group", "g1")
    assert agent_reference("sip:a1@x") is None and agent_reference("+18005550100") is None


def test_an_agent_is_available_only_when_enabled_registered_and_idle():
    presence = Registered(a1=("sip:a1@192.0.2.1:5062",))
    d = directory(presence, AgentInfo("a1", "b"), AgentInfo("a2", "b"), AgentInfo("a3", "b", enabled=False))
    assert d.unavailable("agent:a1") is None
    assert d.unavailable("agent:a2") == NO_REGISTERED_AGENT
    assert d.unavailable("agent:a3") == AGENT_DISABLED
    assert d.unavailable("agent:nobody") == NO_REGISTERED_AGENT
    assert d.unavailable("sip:x@y") is None  # not an agent destination: not this module's to judge

    assert d.hold("a1", "call-1")
    assert d.calls("a1") == 1 and d.unavailable("agent:a1") == AGENTS_BUSY
    assert not d.hold("a1", "call-2"), "max_concurrent 1: a second call cannot take it"
    assert d.release("call-1", 10.0) == ["a1"]
    assert d.calls("a1") == 0 and d.unavailable("agent:a1") is None
    assert d.release("call-1", 11.0) == [], "releasing twice is harmless"


def test_max_concurrent_calls_counts_each_call():
    d = directory(Registered(a1=("sip:a1@h",)), AgentInfo("a1", "b", max_concurrent=2))
    assert d.hold("a1", "c1") and d.hold("a1", "c2") and not d.hold("a1", "c3")
    d.release("c1", 1.0)
    assert d.unavailable("agent:a1") is None and d.hold("a1", "c3")


def test_a_group_is_available_while_one_member_is_and_otherwise_says_the_weightiest_reason():
    presence = Registered(a1=("sip:a1@h",))
    d = directory(presence, AgentInfo("a1", "b"), AgentInfo("a2", "b"), AgentInfo("a3", "b", enabled=False),
                  groups=(GroupInfo("g", "b", "ring_all", ("a3", "a2", "a1")), GroupInfo("empty", "b")))
    assert d.unavailable("group:g") is None
    d.hold("a1", "c1")
    assert d.unavailable("group:g") == NO_REGISTERED_AGENT  # a2 unregistered outweighs a1 busy and a3 disabled
    presence.by_agent["a2"] = ("sip:a2@h",)
    d.hold("a2", "c2")
    assert d.unavailable("group:g") == AGENTS_BUSY
    assert d.unavailable("group:empty") == NO_REGISTERED_AGENT
    assert d.unavailable("group:unknown") == NO_REGISTERED_AGENT


def test_ring_all_rings_every_available_member_with_every_device_in_one_wave():
    presence = Registered(a1=("sip:a1@desk", "sip:a1@browser"), a3=("sip:a3@h",))
    d = directory(presence, *(AgentInfo(k, "b") for k in ("a1", "a2", "a3")),
                  groups=(GroupInfo("g", "b", "ring_all", ("a3", "a2", "a1")),))
    a1 = Ring("a1", (Contact("sip:a1@desk"), Contact("sip:a1@browser")))
    assert d.hunt("group:g") == [(Ring("a3", (Contact("sip:a3@h"),)), a1)]
    assert d.hunt("agent:a1") == [(a1,)]
    assert d.hunt("agent:a2") == [] and d.hunt("sip:x@y") == [] and d.hunt("group:none") == []
    assert d.hold("a3", "c1") and d.hold("a1", "c1") and not d.hold("a1", "c1")  # one call rings both
    assert d.release("c1", 5.0, keep="a1") == ["a3"]  # a1 answered: a3 is free, a1 keeps its line
    assert d.calls("a1") == 1 and d.calls("a3") == 0
    assert d.release("c1", 9.0) == ["a1"] and d.calls("a1") == 0


def test_round_robin_starts_one_member_further_each_call():
    presence = Registered(a1=("sip:a1@h",), a2=("sip:a2@h",), a3=("sip:a3@h",))
    d = directory(presence, *(AgentInfo(k, "b") for k in ("a1", "a2", "a3")),
                  groups=(GroupInfo("g", "b", "round_robin", ("a1", "a2", "a3")),))
    firsts = [[r.agent_id for (r,) in d.hunt("group:g")] for _ in range(4)]
    assert firsts == [["a1", "a2", "a3"], ["a2", "a3", "a1"], ["a3", "a1", "a2"], ["a1", "a2", "a3"]]
    d.hold("a2", "c1")  # busy members are skipped, the turn still moves on
    assert [r.agent_id for (r,) in d.hunt("group:g")] == ["a3", "a1"]


def test_longest_idle_rings_the_agent_idle_longest_first_on_a_virtual_clock():
    presence = Registered(a1=("sip:a1@h",), a2=("sip:a2@h",), a3=("sip:a3@h",))
    d = directory(presence, *(AgentInfo(k, "b") for k in ("a1", "a2", "a3")),
                  groups=(GroupInfo("g", "b", "longest_idle", ("a1", "a2", "a3")),), now=100.0)
    assert [r.agent_id for (r,) in d.hunt("group:g")] == ["a1", "a2", "a3"]  # all idle since loading: member order
    d.hold("a1", "c1")
    d.hold("a2", "c2")
    d.release("c2", 130.0)  # a2 talked until 130
    d.release("c1", 160.0)  # a1 until 160
    assert [r.agent_id for (r,) in d.hunt("group:g")] == ["a3", "a2", "a1"]
    d.hold("a3", "c3")
    d.release("c3", None)  # rung, not answered: still idle since loading
    assert [r.agent_id for (r,) in d.hunt("group:g")] == ["a3", "a2", "a1"]
    d.replace([AgentInfo(k, "b") for k in ("a1", "a2", "a3")],
              [GroupInfo("g", "b", "longest_idle", ("a1", "a2", "a3"))], 500.0)
    assert [r.agent_id for (r,) in d.hunt("group:g")] == ["a3", "a2", "a1"], "a reload keeps idle times"


# -- the engine: agents' availability is part of eligibility, and the decision says why ------------------------------


def _engine(presence: Registered, *targets, agents: tuple[AgentInfo, ...] = (),
            groups: tuple[GroupInfo, ...] = ()) -> RoutingEngine:
    return RoutingEngine(market(*targets), InMemoryCounters(), DuplicateLedger(), random.Random(1),
                         directory(presence, *agents, groups=groups))


def _ctx() -> CallerContext:
    return CallerContext(ani="+13125550199", did=DID)


def test_an_unregistered_agent_target_is_not_eligible_and_the_plan_says_why():
    presence = Registered()
    engine = _engine(presence, target("t1", destination="agent:a1"), agents=(AgentInfo("a1", "b"),))
    plan = engine.plan(_ctx(), NOW)
    assert plan.targets == () and plan.reason == "no eligible target: 1 no registered agent"
    presence.by_agent["a1"] = ("sip:a1@192.0.2.1",)
    assert [t.destination for t in engine.plan(_ctx(), NOW).targets] == ["agent:a1"]
    engine.agents.hold("a1", "c1")
    assert engine.plan(_ctx(), NOW).reason == "no eligible target: 1 all agents busy"


def test_unavailable_agent_targets_are_skipped_and_other_targets_still_route():
    engine = _engine(Registered(), target("t1", destination="agent:a1", priority=1),
                     target("t2", destination="group:g", priority=1), target("t3", priority=2),
                     agents=(AgentInfo("a1", "b", enabled=False),), groups=(GroupInfo("g", "b", members=("a1",)),))
    assert [t.target_id for t in engine.plan(_ctx(), NOW).targets] == ["t3"]
    only_agents = _engine(Registered(), target("t1", destination="agent:a1"), target("t2", destination="group:g"),
                          agents=(AgentInfo("a1", "b", enabled=False), AgentInfo("a2", "b")),
                          groups=(GroupInfo("g", "b", members=("a2",)),))
    assert only_agents.plan(_ctx(), NOW).reason == "no eligible target: 1 no registered agent, 1 agent disabled"
    assert only_agents.eligible(_ctx(), NOW) == []  # the RTB auction sees the same


# -- the CallFlow: an agent target rings the agents' devices in order, the answering agent holds a line -------------


AGENT_A = ("192.0.2.21", 5062)
AGENT_B = ("192.0.2.22", 5062)


def _agent_harness(strategy: str = "round_robin") -> tuple[Harness, AgentDirectory]:
    h = Harness({DID: ["group:g"]})
    presence = Registered(a=("sip:alice@192.0.2.21:5062",), b=("sip:bob@192.0.2.22:5062",))
    agents = directory(presence, AgentInfo("a", "b"), AgentInfo("b", "b"),
                       groups=(GroupInfo("g", "b", strategy, ("a", "b")),), now=h.clock.monotonic())  # type: ignore[arg-type]
    h.flow = CallFlow(sip=h.sip, router=StaticRouter(StaticRoutes({DID: ["group:g"]}), 20.0),
                      media=PassthroughMedia(), cdrs=h, observer=h, clock=h.clock, agents=AgentLines(agents))
    h.sip.deliver_to(h.flow.dispatch)
    return h, agents


async def test_a_group_target_hunts_to_the_next_agent_on_no_answer_and_the_answering_agent_is_busy_until_the_end():
    h, agents = _agent_harness()
    a_invite = invite()
    sent = await h.feed(a_invite)
    [first] = requests_of(sent, "INVITE")
    assert first.addr == AGENT_A and first.request.uri == "sip:alice@192.0.2.21:5062"
    assert agents.calls("a") == 1

    await h.feed(response_to(first.request, 180, to_tag="x"), addr=AGENT_A)
    sent = await h.advance(20)  # alice's ring timeout: CANCEL her, ring bob
    [cancel] = requests_of(sent, "CANCEL")
    assert cancel.addr == AGENT_A
    await h.feed(response_to(cancel.request, 200, to_tag="x"), addr=AGENT_A)
    sent = await h.feed(response_to(first.request, 487, to_tag="x"), addr=AGENT_A)
    [second] = requests_of(sent, "INVITE")
    assert second.addr == AGENT_B and agents.calls("a") == 0 and agents.calls("b") == 1

    sent = await h.feed(response_to(second.request, 200, to_tag="bob", contact="<sip:bob@192.0.2.22:5062>",
                                    body=b"v=0\r\n"), addr=AGENT_B)
    ok = next(s for s in sent if s.addr == CALLER and s.message.__class__.__name__ == "Response")
    assert ok.response.status == 200
    await h.feed(ack_for(a_invite, ok.response, branch=new_branch()))
    assert agents.unavailable("agent:b") == AGENTS_BUSY

    await h.advance(40)
    bye = request("BYE", "sip:10.0.0.1:5060", call_id="call-1@192.0.2.10", to_tag=ok.response.to_tag, cseq=2,
                  from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")
    sent = await h.feed(bye)
    assert statuses(sent) == [200]
    await h.pump()
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.ANSWERED and cdr.destination == "group:g"
    assert agents.calls("b") == 0 and agents.unavailable("agent:b") is None
    agents.replace([AgentInfo("a", "b"), AgentInfo("b", "b")],
                   [GroupInfo("g", "b", "longest_idle", ("a", "b"))], h.clock.monotonic())
    assert [r.agent_id for (r,) in agents.hunt("group:g")] == ["a", "b"], "bob became idle at the call's end"


async def test_a_group_with_no_available_agent_at_dial_time_gets_the_no_target_answer():
    h, agents = _agent_harness()
    agents.presence = Registered()  # both unregistered after the plan was made (a static route is not planned)
    sent = await h.feed(invite())
    assert not requests_of(sent, "INVITE")
    assert statuses(sent)[-1] == 480
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.NO_ROUTE


async def test_a_ring_all_group_rings_every_agent_at_once_and_frees_the_others_when_one_answers():
    h, agents = _agent_harness("ring_all")
    agents.presence = Registered(a=("sip:alice@192.0.2.21:5062",),
                                 b=("sip:bob@192.0.2.22:5062", "sip:bob@192.0.2.23:5064"))
    a_invite = invite()
    sent = await h.feed(a_invite)
    invites = {s.addr: s.request for s in requests_of(sent, "INVITE")}
    assert set(invites) == {AGENT_A, AGENT_B, ("192.0.2.23", 5064)}  # alice and both of bob's devices
    assert agents.calls("a") == 1 and agents.calls("b") == 1
    for addr, tag in ((AGENT_A, "a"), (AGENT_B, "b1"), (("192.0.2.23", 5064), "b2")):
        await h.feed(response_to(invites[addr], 180, to_tag=tag), addr=addr)

    sent = await h.feed(response_to(invites[AGENT_B], 200, to_tag="b1", contact="<sip:bob@192.0.2.22:5062>",
                                    body=b"v=0\r\n"), addr=AGENT_B)
    assert {s.addr for s in requests_of(sent, "CANCEL")} == {AGENT_A, ("192.0.2.23", 5064)}
    ok = next(s for s in sent if s.addr == CALLER and s.message.__class__.__name__ == "Response")
    assert ok.response.status == 200
    assert agents.calls("a") == 0 and agents.calls("b") == 1, "alice is free as soon as bob answered"
    await h.feed(ack_for(a_invite, ok.response, branch=new_branch()))
    bye = request("BYE", "sip:10.0.0.1:5060", call_id="call-1@192.0.2.10", to_tag=ok.response.to_tag, cseq=2,
                  from_uri="sip:+13125550199@192.0.2.10", to_uri=f"sip:{DID}@10.0.0.1")
    await h.feed(bye)
    await h.pump()
    [cdr] = h.cdrs
    assert cdr.disposition is Disposition.ANSWERED and cdr.extra["agent_id"] == "b"
    assert agents.calls("b") == 0


class SlowSlots:
    """Shared slots whose answers the test gives: records what is given back."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self.released: list[str] = []

    async def acquire(self, key: str, limit: int | None) -> bool | None:
        return await self.answer

    async def release(self, key: str) -> None:
        self.released.append(key)


async def test_a_call_ending_while_its_shared_line_is_taken_gives_that_line_back():
    slots = SlowSlots()
    lines = AgentLines(directory(Registered(a1=("sip:a1@h",)), AgentInfo("a1", "b")), slots)  # type: ignore[arg-type]
    holding = asyncio.ensure_future(lines.hold({"a1"}, "c1"))
    await asyncio.sleep(0)
    holding.cancel()  # the call ended (watchdog, shutdown) while Redis was answering
    await asyncio.sleep(0)
    slots.answer.set_result(True)
    for _ in range(5):
        await asyncio.sleep(0)
    assert holding.cancelled() and slots.released == ["@agent:a1"]
    assert lines.release("c1", None) == ["a1"] and lines.calls("a1") == 0  # the CallFlow's release: this node's


def test_presence_lists_each_binding_with_the_flow_its_register_came_by():
    clock = VirtualClock(NOW, monotonic=50.0)
    registrar = Registrar(NonceSigner(b"k" * 32))
    registrar.store.put("a1", (Binding("sip:alice@10.1.1.5:5062", 100.0, "c1", 2, "203.0.113.7:40001", "udp"),
                               Binding("sip:x@df7jal23ls0d.invalid;transport=ws", 100.0, "c2", 2, "198.51.100.9:51000",
                                       "ws"),
                               Binding("sip:alice@h", 40.0, "c3", 2, "203.0.113.7:5060", "udp")))  # expired
    presence = RegistrarPresence(registrar, clock)
    assert presence.contacts("a1") == (Contact("sip:alice@10.1.1.5:5062", ("udp", "203.0.113.7", 40001)),), \
        "the WebSocket binding's connection is on another node (it came through the shared store)"
    registrar._flows[("ws", "198.51.100.9:51000")] = {"a1"}  # as a REGISTER over that connection here leaves it
    assert presence.contacts("a1") == (
        Contact("sip:alice@10.1.1.5:5062", ("udp", "203.0.113.7", 40001)),
        Contact("sip:x@df7jal23ls0d.invalid;transport=ws", ("ws", "198.51.100.9", 51000)))


async def test_an_agent_behind_nat_is_dialled_at_its_registered_source_with_its_contact_as_request_uri():
    h, agents = _agent_harness()

    class BehindNat:
        def contacts(self, agent_id: str) -> tuple[Contact, ...]:
            return (Contact(f"sip:{agent_id}@10.1.1.5:5062", ("udp", "203.0.113.7", 40001)),)

    agents.presence = BehindNat()
    sent = await h.feed(invite())
    [first] = requests_of(sent, "INVITE")
    assert first.addr == ("203.0.113.7", 40001) and first.request.uri == "sip:a@10.1.1.5:5062"
