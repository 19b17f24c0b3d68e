"""RFC 7807 problem details: the error format of every HTTP endpoint."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from dce.db import errors

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem(
    status: int, detail: str | None = None, *, title: str | None = None, **extra: Any
) -> web.Response:
    """A problem+json response; ``type`` is about:blank and ``title`` the status phrase unless given."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


class ProblemError(Exception):
    """Raise from a handler to answer with a problem+json response."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def invalid_parameter(name: str, detail: str) -> ProblemError:
    """422 for a bad query or body parameter, naming it (``invalid_params`` as in RFC 7807 §3)."""
    return ProblemError(
        422, f"invalid parameter {name!r}: {detail}", invalid_params=[{"name": name, "reason": detail}]
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTP errors (404, 405, ...), ProblemError and unhandled exceptions into problem+json."""
    try:
        return await handler(request)
    except ProblemError as exc:
        return problem(exc.status, exc.detail, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(exc.status, exc.text if exc.text and exc.text != exc.reason else None)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return problem(500, "internal error; see the server log")


T = TypeVar("T")


async def repository_call(call: Awaitable[T]) -> T:
    """Await a repository call, its errors answered as problems: not found 404, conflict 409, unknown reference 422."""
    try:
        return await call
    except errors.NotFound as exc:
        raise ProblemError(404, str(exc)) from None
    except errors.Conflict as exc:
        raise ProblemError(409, str(exc)) from None
    except errors.UnknownReference as exc:
        raise invalid_parameter(exc.field, f"no {exc.entity} {exc.key!r}") from None
