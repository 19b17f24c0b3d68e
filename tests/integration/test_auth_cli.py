"""``dce auth create-key`` / ``create-user`` write credentials the API then accepts; ``dce demo`` writes auth on."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from dce.db import marketplace_repository as market
from dce.db.engine import create_engine
from dce.exchange.cli import main
from dce.exchange.config import load_settings
from dce.http_api.auth import AuthConfig, Authenticator, AuthError
from dce.routing.model import Buyer
from tests.databases import run_coroutine

pytestmark = pytest.mark.integration

SECRET = "s" * 48


def verify_key(url: str, key: str) -> Any:
    async def go() -> Any:
        engine = create_engine(url)
        try:
            return await Authenticator(AuthConfig(secret=SECRET), engine=engine).verify_api_key(key)
        finally:
            await engine.dispose()
    return run_coroutine(go())


def login(url: str, username: str, password: str) -> Any:
    async def go() -> Any:
        engine = create_engine(url)
        try:
            auth = Authenticator(AuthConfig(secret=SECRET), engine=engine)
            return auth.verify_access((await auth.login(username, password)).access_token)
        finally:
            await engine.dispose()
    return run_coroutine(go())


def add_buyer(url: str, buyer_id: str) -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            await market.create_buyer(engine, Buyer(id=buyer_id, name=buyer_id))
        finally:
            await engine.dispose()
    run_coroutine(go())


def test_create_key_prints_a_key_the_api_accepts(migrated_database_url: str, capsys: pytest.CaptureFixture[str]):
    assert main(["auth", "create-key", "--database-url", migrated_database_url, "--role", "admin",
                 "--name", "ops"]) == 0
    key = capsys.readouterr().out.strip()
    principal = verify_key(migrated_database_url, key)
    assert principal.role == "admin" and "*" in principal.permissions


def test_a_buyer_key_needs_a_known_buyer(migrated_database_url: str, capsys: pytest.CaptureFixture[str]):
    url = migrated_database_url
    assert main(["auth", "create-key", "--database-url", url, "--role", "buyer"]) == 2
    assert "--buyer-id" in capsys.readouterr().err
    assert main(["auth", "create-key", "--database-url", url, "--role", "buyer", "--buyer-id", "nobody"]) == 1
    assert "nobody" in capsys.readouterr().err
    add_buyer(url, "b1")
    assert main(["auth", "create-key", "--database-url", url, "--role", "buyer", "--buyer-id", "b1"]) == 0
    principal = verify_key(url, capsys.readouterr().out.strip())
    assert principal.role == "buyer" and principal.tenant == {"buyer_id": "b1"}


def test_create_user_reads_the_password_from_stdin(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]):
    url = migrated_database_url
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["auth", "create-user", "--database-url", url, "--role", "admin", "--username", "ann",
                 "--password-stdin"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["auth", "create-user", "--database-url", url, "--role", "admin", "--username", "ann",
                 "--password-stdin"]) == 0
    assert login(url, "ann", "a long enough password").role == "admin"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["auth", "create-user", "--database-url", url, "--role", "admin", "--username", "ann",
                 "--password-stdin"]) == 1
    assert "taken" in capsys.readouterr().err


def test_the_demo_config_turns_auth_on_with_its_own_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert main(["demo", "--write", str(first)]) == 0
    shown = capsys.readouterr().out
    assert main(["demo", "--write", str(second)]) == 0
    a, b = load_settings(first), load_settings(second)
    assert a.auth.enabled and a.rate_limits.enabled
    assert a.auth.secret is not None and len(a.auth.secret.get_secret_value()) >= 32
    key = a.auth.bootstrap_admin_key
    assert key is not None and f"KEY={key.get_secret_value()}" in shown  # the how-to quotes it
    assert key != b.auth.bootstrap_admin_key and a.auth.secret != b.auth.secret  # fresh per file


def test_list_and_revoke_keys(migrated_database_url: str, capsys: pytest.CaptureFixture[str]):
    url = ["--database-url", migrated_database_url]
    keys = {}
    for name in ("ops", "leaked"):
        assert main(["auth", "create-key", *url, "--role", "admin", "--name", name]) == 0
        keys[name] = capsys.readouterr().out.strip()
    leaked_id = keys["leaked"].split("_")[1]

    assert main(["auth", "revoke-key", *url, leaked_id]) == 0
    assert f"API key {leaked_id} revoked" in capsys.readouterr().out
    with pytest.raises(AuthError):
        verify_key(migrated_database_url, keys["leaked"])
    assert verify_key(migrated_database_url, keys["ops"]).role == "admin"

    assert main(["auth", "list-keys", *url]) == 0
    header, *live = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "role", "tenant", "name", "created_at", "last_used_at", "revoked_at"]
    assert [line.split()[3] for line in live] == ["ops"]
    assert keys["ops"].split("_", 2)[2] not in "\n".join(live)  # never the secret (which may itself hold "_")
    assert main(["auth", "list-keys", *url, "--all"]) == 0
    _, *every = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[3] for line in every) == ["leaked", "ops"]
    assert next(line for line in every if line.split()[0] == leaked_id).split()[-1] != "-"  # revoked_at

    assert main(["auth", "revoke-key", *url, "nope"]) == 1
    assert "no API key 'nope'" in capsys.readouterr().err
