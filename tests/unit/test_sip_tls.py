"""TLS and IPv6 in the sans-IO core and the configuration: what goes on the wire, never a downgrade.

The TLS contexts are checked for their settings (TLS 1.2+, verification on unless explicitly off, mutual TLS);
the core for Via ``SIP/2.0/TLS``, ``sips:`` Contacts, port 5061, no retransmissions over TLS, a sips destination
failing its leg (not going over UDP) when no tls: listener exists, bracketed IPv6 sent-by, RFC 5923 aliases.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from dce.exchange.config import ConfigError, load_settings
from dce.sip.b2bua import B2BUA, Call, CallOffered, DialFailed
from dce.sip.endpoint import SipEndpoint
from dce.sip.message import Request
from dce.sip.tls import TlsSettings, TlsSetupError, client_context, server_context
from tests.tls_pki import TlsPki
from tests.unit.sipfactory import SDP_A, describe, new_branch, parse_outbox, request

ALICE = ("192.0.2.10", 5060)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("pki"))


# -- contexts -------------------------------------------------------------------------------------------
def test_server_context_is_tls12_plus_with_our_certificate_and_no_client_certificate_by_default(pki: TlsPki) -> None:
    leaf = pki.issue("srv", ips=["127.0.0.1"])
    context = server_context(TlsSettings(cert_file=leaf.cert_file, key_file=leaf.key_file))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE


def test_mutual_tls_server_context_requires_a_client_certificate_from_the_client_ca(pki: TlsPki) -> None:
    leaf = pki.issue("srv2", ips=["127.0.0.1"])
    context = server_context(TlsSettings(cert_file=leaf.cert_file, key_file=leaf.key_file,
                                         client_ca_file=pki.ca_file, verify_clients=True))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert [ca["subject"] for ca in context.get_ca_certs()]  # the client CA is loaded


def test_client_context_verifies_certificate_and_host_name_by_default(pki: TlsPki) -> None:
    context = client_context(TlsSettings(ca_file=pki.ca_file))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # only the configured bundle


def test_client_context_without_a_bundle_trusts_the_system_cas() -> None:
    context = client_context(TlsSettings())
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_verify_server_false_is_explicit_and_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dce.sip.tls"):
        context = client_context(TlsSettings(verify_server=False))
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname
    assert any("NOT checked" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_unreadable_certificate_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TlsSetupError, match=r"sip\.tls\.cert_file"):
        server_context(TlsSettings(cert_file=missing, key_file=missing))
    with pytest.raises(TlsSetupError, match=r"sip\.tls\.ca_file"):
        client_context(TlsSettings(ca_file=missing))


# -- configuration --------------------------------------------------------------------------------------
def test_tls_listener_defaults_to_port_5061_and_ipv6_listeners_parse(pki: TlsPki) -> None:
    leaf = pki.issue("cfg", ips=["127.0.0.1"])
    settings = load_settings(overrides={"sip": {
        "listen": ["udp:127.0.0.1:5060", "udp:[::1]:5060", "tcp:[::1]:5060", "tls:127.0.0.1", "tls:[::1]:5062"],
        "tls": {"cert_file": str(leaf.cert_file), "key_file": str(leaf.key_file)}}})
    assert settings.sip.endpoints() == [("udp", "127.0.0.1", 5060), ("udp", "::1", 5060), ("tcp", "::1", 5060),
                                        ("tls", "127.0.0.1", 5061), ("tls", "::1", 5062)]
    assert settings.sip.tls.verify_server is True and settings.sip.tcp_keepalive_s == 30


@pytest.mark.parametrize(("sip", "words"), [
    ({"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]}, "needs sip.tls.cert_file"),
    ({"tls": {"cert_file": "/x.pem"}}, "cert_file and key_file go together"),
    ({"tls": {"verify_clients": True}}, "verify_clients needs client_ca_file"),
    ({"tcp_keepalive_s": -1}, "greater than or equal"),
])
def test_bad_tls_settings_are_refused_at_load(sip: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        load_settings(overrides={"sip": sip})
    assert caught.value.key.startswith("sip")


# -- the core -------------------------------------------------------------------------------------------
def _core(local: dict[str, tuple[str, int]]) -> tuple[SipEndpoint, B2BUA, Call]:
    endpoint = SipEndpoint(local=local)
    b2bua = B2BUA(endpoint)
    b2bua.receive(request("INVITE", branch=new_branch(), body=SDP_A), "udp", ALICE, 0.0)
    assert describe(parse_outbox(endpoint.datagrams_to_send())) == ["100"]
    event = b2bua.next_event()
    assert isinstance(event, CallOffered)
    return endpoint, b2bua, event.call


LOCAL = {"udp": ("10.0.0.1", 5060), "tls": ("10.0.0.1", 5061)}


def test_sips_destination_goes_over_tls_to_5061_with_a_sips_contact_and_no_retransmission() -> None:
    endpoint, b2bua, call = _core(dict(LOCAL))
    b2bua.dial(call, "sips:bob@198.51.100.20", 0.0, ring_timeout=60)
    [sent] = parse_outbox(endpoint.datagrams_to_send())
    invite = sent.request
    assert (sent.transport, sent.addr) == ("tls", ("198.51.100.20", 5061))
    assert invite.get("Via", "").startswith("SIP/2.0/TLS 10.0.0.1:5061;")
    assert invite.get("Contact") == "<sips:10.0.0.1:5061>"
    b2bua.handle_timer(5.0)  # timer A would have fired 3 times over UDP
    assert endpoint.datagrams_to_send() == []


def test_transport_tls_parameter_selects_tls_with_a_transport_tls_contact() -> None:
    endpoint, b2bua, call = _core(dict(LOCAL))
    b2bua.dial(call, "sip:bob@198.51.100.20:5071;transport=tls", 0.0, ring_timeout=60)
    [sent] = parse_outbox(endpoint.datagrams_to_send())
    assert (sent.transport, sent.addr) == ("tls", ("198.51.100.20", 5071))
    assert sent.request.get("Contact") == "<sip:10.0.0.1:5061;transport=tls>"


@pytest.mark.parametrize("destination", ["sips:bob@198.51.100.20", "sip:bob@198.51.100.20;transport=TLS"])
def test_tls_destination_without_a_tls_listener_fails_the_leg_and_is_never_sent_over_udp(destination: str) -> None:
    endpoint, b2bua, call = _core({"udp": ("10.0.0.1", 5060)})
    assert b2bua.dial(call, destination, 0.0, ring_timeout=60) is None
    assert endpoint.datagrams_to_send() == []
    event = b2bua.next_event()
    assert isinstance(event, DialFailed) and event.status == 503 and event.reason == "failed"
    assert "no tls: SIP listener" in event.detail


def test_a_transport_error_reason_reaches_the_dial_failure() -> None:
    endpoint, b2bua, call = _core(dict(LOCAL))
    b2bua.dial(call, "sips:bob@198.51.100.20", 0.0, ring_timeout=60)
    endpoint.datagrams_to_send()
    b2bua.transport_error("tls", ("198.51.100.20", 5061), 0.1, "TLS certificate rejected: Hostname mismatch")
    event = b2bua.next_event()
    assert isinstance(event, DialFailed) and event.status == 503
    assert event.detail == "TLS certificate rejected: Hostname mismatch"


def test_ipv6_destination_gets_a_bracketed_ipv6_via_and_contact() -> None:
    endpoint, b2bua, call = _core({"udp": ("10.0.0.1", 5060)})
    endpoint.local6["udp"] = ("2001:db8::1", 5060)
    b2bua.dial(call, "sip:bob@[2001:db8::20]:5070", 0.0, ring_timeout=60)
    [sent] = parse_outbox(endpoint.datagrams_to_send())
    assert sent.addr == ("2001:db8::20", 5070)
    assert sent.request.get("Via", "").startswith("SIP/2.0/UDP [2001:db8::1]:5060;")
    assert sent.request.get("Contact") == "<sip:[2001:db8::1]:5060>"
    assert sent.request.uri == "sip:bob@[2001:db8::20]:5070"


def test_ipv6_caller_gets_our_ipv6_contact_and_responses_to_its_address() -> None:
    endpoint = SipEndpoint(local={"udp": ("10.0.0.1", 5060)})
    endpoint.local6["udp"] = ("::1", 5060)
    b2bua = B2BUA(endpoint)
    caller = ("::1", 40000)
    b2bua.receive(request("INVITE", via_host="[::1]", via_port=40000, branch=new_branch(), body=SDP_A),
                  "udp", caller, 0.0)
    [trying] = parse_outbox(endpoint.datagrams_to_send())
    assert trying.addr == caller and trying.response.status == 100
    event = b2bua.next_event()
    assert isinstance(event, CallOffered)
    b2bua.dial(event.call, "sip:bob@[::1]:5070", 0.0, ring_timeout=60)
    [invite] = parse_outbox(endpoint.datagrams_to_send())
    assert isinstance(invite.message, Request) and invite.request.get("Via", "").startswith("SIP/2.0/UDP [::1]:5060")


def test_alias_in_a_tls_via_is_reported_for_the_same_ip_only() -> None:
    endpoint = SipEndpoint(local=dict(LOCAL))
    B2BUA(endpoint)
    flow = ("192.0.2.10", 40001)
    endpoint.receive(request("OPTIONS", transport="TLS", via_port=5061, branch=new_branch(),
                             ).replace(b";branch=", b";alias;branch="), "tls", flow, 0.0, stream=True)
    assert endpoint.take_aliases() == [("tls", ("192.0.2.10", 5061), flow)]
    endpoint.receive(request("OPTIONS", transport="TLS", via_host="203.0.113.9", via_port=5061,
                             branch=new_branch()).replace(b";branch=", b";alias;branch="), "tls", flow, 0.0,
                     stream=True)
    assert endpoint.take_aliases() == []  # another host's address is never captured


def test_the_cdr_reason_names_the_tls_failure_and_the_caller_hears_only_destination_failed() -> None:
    from dce.exchange.decision import exhausted

    _, _, call = _core({"udp": ("10.0.0.1", 5060)})
    reject = exhausted(DialFailed(call, 503, "failed", 1.0, detail="TLS certificate rejected: Hostname mismatch"))
    assert reject.status == 503
    assert reject.reason == "last destination: 503 failed (TLS certificate rejected: Hostname mismatch)"
    assert 'text="destination failed"' in (reject.reason_header or "")


def test_a_route_over_tls_without_a_tls_listener_fails_that_request_instead_of_raising() -> None:
    from tests.unit.sipfactory import response_to

    endpoint, b2bua, call = _core({"udp": ("10.0.0.1", 5060)})
    b2bua.dial(call, "sip:bob@198.51.100.20", 0.0, ring_timeout=60)
    [invite] = parse_outbox(endpoint.datagrams_to_send())
    ok = response_to(invite.request, 200, to_tag="t", contact="<sip:bob@198.51.100.20:5060>", body=SDP_A,
                     record_route=["<sip:198.51.100.1:5061;transport=tls;lr>"])
    b2bua.receive(ok, "udp", ("198.51.100.20", 5060), 0.1)  # raised KeyError('tls') before
    sent = parse_outbox(endpoint.datagrams_to_send())
    assert describe(sent) == ["200"]  # A is answered; the ACK that cannot go is dropped
    b2bua.hangup(call, 0.2)
    sent = parse_outbox(endpoint.datagrams_to_send())
    assert describe(sent) == ["BYE"] and sent[0].addr == ALICE  # B's BYE fails through the timer, not a raise
    b2bua.handle_timer(0.2)
    assert not [t for t in endpoint.client_transactions.values() if t.request.method == "BYE"
                and t.transport == "tls"]
