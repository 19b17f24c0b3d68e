"""The dce command line: a bad configuration exits 2 naming the key; demo writes a config that loads."""

from __future__ import annotations

from dce.exchange.cli import main
from dce.exchange.config import load_settings


def test_bad_config_exits_2_and_names_the_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text('media: {ports: "40000-30000"}\n')
    assert main(["migrate", "--config", str(config)]) == 2
    assert "media.ports" in capsys.readouterr().err


def test_unknown_key_exits_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("sip: {listen: ['udp:127.0.0.1:5060'], colour: blue}\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "sip.colour" in capsys.readouterr().err


def test_demo_writes_a_loadable_config_with_the_demo_route(tmp_path, capsys):
    path = tmp_path / "demo.yaml"
    assert main(["demo", "--write", str(path)]) == 0
    settings = load_settings(path)
    assert settings.static_routes["+18005550100"][0] == "sip:127.0.0.1:5080"
    assert "sipp" in capsys.readouterr().out
