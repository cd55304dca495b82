"""One lock per object key, so that a reconcile and a deletion of one object never overlap.

The work queue never runs two reconciles of one key at once, but kopf runs deletion handlers on its
own tasks. Without this, a reconcile in flight when the object is deleted could define a domain or a
network again right after the deletion removed it: a leak nobody owns any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyLocks(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        self._holders: dict[K, int] = {}

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s lock (created on first use, dropped when nobody holds or waits for it)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
