"""sip.session_timers / session_expires_s / min_se_s: defaults, checks, and what the driver builds from them."""

from __future__ import annotations

import pytest

from dce.clock import VirtualClock
from dce.exchange.config import ConfigError, load_settings
from dce.exchange.sip_driver import SipDriver
from dce.sip.session_timer import TimerPolicy


def test_defaults_are_rfc_4028s() -> None:
    sip = load_settings().sip
    assert (sip.session_timers, sip.session_expires_s, sip.min_se_s) == (True, 1800, 90)


@pytest.mark.parametrize(("overrides", "key"), [
    ({"sip": {"min_se_s": 0}}, "sip.min_se_s"),
    ({"sip": {"session_expires_s": 0}}, "sip.session_expires_s"),
    ({"sip": {"session_expires_s": 60, "min_se_s": 90}}, "sip"),
])
def test_bad_values_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=overrides)
    assert info.value.key == key


async def test_the_driver_builds_the_b2bua_with_the_configured_policy() -> None:
    sip = load_settings(overrides={"sip": {"session_expires_s": 10, "min_se_s": 5}}).sip
    driver = SipDriver.from_config(sip, clock=VirtualClock())
    assert driver.core.session_timers == TimerPolicy(10, 5)
    off = load_settings(overrides={"sip": {"session_timers": False}}).sip
    assert SipDriver.from_config(off, clock=VirtualClock()).core.session_timers is None
