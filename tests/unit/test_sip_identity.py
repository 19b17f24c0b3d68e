"""What the exchange says about itself: Server/User-Agent carry no version unless configured, and neither leg
learns the other's software. OPTIONS and REGISTER from anyone get answers that reveal nothing that exists."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

import dce
from dce.clock import VirtualClock
from dce.exchange.config import load_settings
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import ALLOW, B2BUA, CallEvent, CallOffered
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request, parse
from tests.unit.sipfactory import SDP_A, SDP_B, Sent, ack_for, describe, new_branch, parse_outbox, request, response_to
from tests.unit.test_callflow import RecordedSockets, VirtualTimer

CALLER = ("192.0.2.10", 5060)
CALLEE = ("127.0.0.1", 5080)
VERSION = re.compile(r"\d+\.\d+")


def rig(user_agent: str) -> tuple[SipDriver, RecordedSockets, list[CallEvent]]:
    clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)}, user_agent=user_agent)
    wire = RecordedSockets()
    driver = SipDriver(B2BUA(endpoint), clock=clock, sockets=wire, timers=VirtualTimer())
    events: list[CallEvent] = []
    driver.deliver_to(events.append)
    return driver, wire, events


def everything_we_send(user_agent: str) -> list[Sent]:
    """A whole call (INVITE in, INVITE out, 180, 200, ACKs, BYE), an OPTIONS, a REGISTER and a malformed
    request; the callee and caller name their own software."""
    driver, wire, events = rig(user_agent)
    sent: list[Sent] = []

    def take() -> list[Sent]:
        out = parse_outbox(wire.take())
        sent.extend(out)
        return out

    invite = request("INVITE", body=SDP_A, extra=[("User-Agent", "CallerPhone/7.1.2")])
    driver.receive(invite, "udp", CALLER)
    take()
    [offered] = [e for e in events if isinstance(e, CallOffered)]
    driver.dial(offered.call, f"sip:{CALLEE[0]}:{CALLEE[1]}", ring_timeout=30, max_duration=None)
    [out] = take()
    server = [("Server", "CalleeSwitch/12.4")]
    driver.receive(response_to(out.request, 180, to_tag="b", extra=server), "udp", CALLEE)
    driver.receive(response_to(out.request, 200, to_tag="b", body=SDP_B, contact="<sip:b@127.0.0.1:5080>",
                               extra=server), "udp", CALLEE)
    answered = take()
    ok = next(s.response for s in answered if s.addr == CALLER and s.response.status == 200)
    driver.receive(ack_for(invite, ok, branch=new_branch()), "udp", CALLER)
    driver.hangup(offered.call, reason="done")
    take()
    driver.receive(request("OPTIONS", call_id="o@x", extra=[("User-Agent", "Probe/1.0")]), "udp", CALLER)
    driver.receive(request("REGISTER", call_id="r@x"), "udp", CALLER)
    driver.receive(request("OPTIONS", call_id="bad@x", max_forwards=None, extra=[("Max-Forwards", "x")]),
                   "udp", CALLER)
    take()
    return sent


def identities(sent: list[Sent]) -> list[str]:
    return [value for item in sent for name, value in item.message.headers if name in ("Server", "User-Agent")]


def test_nothing_we_send_carries_a_version_by_default() -> None:
    default = load_settings().sip.user_agent
    sent = everything_we_send(default)
    assert {"INVITE", "BYE", "200", "405", "400"} <= set(describe(sent))
    names = identities(sent)
    assert names and set(names) == {"dce"}  # every response says Server: dce, nothing more
    for item in sent:
        assert not VERSION.search(" ".join(value for name, value in item.message.headers
                                           if name in ("Server", "User-Agent")))
        assert dce.__version__.encode() not in item.raw
        assert b"CallerPhone" not in item.raw and b"CalleeSwitch" not in item.raw  # neither leg's software


def test_a_version_appears_only_when_configured() -> None:
    sent = everything_we_send("dce/0.1.0")
    assert set(identities(sent)) == {"dce/0.1.0"}
    assert load_settings(overrides={"sip": {"user_agent": "edge"}}).sip.user_agent == "edge"


@pytest.mark.parametrize("user", ["alice", "1000", "admin", "nobody-at-all", "+12025550123"])
def test_register_and_options_reveal_nothing_about_users(user: str) -> None:
    """REGISTER for any user gets the same 405; OPTIONS to any user gets the same 200 (no registrar: nothing to
    enumerate), so a scanner walking extensions learns nothing."""
    driver, wire, _ = rig("dce")
    uri = f"sip:{user}@10.0.0.1"
    driver.receive(request("REGISTER", uri="sip:10.0.0.1", to_uri=uri, from_uri=uri, call_id=f"r-{user}"),
                   "udp", CALLER)
    driver.receive(request("OPTIONS", uri=uri, call_id=f"o-{user}"), "udp", CALLER)
    register, options = (parse(data) for data, _, _ in wire.take())
    shape = [(register.status, register.reason, register.get_all("Allow"), register.body),  # type: ignore
             (options.status, options.reason, options.get_all("Allow"), options.body)]  # type: ignore
    assert shape == [
        (405, "Method Not Allowed", ALLOW.split(", "), b""),
        (200, "OK", ALLOW.split(", "), b""),
    ]
    for message in (register, options):
        assert not isinstance(message, Request)
        assert not message.has("WWW-Authenticate") and not message.has("Contact")
