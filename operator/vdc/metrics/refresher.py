"""The background stats refresh: every ``interval`` seconds, ONE ``getAllDomainStats`` per connected
host (through ``HostConnection.call``, so off the event loop), sorted out and metered into the
per-namespace counters in a worker thread, fed to the measured demand (``vdc.metrics.demand``) and kept
as an immutable snapshot for scrapes. Scrapes never call libvirt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from vdc.aio import cancel_and_wait
from vdc.cluster.requests import requested
from vdc.kube.cache import ObjectCache
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.errors import LibvirtFailure
from vdc.metrics import METERING_DISK, METERING_MEMORY, METERING_VCPU
from vdc.metrics.demand import DemandTracker, VmDemand
from vdc.metrics.metering import Reading, Usage, integrate, reading
from vdc.metrics.vmstats import DomainRecord, VmStats, read_domain_stats, vm_stats

log = logging.getLogger(__name__)

MAX_GAP_INTERVALS = 4
"""An interval longer than this many refresh intervals (a host unreadable meanwhile) is not metered."""


class StatsRefresher:
    def __init__(
        self,
        connections: ConnectionManager,
        vms: ObjectCache,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        demand: DemandTracker | None = None,
    ) -> None:
        """``demand``: fed every host's stats at each refresh (and read by the demand metrics)."""
        self._connections = connections
        self._vms = vms
        self.interval = interval
        self._clock = clock
        self.demand = demand
        self._snapshot: dict[str, tuple[VmStats, ...]] = {}
        self._readings: dict[str, Reading] = {}
        self._task: asyncio.Task[None] | None = None

    def current(self) -> list[VmStats]:
        """The latest stats of VMs that still exist (any thread: the snapshot is replaced, never changed)."""
        snapshot = self._snapshot
        return [vm for stats in snapshot.values() for vm in stats if self._vms.key_for_uid(vm.uid) is not None]

    def current_demand(self) -> list[VmDemand]:
        """The measured demand of VMs that still exist (any thread); empty without a tracker."""
        if self.demand is None:
            return []
        return [d for d in self.demand.snapshot().values() if self._vms.key_for_uid(d.uid) is not None]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="stats-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # the refresh must outlive any surprise; the next one tries again
                log.exception("stats refresh failed")

    async def refresh(self) -> None:
        """One round: every connected host at once, one bulk call each."""
        hosts = [c for n in self._connections.names() if (c := self._connections.get(n)) is not None and c.connected]
        results = await asyncio.gather(*(self._refresh_host(c) for c in hosts), return_exceptions=True)
        snapshot = {}
        for conn, result in zip(hosts, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, LibvirtFailure):
                    log.warning("stats of host %s: %r", conn.name, result)
                continue
            snapshot[conn.name] = result
        self._snapshot = snapshot  # hosts that could not be read report no VM series (no stale figures)
        for gone in self._readings.keys() - set(self._connections.names()):
            del self._readings[gone]

    async def _refresh_host(self, conn: HostConnection) -> tuple[VmStats, ...]:
        records = await conn.call(read_domain_stats)
        at = self._clock()
        # Sorting out and metering a thousand domains is tens of milliseconds of Python: not on the loop.
        return await asyncio.to_thread(self._account, conn.name, records, at)

    def _account(self, host: str, records: list[DomainRecord], at: float) -> tuple[VmStats, ...]:
        """Our VMs' stats from one host's records, metered since that host's previous reading."""

        def owner(uid: str) -> tuple[str, str] | None:
            key = self._vms.key_for_uid(uid)
            return key if key is not None and key[0] else None

        stats = tuple(vm_stats(host, records, owner))
        asked = {}
        for vm in stats:
            body = self._vms.get((vm.namespace, vm.name)) if vm.running else None
            if body is not None:
                asked[vm.uid] = requested(body)
        now = reading(at, stats, asked)
        record_usage(integrate(self._readings.get(host), now, max_gap=MAX_GAP_INTERVALS * self.interval))
        self._readings[host] = now
        if self.demand is not None:
            self.demand.observe(host, stats, at)
        return stats


def record_usage(usage: Mapping[str, Usage]) -> None:
    for namespace, used in usage.items():
        METERING_VCPU.labels(namespace).inc(used.vcpu_seconds)
        METERING_MEMORY.labels(namespace).inc(used.memory_byte_seconds)
        METERING_DISK.labels(namespace).inc(used.disk_byte_seconds)
