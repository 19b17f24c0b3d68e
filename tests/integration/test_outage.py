"""PostgreSQL going away mid-test: calls keep routing on the in-memory snapshot, CDRs queue, and every one of them
is written once the database is back. The exchange reaches PostgreSQL through a TCP proxy this test can cut."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.externals import require
from tests.integration.db_proxy import CuttableProxy
from tests.integration.sipp import HOST, fetch_cdrs, http_get, run_sipp_uac
from tests.integration.test_marketplace_calls import configure
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def proxied_postgres(migrated_database_url: str) -> Iterator[tuple[CuttableProxy, str]]:
    """(a proxy this test can cut, silence and heal; the database URL through it): PostgreSQL only."""
    url = make_url(migrated_database_url)
    require(url.get_backend_name() == "postgresql", "PostgreSQL (DCE_TEST_DATABASE_URL) for the outage test")
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield proxy, url.set(host=HOST, port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.close()


def health(base: str) -> dict[str, Any]:
    """``/health`` with its details (read as the exchange's admin)."""
    status, body = http_get(f"{base}/health")
    assert status == 200, status
    return json.loads(body)


def test_calls_route_while_postgresql_is_away_and_every_cdr_is_written_after(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, proxied_postgres: Any) -> None:  # noqa: F811
    proxy, proxied = proxied_postgres
    callee = uas_factory("uas_answer")
    exchange = exchange_factory({}, database_url=proxied)
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}])
    first = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=200, timeout=30, name="before")
    assert_ok(first, exchange=exchange)

    proxy.cut()
    during = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, calls=3, rate=3, hold_ms=200,
                          timeout=30, name="during")
    assert_ok(during, calls=3, exchange=exchange)  # routed from memory: the database is not on the call path
    status = health(exchange.http_base)
    assert status["status"] == "degraded" and status["checks"]["database"] != "ok"

    proxy.restore()
    deadline = time.monotonic() + 30
    while health(exchange.http_base)["cdr_queue"] and time.monotonic() < deadline:
        time.sleep(0.5)
    cdrs = fetch_cdrs(exchange.http_base, 4)
    assert len(cdrs) == 4 and {c["disposition"] for c in cdrs} == {"answered"}


def test_a_silent_database_outage_does_not_wedge_the_writer(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, proxied_postgres: Any) -> None:  # noqa: F811
    """The database goes silent (bytes vanish, no reset) and comes back: connections open at the time never
    answer again. Every statement has a timeout, so the writer gives them up, reconnects and writes every CDR;
    without timeouts it waited on a dead connection forever."""
    proxy, proxied = proxied_postgres
    callee = uas_factory("uas_answer")
    exchange = exchange_factory({}, database_url=proxied, extra_config={
        "database": {"statement_timeout_s": 2, "connect_timeout_s": 2, "stall_after_s": 3}})
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}])
    first = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=200, timeout=30, name="before")
    assert_ok(first, exchange=exchange)
    fetch_cdrs(exchange.http_base, 1)

    proxy.silence()
    during = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, calls=3, rate=3, hold_ms=200,
                          timeout=30, name="during")
    assert_ok(during, calls=3, exchange=exchange)
    deadline = time.monotonic() + 15
    while http_get(f"{exchange.http_base}/health/ready")[0] != 503 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert http_get(f"{exchange.http_base}/health/ready")[0] == 503  # records are not being written

    proxy.heal()
    cdrs = fetch_cdrs(exchange.http_base, 4, timeout=30)
    assert len(cdrs) == 4 and {c["disposition"] for c in cdrs} == {"answered"}
    deadline = time.monotonic() + 10
    while http_get(f"{exchange.http_base}/health/ready")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert http_get(f"{exchange.http_base}/health/ready")[0] == 200


def test_cdrs_of_calls_made_while_the_database_is_away_survive_a_restart(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, proxied_postgres: Any) -> None:  # noqa: F811
    """Calls while PostgreSQL is away, then SIGTERM: the CDRs go to the spool (said after fsync); the database comes
    back, the exchange starts again and writes each of them once."""
    proxy, proxied = proxied_postgres
    callee = uas_factory("uas_answer")
    exchange = exchange_factory({}, database_url=proxied, extra_config={
        "database": {"statement_timeout_s": 2, "connect_timeout_s": 2}})
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri}])
    proxy.cut()
    during = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, calls=3, rate=3, hold_ms=200,
                          timeout=30, name="during")
    assert_ok(during, calls=3, exchange=exchange)
    assert exchange.stop(timeout=60) == 0
    log = exchange.log()
    assert "3 unwritten records spooled to" in log, log
    proxy.restore()
    exchange.start()
    cdrs = fetch_cdrs(exchange.http_base, 3, timeout=20, settle=1.0)
    assert len(cdrs) == 3 and len({c["a_leg_call_id"] for c in cdrs}) == 3
