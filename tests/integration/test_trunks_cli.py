"""``dce trunks list|add|remove`` on the configured database, with the API's validation rules."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dce.db import marketplace_repository as market
from dce.db import trunk_repository as repo
from dce.db.engine import create_engine
from dce.exchange.cli import main
from dce.routing.model import Publisher
from dce.sip.digest import ha1
from tests.databases import run_coroutine

pytestmark = pytest.mark.integration


def stored(url: str) -> list[repo.Trunk]:
    async def go() -> list[repo.Trunk]:
        engine = create_engine(url)
        try:
            return (await repo.list_trunks(engine, 1000, 0))[0]
        finally:
            await engine.dispose()
    return run_coroutine(go())


def add_publisher(url: str, publisher_id: str) -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            await market.create_publisher(engine, Publisher(id=publisher_id, name=publisher_id))
        finally:
            await engine.dispose()
    run_coroutine(go())


def test_add_list_remove(migrated_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = migrated_database_url
    add_publisher(url, "p1")
    assert main(["trunks", "add", "carrier-a", "--database-url", url, "--network", "192.0.2.0/24",
                 "--network", "2001:db8::/32", "--publisher-id", "p1", "--transport", "udp", "--max-cps", "2.5",
                 "--max-concurrent", "30", "--id", "t1"]) == 0
    assert "trunk carrier-a (id t1) added: 192.0.2.0/24, 2001:db8::/32" in capsys.readouterr().out
    (trunk,) = stored(url)
    assert (trunk.name, trunk.publisher_id, trunk.transport, trunk.max_cps, trunk.max_concurrent, trunk.enabled) == (
        "carrier-a", "p1", "udp", 2.5, 30, True)
    assert main(["trunks", "add", "b-off", "--database-url", url, "--network", "198.51.100.7", "--disabled"]) == 0
    capsys.readouterr()

    assert main(["trunks", "list", "--database-url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "id", "networks", "transport", "max_cps", "max_concurrent", "credentials",
                                "publisher", "enabled"]
    assert lines[1].split()[0] == "b-off" and lines[1].split()[-1] == "no"
    assert lines[2].split() == ["carrier-a", "t1", "192.0.2.0/24,2001:db8::/32", "udp", "2.5", "30", "-", "p1",
                                "yes"]

    assert main(["trunks", "remove", "carrier-a", "--database-url", url]) == 0  # by name
    assert "trunk carrier-a (id t1) removed" in capsys.readouterr().out
    (left,) = stored(url)
    assert main(["trunks", "remove", left.id, "--database-url", url]) == 0  # by id
    assert stored(url) == []
    assert main(["trunks", "remove", "carrier-a", "--database-url", url]) == 1
    assert "no trunk named 'carrier-a'" in capsys.readouterr().err


def test_credentials_from_stdin_are_stored_as_ha1s(migrated_database_url: str, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["trunks", "add", "carrier-b", "--database-url", migrated_database_url, "--network", "10.0.0.0/8",
                 "--username", "acme", "--realm", "sip.example.com", "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert "digest user acme realm sip.example.com" in out and "a-long-password" not in out
    (trunk,) = stored(migrated_database_url)
    assert trunk.ha1_sha256 == ha1("acme", "sip.example.com", "a-long-password", "SHA-256")
    assert trunk.ha1_md5 == ha1("acme", "sip.example.com", "a-long-password", "MD5")
    assert main(["trunks", "list", "--database-url", migrated_database_url]) == 0
    listing = capsys.readouterr().out
    assert "acme@sip.example.com" in listing and trunk.ha1_sha256 not in listing


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["--network", "192.0.2.1/24"], 2, "did you mean 192.0.2.0/24"),
    (["--network", "not-a-network"], 2, "networks[0]"),
    (["--network", "10.0.0.0/8", "--max-cps", "-1"], 2, "max_cps"),
    (["--network", "10.0.0.0/8", "--password-stdin"], 2, "--password-stdin needs --username"),
    (["--network", "10.0.0.0/8", "--publisher-id", "nope"], 1, "no publisher 'nope'"),
])
def test_bad_adds_say_why(migrated_database_url: str, capsys: pytest.CaptureFixture[str], argv: list[str],
                          status: int, message: str) -> None:
    assert main(["trunks", "add", "carrier-c", "--database-url", migrated_database_url, *argv]) == status
    assert message in capsys.readouterr().err
    assert stored(migrated_database_url) == []


def test_a_taken_name_is_refused(migrated_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args: list[Any] = ["trunks", "add", "carrier-a", "--database-url", migrated_database_url, "--network", "::1"]
    assert main(args) == 0
    assert main(args) == 1
    assert "name 'carrier-a' is taken" in capsys.readouterr().err
