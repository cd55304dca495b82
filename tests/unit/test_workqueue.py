"""The controller work queue (``workqueue.WorkQueue``): deduplication, one reconcile per key at a time,
retries with backoff, delayed adds, requeue on request, and stop().

Timings are tiny; the assertions are on counts and order, never on how long something took.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from vdc.workqueue import WorkQueue

TIMEOUT = 5.0


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for ``condition`` to hold (polling the loop); fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {condition}")
        await asyncio.sleep(0.002)


async def settle(seconds: float = 0.05) -> None:
    """Give the queue time to do anything it still would (used before asserting that nothing more ran)."""
    await asyncio.sleep(seconds)


@asynccontextmanager
async def running(queue: WorkQueue[str]) -> AsyncIterator[WorkQueue[str]]:
    queue.start()
    try:
        yield queue
    finally:
        await queue.stop()


class Recorder:
    """A reconcile function that records calls and can be told what to do per call."""

    def __init__(self, *, hold: float = 0.0) -> None:
        self.calls: list[str] = []
        self.count: Counter[str] = Counter()
        self.active: set[str] = set()
        self.overlaps: list[str] = []
        self.max_active = 0
        self.hold = hold
        self.results: dict[str, list[float | Exception | None]] = {}
        self.started = asyncio.Event()

    async def __call__(self, key: str) -> float | None:
        if key in self.active:
            self.overlaps.append(key)
        self.active.add(key)
        self.max_active = max(self.max_active, len(self.active))
        self.calls.append(key)
        self.count[key] += 1
        self.started.set()
        try:
            if self.hold:
                await asyncio.sleep(self.hold)
            outcomes = self.results.get(key)
            outcome = outcomes.pop(0) if outcomes else None
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.active.discard(key)


# --- deduplication and per-key exclusion ---------------------------------------------------------


async def test_a_key_added_many_times_while_queued_is_reconciled_once() -> None:
    rec = Recorder()
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=4)
    for _ in range(50):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    async with running(queue):
        await until(lambda: rec.count["a"] == 1 and rec.count["b"] == 1)
        await settle()
    assert rec.count == Counter({"a": 1, "b": 1})
    assert len(queue) == 0


async def test_keys_are_worked_in_the_order_they_were_added() -> None:
    rec = Recorder()
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=1)
    for key in ["c", "a", "b", "a", "c"]:
        queue.add(key)
    async with running(queue):
        await until(lambda: len(rec.calls) == 3)
        await settle()
    assert rec.calls == ["c", "a", "b"]


async def test_a_key_added_while_it_is_being_reconciled_runs_once_more_afterwards() -> None:
    rec = Recorder(hold=0.1)
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=4)
    async with running(queue):
        queue.add("a")
        await until(lambda: "a" in rec.active)
        for _ in range(10):
            queue.add("a")  # several changes arrive while it works: one more run covers them all
            await asyncio.sleep(0)
        await until(lambda: rec.count["a"] == 2 and not rec.active)
        await settle(0.15)
    assert rec.count["a"] == 2
    assert rec.overlaps == []  # never reconciled concurrently with itself
    assert rec.max_active == 1


async def test_different_keys_are_worked_concurrently_but_a_key_never_with_itself() -> None:
    rec = Recorder(hold=0.02)
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=4)
    keys = [f"k{i}" for i in range(8)]
    async with running(queue):
        for round_ in range(5):
            for key in keys:
                queue.add(key)
            await asyncio.sleep(0.01 * round_)
        await until(lambda: not rec.active and len(queue) == 0 and all(rec.count[k] >= 1 for k in keys))
        await settle(0.1)
    assert rec.overlaps == []
    assert 1 < rec.max_active <= 4
    assert set(rec.calls) == set(keys)


# --- failures and requeues -----------------------------------------------------------------------


async def test_a_failing_reconcile_is_retried_until_it_succeeds() -> None:
    rec = Recorder()
    rec.results["a"] = [RuntimeError("boom"), ValueError("again"), None]
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=2, max_backoff=0.01)
    async with running(queue):
        queue.add("a")
        await until(lambda: rec.count["a"] == 3)
        await settle()
    assert rec.count["a"] == 3  # no more once it succeeded


async def test_backoff_doubles_per_failure_up_to_the_maximum_and_resets_on_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recorder()
    rec.results["a"] = [RuntimeError("x")] * 6 + [None, RuntimeError("y"), None]
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=1, max_backoff=3.0)
    delays: list[float] = []
    add_after = queue.add_after

    def record(key: str, delay: float) -> None:
        delays.append(delay)
        add_after(key, 0.001)  # the delay asked for is recorded; the test does not wait for it

    monkeypatch.setattr(queue, "add_after", record)
    async with running(queue):
        queue.add("a")
        await until(lambda: rec.count["a"] == 7)
        queue.add("a")
        await until(lambda: rec.count["a"] == 9)
        await settle()
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 0.5]


async def test_one_keys_failures_do_not_delay_another_key() -> None:
    rec = Recorder()
    rec.results["bad"] = [RuntimeError("x")] * 3
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=1, max_backoff=0.05)
    async with running(queue):
        queue.add("bad")
        await until(lambda: rec.count["bad"] == 1)
        queue.add("good")
        await until(lambda: rec.count["good"] == 1)
        await until(lambda: rec.count["bad"] == 4)


async def test_a_reconcile_that_asks_for_a_delay_is_requeued() -> None:
    rec = Recorder()
    rec.results["a"] = [0.01, 0.02, 0.0, None]
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=2)
    async with running(queue):
        queue.add("a")
        await until(lambda: rec.count["a"] == 4)
        await settle(0.1)
    assert rec.count["a"] == 4


async def test_a_key_added_while_its_failure_is_handled_still_runs_again() -> None:
    rec = Recorder(hold=0.05)
    rec.results["a"] = [RuntimeError("x")]
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=1, max_backoff=60.0)
    async with running(queue):
        queue.add("a")
        await until(lambda: "a" in rec.active)
        queue.add("a")  # a new change: it must not wait out the backoff (0.5 s here)
        await until(lambda: rec.count["a"] == 2)
        assert "a" in queue._timers  # the backoff timer is still pending: this run came from the add


# --- add_after -----------------------------------------------------------------------------------


async def test_add_after_adds_the_key_later() -> None:
    rec = Recorder()
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=2)
    async with running(queue):
        queue.add_after("later", 0.15)
        queue.add("now")
        await until(lambda: rec.count["now"] == 1)
        assert rec.count["later"] == 0
        await until(lambda: rec.count["later"] == 1)
    assert rec.calls == ["now", "later"]


async def test_add_after_keeps_the_earliest_pending_time() -> None:
    rec = Recorder()
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=2)
    async with running(queue):
        queue.add_after("a", 0.02)
        queue.add_after("a", 30.0)  # later: ignored, the earlier timer stays
        queue.add_after("b", 30.0)
        queue.add_after("b", 0.02)  # earlier: replaces the later one
        await until(lambda: rec.count["a"] == 1 and rec.count["b"] == 1)
        await settle(0.1)
    assert rec.count == Counter({"a": 1, "b": 1})


async def test_add_after_of_a_queued_key_does_not_duplicate_it() -> None:
    rec = Recorder(hold=0.05)
    queue: WorkQueue[str] = WorkQueue("t", rec, workers=1)
    async with running(queue):
        queue.add("busy")
        await until(lambda: "busy" in rec.active)
        queue.add("a")
        queue.add_after("a", 0.0)  # fires while "a" is still queued behind "busy"
        await until(lambda: rec.count["a"] == 1)
        await settle(0.1)
    assert rec.count["a"] == 1


# --- stop ----------------------------------------------------------------------------------------


async def test_stop_cancels_workers_and_pending_timers() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()
    calls: list[str] = []

    async def reconcile(key: str) -> float | None:
        calls.append(key)
        if key == "forever":
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return None

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=3)
    queue.start()
    queue.add("forever")
    queue.add_after("timer", 0.05)
    await until(started.is_set)
    await asyncio.wait_for(queue.stop(), TIMEOUT)
    assert cancelled.is_set()
    assert queue._tasks == []
    await settle(0.1)
    assert calls == ["forever"]  # the timer never fired into a stopped queue
    # Nothing left running: a later add is just queued.
    queue.add("x")
    await settle(0.02)
    assert calls == ["forever"]


async def test_stop_of_a_queue_never_started_is_harmless() -> None:
    queue: WorkQueue[str] = WorkQueue("t", Recorder(), workers=2)
    await queue.stop()


async def test_workers_are_named_after_the_queue() -> None:
    queue: WorkQueue[str] = WorkQueue("vms", Recorder(), workers=3)
    async with running(queue):
        names = sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("vms-worker-"))
    assert names == ["vms-worker-0", "vms-worker-1", "vms-worker-2"]


async def test_a_cancelled_await_inside_reconcile_does_not_kill_the_worker() -> None:
    calls: list[str] = []

    async def reconcile(key: str) -> float | None:
        calls.append(key)
        if key == "a":
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()  # what run_in_executor gives when the executor drops the job
            await future
        return None

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=1)
    async with running(queue):
        queue.add("a")
        await until(lambda: calls == ["a"])
        queue.add("b")
        await until(lambda: "b" in calls, timeout=0.5)


async def test_every_failed_reconcile_is_reported_before_its_retry() -> None:
    rec = Recorder()
    rec.results["a"] = [RuntimeError("boom"), ValueError("again"), None]
    reported: list[tuple[str, str]] = []

    async def on_error(key: str, exc: Exception) -> None:
        reported.append((key, str(exc)))
        if len(reported) == 1:
            raise OSError("the reporter itself failed")  # must not stop the retries

    queue: WorkQueue[str] = WorkQueue("t", rec, workers=1, max_backoff=0.01, on_error=on_error)
    async with running(queue):
        queue.add("a")
        await until(lambda: rec.count["a"] == 3)
        await settle()
    assert reported == [("a", "boom"), ("a", "again")]
