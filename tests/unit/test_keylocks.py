"""Per-key locks (``keylocks.KeyLocks``): one holder per key at a time, different keys in parallel, and
no lock kept once nobody holds or waits for it."""

from __future__ import annotations

import asyncio

from vdc.keylocks import KeyLocks


async def test_a_key_is_held_by_one_task_at_a_time_and_other_keys_run_alongside() -> None:
    locks: KeyLocks[str] = KeyLocks()
    events: list[str] = []

    async def work(key: str, name: str) -> None:
        async with locks.hold(key):
            events.append(f"{name} in")
            await asyncio.sleep(0.01)
            events.append(f"{name} out")

    await asyncio.gather(work("a", "reconcile"), work("a", "delete"), work("b", "other"))
    a = [e for e in events if not e.startswith("other")]
    assert a == ["reconcile in", "reconcile out", "delete in", "delete out"]
    assert events.index("other in") < events.index("reconcile out")  # b did not wait for a
    assert len(locks) == 0


async def test_the_lock_is_released_when_the_holder_fails() -> None:
    locks: KeyLocks[str] = KeyLocks()
    try:
        async with locks.hold("a"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with locks.hold("a"):
        pass
    assert len(locks) == 0
