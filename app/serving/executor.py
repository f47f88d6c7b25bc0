"""A bounded executor for inference, so overload becomes a fast 503 instead of a backlog.

Torch work runs on dedicated threads (never the event loop). A semaphore counts running plus
waiting tasks; once `workers + queue` are taken, `submit` refuses immediately.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ExecutorBusy(RuntimeError):
    """All inference slots are taken; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the inference queue is full")
        self.retry_after = retry_after


class InferenceExecutor:
    def __init__(self, workers: int, queue: int, retry_after: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        self._capacity = workers + queue
        self._slots = threading.BoundedSemaphore(self._capacity)
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self.retry_after = retry_after

    @property
    def in_flight(self) -> int:
        """Running plus queued tasks: the queue-depth metric."""
        return self._in_flight

    @property
    def capacity(self) -> int:
        return self._capacity

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` on an inference thread; raise ExecutorBusy when full."""
        if not self._slots.acquire(blocking=False):
            raise ExecutorBusy(self.retry_after)
        with self._count_lock:
            self._in_flight += 1
        try:
            future: Future[T] = self._pool.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        # Release when the work ends, even if the client went away and nobody awaits it.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: object) -> None:
        with self._count_lock:
            self._in_flight -= 1
        self._slots.release()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
