"""Eager task start for Python 3.11 (3.12's ``asyncio.eager_task_factory`` does the same thing).

A call's coroutine runs synchronously, inside the datagram callback that delivered its INVITE, up to its first
real suspension: routing, media and the first outbound INVITE then leave in the same flush as the 100 Trying,
instead of waiting behind every other ready callback of the loop iteration (that hop was most of the
exchange-added delay at 300 CPS). Only the rest of the coroutine becomes a task.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first waits; return the task that finishes it (None when it already finished).

    Exceptions raised before the first wait propagate to the caller, as they would from a plain call.
    Like a task, the coroutine runs in its own copy of the caller's context, the same one before and after the
    first wait: context variables it sets (a call id, the current span) stay its own and can be reset later.
    """
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, awaited), context=context)


async def _finish(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive the rest of ``coro`` as a task would: wait for what it yielded, then resume it."""
    while True:
        if awaited is not None:
            awaited._asyncio_future_blocking = False  # as asyncio.Task does when it takes the future over
        try:
            await _Done(awaited)
        except asyncio.CancelledError as exc:  # this task was cancelled: cancel the coroutine where it waits
            try:
                awaited = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            awaited = coro.send(None)  # its future is done: the coroutine reads the result or the exception
        except StopIteration:
            return


class _Done:
    """Awaitable that completes when a future completes, whatever its outcome (its result stays unread)."""

    def __init__(self, future: Any) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, None]:
        future = self.future
        if future is None:  # a bare ``yield`` (asyncio.sleep(0)): one loop iteration
            yield
            return
        if not future.done():
            waiter = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda _f: waiter.done() or waiter.set_result(None))
            yield from waiter.__await__()
