"""kopf handlers: thin. They keep the object caches current and put keys on the work queues;
deletion waits for the controller to clean up. All decisions live in vdc.controllers."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
import libvirt

from vdc.api.appliance import Appliance
from vdc.api.computequota import ComputeQuota
from vdc.api.host import REMOVE_ORPHANS_ANNOTATION, Host
from vdc.api.meta import GROUP, VERSION, KindInfo
from vdc.api.storagepool import StoragePool
from vdc.api.virtualmachine import VirtualMachine
from vdc.api.virtualswitch import VirtualSwitch
from vdc.controllers.appliance import ApplianceController
from vdc.controllers.computequota import QuotaController
from vdc.controllers.errors import DeletionWaits
from vdc.controllers.failures import failure_reporter
from vdc.controllers.first_sight import FirstSight, Sighting
from vdc.controllers.host import HostController
from vdc.controllers.storagepool import POOL_PREFIX, PoolController
from vdc.controllers.virtualswitch import SwitchController
from vdc.controllers.vm import VmController
from vdc.controllers.vm_plan import RESTART_ANNOTATION, restart_pending
from vdc.kube import lister
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt.connection import ConnectionManager, DomainEvent, PoolEvent
from vdc.metrics import REGISTRY
from vdc.metrics.collectors import DatacenterCollector
from vdc.metrics.refresher import StatsRefresher
from vdc.tenancy.view import TenancyView
from vdc.workqueue import WorkQueue

log = logging.getLogger(__name__)

RESYNC_SECONDS = 120.0
"""Mean seconds between safety-net resyncs (`vdc run --resync-interval`)."""
HOST_COUNTS_DELAY = 2.0


def set_resync_interval(seconds: float) -> None:
    """Set before the operator starts (the resync task reads it on every round)."""
    global RESYNC_SECONDS
    if not seconds > 0:
        raise ValueError(f"resync interval must be more than 0 seconds, not {seconds!r}")
    RESYNC_SECONDS = seconds


@dataclass
class Runtime:
    """Everything the handlers share, created at start-up."""

    hosts: ObjectCache
    vms: ObjectCache
    pools: ObjectCache
    switches: ObjectCache
    connections: ConnectionManager
    host_controller: HostController
    vm_controller: VmController
    pool_controller: PoolController
    switch_controller: SwitchController
    host_queue: WorkQueue[Key]
    pool_queue: WorkQueue[Key]
    switch_queue: WorkQueue[Key]
    vm_queue: WorkQueue[Key]
    appliances: ObjectCache
    appliance_controller: ApplianceController
    appliance_queue: WorkQueue[Key]
    namespaces: ObjectCache
    quotas: ObjectCache
    quota_controller: QuotaController
    quota_queue: WorkQueue[Key]
    first_sight_queue: WorkQueue[Sighting]
    resync: asyncio.Task[None] | None = None
    stats: StatsRefresher | None = None
    collector: DatacenterCollector | None = None
    blocked_deletions: set[str] = field(default_factory=set)

    def sighted(self, plural: str, key: Key, event: kopf.RawEvent, body: dict[str, Any]) -> None:
        """An object without a status gets one soon, whatever its controller's queue (vdc.controllers.first_sight)."""
        if event["type"] != "DELETED" and not body.get("status"):
            self.first_sight_queue.add((plural, key))

    def caches(self) -> tuple[ObjectCache, ...]:
        return (self.hosts, self.vms, self.pools, self.switches, self.appliances, self.namespaces, self.quotas)

    def vms_on(self, host: str) -> list[Key]:
        """VMs placed on ``host``."""
        return [key_of(vm) for vm in self.vms if self.vm_controller.host_of(vm) == host]

    def unplaced_vms(self) -> list[Key]:
        return [key_of(vm) for vm in self.vms if self.vm_controller.host_of(vm) is None]

    def vms_in(self, namespace: str) -> list[Key]:
        return [key_of(vm) for vm in self.vms.in_namespace(namespace)]

    def count_quotas(self, namespace: str) -> None:
        """The namespace's ComputeQuotas count again."""
        for key in self.quota_controller.in_namespace(namespace):
            self.quota_queue.add(key)  # deduplicated while queued: a burst of VM changes, few counts


_runtime: Runtime | None = None


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the operator has not started")
    return _runtime


def _on_domain_event(event: DomainEvent) -> None:
    if event.event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
        return  # our own defines; a definition changed behind our back is corrected at resync
    rt = runtime()
    rt.host_queue.add_after(("", event.host), HOST_COUNTS_DELAY)  # domain counts: many events, one write
    key = rt.vms.key_for_uid(event.uuid)
    if key is not None:
        rt.vm_queue.add(key)


def _on_pool_event(event: PoolEvent) -> None:
    """A pool or network of ours changed on a host (destroyed behind our back, say): look again."""
    rt = runtime()
    queue = rt.pool_queue if event.kind == "pool" else rt.switch_queue
    if event.name.startswith(POOL_PREFIX):  # the same "vdc-" prefix for pools and networks
        queue.add(("", event.name.removeprefix(POOL_PREFIX)))


def _queue_all_pools(rt: Runtime) -> None:
    """Pools and switches: what hosts realise for everyone."""
    for body in rt.pools:
        rt.pool_queue.add(key_of(body))
    for body in rt.switches:
        rt.switch_queue.add(key_of(body))
    for body in rt.appliances:  # base images go wherever the pool runs
        rt.appliance_queue.add(key_of(body))


def _switches_of(vm: dict[str, Any]) -> set[str]:
    return {nic.get("switch") for nic in vm.get("spec", {}).get("interfaces", []) if nic.get("switch")}


def _on_connection_change(host: str) -> None:
    rt = runtime()
    rt.host_queue.add(("", host))
    _queue_all_pools(rt)
    for key in rt.vms_on(host) + rt.unplaced_vms():
        rt.vm_queue.add(key)


async def _resync(rt: Runtime) -> None:
    """A slow, jittered safety net; events do the real work."""
    first = True
    while True:
        await asyncio.sleep(RESYNC_SECONDS * random.uniform(0.9, 1.1))
        if first:  # the watches have delivered their initial listings by now
            first = False
            for cache in rt.caches():
                for key in cache.drop_unconfirmed():
                    log.info("%s was deleted while the operator started; forgotten", "/".join(key).lstrip("/"))
        for body in rt.hosts:
            rt.host_queue.add(key_of(body))
        for body in rt.vms:
            rt.vm_queue.add(key_of(body))
        _queue_all_pools(rt)


def _dump_tasks() -> None:
    """`kill -USR2 <pid>`: log every asyncio task's stack (what is everyone waiting for?)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.warning("task %s: %s", task.get_name(), where)


CLUSTER_SCOPED = ("hosts", "storagepools", "virtualswitches")


async def _prime(api: Any, watched: tuple[str, ...], caches: dict[str, ObjectCache], namespaces: ObjectCache) -> None:
    """Fill every cache from a LIST before any work starts (see vdc.kube.lister): no decision, above all
    no address allocation, is made on a partial view of the cluster. ``caches``: plural -> cache."""
    for plural, cache in caches.items():
        scoped = () if plural in CLUSTER_SCOPED else watched
        cache.prime(await lister.with_retries(plural, lister.list_custom, api, plural, scoped))
    namespaces.prime(await lister.with_retries("namespaces", lister.list_namespaces, api))
    log.info("caches primed: %s", ", ".join(f"{len(cache)} {plural}" for plural, cache in caches.items()))


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    global _runtime
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)
    hosts, vms, pools, switches = ObjectCache(), ObjectCache(), ObjectCache(), ObjectCache()
    writer = KubeWriter()
    connections = ConnectionManager(
        on_domain_event=_on_domain_event, on_change=_on_connection_change, on_pool_event=_on_pool_event
    )
    pool_controller = PoolController(pools, hosts, connections, writer)
    switch_controller = SwitchController(switches, hosts, vms, connections, writer)
    appliances, namespaces, quotas = ObjectCache(), ObjectCache(), ObjectCache()
    watched = tuple(getattr(memo, "namespaces", ()))
    host_controller = HostController(hosts, vms, connections, writer, pools=pools, namespaces=watched)
    tenancy = TenancyView(
        namespaces=namespaces, hosts=hosts, pools=pools, switches=switches, appliances=appliances, vms=vms,
        quotas=quotas,
    )  # fmt: skip
    appliance_controller = ApplianceController(
        appliances, pools, vms, connections, writer, work_dir=getattr(memo, "work_dir", None), tenancy=tenancy,
        trust_configmap=getattr(memo, "appliance_trust_configmap", None),
    )  # fmt: skip
    vm_controller = VmController(
        vms, hosts, connections, writer, host_controller, pools, switches, switch_controller, appliances, tenancy
    )
    quota_controller = QuotaController(quotas, tenancy, vm_controller.host_of, writer)
    primed = {"hosts": hosts, "storagepools": pools, "virtualswitches": switches, "appliances": appliances,
              "virtualmachines": vms, "computequotas": quotas}  # fmt: skip
    await _prime(writer.api_client, watched, primed, namespaces)
    first_sight = FirstSight(writer, {
        "hosts": (Host.KIND, hosts), "storagepools": (StoragePool.KIND, pools),
        "virtualswitches": (VirtualSwitch.KIND, switches), "appliances": (Appliance.KIND, appliances),
        "virtualmachines": (VirtualMachine.KIND, vms), "computequotas": (ComputeQuota.KIND, quotas),
    })  # fmt: skip
    _runtime = Runtime(
        hosts=hosts,
        vms=vms,
        pools=pools,
        switches=switches,
        connections=connections,
        host_controller=host_controller,
        vm_controller=vm_controller,
        pool_controller=pool_controller,
        switch_controller=switch_controller,
        host_queue=WorkQueue(
            "hosts", host_controller.reconcile, workers=4, on_error=failure_reporter(Host.KIND, hosts, writer)
        ),
        pool_queue=WorkQueue(
            "pools", pool_controller.reconcile, workers=2, on_error=failure_reporter(StoragePool.KIND, pools, writer)
        ),
        switch_queue=WorkQueue(
            "switches",
            switch_controller.reconcile,
            workers=2,
            on_error=failure_reporter(VirtualSwitch.KIND, switches, writer),
        ),
        vm_queue=WorkQueue(
            "vms", vm_controller.reconcile, workers=16, on_error=failure_reporter(VirtualMachine.KIND, vms, writer)
        ),
        appliances=appliances,
        appliance_controller=appliance_controller,
        appliance_queue=WorkQueue(
            "appliances",
            appliance_controller.reconcile,
            workers=2,
            on_error=failure_reporter(Appliance.KIND, appliances, writer),
        ),
        namespaces=namespaces,
        quotas=quotas,
        quota_controller=quota_controller,
        first_sight_queue=WorkQueue("first-sight", first_sight.reconcile, workers=2),
        quota_queue=WorkQueue(
            "computequotas",
            quota_controller.reconcile,
            workers=1,
            on_error=failure_reporter(ComputeQuota.KIND, quotas, writer),
        ),
    )
    _runtime.host_queue.start()
    _runtime.first_sight_queue.start()
    _runtime.pool_queue.start()
    _runtime.switch_queue.start()
    _runtime.vm_queue.start()
    _runtime.appliance_queue.start()
    _runtime.quota_queue.start()
    _runtime.resync = asyncio.create_task(_resync(_runtime), name="resync")
    stats_interval = getattr(memo, "stats_interval", None)
    if stats_interval:  # metrics are served: datacenter and VM metrics, metering
        _runtime.stats = StatsRefresher(connections, vms, stats_interval)
        _runtime.collector = DatacenterCollector(hosts, pools, switches, vms, _runtime.stats.current)
        REGISTRY.register(_runtime.collector)
        _runtime.stats.start()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    rt = runtime()
    if rt.resync is not None:
        rt.resync.cancel()
    if rt.stats is not None:
        await rt.stats.stop()
    if rt.collector is not None:
        REGISTRY.unregister(rt.collector)
    await rt.vm_queue.stop()
    await rt.appliance_queue.stop()
    await rt.quota_queue.stop()
    await rt.pool_queue.stop()
    await rt.switch_queue.stop()
    await rt.host_queue.stop()
    await rt.first_sight_queue.stop()
    await rt.connections.close_all()


def _only_our_status_changed(event: kopf.RawEvent, body: dict[str, Any]) -> bool:
    """A MODIFIED event whose spec generation we already acted on: our own status write coming back."""
    if event["type"] != "MODIFIED" or body["metadata"].get("deletionTimestamp"):
        return False
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed is not None and observed == body["metadata"].get("generation")


def _usage_may_change(event: kopf.RawEvent, body: dict[str, Any], cached: dict[str, Any] | None) -> bool:
    """Whether a VM event may change what its namespace's quotas count: it went, its spec changed, or its
    status names another host or other disks (our own status writes otherwise count nothing new)."""
    if event["type"] == "DELETED" or not _only_our_status_changed(event, body) or cached is None:
        return True
    new, old = body.get("status") or {}, cached.get("status") or {}
    return bool(new.get("host") != old.get("host") or new.get("disks") != old.get("disks"))


def _restart_requested(body: dict[str, Any]) -> bool:
    """A restart annotation newer than the last boot (metadata changes leave the generation alone)."""
    annotations = body["metadata"].get("annotations") or {}
    return restart_pending(annotations.get(RESTART_ANNOTATION), (body.get("status") or {}).get("bootTime"))


@kopf.on.event(GROUP, VERSION, "hosts")
def host_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body: dict[str, Any] = dict(event["object"])
    key = rt.hosts.remove(body) if event["type"] == "DELETED" else rt.hosts.upsert(body)
    rt.sighted("hosts", key, event, body)
    if not _only_our_status_changed(event, body) or REMOVE_ORPHANS_ANNOTATION in (
        body["metadata"].get("annotations") or {}
    ):  # an admin asked for the host's orphans to go (metadata changes leave the generation alone)
        rt.host_queue.add(key)
    _queue_all_pools(rt)  # a host that turned Ready (or changed labels) may need pools
    # A host that changed (its status too: Ready, allocatable) may now fit VMs that fit nowhere before.
    # Its own VMs need a look only when its connection changes, which the connection reports.
    for vm_key in rt.unplaced_vms():
        rt.vm_queue.add(vm_key)


@kopf.on.event(GROUP, VERSION, "virtualmachines")
def vm_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body: dict[str, Any] = dict(event["object"])
    if _usage_may_change(event, body, rt.vms.get(key_of(body))):
        rt.count_quotas(str(body["metadata"].get("namespace")))
    if event["type"] == "DELETED":
        rt.vms.remove(body)
        rt.vm_controller.forget(str(body["metadata"].get("uid")))
        for vm_key in rt.unplaced_vms():  # its room (and its quota) is free now
            rt.vm_queue.add(vm_key)
        for switch in _switches_of(body):  # its addresses are free now
            rt.switch_queue.add(("", switch))
        return
    key = rt.vms.upsert(body)
    rt.sighted("virtualmachines", key, event, body)
    if not _only_our_status_changed(event, body) or _restart_requested(body):
        rt.vm_queue.add(key)
        for switch in _switches_of(body):  # the switch's IPAM serves its NICs
            rt.switch_queue.add(("", switch))


async def _delete_or_wait(
    info: KindInfo, body: kopf.Body, delete: Callable[[dict[str, Any]], Awaitable[str]], logger: kopf.Logger
) -> None:
    """Run a controller's deletion; while it must wait, say why once (an Event) and retry."""
    rt = runtime()
    uid = str(body.get("metadata", {}).get("uid"))
    try:
        outcome = await delete(dict(body))
    except DeletionWaits as exc:
        if uid not in rt.blocked_deletions:  # one Event, not one per retry
            rt.blocked_deletions.add(uid)
            await rt.vm_controller.writer.event(info, dict(body), "DeletionBlocked", str(exc), warning=True)
        raise kopf.TemporaryError(str(exc), delay=15) from exc
    rt.blocked_deletions.discard(uid)
    logger.info(outcome)


@kopf.on.delete(GROUP, VERSION, "virtualmachines")
async def vm_delete(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    await _delete_or_wait(VirtualMachine.KIND, body, runtime().vm_controller.delete, logger)


@kopf.on.event(GROUP, VERSION, "storagepools")
def pool_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body = dict(event["object"])
    key = rt.pools.remove(body) if event["type"] == "DELETED" else rt.pools.upsert(body)
    rt.sighted("storagepools", key, event, body)
    if event["type"] != "DELETED" and not _only_our_status_changed(event, body):
        rt.pool_queue.add(key)
    for vm_key in rt.unplaced_vms():  # pool availability decides placement too
        rt.vm_queue.add(vm_key)


@kopf.on.event(GROUP, VERSION, "virtualswitches")
def switch_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body = dict(event["object"])
    key = rt.switches.remove(body) if event["type"] == "DELETED" else rt.switches.upsert(body)
    rt.sighted("virtualswitches", key, event, body)
    if event["type"] != "DELETED" and not _only_our_status_changed(event, body):
        rt.switch_queue.add(key)
    # New addresses or hosts on the switch: its VMs may be waiting for them, unplaced VMs for hosts.
    for vm in rt.vms:
        if key[1] in _switches_of(vm) or rt.vm_controller.host_of(vm) is None:
            rt.vm_queue.add(key_of(vm))


@kopf.on.delete(GROUP, VERSION, "virtualswitches")
async def switch_delete(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    await _delete_or_wait(VirtualSwitch.KIND, body, runtime().switch_controller.delete, logger)


@kopf.on.event(GROUP, VERSION, "appliances")
def appliance_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body = dict(event["object"])
    key = rt.appliances.remove(body) if event["type"] == "DELETED" else rt.appliances.upsert(body)
    rt.sighted("appliances", key, event, body)
    if event["type"] != "DELETED" and not _only_our_status_changed(event, body):
        rt.appliance_queue.add(key)
    # VMs made from it wait for it to be Ready (or say that it failed); its progress writes do not matter.
    status: dict[str, Any] = body.get("status") or {}  # type: ignore[assignment]
    # A spec change (sharedWith) may grant or revoke other namespaces' access.
    changed = not _only_our_status_changed(event, body)
    if event["type"] == "DELETED" or changed or status.get("phase") in ("Ready", "Failed"):
        for vm_key in rt.appliance_controller.users(*key):
            rt.vm_queue.add(vm_key)


@kopf.on.delete(GROUP, VERSION, "appliances")
async def appliance_delete(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    await _delete_or_wait(Appliance.KIND, body, runtime().appliance_controller.delete, logger)


@kopf.on.delete(GROUP, VERSION, "storagepools")
async def pool_delete(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    await _delete_or_wait(StoragePool.KIND, body, runtime().pool_controller.delete, logger)


@kopf.on.event("", "v1", "namespaces")
def namespace_event(event: kopf.RawEvent, **_: Any) -> None:
    """Namespace labels decide allowedNamespaces selectors: a change may grant or revoke access."""
    rt = runtime()
    body: dict[str, Any] = dict(event["object"])
    name = body["metadata"]["name"]
    old = rt.namespaces.get(("", name))
    if event["type"] == "DELETED":
        rt.namespaces.remove(body)
        return
    rt.namespaces.upsert(body)
    old_labels = ((old or {}).get("metadata") or {}).get("labels")
    if old is not None and old_labels != body["metadata"].get("labels"):
        for vm_key in rt.vms_in(name):
            rt.vm_queue.add(vm_key)
        for appliance in rt.appliances:
            rt.appliance_queue.add(key_of(appliance))


@kopf.on.event(GROUP, VERSION, "computequotas")
def quota_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body: dict[str, Any] = dict(event["object"])
    key = rt.quotas.remove(body) if event["type"] == "DELETED" else rt.quotas.upsert(body)
    rt.sighted("computequotas", key, event, body)
    if _only_our_status_changed(event, body):
        return
    if event["type"] != "DELETED":
        rt.quota_queue.add(key)
    for vm_key in rt.unplaced_vms():  # new limits: VMs waiting for quota may fit now
        if vm_key[0] == key[0]:
            rt.vm_queue.add(vm_key)
