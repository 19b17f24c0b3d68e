"""Background jobs: one shape for every task a service starts, wakes, and cancels at stop.

A :class:`Periodic` job runs an async ``step`` every ``interval_s`` (or at once on :meth:`Periodic.notify`);
a failing step is logged and tried again at the next tick, never fatal. :func:`cancel_and_wait` ends any task
and waits for it, so a stopped service leaves nothing running. Standard library only: ``db/`` and
``exchange/`` both build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Cancel ``task`` (None: nothing) and wait until it has ended. An error it had ended with is logged, not
    raised; a cancellation of the caller still propagates."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("task %s had failed: %r", task.get_name(), error, exc_info=error)


class Periodic:
    """Runs ``await step()`` every ``interval_s`` from :meth:`start` until :meth:`stop`.

    ``immediately``: the first step runs at start, else one interval later. :meth:`notify` (sync, cheap) cuts
    the current wait short. A step that raises is logged (``failure`` says what failed and what happens next;
    exceptions in ``expected`` log one WARNING line, others a traceback) and the job carries on.
    """

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], *, interval_s: float,
                 immediately: bool = False, failure: str = "failed; retrying at the next tick",
                 expected: tuple[type[Exception], ...] = ()) -> None:
        self.name = name
        self.interval_s = interval_s
        self._step = step
        self._immediately = immediately
        self._failure = failure
        self._expected = expected
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start the job (a second start while running is a no-op)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    def notify(self) -> None:
        """Run the step as soon as possible."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the job and wait until it has ended (a no-op when not running)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def __aenter__(self) -> Periodic:
        """Start the job; it stops when the block (or an exit stack holding it) ends."""
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        if not self._immediately:
            await self._pause()
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except self._expected as exc:
                log.warning("%s %s (%s)", self.name, self._failure, exc)
            except Exception:
                log.exception("%s %s", self.name, self._failure)
            await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.interval_s)
        self._wake.clear()
