"""Money end to end: SIPp calls through a real ``dce serve``, settled into the ledger, reported, posted back.

A campaign whose target converts after 2 s: a call held 3 s converts (the buyer is charged the target's revenue,
the publisher earns its payout, the exchange keeps the margin) and a call held 1 s does not. A postback on
"converted" reaches a real aiohttp receiver on loopback with a valid signature, and the summary report adds up.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.sipp import HOST, ExchangeProcess, free_port, run_sipp_uac
from tests.integration.test_marketplace_calls import api, configure
from tests.integration.test_sipp_calls import (  # noqa: F401 (pytest fixtures)
    _sipp,
    assert_ok,
    exchange_factory,
    uas_factory,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SECRET = "postback-secret-1"


class Receiver:
    """A postback receiver on loopback, in its own thread; keeps each request's query and signature header."""

    def __init__(self) -> None:
        self.port = free_port("tcp")
        self.got: list[tuple[dict[str, str], str, str]] = []  # (query, url as received, signature header)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(5)

    async def _serve(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.got.append((dict(request.query), str(request.url), request.headers.get("X-DCE-Signature", "")))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, HOST, self.port).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def balances(exchange: ExchangeProcess) -> dict[str, str]:
    body = api(exchange, "GET", "/ledger/balances")
    return {item["account"]: item["balance"] for item in body["items"]}


def test_a_call_past_the_conversion_duration_converts_moves_balances_and_posts_back(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any, receiver: Receiver) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=2)
    exchange = exchange_factory({})
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri, "revenue": "10.00",
                          "conversion_duration_s": 2}],
              payouts=[{"publisher_id": "*", "fixed": "4.00"}])
    api(exchange, "POST", "/ledger/deposits", {"buyer_id": "b1", "amount": "100.00"})
    api(exchange, "POST", "/postbacks", {"owner_kind": "campaign", "owner_id": "c1", "events": ["converted"],
                                         "url": receiver.url + "?call=[call_id]&revenue=[revenue]&payout=[payout]",
                                         "secret": SECRET})
    time.sleep(1.0)

    long = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=3500, timeout=30, name="long")
    short = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=800, timeout=30, name="short")
    assert_ok(long, exchange=exchange)
    assert_ok(short, exchange=exchange)

    calls = wait_for(lambda: [c for c in api(exchange, "GET", "/calls")["items"] if c["settled_at"]]
                     if len([c for c in api(exchange, "GET", "/calls")["items"] if c["settled_at"]]) == 2 else None)
    assert calls, "both calls must be settled within 15 s"
    converted = sorted((c["billable_s"] >= 2, c["converted"]) for c in calls)
    assert converted == [(False, False), (True, True)]
    held = balances(exchange)  # natural balances: the buyer's funds, what the publisher is owed, the margin
    assert (held["buyer:b1"], held["publisher:p1"], held["exchange:revenue"]) == ("90.00", "4.00", "6.00")
    assert api(exchange, "GET", "/ledger/verify")["ok"] is True

    got = wait_for(lambda: receiver.got)
    assert len(got) == 1, "exactly one conversion is posted back"
    query, url, signature = got[0]
    (sale,) = [c for c in calls if c["converted"]]
    assert query == {"call": sale["call_id"], "revenue": "10.00", "payout": "4.00"}
    stamp, _, mac = signature.partition(",v1=")
    expected = hmac.new(SECRET.encode(), f"{stamp.removeprefix('t=')}.{url}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)

    today = datetime.now(UTC).date()
    summary = api(exchange, "GET", f"/reports/summary?from={today - timedelta(days=1)}&to={today + timedelta(days=1)}"
                                   "&group_by=campaign")
    totals = summary["totals"]
    assert (totals["incoming"], totals["connected"], totals["converted"]) == (2, 2, 1)
    assert (totals["revenue"], totals["payout"], totals["profit"]) == ("10.00", "4.00", "6.00")


def test_a_buyer_out_of_funds_is_skipped_until_a_deposit_reaches_routing_within_a_second(
        tmp_path: Path, exchange_factory: Any, uas_factory: Any) -> None:  # noqa: F811
    callee = uas_factory("uas_answer", calls=1)
    exchange = exchange_factory({})
    configure(exchange, [{"id": "t1", "name": "Target", "destination": callee.uri, "revenue": "10.00"}])
    api(exchange, "PATCH", "/buyers/b1", {"credit_limit": "2.00"})
    api(exchange, "POST", "/ledger/deposits", {"buyer_id": "b1", "amount": "5.00"})
    time.sleep(1.0)

    refused = run_sipp_uac("uac_expect_480", exchange.sip_target, tmp_path, timeout=30, name="unfunded")
    assert_ok(refused, exchange=exchange)
    (cdr,) = api(exchange, "GET", "/calls")["items"]
    assert (cdr["disposition"], cdr["reason"]) == ("no_route", "no eligible target: 1 unfunded")

    api(exchange, "POST", "/ledger/deposits", {"buyer_id": "b1", "amount": "3.00"})  # 8.00 + 2.00 of credit
    time.sleep(1.0)
    caller = run_sipp_uac("uac_basic", exchange.sip_target, tmp_path, hold_ms=300, timeout=30, name="funded")
    assert_ok(caller, exchange=exchange)
    assert_ok(callee.stop(), exchange=exchange)
