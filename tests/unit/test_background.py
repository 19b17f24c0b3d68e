"""The background-job base: a step on a schedule or on notify, errors logged and survived, nothing left at stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dce.background import Periodic, cancel_and_wait


class Steps:
    """A step that counts its runs and fails when told to."""

    def __init__(self) -> None:
        self.runs = 0
        self.fail_with: Exception | None = None
        self.ran = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        self.ran.set()
        if self.fail_with is not None:
            raise self.fail_with


def _tasks() -> set[asyncio.Task[object]]:
    return set(asyncio.all_tasks()) - {asyncio.current_task()}


async def test_the_first_step_waits_an_interval_unless_immediately() -> None:
    later, now = Steps(), Steps()
    waits = Periodic("later", later, interval_s=60)
    runs = Periodic("now", now, interval_s=60, immediately=True)
    waits.start()
    runs.start()
    await asyncio.wait_for(now.ran.wait(), 1)
    await asyncio.sleep(0.01)
    assert (later.runs, now.runs) == (0, 1)
    await waits.stop()
    await runs.stop()


async def test_notify_runs_the_step_now_and_the_interval_keeps_ticking() -> None:
    steps = Steps()
    job = Periodic("job", steps, interval_s=60)
    job.start()
    job.notify()
    await asyncio.wait_for(steps.ran.wait(), 1)
    assert steps.runs == 1
    await job.stop()

    ticking = Steps()
    fast = Periodic("fast", ticking, interval_s=0.01)
    fast.start()
    while ticking.runs < 3:
        await asyncio.sleep(0.01)
    await fast.stop()


async def test_a_failing_step_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    steps = Steps()
    steps.fail_with = ValueError("boom")
    job = Periodic("job", steps, interval_s=0.01, immediately=True, failure="failed; again soon")
    with caplog.at_level(logging.WARNING, logger="dce.background"):
        job.start()
        while steps.runs < 2:
            await asyncio.sleep(0.01)
        assert job.running
        await job.stop()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].getMessage() == "job failed; again soon" and errors[0].exc_info is not None


async def test_an_expected_failure_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    steps = Steps()
    steps.fail_with = ConnectionResetError("lost")
    job = Periodic("listener", steps, interval_s=60, immediately=True, failure="lost its link",
                   expected=(OSError,))
    with caplog.at_level(logging.WARNING, logger="dce.background"):
        job.start()
        await asyncio.wait_for(steps.ran.wait(), 1)
        await asyncio.sleep(0)
        await job.stop()
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.WARNING, "listener lost its link (lost)", None)]


async def test_stop_leaves_no_task_and_is_idempotent() -> None:
    before = _tasks()
    job = Periodic("job", Steps(), interval_s=60)
    await job.stop()  # never started
    job.start()
    job.start()  # a second start is a no-op
    assert len(_tasks() - before) == 1
    await job.stop()
    await job.stop()
    assert _tasks() == before and not job.running


async def test_cancel_and_wait_logs_a_task_that_had_failed(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("bug")

    task = asyncio.create_task(fails(), name="buggy")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="dce.background"):
        await cancel_and_wait(task)
        await cancel_and_wait(None)
    assert task.done() and "buggy" in caplog.text


async def test_cancel_and_wait_lets_the_callers_cancellation_through() -> None:
    stubborn_started = asyncio.Event()

    async def stubborn() -> None:
        stubborn_started.set()
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # takes its time to end
                return

    inner = asyncio.create_task(stubborn())
    await stubborn_started.wait()
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait([inner])
