"""RFC 4028 negotiation and deadlines, pure (dce.sip.session_timer)."""

from __future__ import annotations

import pytest

from dce.sip.session_timer import (
    Role,
    SessionExpires,
    SessionTimer,
    TimerPolicy,
    TooSmall,
    UasTerms,
    negotiate_uas,
    parse_min_se,
    parse_session_expires,
    retry_after_422,
    uac_terms,
)

POLICY = TimerPolicy(session_expires_s=1800, min_se_s=90)


@pytest.mark.parametrize(("value", "expected"), [
    ("1800", SessionExpires(1800)),
    ("1800;refresher=uac", SessionExpires(1800, Role.UAC)),
    (" 600 ; Refresher=UAS ;x=1", SessionExpires(600, Role.UAS)),
    (None, None),
])
def test_session_expires_values_parse(value: str | None, expected: SessionExpires | None) -> None:
    assert parse_session_expires(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-5", "0", "1800;refresher=proxy", "9" * 20])
def test_malformed_session_expires_is_an_error(value: str) -> None:
    with pytest.raises(ValueError):
        parse_session_expires(value)


def test_min_se_parses_and_serializes() -> None:
    assert parse_min_se("90;foo") == 90 and parse_min_se(None) is None
    with pytest.raises(ValueError):
        parse_min_se("ninety")
    assert str(SessionExpires(120, Role.UAS)) == "120;refresher=uas" and str(SessionExpires(120)) == "120"


def test_a_request_below_our_minimum_gets_422_with_the_larger_min_se() -> None:
    assert negotiate_uas("60", None, True, POLICY) == TooSmall(90)
    assert negotiate_uas("60", "120", True, POLICY) == TooSmall(120)


def test_the_carriers_interval_and_refresher_are_honoured_and_lowered_to_ours() -> None:
    terms = negotiate_uas("900;refresher=uac", "90", True, POLICY)
    assert terms == UasTerms(SessionExpires(900, Role.UAC), require_timer=True) and not terms.we_refresh
    terms = negotiate_uas("7200;refresher=uas", None, True, POLICY)
    assert isinstance(terms, UasTerms) and terms.session_expires == SessionExpires(1800, Role.UAS)
    assert terms.we_refresh
    assert terms.headers() == [("Session-Expires", "1800;refresher=uas"), ("Require", "timer")]


def test_never_below_the_requests_min_se() -> None:
    terms = negotiate_uas("7200", "3600", True, POLICY)
    assert isinstance(terms, UasTerms) and terms.session_expires.interval == 3600


def test_supported_timer_only_gets_our_interval_with_the_carrier_refreshing() -> None:
    terms = negotiate_uas(None, None, True, POLICY)
    assert terms == UasTerms(SessionExpires(1800, Role.UAC), require_timer=True)


def test_a_peer_without_the_extension_is_refreshed_by_us_and_never_sent_require() -> None:
    terms = negotiate_uas(None, None, False, POLICY)
    assert terms == UasTerms(SessionExpires(1800, Role.UAS), require_timer=False)
    assert terms.headers() == [("Session-Expires", "1800;refresher=uas")]
    # a proxy inserted Session-Expires with refresher=uac, but the UAC does not support it: we refresh
    terms = negotiate_uas("900;refresher=uac", None, False, POLICY)
    assert isinstance(terms, UasTerms) and terms.session_expires == SessionExpires(900, Role.UAS)


def test_a_refresh_without_refresher_keeps_the_previous_refresher() -> None:
    terms = negotiate_uas("1800", None, True, POLICY, peer_refreshed=False)
    assert isinstance(terms, UasTerms) and terms.we_refresh


def test_the_uac_reads_the_2xx() -> None:
    assert uac_terms("600;refresher=uac", 1800) == (600, True)
    assert uac_terms("600;refresher=uas", 1800) == (600, False)
    assert uac_terms("600", 1800) == (600, True)
    assert uac_terms(None, 1800) == (1800, True)  # no timer at the peer: we refresh anyway
    assert uac_terms("junk", 1800) == (1800, True)


def test_422_retries_only_with_a_larger_min_se() -> None:
    assert retry_after_422("3600", 1800) == 3600
    assert retry_after_422("1800", 1800) is None
    assert retry_after_422(None, 1800) is None
    assert retry_after_422("x", 1800) is None


def test_policy_checks_its_bounds() -> None:
    with pytest.raises(ValueError):
        TimerPolicy(session_expires_s=60, min_se_s=90)
    TimerPolicy(session_expires_s=10, min_se_s=5)  # below the RFC minimum: allowed for tests


def test_the_refresher_refreshes_at_half_and_expires_at_the_interval() -> None:
    timer = SessionTimer.start(1800, True, now=100)
    assert (timer.refresh_at, timer.end_at, timer.next_deadline()) == (1000, 1900, 1000)
    assert timer.due(999) is None and timer.due(1000) == "refresh"
    timer.refreshing = True
    assert timer.next_deadline() == 1900 and timer.due(1500) is None
    timer.refreshed(1010)
    assert (timer.expires_at, timer.refreshing, timer.next_deadline()) == (2810, False, 1910)
    assert timer.due(2810) == "expired"


@pytest.mark.parametrize(("interval", "margin"), [(1800, 32), (90, 30), (30, 10)])
def test_the_other_side_ends_the_session_min_32_or_a_third_early(interval: int, margin: float) -> None:
    timer = SessionTimer.start(interval, False, now=0)
    assert timer.refresh_at is None
    assert timer.end_at == interval - margin == timer.next_deadline()
    assert timer.due(interval - margin - 0.001) is None and timer.due(interval - margin) == "expired"
    timer.refreshed(50, interval=600, we_refresh=True)
    assert (timer.expires_at, timer.refresh_at) == (650, 350)


def test_a_refused_refresh_is_retried_after_a_delay() -> None:
    timer = SessionTimer.start(100, True, now=0)
    timer.refreshing = True
    timer.retry(50, 4)
    assert timer.refresh_at == 54 and timer.due(53) is None and timer.due(54) == "refresh"
    timer.refreshed(55)
    assert timer.refresh_at == 105
