"""Security headers and CORS for the side API.

Put :func:`security_middlewares` first in the root app's middlewares (outside ``problem_middleware``), so problem+json
answers, 404s of unknown paths and CORS preflights carry the headers too::

    web.Application(middlewares=[*security_middlewares(config.http.cors_origins), problem_middleware])

Every answer gets ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, HSTS, ``Referrer-Policy:
no-referrer`` and ``Content-Security-Policy: default-src 'self'``; Swagger UI (``/swagger``) alone may use inline
styles and ``data:`` images (its CSS embeds icons), never inline scripts. A handler's own value of one of these
headers wins. Answers already sent by the handler (a WebSocket's 101) are left as they are.

No answer names the software or its version: :func:`hide_server_software` makes aiohttp's ``Server`` header a
plain :data:`SERVER` on every answer, those to bytes that are not HTTP included (they never reach a middleware).

CORS: an ``Origin`` in the configured list (exact ``scheme://host[:port]``; ``"*"`` allows any) gets
``Access-Control-Allow-Origin`` echoed and its preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
answered 204 with the methods, headers (``Authorization``, ``Content-Type``) and max-age. Any other origin gets
no CORS header, and its preflight a 403 problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence

from aiohttp import web, web_response
from aiohttp.typedefs import Handler, Middleware

from dce.http_api.problems import problem

SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Content-Security-Policy": "default-src 'self'",
    "Referrer-Policy": "no-referrer",
}
SERVER = "dce"  # the Server header of every answer: no version of ours, aiohttp's or Python's
SWAGGER_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
SWAGGER_PREFIX = "/swagger"

CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_HEADERS = ("Authorization", "Content-Type")
CORS_EXPOSE = ("Location",)
CORS_MAX_AGE = 600


def _is_swagger(path: str) -> bool:
    return path == SWAGGER_PREFIX or path.startswith(SWAGGER_PREFIX + "/")


def _add_security_headers(path: str, headers: MutableMapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    if _is_swagger(path) and headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]:
        headers["Content-Security-Policy"] = SWAGGER_CSP


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add :data:`SECURITY_HEADERS` to every answer not yet sent (also to raised HTTP exceptions)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _add_security_headers(request.path, exc.headers)
        raise
    if not response.prepared:
        _add_security_headers(request.path, response.headers)
    return response


def _origin(value: str) -> str:
    return value.strip().rstrip("/").lower()


def _vary_origin(headers: MutableMapping[str, str]) -> None:
    vary = headers.get("Vary", "")
    if "origin" not in vary.lower():
        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def cors_middleware(
    origins: Iterable[str],
    *,
    methods: Sequence[str] = CORS_METHODS,
    headers: Sequence[str] = CORS_HEADERS,
    expose: Sequence[str] = CORS_EXPOSE,
    max_age: int = CORS_MAX_AGE,
) -> Middleware:
    """CORS for ``origins`` (``scheme://host[:port]``, ``"*"`` for any); an empty list allows no origin."""
    allowed = frozenset(_origin(o) for o in origins if o.strip())
    any_origin = "*" in allowed
    allow_methods = ", ".join(m.upper() for m in methods)
    allow_headers = ", ".join(headers)
    method_set = frozenset(m.upper() for m in methods)

    def allows(origin: str | None) -> bool:
        return origin is not None and (any_origin or _origin(origin) in allowed)

    def add_cors(origin: str, target: MutableMapping[str, str]) -> None:
        target["Access-Control-Allow-Origin"] = "*" if any_origin else origin
        if expose:
            target["Access-Control-Expose-Headers"] = ", ".join(expose)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = allows(origin)
        requested = request.headers.get("Access-Control-Request-Method")
        if request.method == "OPTIONS" and origin is not None and requested is not None:
            if not ok or requested.upper() not in method_set:
                return problem(403, "CORS preflight refused: origin or method not allowed")
            assert origin is not None
            response = web.Response(status=204)
            add_cors(origin, response.headers)
            response.headers["Access-Control-Allow-Methods"] = allow_methods
            response.headers["Access-Control-Allow-Headers"] = allow_headers
            response.headers["Access-Control-Max-Age"] = str(max_age)
            _vary_origin(response.headers)
            return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if ok and origin is not None:
                add_cors(origin, exc.headers)
            if allowed:
                _vary_origin(exc.headers)
            raise
        if not response.prepared:
            if ok and origin is not None:
                add_cors(origin, response.headers)
            if allowed:
                _vary_origin(response.headers)
        return response

    return cors


def hide_server_software() -> None:
    """Answer ``Server: dce`` instead of aiohttp's ``Python/<version> aiohttp/<version>``.

    aiohttp fills the header from a module constant when it prepares any answer, including its own 400 to a
    malformed request, which no middleware or signal sees: replacing the constant is the one place that covers all.
    Idempotent; affects only this process's aiohttp servers."""
    web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]


def security_middlewares(cors_origins: Iterable[str] = ()) -> list[Middleware]:
    """The security headers and CORS middlewares, outermost first: put them before ``problem_middleware``."""
    return [security_headers_middleware, cors_middleware(list(cors_origins))]
