"""A controller work queue: keys are deduplicated, one key is never worked on twice at once,
failures are retried with per-key exponential backoff, and a reconcile may ask to be called again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from vdc.aio import cancel_and_wait
from vdc.instruments import RECONCILE_ERRORS, RECONCILE_TIME, RECONCILE_TOTAL, WORKQUEUE_ADDS, WORKQUEUE_DEPTH, child

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)

Reconcile = Callable[[K], Awaitable[float | None]]
"""Work on one key; return seconds after which to look again, or None."""

OnError = Callable[[K, Exception], Awaitable[None]]
"""Told of every failed reconcile before its retry is scheduled (to put the error in the object's status)."""


class WorkQueue(Generic[K]):
    def __init__(
        self, name: str, reconcile: Reconcile[K], *, workers: int = 8, max_backoff: float = 60.0,
        on_error: OnError[K] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self._reconcile = reconcile
        self._on_error = on_error
        self._workers = workers
        self._max_backoff = max_backoff
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._depth, self._adds = WORKQUEUE_DEPTH.labels(name), WORKQUEUE_ADDS.labels(name)
        self._depth.set(0)

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)
        self._adds.inc()
        self._depth.set(len(self._queued))

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds (an earlier pending timer for the key wins)."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + delay
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}"))

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

    def _retry(self, key: K) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
        log.info("%s: retrying %s in %.1fs (attempt %d)", self.name, key, delay, failures)
        self.add_after(key, delay)

    def _observe(self, started: float, result: str) -> None:
        child(RECONCILE_TIME, self.name).observe(time.perf_counter() - started)
        child(RECONCILE_TOTAL, self.name, result).inc()
        if result == "error":
            child(RECONCILE_ERRORS, self.name).inc()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._depth.set(len(self._queued))
            self._processing.add(key)
            started = time.perf_counter()
            try:
                again = await self._reconcile(key)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the worker itself is being stopped
                # An await inside the reconcile was cancelled (e.g. a host connection closing): a failure.
                self._observe(started, "error")
                self._retry(key)
            except Exception as exc:
                self._observe(started, "error")
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
                log.exception(
                    "%s: reconcile of %s failed (attempt %d); retrying in %.1fs", self.name, key, failures, delay
                )
                if self._on_error is not None:
                    try:
                        await self._on_error(key, exc)
                    except Exception:
                        log.exception("%s: reporting the failure of %s failed", self.name, key)
                self.add_after(key, delay)
            else:
                self._observe(started, "success" if again is None else "requeue")
                self._failures.pop(key, None)
                if again is not None:
                    self.add_after(key, again)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
