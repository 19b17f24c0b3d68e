"""How a handler documents itself: ``@describe(...)`` puts a :class:`Doc` on it, and :mod:`dce.http_api.openapi`
reads it (with the handler's docstring and its ``require`` mark) when it writes the OpenAPI document.

The body of an operation is the pydantic model the handler validates it with (``read_model(request, Model)``), so
what is documented is what is accepted; the schema helpers here describe answers and query parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from dce.http_api.money import MONEY_PATTERN

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Doc:
    """What the route table and the handler's docstring cannot tell about an operation."""

    summary: str | None = None  # default: the docstring's first line
    description: str | None = None  # default: the docstring
    body: type[BaseModel] | None = None  # the JSON body, validated by this model
    body_content: Mapping[str, Any] | None = None  # a raw requestBody "content" (non-JSON or free-form bodies)
    query: Sequence[Param] = ()
    status: int = 200  # the success status
    also: Mapping[int, str] = field(default_factory=dict)  # further success statuses (same body): their meaning
    content_type: str | None = "application/json"  # of the success answer; None: no body (e.g. 204)
    response_schema: Mapping[str, Any] | None = None
    problems: Sequence[int] = ()  # further problem statuses the operation answers
    created_key: str | None = None  # a create: the answer's field naming the new item (links to the item's routes)


def describe(
    summary: str | None = None,
    *,
    description: str | None = None,
    body: type[BaseModel] | None = None,
    body_content: Mapping[str, Any] | None = None,
    query: Sequence[Param] = (),
    status: int = 200,
    also: Mapping[int, str] | None = None,
    content_type: str | None = "application/json",
    response_schema: Mapping[str, Any] | None = None,
    problems: Sequence[int] = (),
    created_key: str | None = None,
) -> Callable[[H], H]:
    """Put a :class:`Doc` on a handler: the one place an operation is documented."""
    doc = Doc(summary=summary, description=description, body=body, body_content=body_content, query=query,
              status=status, also=also or {}, content_type=content_type, response_schema=response_schema,
              problems=problems, created_key=created_key)

    def mark(handler: H) -> H:
        handler.openapi_doc = doc  # type: ignore[attr-defined]
        return handler

    return mark


def handler_doc(handler: Any) -> Doc:
    """The :class:`Doc` :func:`describe` put on ``handler`` (an empty one when none)."""
    return getattr(handler, "openapi_doc", None) or Doc()


# ------------------------------------------------------------------------------------------- schema helpers

PAGE_SCHEMA: Mapping[str, Any] = {"$ref": "#/components/schemas/Page"}  # {items, total, limit, offset}
FREE_JSON: Mapping[str, Any] = {"application/json": {"schema": {"type": "object"}}}  # a free-form JSON body
TIME: Mapping[str, Any] = {"type": "string",
                           "description": "ISO 8601 time with a zone, or a date YYYY-MM-DD (UTC midnight)"}


def money_out(description: str, *, nullable: bool = False) -> dict[str, Any]:
    """The schema of a money field in an answer: a decimal string of currency units."""
    return {"type": ["string", "null"] if nullable else "string", "pattern": MONEY_PATTERN,
            "description": f'{description}; a decimal string of currency units, like "12.50"'}


def page_of(properties: Mapping[str, Any], *, paged: bool = True) -> dict[str, Any]:
    """An answer ``{"items": [{properties...}]}``; ``paged``: a :data:`PAGE_SCHEMA` (total, limit, offset too)."""
    items = {"items": {"type": "array", "items": {"type": "object", "properties": dict(properties)}}}
    if paged:
        return {"allOf": [dict(PAGE_SCHEMA), {"type": "object", "properties": items}]}
    return {"type": "object", "properties": items, "required": ["items"]}


def enum_schema(values: Any) -> dict[str, Any]:
    """A string parameter taking one of ``values``."""
    return {"type": "string", "enum": [str(v) for v in values]}


def id_params(*names: str) -> tuple[Param, ...]:
    """``?campaign_id=``-style filters: only the rows of this one."""
    return tuple(Param(name, f"only this {name.removesuffix('_id')}") for name in names)
