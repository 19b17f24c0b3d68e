"""The edge's bounds in SipConfig reach the transport's limits; bad values name their key."""

from __future__ import annotations

import pytest

from dce.exchange.config import ConfigError, load_settings
from dce.sip.transport import TcpLimits


def test_edge_defaults_are_bounded() -> None:
    sip = load_settings().sip
    assert sip.max_calls_per_source == 0  # unlimited unless configured (trunks get their own limits later)
    limits = TcpLimits(idle_timeout_s=sip.tcp_idle_timeout_s, header_timeout_s=sip.tcp_header_timeout_s,
                       max_connections=sip.tcp_max_connections,
                       max_connections_per_source=sip.tcp_max_connections_per_source,
                       max_message_bytes=sip.max_message_bytes)
    assert limits == TcpLimits()  # one set of defaults: the config's are the transport's


@pytest.mark.parametrize(("section", "key"), [
    ({"max_message_bytes": 100_000}, "sip.max_message_bytes"),
    ({"tcp_idle_timeout_s": 0}, "sip.tcp_idle_timeout_s"),
    ({"tcp_max_connections_per_source": 0}, "sip.tcp_max_connections_per_source"),
    ({"max_calls_per_source": -1}, "sip.max_calls_per_source"),
])
def test_bad_edge_values_name_their_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"sip": section})
    assert info.value.key == key
