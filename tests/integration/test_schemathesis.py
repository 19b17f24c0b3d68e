"""Schemathesis against the OpenAPI document of a real ``dce serve``: no 5xx, every error is problem+json, every
answer is one the document lists, with the documented content type and schema.

One ``dce serve`` subprocess (auth on, a bootstrap admin key sent with every request so the handlers are reached,
not just the auth middleware's 401) on a migrated database: SQLite, or PostgreSQL when ``DCE_TEST_DATABASE_URL`` is
set. Schemathesis loads ``/api/openapi.json`` from its socket and runs each operation (WebSocket routes aside)
through its coverage phase (boundary and invalid values of every parameter and body field) and its fuzzing phase
(valid and invalid data), with a fixed seed so a CI failure reproduces. Then its stateful phase: sequences that
follow the document's links from each create to the item it made (create, read, change, delete, read again), with
the stateful checks (a deleted item stays gone; a created one can be read).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.engine import Status
from schemathesis.engine import events as engine_events
from schemathesis.engine.run import PhaseName
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from dce.bidding.live import LiveBidding
from dce.db.engine import create_engine
from dce.http_api.app import build_app
from dce.http_api.metrics import ExchangeMetrics
from dce.http_api.openapi import OPENAPI_PATH, build_openapi
from dce.http_api.problems import PROBLEM_CONTENT_TYPE
from tests.databases import postgres_database, postgres_server_url, sqlite_url
from tests.integration.sipp import ExchangeProcess

pytestmark = pytest.mark.integration

ADMIN_KEY = "schemathesis-bootstrap-admin-key-0123456789"
# per operation, fuzzing phase (the coverage phase adds its own deterministic cases); more for a deeper run
MAX_EXAMPLES = int(os.environ.get("DCE_SCHEMATHESIS_EXAMPLES", "25"))
STATEFUL_SCENARIOS = int(os.environ.get("DCE_SCHEMATHESIS_SCENARIOS", "40"))
SEED = 20260601


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExchangeProcess]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    with ExitStack() as stack:
        server = postgres_server_url()
        url = stack.enter_context(postgres_database(server)) if server else sqlite_url(workdir)
        process = ExchangeProcess(workdir=workdir, database_url=url, log_level="WARNING", extra_config={
            "auth": {"enabled": True, "secret": "schemathesis-jwt-secret-0123456789abcdef",
                     "bootstrap_admin_key": ADMIN_KEY},
        })
        stack.enter_context(process)
        yield process
        log = process.log()  # a crash that no answer showed (e.g. in a reload the API triggered) is a failure too
        assert "Traceback" not in log, f"dce serve logged a traceback:\n{log}"


def _config(*, stateful: bool = False) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "headers": {"X-API-Key": ADMIN_KEY},
        "generation": {
            "mode": "all",  # valid and invalid data
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",  # no .hypothesis example database: every run is the same run
            "with-security-parameters": False,  # the admin key above, not generated credentials
        },
        "phases": {"examples": {"enabled": False}, "stateful": {"enabled": stateful}},
    })


def _document() -> dict[str, Any]:
    """The document ``dce serve`` serves, built here at collection so that every operation is a test item of its
    own; :func:`test_served_document_is_the_one_tested` checks the running server serves exactly this. (Loading it
    from the server through ``schemathesis.pytest.from_fixture`` is what schemathesis offers for that, but its 4.32
    lazy loader sets ``Node._nodeid``, which pytest 9.2 no longer has.)"""
    app = build_app(engine=create_engine("sqlite+aiosqlite://"), metrics=ExchangeMetrics(), live_bidding=LiveBidding())
    return json.loads(json.dumps(build_openapi(app)))


DOCUMENT = _document()


schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config()).exclude(path_regex=r"^/ws/")


@schemathesis.check
def problem_json_errors(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx answer is an RFC 7807 problem with the response's status."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(PROBLEM_CONTENT_TYPE), f"{response.status_code} answered as {content_type!r}"
    body = json.loads(response.content)
    assert body.get("status") == response.status_code and body.get("title"), body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    problem_json_errors,
]


def test_served_document_is_the_one_tested(exchange: ExchangeProcess) -> None:
    assert exchange.get_json(OPENAPI_PATH) == DOCUMENT


# pytest 9.2 builds a test's node id from its original name and its parametrization only, so the items
# schemathesis makes per operation (named test_api_conforms[GET /path]) would all share one id and a failure would
# not say which operation broke. Parametrized, schemathesis passes the operation's name on as the original name:
# each operation gets its own id, test_api_conforms[GET /api/v1/calls][checks] (select some: -k "GET and calls").
@schema.parametrize()
@pytest.mark.parametrize("checks", [CHECKS], ids=["checks"])
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, print_blob=True)
def test_api_conforms(case: Case, checks: list[Any], exchange: ExchangeProcess) -> None:
    response = case.call(base_url=exchange.http_base, timeout=30)
    case.validate_response(response, checks=checks)


def test_each_operation_is_a_test_of_its_own(request: pytest.FixtureRequest) -> None:
    """One test id per operation, naming it (a failure says which operation broke)."""
    ids = [item.nodeid for item in request.session.items if "::test_api_conforms" in item.nodeid]
    if not ids:
        pytest.skip("no test_api_conforms item selected in this run")
    assert len(ids) == len(set(ids)), "schemathesis cases share test ids"
    assert all(re.search(r"::test_api_conforms\[(GET|POST|PUT|PATCH|DELETE) /[^\]]*\]\[checks\]$", nodeid)
               for nodeid in ids), ids[:5]



STATEFUL_CHECKS = [*CHECKS, use_after_free, ensure_resource_availability]


def test_the_document_links_creates_to_their_items() -> None:
    links = DOCUMENT["paths"]["/api/v1/lists"]["post"]["responses"]["201"]["links"]
    assert links["get_list"] == {"operationId": "get_list", "parameters": {"path.id": "$response.body#/id"},
                                 "description": "GET /api/v1/lists/{id} of the item just created"}
    assert {"add_numbers", "delete_list", "remove_number"} <= links.keys()
    for collection in ("campaigns", "buyers", "targets", "publishers", "postbacks", "auth/api-keys", "auth/users"):
        assert DOCUMENT["paths"][f"/api/v1/{collection}"]["post"]["responses"]["201"]["links"], collection


def test_stateful_sequences_conform(exchange: ExchangeProcess) -> None:
    """Schemathesis's own engine runs the stateful phase (it copes with a server whose state outlives a scenario,
    which hypothesis's replay of a failing scenario does not): every scenario passes the stateful checks."""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": exchange.http_base,
        "headers": {"X-API-Key": ADMIN_KEY},
        "generation": {"mode": "all", "max-examples": STATEFUL_SCENARIOS, "deterministic": True,
                       "database": "none", "with-security-parameters": False},
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False},
                   "fuzzing": {"enabled": False}, "stateful": {"enabled": True, "max-steps": 6}},
    })
    stateful = schemathesis.openapi.from_dict(DOCUMENT, config=config).exclude(path_regex=r"^/ws/")
    transitions, scenarios, failures = 0, 0, []
    for event in schemathesis.engine.from_schema(stateful).execute():
        if isinstance(event, engine_events.PhaseStarted) and event.phase.name == PhaseName.STATEFUL_TESTING:
            transitions = event.payload.transitions_selected if event.payload else 0
        elif isinstance(event, engine_events.ScenarioFinished) and event.phase == PhaseName.STATEFUL_TESTING:
            scenarios += 1
            failures += [_describe(event.recorder, case_id, check) for case_id, checks in event.recorder.checks.items()
                         for check in checks if check.name in STATEFUL_CHECK_NAMES and check.status != Status.SUCCESS]
        elif isinstance(event, engine_events.NonFatalError | engine_events.FatalError):
            failures.append(f"{type(event).__name__}: {getattr(event, 'info', event)}")
    assert transitions > 0 and scenarios > 0, (transitions, scenarios)
    assert not failures, "\n".join(failures[:10])


STATEFUL_CHECK_NAMES = frozenset(check.__name__ for check in STATEFUL_CHECKS)


def _describe(recorder: Any, case_id: str, check: Any) -> str:
    node = recorder.cases.get(case_id)
    where = f"{node.value.method} {node.value.formatted_path}" if node is not None else case_id
    return f"{where}: {check.name}: {check.failure_info.failure if check.failure_info else check.status}"


def _response(status: int, content_type: str, body: bytes) -> Response:
    request = requests.Request("GET", "http://127.0.0.1/").prepare()
    return Response(status, {"content-type": [content_type]}, body, request, elapsed=0.0, verify=True)


def test_problem_json_check_can_fail() -> None:
    problem = json.dumps({"type": "about:blank", "title": "Not Found", "status": 404}).encode()
    assert problem_json_errors(None, _response(404, PROBLEM_CONTENT_TYPE, problem), None)  # type: ignore[arg-type]
    assert problem_json_errors(None, _response(200, "text/plain", b"ok"), None) is None  # type: ignore[arg-type]
    for bad in (_response(404, "text/plain", b"404: Not Found"), _response(409, PROBLEM_CONTENT_TYPE, problem)):
        with pytest.raises(AssertionError):
            problem_json_errors(None, bad, None)  # type: ignore[arg-type]
