"""The bounded inference executor: refuses when full, frees slots on completion and cancel."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.serving.executor import ExecutorBusy, InferenceExecutor

WAIT_S = 5.0


def blocker(started: threading.Event, release: threading.Event, value: object = None):
    """A task that reports it runs, then waits for `release` (bounded so a failure can't hang)."""

    def task() -> object:
        started.set()
        if not release.wait(WAIT_S):
            raise TimeoutError("test never released the task")
        return value

    return task


async def until(condition, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def test_runs_on_a_worker_thread_and_returns_the_result() -> None:
    executor = InferenceExecutor(workers=1, queue=0)
    try:
        main_thread = threading.get_ident()
        result = asyncio.run(executor.run(lambda a, b: (a + b, threading.get_ident()), 2, 3))
        assert result[0] == 5 and result[1] != main_thread
        assert executor.in_flight == 0
    finally:
        executor.shutdown()


def test_errors_propagate_and_free_the_slot() -> None:
    executor = InferenceExecutor(workers=1, queue=0)

    def boom() -> None:
        raise ValueError("bad image")

    async def scenario() -> None:
        with pytest.raises(ValueError, match="bad image"):
            await executor.run(boom)
        assert executor.in_flight == 0
        assert await executor.run(lambda: "next") == "next"

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()


def test_refuses_when_workers_and_queue_are_taken_then_recovers() -> None:
    executor = InferenceExecutor(workers=1, queue=1, retry_after=7)
    assert executor.capacity == 2
    release = threading.Event()
    first_started, second_started = threading.Event(), threading.Event()

    async def scenario() -> None:
        running = asyncio.ensure_future(executor.run(blocker(first_started, release, "a")))
        await until(first_started.is_set)
        queued = asyncio.ensure_future(executor.run(blocker(second_started, release, "b")))
        await until(lambda: executor.in_flight == 2)
        assert not second_started.is_set()  # one worker: the second waits in the queue

        started = time.perf_counter()
        with pytest.raises(ExecutorBusy) as info:
            await executor.run(lambda: "never")
        assert time.perf_counter() - started < 0.5  # refused at once, not queued
        assert info.value.retry_after == 7
        assert executor.in_flight == 2

        release.set()
        assert await running == "a"
        assert await queued == "b"
        assert executor.in_flight == 0
        # Every slot is usable again.
        results = await asyncio.gather(executor.run(lambda: 1), executor.run(lambda: 2))
        assert results == [1, 2]

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        executor.shutdown()


def test_cancelled_waiter_frees_a_queued_slot_at_once() -> None:
    executor = InferenceExecutor(workers=1, queue=1)
    release = threading.Event()
    first_started, second_started = threading.Event(), threading.Event()

    async def scenario() -> None:
        running = asyncio.ensure_future(executor.run(blocker(first_started, release, "a")))
        await until(first_started.is_set)
        queued = asyncio.ensure_future(executor.run(blocker(second_started, release, "b")))
        await until(lambda: executor.in_flight == 2)
        with pytest.raises(ExecutorBusy):
            await executor.run(lambda: None)

        queued.cancel()  # the client went away while its task was still queued
        with pytest.raises(asyncio.CancelledError):
            await queued
        await until(lambda: executor.in_flight == 1)
        # The freed slot takes a new task although the first one still runs.
        replacement = asyncio.ensure_future(executor.run(lambda: "replacement"))
        await until(lambda: executor.in_flight == 2)

        release.set()
        assert await running == "a"
        assert await replacement == "replacement"
        assert not second_started.is_set()  # the cancelled task never ran
        assert executor.in_flight == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        executor.shutdown()


def test_cancelled_waiter_of_a_running_task_frees_the_slot_when_the_work_ends() -> None:
    executor = InferenceExecutor(workers=1, queue=0)
    release = threading.Event()
    started = threading.Event()
    finished = threading.Event()

    def work() -> str:
        started.set()
        release.wait(WAIT_S)
        finished.set()
        return "done"

    async def scenario() -> None:
        waiter = asyncio.ensure_future(executor.run(work))
        await until(started.is_set)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # A thread cannot be interrupted: the slot stays taken while the work still runs...
        assert executor.in_flight == 1
        with pytest.raises(ExecutorBusy):
            await executor.run(lambda: None)
        # ...and is given back as soon as it ends, with nobody awaiting the result.
        release.set()
        await until(finished.is_set)
        await until(lambda: executor.in_flight == 0)
        assert await executor.run(lambda: "free") == "free"

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        executor.shutdown()
