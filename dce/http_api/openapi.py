"""The OpenAPI 3.1 document of the side API and Swagger UI, both built from the live route table.

:func:`build_openapi` walks the root app's routes and every sub-app's (recursively; static files are left out) and
writes one operation per method and path: the handler docstring's first line as summary (or the summary in
:data:`DOCS`), the ``require`` permission as ``x-permission``, a bearer security requirement unless the path is in
:data:`PUBLIC_PATHS`, path parameters from ``{name}``, and the common problem+json answers. What a handler reads
(query parameters, the body schema, its success status) comes from :data:`DOCS`, a table keyed by
``(METHOD, path)``, or from :func:`describe` put on the handler itself (it wins over the table). Body schemas come
from pydantic models (``model_json_schema``) and sit under ``components/schemas``, referenced by ``$ref``.

:func:`setup_docs` adds ``GET /api/openapi.json`` (``?compat=3.0`` serves the same document relabelled as 3.0.3
for the bundled Swagger UI, which renders 3.0 only), ``GET /swagger`` (the UI, with its assets served from the
``swagger-ui-bundle`` package directory under ``/swagger/static``; no CDN, no inline script) and
``GET /swagger/initializer.js``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import swagger_ui_bundle
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from dce import __version__
from dce.billing.cdr import Disposition
from dce.compliance.lists import ListKind
from dce.db.list_repository import MAX_ADD
from dce.db.postback_repository import STATUSES as DELIVERY_STATUSES
from dce.http_api import marketplace
from dce.http_api.calls import DEFAULT_LIMIT, MAX_INT, MAX_LIMIT
from dce.http_api.consents import ConsentIn, OutboundCheckIn, RevokeIn
from dce.http_api.marketplace import RESOURCES
from dce.http_api.money import MONEY_PATTERN
from dce.http_api.permissions import required_permission
from dce.http_api.postbacks import PostbackIn
from dce.http_api.problems import PROBLEM_CONTENT_TYPE
from dce.routing.model import format_money

H = TypeVar("H", bound=Callable[..., Any])

OPENAPI_PATH = "/api/openapi.json"
SWAGGER_PATH = "/swagger"
SWAGGER_STATIC = "/swagger/static"
SWAGGER_INITIALIZER = "/swagger/initializer.js"

# Paths answered without credentials (the auth layer imports this): health, metrics, the docs, login and refresh,
# and the RTB ping (its campaign key is in the path). Everything else takes a bearer token or an API key.
PUBLIC_PATHS: frozenset[str] = frozenset({
    "/", "/health", "/health/live", "/health/ready", "/metrics", OPENAPI_PATH, SWAGGER_PATH, SWAGGER_INITIALIZER,
    "/api/v1/rtb/{key}/ping", "/api/v1/auth/login", "/api/v1/auth/refresh",
})
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


# ------------------------------------------------------------------------------------------- the doc table


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Doc:
    """What the route table cannot tell about an operation."""

    summary: str | None = None
    description: str | None = None
    body: type[BaseModel] | None = None  # JSON body validated by this model
    body_content: Mapping[str, Any] | None = None  # a raw requestBody "content" (non-JSON or free-form bodies)
    query: Sequence[Param] = ()
    status: int = 200  # the success status
    also: Mapping[int, str] = field(default_factory=dict)  # further success statuses (same body): their meaning
    content_type: str | None = "application/json"  # of the success answer; None: no body (e.g. 204)
    response_schema: Mapping[str, Any] | None = None
    problems: Sequence[int] = ()  # further problem statuses the operation answers
    created_key: str | None = None  # a create: the answer's field naming the new item (links to the item's routes)


def describe(
    *,
    summary: str | None = None,
    body: type[BaseModel] | None = None,
    query: Sequence[Param] = (),
    status: int = 200,
    content_type: str | None = "application/json",
    response_schema: Mapping[str, Any] | None = None,
    problems: Sequence[int] = (),
    created_key: str | None = None,
) -> Callable[[H], H]:
    """Put a :class:`Doc` on a handler (it wins over :data:`DOCS`)."""

    def mark(handler: H) -> H:
        handler.openapi_doc = Doc(  # type: ignore[attr-defined]
            summary=summary, body=body, query=query, status=status, content_type=content_type,
            response_schema=response_schema, problems=problems, created_key=created_key,
        )
        return handler

    return mark


def _money_schema(description: str = "currency units") -> dict[str, Any]:
    return {
        "type": "string", "pattern": MONEY_PATTERN,
        "description": f'{description}: a decimal string (e.g. "12.50"), at most 6 decimal places; a JSON number is '
                       f'refused (422 "send money as a decimal string")',
    }


Money = Annotated[Decimal, WithJsonSchema(_money_schema())]


def _money_out(description: str, *, nullable: bool = False) -> dict[str, Any]:
    """The schema of a money field in an answer: a decimal string of currency units."""
    schema: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "pattern": MONEY_PATTERN,
                              "description": f'{description}; a decimal string of currency units, like "12.50"'}
    return schema


def _page_of(properties: Mapping[str, Any], *, paged: bool = True) -> dict[str, Any]:
    """An answer ``{"items": [{properties...}]}``; ``paged``: a :data:`PAGE_SCHEMA` (total, limit, offset too)."""
    items = {"items": {"type": "array", "items": {"type": "object", "properties": dict(properties)}}}
    if paged:
        return {"allOf": [{"$ref": "#/components/schemas/Page"}, {"type": "object", "properties": items}]}
    return {"type": "object", "properties": items, "required": ["items"]}


Text = Annotated[str, Field(min_length=1, max_length=128)]
LongText = Annotated[str, Field(min_length=1, max_length=2000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Documentation-only models of bodies the handlers read by hand (dce.http_api.ledger, lists, live_bidding, gdpr).


class ConversionIn(_Body):
    call_id: Text
    revenue: Money | None = None


class DepositIn(_Body):
    buyer_id: Annotated[str, Field(min_length=1, max_length=64)]
    amount: Annotated[Money, Field(description="greater than zero")]
    key: Annotated[str, Field(max_length=160, description="idempotency key")] | None = None
    actor: Text | None = None
    memo: LongText | None = None


class PaymentIn(_Body):
    publisher_id: Annotated[str, Field(min_length=1, max_length=64)]
    amount: Annotated[Money, Field(description="greater than zero")]
    key: Annotated[str, Field(max_length=160, description="idempotency key")] | None = None
    actor: Text | None = None
    memo: LongText | None = None


class AdjustmentIn(_Body):
    account: Annotated[str, Field(description="buyer:<id>, publisher:<id>, exchange:revenue or exchange:cash")]
    amount: Annotated[Money, Field(description="signed, not zero: > 0 credits the account, < 0 debits it")]
    reason: LongText
    actor: Text
    key: Annotated[str, Field(max_length=160, description="idempotency key")] | None = None


class RefundIn(_Body):
    call_id: Text
    reason: LongText
    actor: Text


class BidIn(BaseModel):
    call_id: Annotated[str, Field(min_length=1, max_length=64)]
    amount: Money
    buyer_id: Annotated[str, Field(min_length=1, max_length=64)]


class ListIn(BaseModel):
    kind: ListKind
    scope: Annotated[str | None, Field(description="state (dnc_state) or buyer id (suppression)")] = None
    name: Annotated[str, Field(max_length=255)] = ""
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/]+$")] | None = None


class NumbersIn(BaseModel):
    numbers: Annotated[list[str], Field(min_length=1, max_length=MAX_ADD)]


class ErasureIn(BaseModel):
    number: Annotated[str, Field(description="a phone number, E.164 preferred")]


def page_params(*extra: Param) -> tuple[Param, ...]:
    """``limit`` and ``offset`` of a paged listing, then ``extra``."""
    return (
        Param("limit", "page size", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
        Param("offset", "items to skip", {"type": "integer", "minimum": 0, "maximum": MAX_INT, "default": 0}),
        *extra,
    )


def _ids(*names: str) -> tuple[Param, ...]:
    return tuple(Param(name, f"only this {name.removesuffix('_id')}") for name in names)


def _enum(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": [str(v) for v in values]}


_TIME = {"type": "string", "description": "ISO 8601 time with a zone, or a date YYYY-MM-DD (UTC midnight)"}
PAGE_SCHEMA = {"$ref": "#/components/schemas/Page"}  # {items, total, limit, offset}
_FREE = {"application/json": {"schema": {"type": "object"}}}
_REPLAYED = {200: "OK: an entry with this idempotency key was posted already (that entry)"}
_TERM_FILTERS = _ids("campaign_id", "publisher_id", "buyer_id", "target_id")
API = "/api/v1"


def _marketplace_docs() -> dict[tuple[str, str], Doc]:
    docs: dict[tuple[str, str], Doc] = {}
    for resource in RESOURCES:
        base = f"{API}/{resource.collection}"
        item = f"{base}/{{key}}"
        noun = resource.collection
        docs |= {
            ("GET", base): Doc(f"List {noun} (ordered by {resource.key_field})", query=page_params(),
                               response_schema=PAGE_SCHEMA),
            ("POST", base): Doc(f"Create one of the {noun}", body=resource.schema, status=201, problems=(409,),
                                created_key=resource.key_field),
            ("GET", item): Doc(f"One of the {noun} by {resource.key_field}", problems=(404,)),
            ("PUT", item): Doc(f"Replace one of the {noun} (omitted fields take their defaults)", body=resource.schema,
                               problems=(404, 409)),
            ("PATCH", item): Doc(f"Merge fields into one of the {noun} (objects merge one level deep)",
                                 body_content=_FREE, problems=(404, 409)),
            ("DELETE", item): Doc(f"Delete one of the {noun}", status=204, content_type=None, problems=(404, 409)),
        }
    return docs


_REPORT_RANGE = (
    Param("from", "inclusive; default: today 00:00 UTC, or one day before `to`", _TIME),
    Param("to", "exclusive; default: one day after `from`", _TIME),
)
_CDR_PAGE = _page_of({  # the CDR's money columns (integer micros in the table) as the API writes every amount
    "revenue": _money_out("what the buyer pays: the target's revenue or the winning bid", nullable=True),
    "payout_fixed": _money_out("the publisher's fixed payout rule", nullable=True),
    "settled_revenue": _money_out("charged to the buyer at settlement", nullable=True),
    "settled_payout": _money_out("owed to the publisher at settlement", nullable=True),
})

DOCS: dict[tuple[str, str], Doc] = {
    **_marketplace_docs(),
    ("GET", "/health"): Doc(problems=()),
    ("GET", "/metrics"): Doc(content_type="text/plain", problems=(401,)),
    ("GET", "/"): Doc(status=302, content_type=None),
    ("GET", "/health/ready"): Doc(problems=(503,)),
    ("GET", "/ws/v1/bidding"): Doc(
        "Live auctions over a WebSocket (JSON text frames)", query=(Param("buyer_id", "hear only this buyer's calls"),),
        status=101, content_type=None, problems=(404,),
    ),
    ("GET", f"{API}/calls"): Doc("A page of calls, newest first", query=page_params(
        Param("disposition", "", _enum(Disposition)), Param("did", "tracking number"),
        Param("since", "", _TIME), Param("until", "", _TIME),
    ), response_schema=_CDR_PAGE),
    ("GET", f"{API}/bids"): Doc("A page of the bid log, newest first",
                                query=page_params(*_ids("call_id", "target_id", "buyer_id")),
                                response_schema=_page_of({"amount": _money_out("the bid")})),
    ("POST", f"{API}/bids"): Doc(body=BidIn, status=202, problems=(404, 409)),
    ("POST", f"{API}/rtb/{{key}}/ping"): Doc(body_content=_FREE, problems=(404,)),
    ("GET", f"{API}/lists"): Doc("Number lists", query=(Param("kind", "", _enum(ListKind)), Param("scope"))),
    ("POST", f"{API}/lists"): Doc("Create a number list", body=ListIn, status=201, problems=(409,),
                                  created_key="id"),
    ("GET", f"{API}/lists/check/{{number}}"): Doc("The lists holding a number"),
    ("GET", f"{API}/lists/{{id}}"): Doc("A number list", problems=(404,)),
    ("DELETE", f"{API}/lists/{{id}}"): Doc("Delete a number list", status=204, content_type=None, problems=(404,)),
    ("POST", f"{API}/lists/{{id}}/numbers"): Doc("Add numbers to a list", body=NumbersIn, problems=(404,)),
    ("DELETE", f"{API}/lists/{{id}}/numbers/{{number}}"): Doc(
        "Remove a number from a list", status=204, content_type=None, problems=(404,)
    ),
    ("POST", f"{API}/lists/{{id}}/import"): Doc(
        "Import numbers (one a line, or CSV)",
        query=(Param("column", "CSV column (index or header name)"),
               Param("replace", "replace the list's numbers", {"type": "boolean", "default": False})),
        body_content={"text/plain": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
        problems=(404, 413),
    ),
    ("POST", f"{API}/consents"): Doc("Record a consent", body=ConsentIn, status=201),
    ("GET", f"{API}/consents"): Doc("Every version of a number's consents, newest first",
                                    query=(Param("number", "phone number", required=True),)),
    ("POST", f"{API}/consents/revoke"): Doc("Revoke a consent", body=RevokeIn, status=201, problems=(404,)),
    ("POST", f"{API}/compliance/outbound-check"): Doc("May this number be called now?", body=OutboundCheckIn),
    ("POST", f"{API}/gdpr/erasures"): Doc(body=ErasureIn),
    ("GET", f"{API}/audit"): Doc(query=page_params(), response_schema=PAGE_SCHEMA),
    ("GET", f"{API}/postbacks/deliveries"): Doc(
        "The postback delivery log",
        query=page_params(Param("call_id"), Param("status", "", _enum(DELIVERY_STATUSES)), Param("postback_id")),
        response_schema=PAGE_SCHEMA,
    ),
    ("GET", f"{API}/postbacks"): Doc(
        "Postback configs",
        query=page_params(Param("owner_kind", "", _enum(("campaign", "publisher", "buyer"))), Param("owner_id")),
        response_schema=PAGE_SCHEMA,
    ),
    ("POST", f"{API}/postbacks"): Doc("Create a postback config", body=PostbackIn, status=201, problems=(409,),
                                      created_key="id"),
    ("GET", f"{API}/postbacks/{{key}}"): Doc("A postback config", problems=(404,)),
    ("PUT", f"{API}/postbacks/{{key}}"): Doc("Replace a postback config (the secret is kept unless given)",
                                             body=PostbackIn, problems=(404,)),
    ("PATCH", f"{API}/postbacks/{{key}}"): Doc("Merge fields into a postback config", body_content=_FREE,
                                               problems=(404,)),
    ("DELETE", f"{API}/postbacks/{{key}}"): Doc("Delete a postback config", status=204, content_type=None,
                                                problems=(404,)),
    ("GET", f"{API}/reports/summary"): Doc("The summary report", query=(*_REPORT_RANGE,
        Param("group_by", "", _enum(("campaign", "publisher", "buyer", "target", "hour", "day")), required=True),
        *_TERM_FILTERS,
    )),
    ("GET", f"{API}/reports/summary.csv"): Doc("The summary report as CSV", query=(*_REPORT_RANGE,
        Param("group_by", "", _enum(("campaign", "publisher", "buyer", "target", "hour", "day")), required=True),
        *_TERM_FILTERS,
    ), content_type="text/csv"),
    ("GET", f"{API}/reports/calls"): Doc("A page of calls with the sale-term filters", query=page_params(
        Param("since", "", _TIME), Param("until", "", _TIME), *_TERM_FILTERS, Param("caller"),
        Param("converted", "", {"type": "boolean"}), Param("disposition", "", _enum(Disposition)),
    ), response_schema=_CDR_PAGE),
    ("POST", f"{API}/conversions"): Doc("Record a conversion (buyer webhook)", body=ConversionIn, status=201,
                                        problems=(404, 409)),
    ("POST", f"{API}/ledger/deposits"): Doc("Post a buyer deposit (200 when the key was posted already)",
                                            body=DepositIn, status=201, also=_REPLAYED),
    ("POST", f"{API}/ledger/adjustments"): Doc("Post an adjustment", body=AdjustmentIn, status=201, also=_REPLAYED),
    ("POST", f"{API}/ledger/refunds"): Doc("Refund a call's sale", body=RefundIn, status=201, problems=(404, 409)),
    ("POST", f"{API}/ledger/payments"): Doc("Post a payment to a publisher", body=PaymentIn, status=201,
                                            also=_REPLAYED),
    ("GET", f"{API}/ledger/balances"): Doc(
        "Account balances", query=(Param("account", "one account"),),
        description="Each account's balance twice, with opposite signs for credit-normal accounts: `raw` is the "
                    "sum of its journal lines (debit positive), `balance` the same amount on the account's normal "
                    "side as its owner reads it. Buyers' funds, publishers' payables and exchange:revenue are "
                    "credit-normal (`balance` = -`raw`: a 100.00 deposit shows balance \"100.00\", raw "
                    "\"-100.00\"); exchange:cash is debit-normal (`balance` = `raw`).",
        response_schema=_page_of({
            "account": {"type": "string", "description": "buyer:<id>, publisher:<id>, exchange:revenue, ..."},
            "balance": _money_out("on the account's normal side (a buyer's funds, a publisher's payable)"),
            "raw": _money_out("sum of the account's lines, debit positive (-balance for credit-normal accounts)"),
            "credit_limit": _money_out("buyers only: the buyer's credit limit, null when not funds-checked",
                                       nullable=True),
            "available": _money_out("buyers only: funds plus credit"),
        }, paged=False)),
    ("GET", f"{API}/ledger/entries"): Doc("Journal entries, newest first",
                                          query=page_params(Param("account", "only lines of this account")),
                                          response_schema=PAGE_SCHEMA),
    ("GET", f"{API}/ledger/verify"): Doc("Check the cached balances against the journal"),
    ("GET", f"{API}/debug/compliance/tcpa"): Doc("May this number be called at this time (TCPA calling hours)?", query=(
        Param("number", "phone number", required=True),
        Param("at", "ISO 8601 time with a UTC offset (default: now)", {"type": "string", "format": "date-time"}),
    )),
    ("GET", OPENAPI_PATH): Doc(query=(Param("compat", "3.0: the document labelled OpenAPI 3.0.3 (for Swagger UI)",
                                            _enum(("3.0",))),)),
    ("GET", SWAGGER_PATH): Doc(content_type="text/html"),
    ("GET", SWAGGER_INITIALIZER): Doc(content_type="text/javascript"),
}


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


def _doc(route: RouteInfo) -> Doc:
    return getattr(route.handler, "openapi_doc", None) or DOCS.get((route.method, route.path)) or Doc()


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


class _Generator(GenerateJsonSchema):
    """Money fields of the marketplace models (int micros after a before-validator) as their JSON input."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        function = schema.get("function", {}).get("function")
        if function is getattr(marketplace, "_money", None):
            return _money_schema()
        return super().function_before_schema(schema)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """A money field's default (integer micros inside) as the decimal string the API reads."""
        inner: Any = schema["schema"]
        default = schema.get("default")
        money = inner.get("type") == "function-before" and inner.get("function", {}).get("function") is getattr(
            marketplace, "_money", None)
        if money and isinstance(default, int):
            return {**_money_schema(), "default": format_money(default)}
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
    public = route.path in PUBLIC_PATHS
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
    docs = [(route, _doc(route)) for route in routes]
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

    async def swagger(_request: web.Request) -> web.Response:
        """Swagger UI (served locally)."""
        html = _SWAGGER_HTML.format(static=SWAGGER_STATIC, initializer=SWAGGER_INITIALIZER)
        return web.Response(text=html, content_type="text/html")

    async def root(_request: web.Request) -> web.Response:
        """Redirects to the API docs (Swagger UI)."""
        raise web.HTTPFound(SWAGGER_PATH)

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
