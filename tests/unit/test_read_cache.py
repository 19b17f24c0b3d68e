"""The read cache of the side API: lifetimes on an injected clock, invalidation (no stale answer after a write),
shared computations, what is never stored."""

from __future__ import annotations

import asyncio

from aiohttp import web

from dce.http_api.read_cache import ResponseCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Answers ``{"n": <call number>}``; ``gate`` holds each computation until set."""

    def __init__(self, status: int = 200) -> None:
        self.calls = 0
        self.status = status
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> web.Response:
        self.calls += 1
        n = self.calls
        await self.gate.wait()
        return web.json_response({"n": n}, status=self.status)


def body(response: web.Response) -> bytes:
    assert isinstance(response.body, bytes)
    return response.body


async def test_an_answer_lives_ttl_from_when_its_computation_started() -> None:
    clock, source = Clock(), Source()
    cache = ResponseCache(2.0, clock=clock)
    first = await cache.get("k", source)
    assert body(first) == b'{"n": 1}' and first.headers["Content-Type"] == "application/json; charset=utf-8"
    clock.now += 1.9
    again = await cache.get("k", source)
    assert body(again) == b'{"n": 1}' and again is not first  # a fresh response object per request
    assert (await cache.get("other", source)).body == b'{"n": 2}'
    clock.now += 0.1  # 2.0 s after the first computation started
    assert body(await cache.get("k", source)) == b'{"n": 3}'
    assert (cache.hits, cache.misses, source.calls) == (1, 3, 3)


async def test_ttl_zero_is_off_and_cache_control_is_added_when_asked() -> None:
    source = Source()
    off = ResponseCache(0)
    assert [body(await off.get("k", source)) for _ in range(2)] == [b'{"n": 1}', b'{"n": 2}']
    assert len(off) == 0
    marked = ResponseCache(5.0, cache_control=True)
    response = await marked.get("k", source)
    assert response.headers["Cache-Control"] == "private, max-age=5"
    assert (await marked.get("k", source)).headers["Cache-Control"] == "private, max-age=5"
    assert "Cache-Control" not in (await ResponseCache(5.0).get("k", source)).headers


async def test_concurrent_misses_share_one_computation() -> None:
    source = Source()
    source.gate.clear()
    cache = ResponseCache(1.0)
    waiting = [asyncio.create_task(cache.get("k", source)) for _ in range(5)]
    await asyncio.sleep(0)
    source.gate.set()
    answers = await asyncio.gather(*waiting)
    assert source.calls == 1 and {body(a) for a in answers} == {b'{"n": 1}'}
    assert len({id(a) for a in answers}) == 5


async def test_a_client_going_away_does_not_cancel_the_shared_computation() -> None:
    source = Source()
    source.gate.clear()
    cache = ResponseCache(1.0)
    leader = asyncio.create_task(cache.get("k", source))
    await asyncio.sleep(0)
    follower = asyncio.create_task(cache.get("k", source))
    await asyncio.sleep(0)
    leader.cancel()
    source.gate.set()
    assert body(await follower) == b'{"n": 1}' and source.calls == 1
    assert body(await cache.get("k", source)) == b'{"n": 1}'  # and it was stored


async def test_no_answer_computed_before_an_invalidation_is_served_after_it() -> None:
    source = Source()
    cache = ResponseCache(60.0)
    assert body(await cache.get("k", source)) == b'{"n": 1}'
    cache.invalidate()  # a write went through
    assert body(await cache.get("k", source)) == b'{"n": 2}'

    # a read under way when the write lands: its (old) answer goes to the reader that asked before the write,
    # but a read arriving after the write does not join it, and it is not stored
    source.gate.clear()
    cache.invalidate()
    before = asyncio.create_task(cache.get("k", source))
    await asyncio.sleep(0)
    cache.invalidate()
    after = asyncio.create_task(cache.get("k", source))
    await asyncio.sleep(0)
    source.gate.set()
    assert (body(await before), body(await after)) == (b'{"n": 3}', b'{"n": 4}')
    assert body(await cache.get("k", source)) == b'{"n": 4}'


async def test_errors_and_other_statuses_are_never_stored() -> None:
    failing = ResponseCache(60.0)

    async def boom() -> web.Response:
        raise RuntimeError("database down")

    for _ in range(2):
        try:
            await failing.get("k", boom)
        except RuntimeError as exc:
            assert str(exc) == "database down"
        else:
            raise AssertionError("the error must reach the caller")
    assert len(failing) == 0

    missing = Source(status=404)
    missing.gate.clear()
    cache = ResponseCache(60.0)
    first, second = (asyncio.create_task(cache.get("k", missing)) for _ in range(2))
    await asyncio.sleep(0)
    missing.gate.set()
    answers = [await first, await second]
    assert [a.status for a in answers] == [404, 404] and answers[0] is not answers[1]
    assert len(cache) == 0 and missing.calls == 2


async def test_entries_are_bounded() -> None:
    clock, source = Clock(), Source()
    cache = ResponseCache(10.0, max_entries=3, clock=clock)
    for key in "abc":
        await cache.get(key, source)
    clock.now += 20  # all expired
    await cache.get("d", source)
    assert len(cache) == 1
    for key in "efg":
        await cache.get(key, source)
    assert len(cache) == 3
    assert body(await cache.get("g", source)) == b'{"n": 7}'  # the newest stays


async def test_bodies_are_bounded_in_bytes() -> None:
    source = Source()
    cache = ResponseCache(10.0, max_bytes=20)  # each body is 8 bytes: {"n": 1}
    for key in "abc":
        await cache.get(key, source)
    assert len(cache) == 2 and cache.bytes == 16
    assert body(await cache.get("c", source)) == b'{"n": 3}'  # kept, "a" went
    assert body(await cache.get("a", source)) == b'{"n": 4}'
    cache.invalidate()
    assert (len(cache), cache.bytes) == (0, 0)
    tiny = ResponseCache(10.0, max_bytes=4)
    await tiny.get("k", source)
    assert len(tiny) == 0  # larger than the whole budget: not stored
