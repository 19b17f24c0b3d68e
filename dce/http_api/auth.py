"""Authentication and authorization of the side API: roles, JWT bearer tokens, API keys and a deny-by-default
middleware (the ``/auth`` routes that use them are in :mod:`dce.http_api.auth_api`).

Roles (:data:`ROLES`, from the seed)::

    admin   *
    buyer   calls:read bids:create bids:read + ledger:read analytics:read agents:read agents:write
    seller  calls:create calls:read analytics:read + ledger:read

The seed's roles, plus reading one's own ledger lines and reports, and a buyer's managing its own call-centre agents
(tenant-scoped: a buyer or seller sees only its own calls, bids, reports, ledger lines and agents).

A granted permission matches a needed one when it is ``*``, equal to it, or ``resource:*`` and the needed one is
``resource:<anything>``. Every permission a handler needs (``marketplace.require``) that no non-admin role grants
is admin-only (``marketplace:write``, ``ledger:read``, ``auth:write``...).

Credentials, read by :func:`auth_middleware`:

* ``Authorization: Bearer <jwt>``: an access token from ``POST /api/v1/auth/login`` (or ``/auth/refresh``). HS256
  (shared secret) or RS256 (PEM key files) by :class:`AuthConfig`; claims ``sub`` (username), ``role``, ``tenant``
  (``{"buyer_id": ...}``, ``{"publisher_id": ...}`` or ``{}``), ``typ`` (``access``/``refresh``), ``iat``, ``exp``,
  ``iss``, ``jti``. Access tokens live 15 minutes by default, refresh tokens 7 days; a refresh re-reads the user,
  so a disabled user or a changed role takes effect at the next refresh.
* ``X-API-Key: dce_<id>_<secret>``: a machine's key made by ``POST /api/v1/auth/api-keys`` (the key is returned
  once; only a SHA-256 of its secret is stored). ``AuthConfig.bootstrap_admin_key`` is a key accepted as admin
  without the database (first setup, tests).
* WebSocket upgrades may carry the access token as ``?access_token=`` (browsers cannot set headers on them).

Decisions, per matched route: a public route (:func:`dce.http_api.permissions.is_public`) passes without
credentials; any other without valid credentials answers 401 problem+json with ``WWW-Authenticate: Bearer``; with
valid credentials lacking the route's permission 403; a non-public route with no permission mark 403 for every
role, admin included (deny by default: a new route cannot slip through unmarked). Unknown paths and wrong methods
fall through to the router's 404/405. The principal lands on ``request[PRINCIPAL_KEY]`` (:class:`Principal`, a
``web.RequestKey`` named "principal"; read it with :func:`principal`).

Tenant isolation is the handlers' job, with :func:`tenant_filter`: ``{}`` for admins (and when auth is off),
``{"buyer_id": ...}`` or ``{"publisher_id": ...}`` for everyone else; apply it as a WHERE on the listing (and check
it on single-entity reads and writes: 404 rather than 403 for another tenant's entity, so ids do not leak).

Wiring (root app)::

    auth = Authenticator(AuthConfig(secret=..., bootstrap_admin_key=...), engine=engine)
    app = web.Application(middlewares=[..., *security_middlewares(...), auth_middleware(auth), ..., problem_middleware])
    app[AUTHENTICATOR] = auth
    api.add_routes(auth_routes())   # the /api/v1 sub-app (dce.http_api.auth_api)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncEngine

from dce.db import auth_repository as repo
from dce.http_api.permissions import (
    PRINCIPAL_KEY,
    Principal,
    is_public,
    required_permission,
)
from dce.http_api.problems import ProblemError, problem

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- roles and matching

ADMIN = "admin"
BUYER = "buyer"
SELLER = "seller"

ROLES: Mapping[str, frozenset[str]] = {
    ADMIN: frozenset({"*"}),
    BUYER: frozenset({"calls:read", "bids:create", "bids:read", "ledger:read", "analytics:read", "agents:read",
                      "agents:write"}),
    SELLER: frozenset({"calls:create", "calls:read", "analytics:read", "ledger:read"}),
}
TENANT_FIELD: Mapping[str, str] = {BUYER: "buyer_id", SELLER: "publisher_id"}  # the tenant each role must have

AUTH_WRITE = "auth:write"  # users and API keys (admin-only: no other role grants it)
AUTH_READ = "auth:read"  # listing users and API keys (admin-only too)
MIN_PASSWORD = 12  # characters of a user's password, at least




# ------------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are signed and how long they live.

    HS256 needs ``secret`` (at least 32 bytes). RS256 needs ``private_key_path`` to issue tokens (PEM, PKCS#8 or
    traditional, unencrypted) and verifies with ``public_key_path`` or, when that is unset, the private key's public
    half; a node given only the public key verifies but cannot log anyone in. ``bootstrap_admin_key`` (at least
    32 characters) is accepted in ``X-API-Key`` as an admin: for first setup (create users and keys) and tests.
    """

    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret: str | None = field(default=None, repr=False)
    private_key_path: str | None = None
    public_key_path: str | None = None
    access_ttl_s: float = 15 * 60
    refresh_ttl_s: float = 7 * 24 * 3600
    issuer: str = "dce"
    leeway_s: float = 5.0  # clock skew tolerated on exp/iat
    bootstrap_admin_key: str | None = field(default=None, repr=False)
    api_key_cache_s: float = 10.0  # how long a node trusts a looked-up key (a revocation elsewhere lags by this)


class AuthConfigError(ValueError):
    """The configuration cannot sign or verify tokens."""


class AuthError(Exception):
    """Credentials that do not authenticate anyone (401)."""


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives
    refresh_expires_in: int

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "refresh_expires_in": self.refresh_expires_in,
        }


API_KEY_PREFIX = "dce"


def new_api_key() -> tuple[str, str, str]:
    """(id, secret, the full key ``dce_<id>_<secret>``)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{API_KEY_PREFIX}_{key_id}_{secret}"


def hash_secret(secret: str) -> str:
    """SHA-256 hex: enough for a 256-bit random secret (no slow hash needed, unlike passwords)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of ``dce_<id>_<secret>``, or None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def utc_now(clock: Callable[[], float]) -> datetime:
    """The time ``clock`` (epoch seconds) gives, as an aware UTC datetime."""
    return datetime.fromtimestamp(clock(), UTC)


# -------------------------------------------------------------------------------------------- the authenticator


class Authenticator:
    """Issues and verifies tokens, checks passwords and API keys.

    ``clock`` (seconds since the epoch) stamps and checks token times; ``hasher`` hashes passwords (argon2id with
    the library's defaults unless given); ``roles`` maps role -> permissions (tests add roles). ``engine`` is the
    user/key store: without it only tokens and the bootstrap key authenticate.
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        engine: AsyncEngine | None = None,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        roles: Mapping[str, frozenset[str]] = ROLES,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self.roles = dict(roles)
        self._signing_key, self._verify_key = _load_keys(config)
        if config.bootstrap_admin_key is not None and len(config.bootstrap_admin_key) < 32:
            raise AuthConfigError("bootstrap_admin_key must be at least 32 characters")
        self._dummy_hash: str | None = None
        self._key_cache: dict[str, tuple[float, repo.ApiKeyRecord]] = {}
        self._touched: dict[str, float] = {}

    # ---- roles

    def permissions(self, role: str) -> frozenset[str]:
        """The role's permissions; an unknown role has none."""
        return self.roles.get(role, frozenset())

    def _principal(self, subject: str, role: str, tenant: Mapping[str, Any], via: Any) -> Principal:
        buyer_id = tenant.get("buyer_id")
        publisher_id = tenant.get("publisher_id")
        if not isinstance(buyer_id, str | None) or not isinstance(publisher_id, str | None):
            raise AuthError("bad tenant claim")
        return Principal(subject, role, self.permissions(role), buyer_id, publisher_id, via)

    # ---- tokens

    def issue(self, subject: str, role: str, tenant: Mapping[str, str] | None = None) -> TokenPair:
        """An access and a refresh token for ``subject``."""
        if self._signing_key is None:
            raise AuthConfigError("no private key configured: this node cannot issue tokens")
        now = int(self.clock())
        base = {"sub": subject, "role": role, "tenant": dict(tenant or {}), "iss": self.config.issuer, "iat": now}
        access_ttl, refresh_ttl = int(self.config.access_ttl_s), int(self.config.refresh_ttl_s)
        access = {**base, "typ": "access", "exp": now + access_ttl, "jti": uuid.uuid4().hex}
        refresh = {**base, "typ": "refresh", "exp": now + refresh_ttl, "jti": uuid.uuid4().hex}
        algorithm = self.config.algorithm
        return TokenPair(
            access_token=jwt.encode(access, self._signing_key, algorithm=algorithm),
            refresh_token=jwt.encode(refresh, self._signing_key, algorithm=algorithm),
            expires_in=access_ttl,
            refresh_expires_in=refresh_ttl,
        )

    def decode(self, token: str, typ: Literal["access", "refresh"] = "access") -> dict[str, Any]:
        """The verified claims of ``token`` (signature, issuer, type, times against :attr:`clock`); AuthError."""
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.config.algorithm],
                issuer=self.config.issuer,
                options={
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["sub", "role", "typ", "iat", "exp", "iss"],
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        now = self.clock()
        leeway = self.config.leeway_s
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise AuthError("invalid token: exp and iat must be numbers")
        if now >= exp + leeway:
            raise AuthError("token expired")
        if iat > now + leeway:
            raise AuthError("token issued in the future")
        if claims["typ"] != typ:
            raise AuthError(f"not an {typ} token")
        if not isinstance(claims["sub"], str) or not isinstance(claims["role"], str):
            raise AuthError("invalid token: sub and role must be strings")
        if not isinstance(claims.get("tenant", {}), dict):
            raise AuthError("invalid token: bad tenant claim")
        return claims

    def verify_access(self, token: str) -> Principal:
        claims = self.decode(token, "access")
        return self._principal(claims["sub"], claims["role"], claims.get("tenant") or {}, "jwt")

    # ---- passwords

    def hash_password(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_password(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _verify_password(self, password_hash: str | None, password: str) -> bool:
        """Off the event loop; an unknown user costs the same as a wrong password (no user enumeration)."""
        if password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
            password_hash = self._dummy_hash
            await asyncio.to_thread(self.verify_password, password_hash, password)
            return False
        return await asyncio.to_thread(self.verify_password, password_hash, password)

    def store(self) -> AsyncEngine:
        """The user/key store; 503 problem when this authenticator has none."""
        if self.engine is None:
            raise ProblemError(503, "no user store configured")
        return self.engine

    async def login(self, username: str, password: str) -> TokenPair:
        """Tokens for a user's right password; AuthError otherwise (also for a disabled user)."""
        user = await repo.get_user(self.store(), username)
        ok = await self._verify_password(user.password_hash if user else None, password)
        if user is None or not ok or not user.enabled:
            raise AuthError("wrong username or password")
        if self.hasher.check_needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            await repo.set_password_hash(self.store(), username, new_hash, utc_now(self.clock))
        return self.issue(user.username, user.role, _tenant_of(user))

    async def refresh(self, refresh_token: str) -> TokenPair:
        """New tokens for a valid refresh token of a user still enabled (with the user's current role/tenant)."""
        claims = self.decode(refresh_token, "refresh")
        user = await repo.get_user(self.store(), claims["sub"])
        if user is None or not user.enabled:
            raise AuthError("user unknown or disabled")
        return self.issue(user.username, user.role, _tenant_of(user))

    # ---- API keys

    async def verify_api_key(self, key: str) -> Principal:
        bootstrap = self.config.bootstrap_admin_key
        if bootstrap is not None and hmac.compare_digest(key.encode(), bootstrap.encode()):
            return Principal("bootstrap", ADMIN, self.permissions(ADMIN), via="bootstrap")
        parsed = parse_api_key(key)
        if parsed is None or self.engine is None:
            raise AuthError("invalid API key")
        key_id, secret = parsed
        record = await self._api_key(key_id)
        if record is None or record.revoked or not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
            raise AuthError("invalid API key")
        await self._touch(key_id)
        tenant = {"buyer_id": record.buyer_id, "publisher_id": record.publisher_id}
        return self._principal(f"key:{record.id}", record.role, tenant, "api_key")

    async def _api_key(self, key_id: str) -> repo.ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._key_cache.get(key_id)
        if cached is not None and now - cached[0] < self.config.api_key_cache_s:
            return cached[1]
        assert self.engine is not None
        record = await repo.get_api_key(self.engine, key_id)
        if record is None:
            self._key_cache.pop(key_id, None)
            return None
        if len(self._key_cache) >= 10_000:
            self._key_cache.clear()
        self._key_cache[key_id] = (now, record)
        return record

    async def _touch(self, key_id: str) -> None:
        """last_used_at, written at most once a minute per key."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -1e9) < 60:
            return
        if len(self._touched) >= 10_000:
            self._touched.clear()
        self._touched[key_id] = now
        assert self.engine is not None
        try:
            await repo.touch_api_key(self.engine, key_id, utc_now(self.clock))
        except Exception:
            log.warning("could not record the use of API key %s", key_id, exc_info=True)

    def forget_api_key(self, key_id: str) -> None:
        """Drop a key from this node's cache (after revoking it)."""
        self._key_cache.pop(key_id, None)

    async def create_api_key(
        self, role: str, *, buyer_id: str | None = None, publisher_id: str | None = None,
        name: str | None = None, created_by: str | None = None,
    ) -> tuple[repo.ApiKeyRecord, str]:
        """Store a new key; (its record, the full key to hand out once)."""
        key_id, secret, key = new_api_key()
        record = repo.ApiKeyRecord(
            id=key_id, prefix=f"{API_KEY_PREFIX}_{key_id}", secret_hash=hash_secret(secret), name=name, role=role,
            buyer_id=buyer_id, publisher_id=publisher_id, created_by=created_by, created_at=utc_now(self.clock),
        )
        return await repo.create_api_key(self.store(), record), key

    async def create_user(
        self, username: str, password: str, role: str, *, buyer_id: str | None = None,
        publisher_id: str | None = None, enabled: bool = True,
    ) -> repo.UserRecord:
        now = utc_now(self.clock)
        password_hash = await asyncio.to_thread(self.hash_password, password)
        record = repo.UserRecord(username, password_hash, role, buyer_id, publisher_id, enabled, now, now)
        return await repo.create_user(self.store(), record)

    async def update_user(self, username: str, *, enabled: bool | None = None,
                          password: str | None = None) -> repo.UserRecord | None:
        """Enable or disable a user, or set a new password; None when there is no such user.

        A disabled user can neither log in nor refresh; access tokens already issued live out their (short) time.
        """
        password_hash = None if password is None else await asyncio.to_thread(self.hash_password, password)
        return await repo.update_user(self.store(), username, utc_now(self.clock), enabled=enabled,
                                      password_hash=password_hash)

    # ---- requests

    async def authenticate(self, request: web.Request) -> Principal | None:
        """The principal of the request's credentials; None without any; AuthError for bad ones."""
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("Authorization must be 'Bearer <token>'")
            return self.verify_access(token.strip())
        api_key = request.headers.get("X-API-Key")
        if api_key is not None:
            return await self.verify_api_key(api_key.strip())
        if request.headers.get("Upgrade", "").lower() == "websocket" and "access_token" in request.query:
            return self.verify_access(request.query["access_token"])
        return None


def _tenant_of(user: repo.UserRecord) -> dict[str, str]:
    if user.buyer_id is not None:
        return {"buyer_id": user.buyer_id}
    if user.publisher_id is not None:
        return {"publisher_id": user.publisher_id}
    return {}


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read the {what} {path}: {exc}") from None


def _load_keys(config: AuthConfig) -> tuple[Any, Any]:
    """(signing key or None, verifying key)."""
    if config.algorithm == "HS256":
        if not config.secret or len(config.secret.encode()) < 32:
            raise AuthConfigError("HS256 needs a secret of at least 32 bytes")
        return config.secret, config.secret
    if config.algorithm != "RS256":
        raise AuthConfigError(f"unsupported algorithm {config.algorithm!r}: HS256 or RS256")
    private = public = None
    try:
        if config.private_key_path:
            private = serialization.load_pem_private_key(_read(config.private_key_path, "private key"), None)
        if config.public_key_path:
            public = serialization.load_pem_public_key(_read(config.public_key_path, "public key"))
    except (ValueError, TypeError) as exc:
        raise AuthConfigError(f"bad RS256 key: {exc}") from None
    if private is None and public is None:
        raise AuthConfigError("RS256 needs private_key_path and/or public_key_path")
    if public is None:
        public = private.public_key()  # type: ignore[union-attr]
    return private, public


# ------------------------------------------------------------------------------------------------ middleware

AUTHENTICATOR = web.AppKey("authenticator", Authenticator)

def unauthorized(detail: str, *, invalid: bool) -> web.Response:
    """A 401 problem with its Bearer challenge (``error="invalid_token"`` when credentials were given but bad)."""
    response = problem(401, detail)
    challenge = 'Bearer realm="dce"' + (', error="invalid_token"' if invalid else "")
    response.headers["WWW-Authenticate"] = challenge
    return response


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def auth_middleware(auth: Authenticator) -> Middleware:
    """Authenticate and authorize every request against its matched route (see the module doc)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        match_info = request.match_info
        if match_info.http_exception is not None:  # unknown path or method: the router's 404/405
            return await handler(request)
        route = match_info.route
        template = route.resource.canonical if route.resource is not None else request.path
        if is_public(template):
            return await handler(request)
        if _is_preflight(request) and route.method not in ("OPTIONS", "*"):
            return await handler(request)  # CORS preflights carry no credentials; the CORS middleware answers
        try:
            who = await auth.authenticate(request)
        except AuthError as exc:
            return unauthorized(str(exc), invalid=True)
        if who is None:
            return unauthorized("credentials required: Authorization: Bearer <token> or X-API-Key", invalid=False)
        needed = required_permission(match_info.handler)
        if needed is None:
            return problem(403, "this route has no permission mark; denied by default")
        if not who.can(needed):
            return problem(403, f"role {who.role!r} lacks the permission {needed!r}")
        request[PRINCIPAL_KEY] = who
        return await handler(request)

    return authenticate
