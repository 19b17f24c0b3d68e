"""The OpenAPI 3.1 document of the side API and Swagger UI, both built from the live route table.

:func:`build_openapi` walks the root app's routes and every sub-app's (recursively; static files are left out) and
writes one operation per method and path from what the handler says of itself: the :class:`~dce.http_api.describe.Doc`
that ``@describe`` put on it (query parameters, the body model, its success status...), its docstring (the first
line is the summary unless the doc gives one), its ``require`` permission as ``x-permission``, and a bearer
security requirement unless the path is public (:func:`dce.http_api.permissions.is_public`); path parameters come
from ``{name}``, and the common problem+json answers are added. Body schemas are the very pydantic models the
handlers validate with (``model_json_schema``), under ``components/schemas``, referenced by ``$ref``.

:func:`setup_docs` adds ``GET /api/openapi.json`` (``?compat=3.0`` serves the same document relabelled as 3.0.3
for the bundled Swagger UI, which renders 3.0 only), ``GET /swagger`` (the UI, with its assets served from the
``swagger-ui-bundle`` package directory under ``/swagger/static``; no CDN, no inline script) and
``GET /swagger/initializer.js``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import swagger_ui_bundle
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from dce import __version__
from dce.http_api.describe import Doc, Param, describe, enum_schema, handler_doc
from dce.http_api.inputs import documented_schema
from dce.http_api.money import MONEY_PATTERN
from dce.http_api.permissions import (
    OPENAPI_PATH,
    SWAGGER_INITIALIZER,
    SWAGGER_PATH,
    SWAGGER_STATIC,
    is_public,
    required_permission,
)
from dce.http_api.problems import PROBLEM_CONTENT_TYPE
from dce.routing.model import format_money

SECURITY_SCHEME = "bearerAuth"
API_KEY_SCHEME = "apiKeyAuth"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}, {API_KEY_SCHEME: []}]  # either one

PROBLEM_STATUSES = {
    400: "Bad Request: the body or a parameter could not be read",
    401: "Unauthorized: no or an invalid bearer token",
    403: "Forbidden: the token lacks the permission (x-permission)",
    404: "Not Found",
    409: "Conflict",
    415: "Unsupported Media Type: the body's charset is unknown (send UTF-8)",
    422: "Unprocessable Content: a field is invalid; invalid_params names it",
    429: "Too Many Requests: the caller's rate limit is spent (rate_limits.enabled); see Retry-After",
    500: "Internal Server Error",
}
_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE")  # HEAD mirrors GET: left out
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
API = "/api/v1"


# ----------------------------------------------------------------------------------------------- the walk


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    handler: Any


def iter_routes(app: web.Application) -> Iterator[RouteInfo]:
    """Every (method, path, handler) of ``app`` and its sub-apps, static files and HEAD left out (a sub-app's
    resources carry their prefix once it is added)."""
    for resource in app.router.resources():
        if isinstance(resource, web.StaticResource):
            continue
        if isinstance(resource, web.PrefixedSubAppResource):
            yield from iter_routes(resource.get_info()["app"])
            continue
        if not isinstance(resource, web.Resource):  # e.g. a domain-matched sub-app: not used here
            continue
        for route in resource:
            if route.method == "HEAD":
                continue
            yield RouteInfo(route.method, resource.canonical, route.handler)


def _summary(route: RouteInfo, doc: Doc) -> str:
    if doc.summary:
        return doc.summary
    text = (route.handler.__doc__ or "").strip().replace("``", "")
    if text:
        return text.splitlines()[0].strip().removesuffix(".")
    return f"{route.method} {route.path}"


def _tag(path: str) -> str:
    parts = [p for p in path.removeprefix(API).split("/") if p and not p.startswith("{")]
    if path.startswith(API) and parts:
        return parts[0].removesuffix(".csv")
    return {"api": "docs", "swagger": "docs", "ws": "websocket"}.get(parts[0], parts[0]) if parts else "root"


def _reader_schema(schema: Any) -> dict[str, Any] | None:
    """The schema a before-validator's reader documents (:func:`~dce.http_api.inputs.documented`), if any."""
    if schema.get("type") != "function-before":
        return None
    return documented_schema(schema.get("function", {}).get("function"))


class _Generator(GenerateJsonSchema):
    """Fields read by a documented reader (money: int micros after it) as the JSON they take."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        documented = _reader_schema(schema)
        if documented is not None:
            return dict(documented)
        return super().function_before_schema(schema)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """A money field's default (integer micros inside) as the decimal string the API reads."""
        documented = _reader_schema(schema["schema"])
        default = schema.get("default")
        if documented is not None and documented.get("pattern") == MONEY_PATTERN and isinstance(default, int):
            return {**documented, "default": format_money(default)}
        return super().default_schema(schema)


def _component_schemas(models: Sequence[type[BaseModel]]) -> tuple[dict[type[BaseModel], dict[str, Any]], dict]:
    if not models:
        return {}, {}
    mode: JsonSchemaMode = "validation"
    refs, top = models_json_schema(
        [(m, mode) for m in models], ref_template="#/components/schemas/{model}", schema_generator=_Generator
    )
    return {model: refs[(model, mode)] for model in models}, top.get("$defs", {})


def _problem_components() -> tuple[dict[str, Any], dict[str, Any]]:
    schema = {
        "type": "object",
        "description": "RFC 7807 problem details",
        "properties": {
            "type": {"type": "string", "default": "about:blank"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "invalid_params": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "reason": {"type": "string"}},
                          "required": ["name", "reason"]},
            },
        },
        "required": ["type", "title", "status"],
        "additionalProperties": True,
    }
    responses = {
        str(status): {
            "description": text,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, text in {**PROBLEM_STATUSES, 413: "Content Too Large: the body is over the size limit",
                             503: "Service Unavailable"}.items()
    }
    return schema, responses


def _operation(route: RouteInfo, doc: Doc, body_refs: Mapping[type[BaseModel], Any], op_id: str) -> dict[str, Any]:
    public = is_public(route.path)
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": _summary(route, doc),
        "tags": [_tag(route.path)],
    }
    description = doc.description or (route.handler.__doc__ or "").strip()
    if description and description != operation["summary"]:
        operation["description"] = description
    permission = required_permission(route.handler)
    if permission is not None:
        operation["x-permission"] = permission
    operation["security"] = [] if public else [dict(s) for s in SECURITY]

    path_names = _PARAM.findall(route.path)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_names
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": p.required, "schema": dict(p.schema),
         **({"description": p.description} if p.description else {})}
        for p in doc.query
    ]
    if parameters:
        operation["parameters"] = parameters

    has_body = doc.body is not None or doc.body_content is not None
    if doc.body is not None:
        operation["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": body_refs[doc.body]}}
        }
    elif doc.body_content is not None:
        operation["requestBody"] = {"required": True, "content": json.loads(json.dumps(doc.body_content))}

    success: dict[str, Any] = {"description": "OK" if doc.status < 300 else "Switching Protocols"}
    if doc.status == 302:
        success["description"] = "Found: the Location header says where"
    if doc.status == 201:
        success["description"] = "Created"
    elif doc.status == 202:
        success["description"] = "Accepted"
    elif doc.status == 204:
        success["description"] = "No Content"
    if doc.content_type is not None:
        schema = dict(doc.response_schema) if doc.response_schema else (
            {"type": "object"} if doc.content_type == "application/json" else {"type": "string"}
        )
        success["content"] = {doc.content_type: {"schema": schema}}
    responses: dict[str, Any] = {str(doc.status): success}
    for status, meaning in doc.also.items():
        responses[str(status)] = {**success, "description": meaning}
    problems = {429, 500, *doc.problems}
    if not public:
        problems |= {401, 403}
    if has_body or doc.query or path_names:
        problems |= {400, 422}
    if has_body:
        problems |= {413, 415}
    if path_names:
        problems.add(404)
    for status in sorted(problems):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    operation["responses"] = responses
    return operation


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``app`` (the root app) and its sub-apps."""
    routes = sorted(iter_routes(app), key=lambda r: (r.path, _METHODS.index(r.method) if r.method in _METHODS else 9))
    docs = [(route, handler_doc(route.handler)) for route in routes]
    models = list(dict.fromkeys(doc.body for _, doc in docs if doc.body is not None))
    body_refs, schemas = _component_schemas(models)
    problem_schema, problem_responses = _problem_components()

    names = [getattr(route.handler, "__name__", "handler") for route in routes]
    paths: dict[str, dict[str, Any]] = {}
    for (route, doc), name in zip(docs, names, strict=True):
        if route.method == "*" or route.method not in _METHODS:
            raise ValueError(f"cannot document method {route.method!r} of {route.path}")
        op_id = name if names.count(name) == 1 else _slug(route.method, route.path)
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, doc, body_refs, op_id)

    _link_creates_to_items(docs, paths)

    page = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
        "required": ["items", "total", "limit", "offset"],
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Dependable Call Exchange API",
            "version": __version__,
            "description": "The side API of the exchange. Errors are problem+json (RFC 7807). Money is a decimal "
                           "string of currency units.",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": paths,
        "components": {
            "schemas": {**schemas, "Problem": problem_schema, "Page": page},
            "responses": problem_responses,
            "securitySchemes": {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                 "description": "dce_<id>_<secret> from POST /api/v1/auth/api-keys"},
            },
        },
        "security": [dict(s) for s in SECURITY],
    }


def _link_creates_to_items(docs: Sequence[tuple[RouteInfo, Doc]], paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links from each create's success answer to the operations on the item it made (``POST /lists`` ->
    ``GET /lists/{id}``, ``POST /lists/{id}/numbers``...): clients, and schemathesis's stateful phase, follow them."""
    for route, doc in docs:
        if doc.created_key is None:
            continue
        prefix = route.path + "/{"
        links: dict[str, Any] = {}
        for path, operations in paths.items():
            if not path.startswith(prefix):
                continue
            param = path[len(prefix):].split("}", 1)[0]
            for method, operation in operations.items():
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {f"path.{param}": f"$response.body#/{doc.created_key}"},
                    "description": f"{method.upper()} {path} of the item just created",
                }
        if links:
            paths[route.path]["post"]["responses"][str(doc.status)]["links"] = links


def _slug(method: str, path: str) -> str:
    return method.lower() + "_" + "_".join(re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_").split("_"))


def compat_30(document: dict[str, Any]) -> dict[str, Any]:
    """The document labelled 3.0.3 for Swagger UI 4 (which refuses "3.1.x"); JSON Schema 2020-12 keywords stay."""
    out = dict(document, openapi="3.0.3")
    out.pop("jsonSchemaDialect", None)
    return out


# -------------------------------------------------------------------------------------------- the routes

_SWAGGER_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Dependable Call Exchange API</title>
<link rel="stylesheet" type="text/css" href="{static}/swagger-ui.css">
<link rel="stylesheet" type="text/css" href="{static}/index.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="{static}/swagger-ui-standalone-preset.js" charset="utf-8"></script>
<script src="{initializer}" charset="utf-8"></script>
</body>
</html>
"""

_INITIALIZER_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: %s,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
"""


def docs_routes(app_for_spec: web.Application) -> list[web.RouteDef]:
    """``GET /api/openapi.json``, ``/swagger`` and its initializer, for the root app (the document is built once,
    on first request, from ``app_for_spec``'s route table). Static assets: :func:`setup_docs`."""
    cache: dict[str, bytes] = {}

    @describe(query=(Param("compat", "3.0: the document labelled OpenAPI 3.0.3 (for Swagger UI)",
                           enum_schema(("3.0",))),))
    async def openapi_json(request: web.Request) -> web.Response:
        """The OpenAPI 3.1 document of this API."""
        compat = request.query.get("compat", "")
        if compat not in ("", "3.0"):
            return web.json_response(
                {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
                 "detail": "invalid parameter 'compat': expected 3.0",
                 "invalid_params": [{"name": "compat", "reason": "expected 3.0"}]},
                status=422, content_type=PROBLEM_CONTENT_TYPE,
            )
        if compat not in cache:
            document = build_openapi(app_for_spec)
            cache[compat] = json.dumps(compat_30(document) if compat else document).encode()
        return web.Response(body=cache[compat], content_type="application/json")

    @describe(content_type="text/html")
    async def swagger(_request: web.Request) -> web.Response:
        """Swagger UI (served locally)."""
        html = _SWAGGER_HTML.format(static=SWAGGER_STATIC, initializer=SWAGGER_INITIALIZER)
        return web.Response(text=html, content_type="text/html")

    @describe(status=302, content_type=None)
    async def root(_request: web.Request) -> web.Response:
        """Redirects to the API docs (Swagger UI)."""
        raise web.HTTPFound(SWAGGER_PATH)

    @describe(content_type="text/javascript")
    async def initializer(_request: web.Request) -> web.Response:
        """Starts Swagger UI on the document."""
        script = _INITIALIZER_JS % json.dumps(f"{OPENAPI_PATH}?compat=3.0")
        return web.Response(text=script, content_type="text/javascript")

    return [
        web.get(OPENAPI_PATH, openapi_json, allow_head=False),
        web.get(SWAGGER_PATH, swagger, allow_head=False),
        web.get("/", root, allow_head=False),
        web.get(SWAGGER_INITIALIZER, initializer, allow_head=False),
    ]


def setup_docs(app: web.Application) -> None:
    """Add the document, Swagger UI and its static assets (from the ``swagger-ui-bundle`` package) to ``app``."""
    app.add_routes(docs_routes(app))
    app.router.add_static(SWAGGER_STATIC, swagger_ui_bundle.swagger_ui_path)
