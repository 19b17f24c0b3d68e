"""SIP over TLS through a real ``dce serve`` against Kamailio's tls module (a TLS SIP peer that is not our code).

    SIPp uac --UDP--> Kamailio --TLS (Kamailio's client cert: mutual TLS)--> dce tls: listener
    dce --TLS (sips:, verified against the test CA; dce's client cert)--> Kamailio --UDP--> SIPp uas

One call crosses TLS inbound and outbound. A second call reuses both connections (counted on the exchange's
ports), and they survive keep-alive rounds (Kamailio answers our CRLF pings). A Kamailio whose certificate names
another address, or chains to a CA we do not trust, fails the leg: the caller gets 503 and the CDR names the TLS
failure. A sips destination with no tls: listener fails the same way instead of going over UDP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.externals import require, require_binary
from tests.integration.kamailio import Kamailio, kamailio_binary, tls_module_installed
from tests.integration.sipp import DID, HOST, ExchangeProcess, SippUas, fetch_cdrs, free_port, run_sipp_uac
from tests.tls_pki import TlsPki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _externals() -> None:
    require_binary("sipp")
    require(kamailio_binary() is not None and tls_module_installed(),
            "kamailio with its tls module (apt-get install -y kamailio kamailio-tls-modules)")


def established(port: int) -> tuple[int, int]:
    """(connections to ``port``, connections from it): ESTABLISHED TCP on loopback, from /proc/net/tcp."""
    to_port = from_port = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state != "01":
            continue
        if int(remote.split(":")[1], 16) == port:
            to_port += 1
        if int(local.split(":")[1], 16) == port:
            from_port += 1
    return to_port, from_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("pki"))


def tls_config(pki: TlsPki, port: int, sip_port: int, **sip: Any) -> dict[str, Any]:
    ours = pki.issue(f"dce-{port}", ips=[HOST])
    return {"sip": {"listen": [f"udp:{HOST}:{sip_port}", f"tls:{HOST}:{port}"],
                    "tls": {"cert_file": str(ours.cert_file), "key_file": str(ours.key_file),
                            "client_ca_file": str(pki.ca_file), "verify_clients": True,
                            "ca_file": str(pki.ca_file)}, **sip}}


def start_exchange(workdir: Path, database_url: str, routes: dict[str, list[str]],
                   config: Any) -> ExchangeProcess:
    exchange = ExchangeProcess(workdir, database_url, routes, transports=("udp",))
    exchange.extra_config = config(exchange.sip_port)
    return exchange.start()


@pytest.fixture
def stack(tmp_path: Path, migrated_database_url: str, pki: TlsPki) -> Iterator[dict[str, Any]]:
    """SIPp callee, Kamailio and an exchange wired as in the module docstring."""
    uas = SippUas("uas_answer_rr", tmp_path, calls=2)
    uas.start()
    kam_udp, kam_tls, dce_tls = free_port("udp"), free_port("tcp"), free_port("tcp")
    routes = {DID: [f"sips:{HOST}:{kam_tls}"]}
    exchange = start_exchange(tmp_path / "dce", migrated_database_url, routes,
                              lambda sip_port: tls_config(pki, dce_tls, sip_port, tcp_keepalive_s=0.5,
                                                          tcp_keepalive_timeout_s=1))
    kamailio = Kamailio(tmp_path / "kam", udp_port=kam_udp, tls_port=kam_tls, to_tls=f"{HOST}:{dce_tls}",
                        to_udp=f"{HOST}:{uas.port}", cert=pki.issue("kamailio", ips=[HOST]), ca_file=pki.ca_file)
    kamailio.start()
    try:
        yield {"uas": uas, "exchange": exchange, "kamailio": kamailio, "kam_udp": kam_udp, "kam_tls": kam_tls,
               "dce_tls": dce_tls}
    finally:
        kamailio.stop()
        alive = exchange.alive()
        exchange.stop()
        uas.__exit__(None, None, None)
        assert alive, f"the exchange died:\n{exchange.log()}"


def test_calls_cross_tls_both_ways_with_mutual_tls_and_reuse_their_connections(
        tmp_path: Path, stack: dict[str, Any]) -> None:
    exchange, kamailio = stack["exchange"], stack["kamailio"]
    target = f"{HOST}:{stack['kam_udp']}"
    first = run_sipp_uac("uac_basic", target, tmp_path, hold_ms=500, timeout=30, name="first")
    diagnostics = f"\n--- dce ---\n{exchange.log(6000)}\n--- kamailio ---\n{kamailio.log()}"
    assert first.successful == 1 and first.failed == 0, first.describe() + diagnostics
    inbound, outbound = established(stack["dce_tls"])[1], established(stack["kam_tls"])[0]
    assert (inbound, outbound) == (1, 1), diagnostics  # Kamailio -> dce, and dce -> Kamailio

    time.sleep(3.0)  # keep-alive rounds (ping every 0.5 s, 1 s for its pong): Kamailio's pongs keep it open
    second = run_sipp_uac("uac_basic", target, tmp_path, hold_ms=500, timeout=30, name="second")
    assert second.successful == 1 and second.failed == 0, second.describe() + diagnostics
    assert established(stack["dce_tls"])[1] == 1 and established(stack["kam_tls"])[0] == 1, diagnostics
    assert "keep-alive pong" not in exchange.log()

    callee = stack["uas"].stop()
    assert callee.successful == 2, callee.describe()
    cdrs = fetch_cdrs(exchange.http_base, 2)
    assert [(c["disposition"], c["final_code"]) for c in cdrs] == [("answered", 200)] * 2
    assert {c["destination"] for c in cdrs} == {f"sips:{HOST}:{stack['kam_tls']}"}


@pytest.mark.parametrize("case", ["wrong_name", "untrusted_ca"])
def test_a_destination_certificate_that_fails_verification_fails_the_leg_with_the_reason(
        tmp_path: Path, migrated_database_url: str, pki: TlsPki, case: str) -> None:
    kam_udp, kam_tls, dce_tls = free_port("udp"), free_port("tcp"), free_port("tcp")
    if case == "wrong_name":
        cert = pki.issue("kamailio-elsewhere", ips=["127.0.0.2"], dns=["carrier.example.com"])
    else:
        cert = TlsPki(tmp_path / "rogue", "Rogue CA").issue("kamailio-rogue", ips=[HOST])
    kamailio = Kamailio(tmp_path / "kam", udp_port=kam_udp, tls_port=kam_tls, to_tls=f"{HOST}:{dce_tls}",
                        to_udp=f"{HOST}:9", cert=cert, ca_file=pki.ca_file, require_client_cert=False)
    with kamailio:
        exchange = start_exchange(tmp_path / "dce", migrated_database_url, {DID: [f"sips:{HOST}:{kam_tls}"]},
                                  lambda sip_port: tls_config(pki, dce_tls, sip_port))
        try:
            caller = run_sipp_uac("uac_expect_503", exchange.sip_target, tmp_path, timeout=30)
            assert caller.successful == 1, caller.describe() + exchange.log(6000)
            [cdr] = fetch_cdrs(exchange.http_base, 1)
            assert cdr["disposition"] == "failed" and cdr["final_code"] == 503
            assert "TLS certificate rejected" in cdr["reason"], cdr
            assert "kam: INVITE" not in kamailio.log()  # nothing was sent to the unverified peer
        finally:
            exchange.stop()


def test_sips_destination_without_a_tls_listener_is_refused_not_sent_over_udp(
        tmp_path: Path, migrated_database_url: str) -> None:
    callee = SippUas("uas_answer", tmp_path, calls=1)  # a plain UDP callee on the sips: destination's port
    with callee:
        exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url,
                                   {DID: [f"sips:{HOST}:{callee.port}"]}, transports=("udp",)).start()
        try:
            caller = run_sipp_uac("uac_expect_503", exchange.sip_target, tmp_path, timeout=30)
            assert caller.successful == 1, caller.describe() + exchange.log(6000)
            [cdr] = fetch_cdrs(exchange.http_base, 1)
            assert "no tls: SIP listener" in cdr["reason"], cdr
        finally:
            exchange.stop()
        assert "INVITE" not in callee.stop(timeout=1).messages()  # nothing reached it over UDP


def test_an_unloadable_certificate_stops_the_start_with_the_key_named_and_no_traceback(
        tmp_path: Path, migrated_database_url: str) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    exchange = ExchangeProcess(tmp_path / "dce", migrated_database_url, {}, transports=("udp",))
    exchange.extra_config = {"sip": {"listen": [f"udp:{HOST}:{exchange.sip_port}", f"tls:{HOST}:{free_port('tcp')}"],
                                     "tls": {"cert_file": str(bad), "key_file": str(bad)}}}
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        exchange.start(timeout=20)
    assert "cannot load sip.tls.cert_file" in str(failed.value)
    assert "Traceback" not in str(failed.value)
