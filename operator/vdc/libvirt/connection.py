"""One libvirt connection per host: opened off the event loop, watched, reconnected with backoff.

libvirt events (domain lifecycle, connection close) are dispatched on the operator's asyncio loop
through ``libvirtaio``; every blocking libvirt call runs in the host's own small thread pool. Each connection
keeps the UUIDs of the host's domains (``vdc.libvirt.domain_index``): listed when it opens, kept by the
lifecycle events, forgotten when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import libvirt

from vdc.aio import cancel_and_wait
from vdc.instruments import LIBVIRT_CALL_DURATION, LIBVIRT_CALL_ERRORS, child
from vdc.libvirt.domain_index import DomainIndex, list_domains
from vdc.libvirt.errors import HostUnreachable, LibvirtFailure, connection_alive, translate

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_SECONDS = (0.5, 1, 2, 5, 10, 30)
CALL_WORKERS = 4
LONG_CALL_WORKERS = 16
"""Threads for long calls (live migrations) per host: more than any migration policy lets run at once."""
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TIMEOUT_SECONDS = 15.0
"""A host that does not answer a heartbeat for this long is lost (as libvirt's keepalive would say)."""
OPEN_TIMEOUT_SECONDS = 30.0
CLOSE_WAIT_SECONDS = 60.0
"""How long closing a lost connection waits for the calls still running on it."""


class _LostDuringCall(HostUnreachable):
    """The connection was found lost while a call waited on it (already marked lost: nothing to add)."""


_event_impl_lock = threading.Lock()
_event_impl_loop: asyncio.AbstractEventLoop | None = None


def register_event_loop() -> None:
    """Dispatch libvirt events on the running loop. Once per process (libvirt allows one impl)."""
    global _event_impl_loop
    loop = asyncio.get_running_loop()
    with _event_impl_lock:
        if _event_impl_loop is None:
            import libvirtaio

            libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
            # Errors reach us as exceptions; libvirt's default handler would also print each to stderr.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _event_impl_loop = loop
        elif _event_impl_loop is not loop:
            raise RuntimeError("libvirt events are already bound to another event loop")


@dataclass(frozen=True)
class DomainEvent:
    """A lifecycle event of one domain on one host (libvirt's VIR_DOMAIN_EVENT_* and detail)."""

    host: str
    uuid: str
    name: str
    event: int
    detail: int


@dataclass(frozen=True)
class PoolEvent:
    """A lifecycle event of a storage pool or a network on one host (VIR_*_EVENT_*)."""

    host: str
    name: str
    event: int
    kind: str = "pool"
    """"pool" or "network"."""


DomainEventHandler = Callable[[DomainEvent], None]
PoolEventHandler = Callable[[PoolEvent], None]
ChangeHandler = Callable[[str], None]


class HostConnection:
    """The shared connection to one host. ``call`` runs a function with the live ``virConnect``."""

    def __init__(
        self,
        name: str,
        uri: str,
        *,
        on_domain_event: DomainEventHandler | None = None,
        on_change: ChangeHandler | None = None,
        on_pool_event: PoolEventHandler | None = None,
    ) -> None:
        self.name = name
        self.uri = uri
        self._on_domain_event = on_domain_event
        self._on_pool_event = on_pool_event
        self._on_change = on_change
        self._conn: libvirt.virConnect | None = None
        self._retired: libvirt.virConnect | None = None
        """A connection found lost, not closed yet (calls may still run on it)."""
        self._executor = ThreadPoolExecutor(max_workers=CALL_WORKERS, thread_name_prefix=f"libvirt-{name}")
        self._long_executor = ThreadPoolExecutor(
            max_workers=LONG_CALL_WORKERS, thread_name_prefix=f"libvirt-{name}-long"
        )
        self._lost = asyncio.Event()
        self._waiters: set[asyncio.Future[None]] = set()
        """The calls waiting in :meth:`_unless_lost`: woken when the connection is found lost."""
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._callback_ids: list[int] = []
        self._pool_callback_ids: list[int] = []
        self._network_callback_ids: list[int] = []
        self.last_error: str | None = None
        self._retry = asyncio.Event()
        self.connected_since: datetime | None = None
        self.last_seen: datetime | None = None
        self._domains: DomainIndex | None = None
        """The current connection's index of its domains (None while there is none)."""

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def holds_domain(self, uuid: str) -> bool | None:
        """Whether the host has a domain with this UUID, from the connection's index of its domains, with no
        call; None when that is not known (not connected, or the index not listed yet). It lags libvirt
        by the event latency (see ``vdc.libvirt.domain_index``): a "yes" that must be exact is confirmed by
        a lookup."""
        index = self._domains
        if self._conn is None or index is None:
            return None
        return index.holds(uuid)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep_connected(), name=f"libvirt-connection-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._long_executor.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Callable[[libvirt.virConnect], T], *, long_running: bool = False) -> T:
        """Run ``fn(conn)`` off the event loop; libvirt errors come out as ours. ``long_running`` (a live
        migration: minutes) runs on a thread of its own, not one of the few the host's calls share."""
        conn = self._conn
        if conn is None:
            raise HostUnreachable(f"host {self.name} is not connected: {self.last_error or 'connecting'}")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self._in_flight += 1  # the connection is not closed under a call (libvirt-python would crash)
        self._idle.clear()
        future = loop.run_in_executor(self._long_executor if long_running else self._executor, fn, conn)
        future.add_done_callback(self._call_returned)  # counted until the thread is out of libvirt
        try:
            if not long_running:  # a migration's outcome is libvirt's to say, however long it takes
                await self._unless_lost(future)
            result = await future
        except _LostDuringCall:
            raise
        except libvirt.libvirtError as exc:
            child(LIBVIRT_CALL_ERRORS, self.name).inc()
            failure = translate(exc)
            if isinstance(failure, HostUnreachable) or not connection_alive(conn):
                self._mark_lost(str(failure))
                raise HostUnreachable(f"host {self.name}: {failure}", code=failure.code) from exc
            raise failure from exc
        except LibvirtFailure as failure:  # ``fn`` translated the error itself: the connection may be gone too
            child(LIBVIRT_CALL_ERRORS, self.name).inc()
            if isinstance(failure, HostUnreachable) or not connection_alive(conn):
                self._mark_lost(str(failure))
                if not isinstance(failure, HostUnreachable):
                    raise HostUnreachable(f"host {self.name}: {failure}", code=failure.code) from failure
            raise
        finally:
            child(LIBVIRT_CALL_DURATION, self.name).observe(time.perf_counter() - started)
        self.last_seen = datetime.now(UTC)
        return result

    def _call_returned(self, _future: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def _unless_lost(self, future: asyncio.Future[Any]) -> None:
        """Wait for ``future`` unless the connection is found lost first (the heartbeat, the close callback):
        then the caller hears HostUnreachable at once, not when a hung host resumes. The thread stays in
        libvirt until it returns (the connection is not closed under it)."""
        if not self._lost.is_set():  # one plain future woken by either (a task per call cost more than the call)
            waiter = asyncio.get_running_loop().create_future()
            future.add_done_callback(functools.partial(_wake, waiter))
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        if not future.done():
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # its outcome is nobody's now
            raise _LostDuringCall(f"host {self.name}: connection lost during the call: {self.last_error}")

    def _mark_lost(self, reason: str) -> None:
        if self._conn is not None:
            log.warning("host %s: connection lost: %s", self.name, reason)
            # No new call on a dead connection from now on (libvirt's remote driver is fragile there);
            # it is closed once the calls already on it have returned.
            self._retired, self._conn = self._conn, None
        self._forget_domains()
        self.last_error = reason
        self._lost.set()
        for waiter in self._waiters:
            _wake(waiter)

    async def _heartbeat(self, conn: libvirt.virConnect) -> None:
        """Ask the host something cheap every few seconds on a thread of its own; no answer in time: lost."""
        loop = asyncio.get_running_loop()
        beat = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"libvirt-heartbeat-{self.name}")
        try:
            while not self._lost.is_set():
                await asyncio.sleep(HEARTBEAT_SECONDS)
                try:
                    await asyncio.wait_for(loop.run_in_executor(beat, conn.getLibVersion), HEARTBEAT_TIMEOUT_SECONDS)
                except TimeoutError:
                    self._mark_lost(f"no answer for {HEARTBEAT_TIMEOUT_SECONDS:.0f}s")
                except libvirt.libvirtError as exc:
                    if not connection_alive(conn):
                        self._mark_lost(str(translate(exc)))
        finally:
            beat.shutdown(wait=False)

    async def _keep_connected(self) -> None:
        attempt = 0
        while True:
            try:
                await self._open()
                attempt = 0
                assert self._conn is not None
                heartbeat = asyncio.create_task(self._heartbeat(self._conn), name=f"libvirt-heartbeat-{self.name}")
                try:
                    await self._list_domains()  # under the heartbeat: a host hung meanwhile is found lost
                    self._notify_change()
                    await self._lost.wait()
                finally:
                    await cancel_and_wait(heartbeat)
            except LibvirtFailure as exc:
                self.last_error = str(exc)
                log.info("host %s: cannot connect to %s: %s", self.name, self.uri, exc)
            await self._close()
            self._notify_change()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry.wait(), BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
            self._retry.clear()
            attempt += 1

    def retry_now(self) -> None:
        """Try to connect again at once, not after the backoff (say, the host was just powered on)."""
        if self._conn is None:
            self._retry.set()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        # A fresh pool per connection: calls blocked on a hung host's old connection keep their threads.
        self._executor = ThreadPoolExecutor(max_workers=CALL_WORKERS, thread_name_prefix=f"libvirt-{self.name}")
        try:
            conn = await asyncio.wait_for(
                loop.run_in_executor(self._executor, libvirt.open, self.uri), OPEN_TIMEOUT_SECONDS
            )
        except libvirt.libvirtError as exc:
            raise HostUnreachable(str(translate(exc)), code=exc.get_error_code()) from exc
        except TimeoutError:
            raise HostUnreachable(f"no answer within {OPEN_TIMEOUT_SECONDS:.0f}s") from None
        self._lost.clear()
        # libvirt's client keepalive is off: when it closes a connection to a hung host under calls blocked
        # on it, libvirt 9's remote client crashes the process as the host resumes (seen with 2+ threads).
        # Our heartbeat finds the host lost instead and leaves the blocked calls to return on their own.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(-1, 0)
        conn.registerCloseCallback(self._closed, None)
        # Subscribed before the domains are listed (``_list_domains``): no change falls between the two.
        index = DomainIndex()
        try:
            self._callback_ids.append(
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, index)
            )
        except libvirt.libvirtError:
            if self._on_domain_event is not None:
                raise
            index.forget()  # no events: the host is asked each time instead
        self._domains = index
        if self._on_pool_event is not None:
            with contextlib.suppress(libvirt.libvirtError):  # not every driver has pool events
                self._pool_callback_ids.append(
                    conn.storagePoolEventRegisterAny(
                        None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, self._pool_lifecycle, None
                    )
                )
            with contextlib.suppress(libvirt.libvirtError):
                self._network_callback_ids.append(
                    conn.networkEventRegisterAny(
                        None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, self._network_lifecycle, None
                    )
                )
        self._conn = conn
        self.last_error = None
        self.connected_since = self.last_seen = datetime.now(UTC)
        log.info("host %s: connected to %s", self.name, self.uri)

    async def _list_domains(self) -> None:
        """List the new connection's domains into its index (the events since the subscription go over the
        listing). Left unknown when that fails: the host is asked each time instead, as without an index."""
        index = self._domains
        if index is None or index.known:
            return
        started = time.perf_counter()
        try:
            active, persistent = await self.call(list_domains)
        except LibvirtFailure as exc:  # a lost connection is marked so by ``call``
            log.warning("host %s: cannot list its domains (asked one by one instead): %s", self.name, exc)
            return
        index.listed(active, persistent)
        log.debug("host %s: domains listed in %.3fs: %d active, %d defined", self.name, time.perf_counter() - started,
                  len(active), len(persistent))  # fmt: skip

    def _forget_domains(self) -> None:
        index, self._domains = self._domains, None
        if index is not None:
            index.forget()

    async def _close(self) -> None:
        conn, self._conn = self._conn or self._retired, None  # no new call gets it from here on
        self._retired = None
        self._forget_domains()
        if conn is None:
            return
        # Calls already running hold the virConnect: closing it under them frees what they use (a crash
        # inside libvirt-python). On a dead connection they fail soon (keepalive); one that never returns
        # leaves the connection unclosed rather than the operator crashed.
        try:
            await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("host %s: %d call(s) still running after %.0fs; connection left open", self.name,
                        self._in_flight, CLOSE_WAIT_SECONDS)  # fmt: skip
            return
        callback_ids, self._callback_ids = self._callback_ids, []
        pool_callback_ids, self._pool_callback_ids = self._pool_callback_ids, []
        network_callback_ids, self._network_callback_ids = self._network_callback_ids, []

        def close() -> None:
            for cid in callback_ids:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(cid)
            for cid in pool_callback_ids:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.storagePoolEventDeregisterAny(cid)
            for cid in network_callback_ids:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.networkEventDeregisterAny(cid)
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

        executor = self._executor
        await asyncio.get_running_loop().run_in_executor(executor, close)
        executor.shutdown(wait=False)

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._mark_lost(f"connection closed by libvirt (reason {reason})")

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, index: DomainIndex | None) -> None:
        if index is not None:  # the index of the connection the event came on (a lost one's is forgotten)
            index.event(dom.UUIDString(), event, detail)
        if self._on_domain_event is None:
            return
        try:
            self._on_domain_event(DomainEvent(self.name, dom.UUIDString(), dom.name(), event, detail))
        except Exception:  # a failing subscriber must not break libvirt's dispatch
            log.exception("host %s: domain event handler failed", self.name)

    def _pool_lifecycle(self, _conn: Any, pool: Any, event: int, _detail: int, _opaque: Any) -> None:
        self._object_event(PoolEvent(self.name, pool.name(), event, "pool"))

    def _network_lifecycle(self, _conn: Any, net: Any, event: int, _detail: int, _opaque: Any) -> None:
        self._object_event(PoolEvent(self.name, net.name(), event, "network"))

    def _object_event(self, event: PoolEvent) -> None:
        if self._on_pool_event is None:
            return
        try:
            self._on_pool_event(event)
        except Exception:
            log.exception("host %s: %s event handler failed", self.name, event.kind)

    def _notify_change(self) -> None:
        if self._on_change is not None:
            self._on_change(self.name)


class ConnectionManager:
    """All host connections of the operator, by Host name."""

    def __init__(
        self,
        *,
        on_domain_event: DomainEventHandler | None = None,
        on_change: ChangeHandler | None = None,
        on_pool_event: PoolEventHandler | None = None,
    ) -> None:
        self._hosts: dict[str, HostConnection] = {}
        self._on_domain_event = on_domain_event
        self._on_change = on_change
        self._on_pool_event = on_pool_event

    def get(self, name: str) -> HostConnection | None:
        return self._hosts.get(name)

    def names(self) -> list[str]:
        return sorted(self._hosts)

    async def ensure(self, name: str, uri: str) -> HostConnection:
        """The connection for ``name``, (re)opened when the URI changed."""
        current = self._hosts.get(name)
        if current is not None and current.uri == uri:
            return current
        if current is not None:
            await current.stop()
        register_event_loop()
        conn = HostConnection(
            name,
            uri,
            on_domain_event=self._on_domain_event,
            on_change=self._on_change,
            on_pool_event=self._on_pool_event,
        )
        self._hosts[name] = conn
        conn.start()
        return conn

    async def remove(self, name: str) -> None:
        conn = self._hosts.pop(name, None)
        if conn is not None:
            await conn.stop()

    async def close_all(self) -> None:
        for name in list(self._hosts):
            await self.remove(name)


def _wake(waiter: asyncio.Future[None], *_: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)
