"""start_eagerly: synchronous up to the first wait, then an ordinary task with the same semantics."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from dce.exchange.eager import start_eagerly


async def test_runs_synchronously_until_the_first_wait_then_finishes_as_a_task():
    trace: list[str] = []
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def flow() -> None:
        trace.append("start")
        trace.append(await queue.get())
        await asyncio.sleep(0)
        trace.append(await queue.get())

    task = start_eagerly(flow())
    assert trace == ["start"] and task is not None
    queue.put_nowait("one")
    queue.put_nowait("two")
    await asyncio.wait_for(task, 1)
    assert trace == ["start", "one", "two"]


async def test_a_coroutine_that_never_waits_needs_no_task():
    done = []

    async def quick() -> None:
        done.append(True)

    assert start_eagerly(quick()) is None and done == [True]


async def test_exceptions_reach_the_coroutine_and_the_task():
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caught = []

    async def flow() -> None:
        try:
            await future
        except ValueError as exc:
            caught.append(str(exc))
        raise KeyError("after")

    task = start_eagerly(flow())
    assert task is not None
    future.set_exception(ValueError("boom"))
    with pytest.raises(KeyError):
        await task
    assert caught == ["boom"]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    queue: asyncio.Queue[str] = asyncio.Queue()
    cleaned = []

    async def flow() -> None:
        try:
            await queue.get()
        finally:
            cleaned.append(True)

    task = start_eagerly(flow())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    queue.put_nowait("late")  # the cancelled getter is gone: the item stays for the next reader
    assert queue.get_nowait() == "late"


async def test_the_coroutine_keeps_one_context_of_its_own_across_the_first_wait():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")
    queue: asyncio.Queue[str] = asyncio.Queue()
    seen = []

    async def flow() -> None:
        token = var.set("inner")  # before the first wait: in the caller's callback
        await queue.get()
        seen.append(var.get())
        var.reset(token)  # after it, in the task: the same context, so the token is still valid
        seen.append(var.get())

    task = start_eagerly(flow())
    assert task is not None
    assert var.get() == "outer", "the eager part must not leak into the caller's context"
    queue.put_nowait("go")
    await asyncio.wait_for(task, 1)
    assert seen == ["inner", "outer"]
