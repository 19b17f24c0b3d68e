"""Configuration: layering, validation and error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dce.exchange.config import ConfigError, Settings, load_settings

_FIELDS = ("SIP", "HTTP", "MEDIA", "DATABASE", "ROUTING", "STATIC_ROUTES")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop any DCE_ variables that the settings would read from the caller's environment."""
    for name in list(os.environ):
        if name.startswith(tuple(f"DCE_{field}" for field in _FIELDS)):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dce.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.sip.endpoints() == [("udp", "127.0.0.1", 5060), ("tcp", "127.0.0.1", 5060)]
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert settings.media.mode == "relay"
    assert settings.media.port_range == (16384, 32767)  # below the ephemeral range
    assert settings.media_address == "127.0.0.1"
    assert settings.database.url.startswith("sqlite+aiosqlite://")
    assert settings.routing.ring_timeout_s == 30
    assert settings.static_routes == {}
    assert settings.auth.enabled and settings.rate_limits.enabled  # the side API is closed unless opened


def test_precedence_yaml_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
sip:
  listen: ["udp:0.0.0.0:5070"]
  public_address: 192.0.2.1
  user_agent: from-yaml
media:
  mode: passthrough
  ports: "20000-20100"
database:
  batch_size: 10
""",
    )
    monkeypatch.setenv("DCE_SIP__PUBLIC_ADDRESS", "192.0.2.2")
    monkeypatch.setenv("DCE_MEDIA__MODE", "relay")
    monkeypatch.setenv("DCE_DATABASE__BATCH_SIZE", "20")
    settings = load_settings(path, overrides={"database": {"batch_size": 30}})
    # YAML beats defaults
    assert settings.sip.listen == ["udp:0.0.0.0:5070"]
    assert settings.sip.user_agent == "from-yaml"
    assert settings.media.ports == "20000-20100"
    # env beats YAML
    assert settings.sip.public_address == "192.0.2.2"
    assert settings.media.mode == "relay"
    # overrides beat env, and merge with (not replace) the rest of the section
    assert settings.database.batch_size == 30
    assert settings.database.flush_interval_s == 0.2
    # untouched sections keep defaults
    assert settings.sip.t1_ms == 500


def test_env_listen_accepts_json_or_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCE_SIP__LISTEN", "udp:10.0.0.1:5060, tcp:[::1]:5061")
    assert load_settings().sip.endpoints() == [("udp", "10.0.0.1", 5060), ("tcp", "::1", 5061)]
    monkeypatch.setenv("DCE_SIP__LISTEN", '["udp:10.0.0.1:5062", "tcp:10.0.0.1:5062"]')
    assert load_settings().sip.endpoints() == [("udp", "10.0.0.1", 5062), ("tcp", "10.0.0.1", 5062)]


def test_media_address_falls_back_to_sip_host() -> None:
    settings = load_settings(overrides={"sip": {"listen": ["udp:198.51.100.7:5060"]}})
    assert settings.media_address == "198.51.100.7"
    settings = load_settings(overrides={"media": {"address": "203.0.113.9"}})
    assert settings.media_address == "203.0.113.9"


def test_static_routes_normalised(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
static_routes:
  "(212) 555-0100": ["sip:buyer@127.0.0.1:5080", "sip:backup@127.0.0.1:5081;transport=tcp"]
  "+44 20 7946 0000": ["sip:uk@example.com"]
""",
    )
    settings = load_settings(path)
    assert settings.static_routes == {
        "+12125550100": ["sip:buyer@127.0.0.1:5080", "sip:backup@127.0.0.1:5081;transport=tcp"],
        "+442079460000": ["sip:uk@example.com"],
    }


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"sip": {"listen": ["udp:127.0.0.1:0"]}}, "sip.listen"),
        ({"sip": {"listen": ["udp:127.0.0.1:70000"]}}, "sip.listen"),
        ({"sip": {"listen": ["sctp:127.0.0.1:5060"]}}, "sip.listen"),
        ({"sip": {"listen": ["udp:127.0.0.1"]}}, "sip.listen"),
        ({"sip": {"listen": []}}, "sip.listen"),
        ({"sip": {"listen": ["tcp:127.0.0.1:5060"]}}, "sip.listen"),
        ({"sip": {"t1_ms": 0}}, "sip.t1_ms"),
        ({"http": {"listen": "localhost"}}, "http.listen"),
        ({"http": {"cache": {"calls_s": -1}}}, "http.cache.calls_s"),
        ({"http": {"cache": {"reports": 5}}}, "http.cache.reports"),
        ({"media": {"ports": "40000-30000"}}, "media.ports"),
        ({"media": {"ports": "80-2000"}}, "media.ports"),
        ({"media": {"ports": "abc"}}, "media.ports"),
        ({"media": {"mode": "bridge"}}, "media.mode"),
        ({"media": {"rtpengine": ["127.0.0.1:2223"]}}, "media.rtpengine"),
        ({"media": {"rtpengine": ["udp:127.0.0.1:2223=0"]}}, "media.rtpengine"),
        ({"media": {"mode": "rtpengine"}}, "media"),
        ({"media": {"rtpengine_timeout_s": 0}}, "media.rtpengine_timeout_s"),
        ({"static_routes": {"not a number": ["sip:a@b"]}}, "static_routes"),
        ({"static_routes": {"+12125550100": []}}, "static_routes"),
        ({"static_routes": {"+12125550100": ["http://example.com"]}}, "static_routes"),
    ],
)
def test_invalid_values_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=overrides)
    assert info.value.key == key
    assert str(info.value).startswith(f"config key '{key}': ")


def test_media_mode_rtpengine_reads_weighted_instances() -> None:
    media = load_settings(overrides={"media": {"mode": "rtpengine", "rtpengine": [
        "udp:127.0.0.1:2223", "udp:10.0.0.5:2224=3"]}}).media
    assert [(i.host, i.port, i.weight) for i in media.rtpengine_instances] == [("127.0.0.1", 2223, 1),
                                                                               ("10.0.0.5", 2224, 3)]


def test_env_error_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCE_MEDIA__PORTS", "1-2")
    with pytest.raises(ConfigError, match=r"config key 'media\.ports'"):
        load_settings()


def test_unknown_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  listn: ['udp:127.0.0.1:5060']\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "sip.listn"
    path = write(tmp_path, "telephony: {}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "telephony"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_settings(missing)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "sip: [unclosed\n")
    with pytest.raises(ConfigError, match=r"dce\.yaml.*invalid YAML"):
        load_settings(path)
    path = write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"dce\.yaml.*mapping"):
        load_settings(path)


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == load_settings()
