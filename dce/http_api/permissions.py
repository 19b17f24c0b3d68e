"""Who may call what, in one place: the routes answered without credentials (:data:`PUBLIC_PATHS`,
:func:`is_public`), the permission each other handler needs (``@require("calls:read")``), who is calling
(``Principal``), and which tenant's rows a caller may see (``tenant_filter``). The auth middleware
(``http_api.auth``) and the OpenAPI document (``http_api.openapi``) both read them from here: the middleware refuses
a non-public route without a permission mark (deny by default)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from dce.http_api.problems import ProblemError

H = TypeVar("H", bound=Handler)

OPENAPI_PATH = "/api/openapi.json"
SWAGGER_PATH = "/swagger"
SWAGGER_STATIC = "/swagger/static"
SWAGGER_INITIALIZER = "/swagger/initializer.js"
RTB_PING_PATH = "/api/v1/rtb/{key}/ping"  # authenticated by the campaign key in its path
LOGIN_PATH = "/api/v1/auth/login"
REFRESH_PATH = "/api/v1/auth/refresh"
SIP_WEBSOCKET_PATH = "/ws/sip"  # SIP over WebSocket: its REGISTER/INVITE carry SIP digest, not API credentials

# Route templates answered without credentials: health, metrics (its own token), the docs, login and refresh, and
# the RTB ping (its campaign key is in the path), SIP over WebSocket (SIP digest). Everything else takes a bearer
# token or an API key.
PUBLIC_PATHS: frozenset[str] = frozenset({
    "/", "/health", "/health/live", "/health/ready", "/metrics", OPENAPI_PATH, SWAGGER_PATH, SWAGGER_INITIALIZER,
    RTB_PING_PATH, LOGIN_PATH, REFRESH_PATH, SIP_WEBSOCKET_PATH,
})
PUBLIC_PREFIXES: tuple[str, ...] = (SWAGGER_STATIC,)  # static resources: canonical is the prefix itself


def is_public(path_template: str) -> bool:
    """Whether a route (by its canonical path template) is answered without credentials."""
    return path_template in PUBLIC_PATHS or any(
        path_template == p or path_template.startswith(p + "/") for p in PUBLIC_PREFIXES
    )


def require(permission: str) -> Callable[[H], H]:
    """Mark a handler with the permission it needs."""

    def mark(handler: H) -> H:
        handler.required_permission = permission  # type: ignore[attr-defined]
        return handler

    return mark


def required_permission(handler: Any) -> str | None:
    """The permission :func:`require` put on ``handler`` (``request.match_info.handler``), if any."""
    return getattr(handler, "required_permission", None)


def permission_matches(granted: str, needed: str) -> bool:
    """``*`` matches everything, ``resource:*`` every ``resource:<action>``, anything else only itself."""
    if granted == "*" or granted == needed:
        return True
    if granted.endswith(":*"):
        return needed.startswith(granted[:-1]) and len(needed) > len(granted) - 1
    return False


def allows(granted: Iterable[str], needed: str) -> bool:
    """Whether any of ``granted`` matches ``needed``."""
    return any(permission_matches(g, needed) for g in granted)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``subject`` (username, ``key:<id>`` or ``bootstrap``), role, its permissions, tenant."""

    subject: str
    role: str
    permissions: frozenset[str]
    buyer_id: str | None = None
    publisher_id: str | None = None
    via: Literal["jwt", "api_key", "bootstrap"] = "jwt"

    def can(self, permission: str) -> bool:
        return allows(self.permissions, permission)

    @property
    def is_admin(self) -> bool:
        return "*" in self.permissions

    @property
    def tenant(self) -> dict[str, str]:
        if self.buyer_id is not None:
            return {"buyer_id": self.buyer_id}
        if self.publisher_id is not None:
            return {"publisher_id": self.publisher_id}
        return {}


PRINCIPAL_KEY = web.RequestKey("principal", Principal)  # request[PRINCIPAL_KEY]; or principal(request)


def principal(request: web.Request) -> Principal | None:
    """The authenticated principal, or None (auth off, or a public route)."""
    return request.get(PRINCIPAL_KEY)


def tenant_filter(request: web.Request) -> dict[str, str]:
    """The columns a handler must filter on so a tenant sees only its own rows.

    ``{}`` for admins and when auth is off (no principal); ``{"buyer_id": id}`` for a buyer's principal,
    ``{"publisher_id": id}`` for a seller's. A non-admin principal without a tenant sees nothing: 403. Use it as
    ``select(...).where(*(table.c[name] == value for name, value in tenant_filter(request).items()))``, and on a
    single entity compare its fields (answer 404 for another tenant's entity).
    """
    who = principal(request)
    if who is None or who.is_admin:
        return {}
    tenant = who.tenant
    if not tenant:
        raise ProblemError(403, "this principal belongs to no tenant")
    return tenant
