"""StoragePool: the same libvirt pool on every matching host, its state per host in status.

Pools we create are named ``vdc-<name>`` on the hosts: nothing without that prefix is ever touched.
``pool_config`` and ``pool_status`` are pure; ``PoolController`` does the I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vdc.api.conditions import Condition, set_kstatus
from vdc.api.host import HEARTBEAT_FILE_PREFIX
from vdc.api.quantity import format_bytes_mi, to_bytes
from vdc.api.storagepool import POOL_PREFIX as POOL_PREFIX
from vdc.api.storagepool import PoolHostStatus, StoragePool, StoragePoolStatus
from vdc.api.storagepool import libvirt_pool_name as libvirt_pool_name
from vdc.cluster.hosts import matching_hosts
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch
from vdc.controllers.errors import DeletionWaits
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt import storage
from vdc.libvirt.connection import ConnectionManager
from vdc.libvirt.errors import LibvirtFailure
from vdc.libvirt.storage_xml import PoolConfig, PoolHostConfig, PoolSourceConfig

log = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0


def pool_config(pool: StoragePool) -> PoolConfig:
    """The libvirt pool for a StoragePool (the same on every host)."""
    spec = pool.spec
    source = PoolSourceConfig()
    if spec.source is not None:
        source = PoolSourceConfig(
            hosts=tuple(PoolHostConfig(name=h) for h in spec.source.hosts),
            dir=spec.source.dir,
            name=spec.source.name,
            devices=tuple(spec.source.devices),
            format=spec.source.format,
        )
    return PoolConfig(
        name=libvirt_pool_name(str(pool.metadata["name"])),
        type=spec.type,
        target_path=spec.target.path if spec.target else None,
        source=source,
    )


@dataclass(frozen=True)
class PoolOnHost:
    """What one host reported for the pool (state None: host unreachable)."""

    host: str
    state: str | None
    capacity: int = 0
    allocation: int = 0
    available: int = 0
    volumes: int = 0
    message: str = ""


_STATES = {"running": "Running", "inactive": "Inactive", "building": "Building"}


def pool_status(
    pool: StoragePool, results: list[PoolOnHost], generation: int | None, old: StoragePoolStatus | None
) -> StoragePoolStatus:
    reserved = to_bytes(pool.spec.reserved)
    hosts: list[PoolHostStatus] = []
    for r in sorted(results, key=lambda r: r.host):
        if r.state is None:
            hosts.append(PoolHostStatus(host=r.host, state="Unknown", message=r.message))
            continue
        hosts.append(
            PoolHostStatus(
                host=r.host,
                state=_STATES.get(r.state, "Failed"),
                capacity=format_bytes_mi(r.capacity),
                allocation=format_bytes_mi(r.allocation),
                available=format_bytes_mi(max(0, r.available - reserved)),
                volumes=r.volumes,
                message=r.message,
            )
        )
    running = [r for r in results if r.state == "running"]
    if pool.spec.shared and running:
        capacity, available = running[0].capacity, running[0].available
    else:
        capacity, available = sum(r.capacity for r in running), sum(r.available for r in running)
    conds: list[Condition] = list(old.conditions) if old else []
    failing = [h for h in hosts if h.state != "Running"]
    stalled = [h for h in hosts if h.state == "Failed"]
    if not results:
        conds = set_kstatus(conds, "NotReady", "NoHosts", "no Ready host matches hostSelector",
                            observed_generation=generation)  # fmt: skip
    elif failing:
        message = "; ".join(f"{h.host}: {h.state}{' - ' + h.message if h.message else ''}" for h in failing)
        if stalled:
            conds = set_kstatus(conds, "Failed", "PoolFailed", "; ".join(f"{h.host}: {h.message}" for h in stalled),
                                ready_reason="NotRunningEverywhere", ready_message=message,
                                observed_generation=generation)  # fmt: skip
        else:
            conds = set_kstatus(conds, "InProgress", "Realising", message, ready_reason="NotRunningEverywhere",
                                observed_generation=generation)  # fmt: skip
    else:
        conds = set_kstatus(conds, "Current", "Running", f"running on {len(hosts)} host(s)",
                            observed_generation=generation)  # fmt: skip
    return StoragePoolStatus(
        observed_generation=generation,
        conditions=conds,
        hosts=hosts,
        ready_hosts=len(running),
        capacity=format_bytes_mi(capacity),
        available=format_bytes_mi(max(0, available - reserved)),
    )


class PoolDeletionBlocked(DeletionWaits):
    """Our volumes are still in the pool."""


class PoolController:
    def __init__(self, pools: ObjectCache, hosts: ObjectCache, connections: ConnectionManager, writer: KubeWriter):
        self.pools = pools
        self.hosts = hosts
        self.connections = connections
        self.writer = writer

    async def reconcile(self, key: Key) -> float | None:
        body = self.pools.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        pool = StoragePool.model_validate(body)
        config = pool_config(pool)
        results: list[PoolOnHost] = []
        for host in matching_hosts(self.hosts, pool.spec.host_selector):
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                results.append(PoolOnHost(host, None, message="host unreachable"))
                continue
            try:
                obs = await conn.call(lambda c: storage.ensure_pool(c, config))
                volumes = await conn.call(lambda c: storage.list_volumes(c, config.name))
                results.append(
                    PoolOnHost(
                        host,
                        obs.state,
                        obs.capacity_bytes,
                        obs.allocation_bytes,
                        obs.available_bytes,
                        volumes=len(volumes),
                    )
                )
            except LibvirtFailure as exc:
                results.append(PoolOnHost(host, "failed", message=str(exc)))
        status = pool_status(pool, results, body["metadata"].get("generation"), pool.status)
        wire = status.to_wire()
        if wire != (body.get("status") or {}) and (
            sent := await self.writer.patch_status(StoragePool.KIND, body, wire)
        ):
            self.pools.note_status(key, sent)
            if any(r.state == "failed" for r in results):
                await self.writer.event(
                    StoragePool.KIND,
                    body,
                    "PoolFailed",
                    "; ".join(f"{r.host}: {r.message}" for r in results if r.state == "failed"),
                    warning=True,
                )
        return RESYNC_SECONDS

    async def delete(self, body: dict[str, Any]) -> str:
        """Undefine the pool on every host; refused while our volumes remain. Never deletes data."""
        pool = StoragePool.model_validate(body)
        name = libvirt_pool_name(str(pool.metadata["name"]))
        remaining: list[str] = []
        for host in self.connections.names():
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                continue
            try:
                volumes = await conn.call(lambda c: storage.list_volumes(c, name))
            except LibvirtFailure:
                continue  # no such pool there
            remaining += [f"{host}:{v.name}" for v in volumes if not v.name.startswith(HEARTBEAT_FILE_PREFIX)]
        if remaining:
            raise PoolDeletionBlocked(
                f"the pool still holds {len(remaining)} volume(s) ({', '.join(remaining[:5])}"
                f"{' …' if len(remaining) > 5 else ''}); delete the VMs using it (or their volumes) first"
            )
        for host in self.connections.names():
            conn = self.connections.get(host)
            if conn is not None and conn.connected:
                try:
                    await conn.call(lambda c: storage.remove_pool(c, name))
                except LibvirtFailure as exc:
                    log.info("pool %s on %s: %s", name, host, exc)
        return f"pool {name} undefined on its hosts (its directory and files are left in place)"


def _every_pool(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A Host that turned Ready, changed labels or went: pools realised on it (or now to be) look again."""
    return [key_of(body) for body in view.pools]


WATCHES = (Watch(kind="Host", map=_every_pool),)
