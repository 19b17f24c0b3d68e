"""Auth building blocks: the permission matcher, roles, JWTs (HS256, RS256, expiry on a virtual clock), passwords
and API key parsing."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dce.http_api.auth import (
    ROLES,
    AuthConfig,
    AuthConfigError,
    Authenticator,
    AuthError,
    hash_secret,
    new_api_key,
    parse_api_key,
)
from dce.http_api.permissions import Principal, allows, is_public, permission_matches

SECRET = "s" * 32


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_auth(clock: Clock | None = None, **config: object) -> Authenticator:
    config.setdefault("secret", SECRET)
    return Authenticator(AuthConfig(**config), clock=clock or Clock(),  # type: ignore[arg-type]
                         hasher=PasswordHasher.from_parameters(CHEAPEST))


# ----------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(
    ("granted", "needed", "expected"),
    [
        ("*", "calls:read", True),
        ("*", "anything", True),
        ("calls:read", "calls:read", True),
        ("calls:read", "calls:create", False),
        ("calls:*", "calls:read", True),
        ("calls:*", "calls:create", True),
        ("calls:*", "callsx:read", False),
        ("calls:*", "bids:read", False),
        ("calls:*", "calls:", False),
        ("calls", "calls:read", False),
        ("calls:read", "calls:read:extra", False),
        ("bids:create", "bids:read", False),
    ],
)
def test_permission_matcher(granted: str, needed: str, expected: bool) -> None:
    assert permission_matches(granted, needed) is expected


def test_seed_roles() -> None:
    assert ROLES["admin"] == {"*"}
    # the seed's roles plus reading one's own (tenant-scoped) ledger account and reports
    assert ROLES["buyer"] == {"calls:read", "bids:create", "bids:read", "ledger:read", "analytics:read", "agents:read",
                              "agents:write"}
    assert ROLES["seller"] == {"calls:create", "calls:read", "analytics:read", "ledger:read"}
    assert allows(ROLES["buyer"], "bids:create")
    assert not allows(ROLES["seller"], "bids:create")
    assert allows(ROLES["seller"], "analytics:read")
    # permissions no non-admin role grants are admin-only
    for admin_only in ("marketplace:write", "ledger:write", "ledger:verify", "auth:write", "lists:write"):
        assert not any(allows(perms, admin_only) for role, perms in ROLES.items() if role != "admin")
        assert allows(ROLES["admin"], admin_only)


def test_principal_tenant() -> None:
    buyer = Principal("u", "buyer", ROLES["buyer"], buyer_id="b1")
    assert buyer.tenant == {"buyer_id": "b1"} and not buyer.is_admin and buyer.can("bids:read")
    seller = Principal("u", "seller", ROLES["seller"], publisher_id="p1")
    assert seller.tenant == {"publisher_id": "p1"}
    admin = Principal("a", "admin", ROLES["admin"])
    assert admin.tenant == {} and admin.is_admin and admin.can("whatever:write")


def test_public_routes() -> None:
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/api/openapi.json", "/swagger",
                 "/swagger/static", "/api/v1/rtb/{key}/ping", "/api/v1/auth/login", "/api/v1/auth/refresh"):
        assert is_public(path), path
    for path in ("/api/v1/calls", "/api/v1/auth/users", "/api/v1/rtb/{key}", "/healthz", "/swaggerx", "/debug/config"):
        assert not is_public(path), path


# ------------------------------------------------------------------------------------------------------- JWT


def test_hs256_issue_and_verify() -> None:
    auth = make_auth()
    tokens = auth.issue("alice", "buyer", {"buyer_id": "b1"})
    assert tokens.expires_in == 15 * 60
    assert tokens.refresh_expires_in == 7 * 24 * 3600
    who = auth.verify_access(tokens.access_token)
    assert who == Principal("alice", "buyer", ROLES["buyer"], buyer_id="b1", via="jwt")
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert claims["typ"] == "access" and claims["iss"] == "dce" and claims["tenant"] == {"buyer_id": "b1"}
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(tokens.access_token)["alg"] == "HS256"


def test_expiry_on_a_virtual_clock() -> None:
    clock = Clock()
    auth = make_auth(clock, access_ttl_s=60, refresh_ttl_s=3600, leeway_s=0)
    tokens = auth.issue("alice", "admin")
    clock.now += 59
    assert auth.verify_access(tokens.access_token).role == "admin"
    clock.now += 1
    with pytest.raises(AuthError, match="expired"):
        auth.verify_access(tokens.access_token)
    assert auth.decode(tokens.refresh_token, "refresh")["sub"] == "alice"  # the refresh token lives longer
    clock.now += 3600
    with pytest.raises(AuthError, match="expired"):
        auth.decode(tokens.refresh_token, "refresh")


def test_leeway_and_future_tokens() -> None:
    clock = Clock()
    auth = make_auth(clock, access_ttl_s=60, leeway_s=5)
    tokens = auth.issue("alice", "admin")
    clock.now += 64
    auth.verify_access(tokens.access_token)
    clock.now += 1
    with pytest.raises(AuthError):
        auth.verify_access(tokens.access_token)
    clock.now -= 1000  # a token from the future (the issuer's clock far ahead)
    with pytest.raises(AuthError, match="future"):
        auth.verify_access(tokens.access_token)


def test_refresh_token_is_not_an_access_token_and_back() -> None:
    auth = make_auth()
    tokens = auth.issue("alice", "admin")
    with pytest.raises(AuthError, match="access"):
        auth.verify_access(tokens.refresh_token)
    with pytest.raises(AuthError, match="refresh"):
        auth.decode(tokens.access_token, "refresh")


def test_bad_tokens_are_refused() -> None:
    auth = make_auth()
    tokens = auth.issue("alice", "buyer", {"buyer_id": "b1"})
    other = make_auth(secret="t" * 32).issue("alice", "admin")
    with pytest.raises(AuthError):
        auth.verify_access(other.access_token)  # another secret
    header, _payload, signature = tokens.access_token.split(".")
    forged = jwt.encode({**jwt.decode(tokens.access_token, options={"verify_signature": False}), "role": "admin"},
                        "x" * 32, algorithm="HS256").split(".")[1]
    with pytest.raises(AuthError):
        auth.verify_access(f"{header}.{forged}.{signature}")  # payload swapped
    none_token = jwt.encode({"sub": "a", "role": "admin", "typ": "access", "iat": 1, "exp": 2**40, "iss": "dce"},
                            None, algorithm="none")  # fmt: skip
    with pytest.raises(AuthError):
        auth.verify_access(none_token)
    wrong_issuer = make_auth(issuer="someone-else").issue("alice", "admin")
    with pytest.raises(AuthError):
        auth.verify_access(wrong_issuer.access_token)
    with pytest.raises(AuthError):
        auth.verify_access("not-a-jwt")


def test_unknown_role_has_no_permissions() -> None:
    auth = make_auth()
    who = auth.verify_access(auth.issue("ghost", "superuser").access_token)
    assert who.permissions == frozenset() and not who.can("calls:read")


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="32 bytes"):
        Authenticator(AuthConfig(secret="short"))
    with pytest.raises(AuthConfigError):
        Authenticator(AuthConfig(algorithm="RS256"))
    with pytest.raises(AuthConfigError, match="cannot read"):
        Authenticator(AuthConfig(algorithm="RS256", private_key_path=str(tmp_path / "missing.pem")))
    with pytest.raises(AuthConfigError, match="bootstrap"):
        Authenticator(AuthConfig(secret=SECRET, bootstrap_admin_key="short"))
    assert "s" * 32 not in repr(AuthConfig(secret=SECRET))


def _rsa_files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / f"{name}.pem"
    public = tmp_path / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_rs256_with_generated_keys(tmp_path: Path) -> None:
    private, public = _rsa_files(tmp_path, "jwt")
    clock = Clock()
    issuer = Authenticator(AuthConfig(algorithm="RS256", private_key_path=str(private)), clock=clock)
    verifier = Authenticator(AuthConfig(algorithm="RS256", public_key_path=str(public)), clock=clock)
    tokens = issuer.issue("bob", "seller", {"publisher_id": "p9"})
    assert jwt.get_unverified_header(tokens.access_token)["alg"] == "RS256"
    assert verifier.verify_access(tokens.access_token).publisher_id == "p9"
    assert issuer.verify_access(tokens.access_token).role == "seller"  # public half of the private key
    with pytest.raises(AuthConfigError, match="cannot issue"):
        verifier.issue("bob", "seller")
    other_private, _ = _rsa_files(tmp_path, "other")
    stranger = Authenticator(AuthConfig(algorithm="RS256", private_key_path=str(other_private)), clock=clock)
    with pytest.raises(AuthError):
        verifier.verify_access(stranger.issue("bob", "admin").access_token)
    # algorithm confusion: an HS256 token keyed with the public PEM must not pass an RS256 verifier
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    confused = jwt.encode({**claims, "role": "admin"}, "x" * 32, algorithm="HS256")
    with pytest.raises(AuthError):
        verifier.verify_access(confused)
    clock.now += 15 * 60 + 10
    with pytest.raises(AuthError, match="expired"):
        verifier.verify_access(tokens.access_token)


# ------------------------------------------------------------------------------------- passwords and API keys


def test_password_hashing() -> None:
    auth = make_auth()
    hashed = auth.hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert auth.verify_password(hashed, "correct horse battery staple")
    assert not auth.verify_password(hashed, "wrong")
    assert not auth.verify_password("not a hash", "wrong")
    assert auth.hash_password("same") != auth.hash_password("same")  # salted


def test_default_hasher_is_argon2id() -> None:
    start = time.perf_counter()
    hashed = Authenticator(AuthConfig(secret=SECRET)).hash_password("pw")
    assert hashed.startswith("$argon2id$") and time.perf_counter() - start < 5


def test_api_keys() -> None:
    key_id, secret, key = new_api_key()
    assert key == f"dce_{key_id}_{secret}"
    assert parse_api_key(key) == (key_id, secret)
    assert len(secret) >= 40 and len(hash_secret(secret)) == 64
    assert hash_secret(secret) != secret
    for bad in ("", "dce", "dce_", "dce_abc", "dce__x", "xyz_abc_def", "dce_abc_"):
        assert parse_api_key(bad) is None, bad
    assert new_api_key()[2] != key


async def test_bootstrap_key_is_admin_without_a_store() -> None:
    auth = make_auth(bootstrap_admin_key="b" * 40)
    who = await auth.verify_api_key("b" * 40)
    assert who.is_admin and who.via == "bootstrap"
    with pytest.raises(AuthError):
        await auth.verify_api_key("b" * 39)
    with pytest.raises(AuthError):
        await auth.verify_api_key(new_api_key()[2])  # no store: only the bootstrap key
