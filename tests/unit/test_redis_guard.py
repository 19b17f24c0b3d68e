"""RedisGuard: answers within the timeout or None, one warning per outage, a back-off on an injected clock."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from dce.db.redis_guard import RedisGuard
from dce.exchange.eager import start_eagerly
from dce.http_api.metrics import ExchangeMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_failures_fall_back_warn_once_back_off_and_recover(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    guard = RedisGuard("slots", timeout_s=0.05, retry_s=1.0, clock=clock)
    tries: list[str] = []

    async def down() -> int:
        tries.append("down")
        raise RedisConnectionError("refused")

    async def up() -> int:
        tries.append("up")
        return 7

    with caplog.at_level(logging.INFO):
        assert await guard.run(down) is None
        assert await guard.run(up) is None  # backing off: not tried
        assert await guard.run(up, always=True) == 7  # best-effort writes are always tried (and end the outage)
        assert await guard.run(down) is None
        clock.now += 0.5
        assert await guard.run(down) is None and tries == ["down", "up", "down"]
        clock.now += 1.0
        assert await guard.run(down) is None
        clock.now += 1.0
        assert await guard.run(up) == 7
    assert tries == ["down", "up", "down", "down", "up"]
    assert guard.failures == 3 and not guard.failing
    messages = [r.message for r in caplog.records]
    assert sum("redis slots unavailable" in m for m in messages) == 2  # two outages, one warning each
    assert sum("redis slots available again" in m for m in messages) == 2


async def test_a_slow_answer_is_a_failure_after_the_timeout() -> None:
    guard = RedisGuard("velocity", timeout_s=0.02)

    async def slow() -> int:
        await asyncio.sleep(1.0)
        return 1

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await guard.run(slow) is None
    assert loop.time() - started < 0.5 and guard.failing


async def test_it_runs_in_a_calls_eager_first_step_outside_any_task() -> None:
    guard = RedisGuard("velocity", timeout_s=1.0)
    answers: list[int | None] = []

    async def answer() -> int:
        await asyncio.sleep(0)
        return 5

    async def first_step() -> None:
        answers.append(await guard.run(answer))

    loop = asyncio.get_running_loop()
    started: asyncio.Future[asyncio.Task[None] | None] = loop.create_future()

    def datagram_callback() -> None:  # where the exchange starts a call's coroutine
        try:
            started.set_result(start_eagerly(first_step()))
        except Exception as exc:
            started.set_exception(exc)

    loop.call_soon(datagram_callback)
    task = await started
    if task is not None:
        await task
    assert answers == [5] and not guard.failing


async def test_metrics_show_each_guards_health_and_failures_at_scrape_time() -> None:
    clock = Clock()
    slots, velocity = RedisGuard("slots", timeout_s=0.05, clock=clock), RedisGuard("velocity", timeout_s=0.05)
    metrics = ExchangeMetrics()
    metrics.redis_links_from(lambda: [slots, velocity])

    async def down() -> int:
        raise RedisConnectionError("refused")

    async def up() -> int:
        return 1

    def scraped() -> str:
        return metrics.render()[0].decode()

    assert 'dce_redis_up{component="slots"} 1.0' in scraped()
    assert 'dce_redis_failures_total{component="velocity"} 0.0' in scraped()
    await slots.run(down)
    text = scraped()
    assert 'dce_redis_up{component="slots"} 0.0' in text and 'dce_redis_up{component="velocity"} 1.0' in text
    assert 'dce_redis_failures_total{component="slots"} 1.0' in text
    clock.now += 2.0
    await slots.run(up)
    assert 'dce_redis_up{component="slots"} 1.0' in scraped()
    assert 'dce_redis_failures_total{component="slots"} 1.0' in scraped()  # a counter: the outage stays counted


def test_no_redis_metrics_without_redis() -> None:
    assert "dce_redis" not in ExchangeMetrics().render()[0].decode()
