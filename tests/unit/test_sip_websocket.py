"""SIP over WebSocket as a transport (RFC 7118), without sockets: the flows' limits and routing, and the driver with
a real B2BUA and registrar: REGISTER over a WS flow binds, the binding goes when the connection closes, a dial to the
binding goes down the connection (Via WS, Contact ``;transport=ws``), and a call on a closed connection ends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dce.clock import VirtualClock
from dce.exchange.config import ConfigError, load_settings
from dce.exchange.sip_driver import SipDriver
from dce.sip.b2bua import B2BUA, CallEnded, CallEvent, CallOffered
from dce.sip.digest import Challenge, NonceSigner, authorization, ha1
from dce.sip.endpoint import SipEndpoint
from dce.sip.registrar import Account, Registrar
from dce.sip.websocket import WsFlows, WsLimits, uri_transport
from tests.unit.sipfactory import describe, parse_outbox, request, response_to
from tests.unit.test_callflow import CALLER, RecordedSockets, VirtualTimer, invite

SECRET = b"0123456789abcdef0123456789abcdef"
AGENT = Account("a1", "alice", "dce", ha1("alice", "dce", "pw-alice-1", "SHA-256"), None)
BROWSER = ("198.51.100.7", 53122)  # the WebSocket's peer address: the flow
CONTACT = "sip:k3j2h1@df7jal23ls0d.invalid;transport=ws"


class Recorder:
    """What the flows hand to the receiver, and a connection that keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str, tuple[str, int]]] = []
        self.closed: list[tuple[str, tuple[str, int], str]] = []
        self.sent: list[bytes] = []

    def receive(self, data: bytes, transport: str, addr: tuple[str, int], *, stream: bool = False) -> None:
        self.received.append((data, transport, addr))

    def connection_closed(self, transport: str, addr: tuple[str, int], reason: str) -> None:
        self.closed.append((transport, addr, reason))

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_flows_count_connections_in_all_and_per_source() -> None:
    recorder, errors = Recorder(), []
    flows = WsFlows(recorder, WsLimits(max_connections=3, max_connections_per_source=2), on_error=errors.append)
    first = flows.open("ws", ("192.0.2.1", 1000), recorder)
    flows.open("ws", ("192.0.2.1", 1001), recorder)
    assert flows.refusal(("192.0.2.1", 1002)) == "too many WebSocket connections from this address"
    with pytest.raises(ValueError):
        flows.open("ws", ("192.0.2.1", 1002), recorder)
    flows.open("wss", ("192.0.2.2", 1000), recorder)
    assert flows.refusal(("192.0.2.3", 1000)) == "too many WebSocket connections"
    assert errors == ["ws_limit"]
    flows.closed(first, "peer closed")
    flows.closed(first, "again")  # once only
    assert recorder.closed == [("ws", ("192.0.2.1", 1000), "peer closed")]
    assert flows.refusal(("192.0.2.1", 1002)) is None and len(flows) == 2


def test_a_banned_source_is_refused() -> None:
    flows = WsFlows(Recorder(), admit_peer=lambda ip: ip != "203.0.113.9")
    assert flows.refusal(("203.0.113.9", 5000)) == "banned"
    assert flows.refusal(("203.0.113.8", 5000)) is None


def test_messages_go_in_as_datagrams_and_out_down_their_own_connection_only() -> None:
    recorder, other = Recorder(), Recorder()
    flows = WsFlows(recorder)
    flow = flows.open("wss", BROWSER, recorder)
    flows.open("wss", ("198.51.100.7", 60000), other)
    flows.received(flow, b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert recorder.received == [(b"OPTIONS sip:x SIP/2.0\r\n\r\n", "wss", BROWSER)] and flow.messages == 1
    flows.send(b"SIP/2.0 200 OK\r\n\r\n", "wss", BROWSER)
    assert recorder.sent == [b"SIP/2.0 200 OK\r\n\r\n"] and other.sent == []
    with pytest.raises(ValueError, match="no open WS connection"):
        flows.send(b"x", "ws", BROWSER)  # the same address over the other transport is another flow


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        WsLimits(max_message_bytes=100)
    with pytest.raises(ValueError):
        WsLimits(idle_timeout_s=0)
    assert uri_transport("wss") == uri_transport("ws") == "ws" and uri_transport("tcp") == "tcp"


class Rig:
    """A driver over a real B2BUA with a registrar, serving WebSocket on 10.0.0.1:8443 (wss)."""

    def __init__(self, transport: str = "wss") -> None:
        self.clock = VirtualClock(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), monotonic=100.0)
        self.b2bua = B2BUA(SipEndpoint(local={"udp": ("10.0.0.1", 5060)}))
        self.registrar = Registrar(NonceSigner(SECRET))
        self.registrar.replace_accounts([AGENT])
        self.b2bua.registrar = self.registrar
        self.wire = RecordedSockets()
        self.driver = SipDriver(self.b2bua, clock=self.clock, sockets=self.wire, timers=VirtualTimer())
        self.driver.serve_websockets(transport, ("10.0.0.1", 8443))  # type: ignore[arg-type]
        self.transport = transport
        self.events: list[CallEvent] = []
        self.driver.deliver_to(self.events.append)

    def from_browser(self, data: bytes) -> list:
        self.driver.receive(data, self.transport, BROWSER)
        return parse_outbox(self.wire.take())

    def register(self) -> None:
        def message(cseq: int, *extra: tuple[str, str]) -> bytes:
            return request("REGISTER", "sip:10.0.0.1", via_host="df7jal23ls0d.invalid", via_port=None,
                           transport="WSS", to_uri="sip:alice@10.0.0.1", from_uri="sip:alice@10.0.0.1",
                           call_id="reg-ws-1", cseq=cseq, extra=(("Contact", f"<{CONTACT}>;expires=600"), *extra))

        [challenge] = self.from_browser(message(1))
        assert challenge.addr == BROWSER and challenge.transport == self.transport
        offered = Challenge.parse(challenge.response.get_all("WWW-Authenticate")[0])
        credentials = authorization(offered, username="alice", password="pw-alice-1", method="REGISTER",
                                    uri="sip:10.0.0.1", cnonce="c1")
        [ok] = self.from_browser(message(2, ("Authorization", str(credentials))))
        assert ok.response.status == 200 and (ok.transport, ok.addr) == (self.transport, BROWSER)


def test_register_over_a_websocket_binds_to_the_connection_and_its_close_removes_it() -> None:
    rig = Rig()
    rig.register()
    (binding,) = rig.registrar.bindings("a1", rig.clock.monotonic())
    assert binding.uri == CONTACT and binding.next_hop == ("wss", *BROWSER)
    rig.driver.connection_closed("wss", ("198.51.100.7", 1), "another connection")
    assert rig.registrar.bindings("a1", rig.clock.monotonic()) == (binding,)
    rig.driver.connection_closed("wss", BROWSER, "WebSocket closed (1000)")
    assert rig.registrar.bindings("a1", rig.clock.monotonic()) == ()
    assert rig.registrar.store.get("a1") == ()


def test_options_over_a_websocket_is_answered_on_it() -> None:
    rig = Rig("ws")
    [answer] = rig.from_browser(request("OPTIONS", "sip:10.0.0.1", via_host="abc.invalid", via_port=None,
                                        transport="WS", content_length=None))
    assert answer.response.status == 200 and (answer.transport, answer.addr) == ("ws", BROWSER)
    assert "received=198.51.100.7" in (answer.response.get("Via") or "")


def test_a_message_without_content_length_is_read_whole() -> None:
    rig = Rig("ws")
    data = request("OPTIONS", "sip:10.0.0.1", via_host="abc.invalid", via_port=None, transport="WS")
    data = data.replace(b"Content-Length: 0\r\n", b"")  # RFC 7118 §5.2: the WebSocket message frames it
    assert describe(rig.from_browser(data)) == ["200"]


def test_a_dial_to_a_websocket_binding_goes_down_its_connection_and_ends_when_it_closes() -> None:
    rig = Rig()
    rig.register()
    (binding,) = rig.registrar.bindings("a1", rig.clock.monotonic())
    rig.driver.receive(invite(), "udp", CALLER)
    rig.wire.take()
    [offered] = rig.events
    assert isinstance(offered, CallOffered)
    rig.driver.dial(offered.call, binding.uri, ring_timeout=30, max_duration=None, next_hop=binding.next_hop)
    [sent] = parse_outbox(rig.wire.take())
    assert (sent.transport, sent.addr) == ("wss", BROWSER) and sent.request.uri == CONTACT
    assert (sent.request.get("Via") or "").startswith("SIP/2.0/WSS 10.0.0.1:8443;")
    assert sent.request.get("Contact") == "<sip:10.0.0.1:8443;transport=ws>"
    # the agent answers; then its browser goes away mid-call
    rig.driver.receive(response_to(sent.request, 200, to_tag="agent", contact=f"<{CONTACT}>",
                                   body=sent.request.body), "wss", BROWSER)
    rig.wire.take()
    rig.driver.connection_closed("wss", BROWSER, "WebSocket closed (1006)")
    out = parse_outbox(rig.wire.take())
    assert [(s.request.method, s.addr) for s in out if s.message.__class__.__name__ == "Request"
            and s.request.method == "BYE"] == [("BYE", CALLER), ("BYE", BROWSER)]
    assert isinstance(rig.events[-1], CallEnded) and rig.events[-1].reason == "WebSocket closed (1006)"


def test_a_dial_ringing_a_closed_connection_fails_at_once() -> None:
    rig = Rig()
    rig.register()
    (binding,) = rig.registrar.bindings("a1", rig.clock.monotonic())
    rig.driver.receive(invite(), "udp", CALLER)
    [offered] = rig.events
    rig.driver.dial(offered.call, binding.uri, ring_timeout=30, max_duration=None, next_hop=binding.next_hop)
    rig.wire.take()
    rig.driver.connection_closed("wss", BROWSER, "WebSocket closed (1001)")
    assert [type(e).__name__ for e in rig.events] == ["CallOffered", "DialFailed"]


def test_the_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"http\.tls"):
        load_settings(None, {"http": {"tls": {"cert_file": "/etc/dce/https.pem"}}})  # no key_file
    with pytest.raises(ConfigError, match=r"sip\.websocket\.idle_timeout_s"):
        load_settings(None, {"sip": {"websocket": {"idle_timeout_s": 0}}})
    settings = load_settings(None, {})
    assert not settings.http.tls.enabled and settings.sip.websocket.enabled
