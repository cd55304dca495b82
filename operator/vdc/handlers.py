"""kopf handlers: thin. They keep the object caches current and put keys on the work queues;
deletion waits for the controller to clean up. All decisions live in vdc.controllers."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import libvirt

from vdc.aio import cancel_and_wait
from vdc.api.appliance import Appliance
from vdc.api.computecluster import ComputeCluster
from vdc.api.computequota import ComputeQuota
from vdc.api.host import REMOVE_ORPHANS_ANNOTATION, Host, standby_intended
from vdc.api.meta import GROUP, VERSION, KindInfo
from vdc.api.migration import VirtualMachineMigration
from vdc.api.operation import OperationRef
from vdc.api.storagepool import StoragePool
from vdc.api.virtualmachine import VirtualMachine
from vdc.api.virtualswitch import VirtualSwitch
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import EventType, ObjectEvent, Watch
from vdc.controllers import appliance as appliance_module
from vdc.controllers import computecluster as cluster_module
from vdc.controllers import computequota as quota_module
from vdc.controllers import host as host_module
from vdc.controllers import storagepool as pool_module
from vdc.controllers import virtualswitch as switch_module
from vdc.controllers import vm_watches
from vdc.controllers.appliance import ApplianceController
from vdc.controllers.computecluster import ComputeClusterController
from vdc.controllers.computequota import QuotaController
from vdc.controllers.drs import DrsController
from vdc.controllers.drs_inputs import rules_hook
from vdc.controllers.errors import DeletionWaits
from vdc.controllers.evacuation import EVACUATION_LABEL, EvacuationController, maintenance_stop
from vdc.controllers.failures import failure_reporter
from vdc.controllers.first_sight import GRACE_SECONDS, FirstSight, Sighting
from vdc.controllers.host import HostController
from vdc.controllers.migration import MigrationController
from vdc.controllers.storagepool import POOL_PREFIX, PoolController
from vdc.controllers.virtualswitch import SwitchController
from vdc.controllers.vm import HaCluster, VmController
from vdc.controllers.vm_plan import restart_requested
from vdc.gc_tuning import tune_gc
from vdc.instruments import RESYNC_VM_CHECKS
from vdc.kube import lister
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.kube.http import ApiHttp
from vdc.kube.watch import KindWatch, WatchEventType
from vdc.libvirt.connection import ConnectionManager, DomainEvent, PoolEvent
from vdc.metrics import REGISTRY
from vdc.metrics.collectors import DatacenterCollector
from vdc.metrics.demand import DemandTracker
from vdc.metrics.refresher import StatsRefresher
from vdc.tenancy.view import TenancyView
from vdc.workqueue import WorkQueue

log = logging.getLogger(__name__)

VM_WORKERS = 16
"""Concurrent VM reconciles (the benchmark's API floor writes with as many)."""
RESYNC_SECONDS = 120.0
"""Mean seconds between safety-net resyncs unless ``memo.resync_seconds`` (`vdc run --resync-interval`) says."""
FULL_VM_RESYNC_ROUNDS = 10
"""Every how many resync rounds each VM is reconciled in full; the other rounds verify it
(VmController.verify: its domain read back as its last settled reconcile saw it, else in full). A full
reconcile of every VM every round kept a core 60-80 % busy at rest at 10,000 VMs."""
HOST_COUNTS_DELAY = 10.0
"""Seconds a host's domain lifecycle events are gathered before its Host reconcile counts them (and looks for
orphans): each count lists the host's domains, and at 2 s a 10,000-VM rollout counted 8,000 times."""


def resync_interval(memo: kopf.Memo) -> float:
    """Mean seconds between resyncs: ``memo.resync_seconds`` (set by ``vdc.runtime.run``), else the default."""
    seconds = getattr(memo, "resync_seconds", None)
    if seconds is None:
        return RESYNC_SECONDS
    if not seconds > 0:
        raise ValueError(f"resync interval must be more than 0 seconds, not {seconds!r}")
    return float(seconds)


@dataclass
class Runtime:
    """Everything the handlers share, created at start-up and kept in kopf's memo (:func:`runtime`)."""

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
    vm_verify_queue: WorkQueue[Key]
    appliances: ObjectCache
    appliance_controller: ApplianceController
    appliance_queue: WorkQueue[Key]
    namespaces: ObjectCache
    quotas: ObjectCache
    quota_controller: QuotaController
    quota_queue: WorkQueue[Key]
    first_sight: FirstSight
    first_sight_queue: WorkQueue[Sighting]
    cluster: ClusterView
    migrations: ObjectCache
    policies: ObjectCache
    migration_controller: MigrationController
    migration_queue: WorkQueue[Key]
    evacuation_controller: EvacuationController
    evacuation_queue: WorkQueue[Key]
    computeclusters: ObjectCache
    computecluster_controller: ComputeClusterController
    computecluster_queue: WorkQueue[Key]
    resync_seconds: float = RESYNC_SECONDS
    resync: asyncio.Task[None] | None = None
    vm_watch: KindWatch | None = None
    vm_watching: asyncio.Task[None] | None = None
    stats: StatsRefresher | None = None
    demand: DemandTracker | None = None
    collector: DatacenterCollector | None = None
    blocked_deletions: set[str] = field(default_factory=set)
    watches: dict[str, list[tuple[Watch, WorkQueue[Key]]]] = field(default_factory=dict)
    """Watched kind -> (watch, the queue of the controller that declared it): see :meth:`fan_out`."""

    def __post_init__(self) -> None:
        declared: tuple[tuple[Iterable[Watch], WorkQueue[Key]], ...] = (
            (host_module.WATCHES, self.host_queue),
            (pool_module.WATCHES, self.pool_queue),
            (switch_module.WATCHES, self.switch_queue),
            (appliance_module.WATCHES, self.appliance_queue),
            (vm_watches.WATCHES, self.vm_queue),
            (quota_module.WATCHES, self.quota_queue),
            (cluster_module.watches(self.computeclusters), self.computecluster_queue),
        )
        for watches, queue in declared:
            for watch in watches:
                self.watches.setdefault(watch.kind, []).append((watch, queue))

    def fan_out(self, kind: str, event: ObjectEvent) -> None:
        """Every controller watching ``kind`` gets the keys its map function returns for ``event``."""
        for watch, queue in self.watches.get(kind, ()):
            for key in watch.map(self.cluster, event):
                queue.add(key)  # deduplicated while queued

    def sighted(self, plural: str, key: Key, event: kopf.RawEvent, body: dict[str, Any]) -> None:
        """An object without a status gets one soon, whatever its controller's queue (vdc.controllers.first_sight)."""
        if event["type"] != "DELETED" and not body.get("status") and self.first_sight.sighted((plural, key)):
            self.first_sight_queue.add_after((plural, key), GRACE_SECONDS)

    def caches(self) -> tuple[ObjectCache, ...]:
        return (self.hosts, self.vms, self.pools, self.switches, self.appliances, self.namespaces, self.quotas,
                self.migrations, self.policies, self.computeclusters)  # fmt: skip


def runtime(memo: kopf.Memo) -> Runtime:
    """The operator's :class:`Runtime`, which :func:`start` puts in kopf's operator-wide memo (every
    object's memo is a shallow copy of it, so every handler finds the same one)."""
    rt = getattr(memo, "runtime", None)
    if not isinstance(rt, Runtime):
        raise RuntimeError("the operator has not started")
    return rt


def _on_domain_event(memo: kopf.Memo, event: DomainEvent) -> None:
    if event.event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
        return  # our own defines; a definition changed behind our back is corrected at resync
    rt = runtime(memo)
    rt.host_queue.add_after(("", event.host), HOST_COUNTS_DELAY)  # domain counts: many events, one write
    if event.event == libvirt.VIR_DOMAIN_EVENT_STARTED and rt.vm_controller.own_start(event.host, event.uuid.lower()):
        return  # our own start: the reconcile that made it reads the domain back (not a reconcile per VM more)
    key = rt.vms.key_for_uid(event.uuid)
    if key is not None:
        rt.vm_queue.add(key)


def _on_pool_event(memo: kopf.Memo, event: PoolEvent) -> None:
    """A pool or network of ours changed on a host (destroyed behind our back, say): look again."""
    rt = runtime(memo)
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


def _on_connection_change(memo: kopf.Memo, host: str) -> None:
    rt = runtime(memo)
    rt.host_queue.add(("", host))
    _queue_all_pools(rt)
    for key in rt.cluster.vms_on(host) + rt.cluster.unplaced_vms():
        rt.vm_queue.add(key)


def _ha_cluster(clusters: ObjectCache, host: str) -> HaCluster | None:
    """The ComputeCluster with HA enabled that has ``host`` among its members (its status), if any."""
    for body in clusters:
        ha = (body.get("spec") or {}).get("ha") or {}
        if ha.get("enabled") and host in ((body.get("status") or {}).get("hosts") or ()):
            return HaCluster(str(body["metadata"]["name"]), bool(ha.get("diskLeases")))
    return None


def _on_health_change(rt: Runtime, host: str, state: str) -> None:
    """HA judged a host anew (Suspect, Fenced, back …): its VMs say so, or restart elsewhere."""
    log.info("host %s: %s", host, state)
    for key in rt.cluster.vms_on(host):
        rt.vm_queue.add(key)
    if state == "Healthy":  # back: VMs restarted elsewhere that its stale copies kept from starting go on now
        for body in rt.vms:
            if (body.get("status") or {}).get("phase") not in ("Running", "Stopped"):
                rt.vm_queue.add(key_of(body))


async def _resync(rt: Runtime) -> None:
    """A slow, jittered safety net; events do the real work."""
    first, rounds = True, 0
    while True:
        await asyncio.sleep(rt.resync_seconds * random.uniform(0.9, 1.1))
        if first:  # the watches have delivered their initial listings by now
            first = False
            for cache in rt.caches():
                for key in cache.drop_unconfirmed():
                    log.info("%s was deleted while the operator started; forgotten", "/".join(key).lstrip("/"))
        for body in rt.hosts:
            rt.host_queue.add(key_of(body))
        rounds += 1
        full = rounds % FULL_VM_RESYNC_ROUNDS == 0
        for body in rt.vms:  # most rounds only verify each VM against its domain; every few, all in full
            (rt.vm_queue if full else rt.vm_verify_queue).add(key_of(body))
        for body in rt.computeclusters:
            rt.computecluster_queue.add(key_of(body))
        _queue_all_pools(rt)
        _queue_running_migrations(rt)


async def _verify_vm(controller: VmController, queue: WorkQueue[Key], key: Key) -> None:
    """A resync round's look at one VM: into the VM queue unless it verifies as its last settled reconcile."""
    if await controller.verify(key):
        RESYNC_VM_CHECKS.labels("settled").inc()
    else:
        RESYNC_VM_CHECKS.labels("reconcile").inc()
        queue.add(key)


def _operation_exists(migrations: ObjectCache, namespace: str, ref: OperationRef) -> bool:
    """Whether a VM's owning operation still exists (migrations are the only operation kind yet)."""
    if ref.kind != VirtualMachineMigration.KIND.kind:
        return True  # a kind this operator does not know: not its to judge
    body = migrations.get((namespace, ref.name))
    return body is not None and str(body["metadata"].get("uid")) == ref.uid


def _queue_running_migrations(rt: Runtime) -> None:
    for body in rt.migrations:
        if (body.get("status") or {}).get("phase") not in ("Succeeded", "Failed", "Cancelled"):
            rt.migration_queue.add(key_of(body))


def _dump_tasks() -> None:
    """`kill -USR2 <pid>`: log every asyncio task's stack (what is everyone waiting for?)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.warning("task %s: %s", task.get_name(), where)


CLUSTER_SCOPED = ("hosts", "storagepools", "virtualswitches", "migrationpolicies", "computeclusters")


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
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)
    hosts, vms, pools, switches = ObjectCache(), ObjectCache(), ObjectCache(), ObjectCache()
    writer = KubeWriter()
    connections = ConnectionManager(
        on_domain_event=functools.partial(_on_domain_event, memo),
        on_change=functools.partial(_on_connection_change, memo),
        on_pool_event=functools.partial(_on_pool_event, memo),
    )
    pool_controller = PoolController(pools, hosts, connections, writer)
    switch_controller = SwitchController(switches, hosts, vms, connections, writer)
    appliances, namespaces, quotas = ObjectCache(), ObjectCache(), ObjectCache()
    watched = tuple(getattr(memo, "namespaces", ()))
    cluster = ClusterView(hosts=hosts, vms=vms, pools=pools, switches=switches, appliances=appliances,
                          namespaces=namespaces, quotas=quotas)  # fmt: skip
    host_controller = HostController(hosts, vms, connections, writer, pools=pools, namespaces=watched, cluster=cluster)
    tenancy = TenancyView(
        namespaces=namespaces, hosts=hosts, pools=pools, switches=switches, appliances=appliances, vms=vms,
        quotas=quotas,
    )  # fmt: skip
    appliance_controller = ApplianceController(
        appliances, pools, vms, connections, writer, work_dir=getattr(memo, "work_dir", None), tenancy=tenancy,
        trust_configmap=getattr(memo, "appliance_trust_configmap", None), cluster=cluster,
    )  # fmt: skip
    vm_controller = VmController(
        vms, hosts, connections, writer, host_controller, pools, switches, switch_controller, appliances, tenancy,
        cluster=cluster,
    )  # fmt: skip
    quota_controller = QuotaController(quotas, tenancy, cluster.host_of, writer)  # placed: status.host or reserved
    migrations, policies = ObjectCache(), ObjectCache()
    migration_controller = MigrationController(
        migrations, vms, policies, namespaces, connections, writer, vm_controller, cluster
    )
    vm_controller.maintenance_stop = functools.partial(maintenance_stop, cluster, migrations)
    vm_controller.operation_exists = functools.partial(_operation_exists, migrations)
    evacuation_controller = EvacuationController(hosts, vms, migrations, cluster, writer)
    computeclusters = ObjectCache()
    drs_controller = DrsController(hosts, vms, migrations, cluster, writer, clusters=computeclusters)
    computecluster_controller = ComputeClusterController(computeclusters, hosts, writer, drs_controller)
    vm_controller.admission_refusals = cluster_module.admission_hook(computeclusters, hosts, cluster)
    vm_controller.rule_refusals = rules_hook(computeclusters, hosts, vms, cluster)
    vm_controller.demand_loads = drs_controller.demand_loads  # the demand: once the stats refresh runs
    primed = {"hosts": hosts, "storagepools": pools, "virtualswitches": switches, "appliances": appliances,
              "computequotas": quotas, "virtualmachinemigrations": migrations,
              "migrationpolicies": policies, "computeclusters": computeclusters}  # fmt: skip
    await _prime(writer.api_client, watched, primed, namespaces)
    vm_watch = KindWatch(
        ApiHttp(writer.api_client.configuration), GROUP, VERSION, "virtualmachines", watched,
        on_event=lambda kind, body: vm_event(runtime(memo), kind, body),
    )  # fmt: skip
    vms.prime(await lister.awaited_with_retries("virtualmachines", vm_watch.list_all))
    log.info("VM cache primed: %d virtualmachines", len(vms))
    first_sight = FirstSight(writer, {
        "hosts": (Host.KIND, hosts), "storagepools": (StoragePool.KIND, pools),
        "virtualswitches": (VirtualSwitch.KIND, switches), "appliances": (Appliance.KIND, appliances),
        "virtualmachines": (VirtualMachine.KIND, vms), "computequotas": (ComputeQuota.KIND, quotas),
        "virtualmachinemigrations": (VirtualMachineMigration.KIND, migrations),
        "computeclusters": (ComputeCluster.KIND, computeclusters),
    })  # fmt: skip
    vm_queue = WorkQueue(
        "vms", vm_controller.reconcile, workers=VM_WORKERS, on_error=failure_reporter(VirtualMachine.KIND, vms, writer)
    )
    rt = Runtime(
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
        vm_queue=vm_queue,
        vm_verify_queue=WorkQueue(
            "vm-verify", functools.partial(_verify_vm, vm_controller, vm_queue), workers=VM_WORKERS
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
        first_sight=first_sight,
        first_sight_queue=WorkQueue("first-sight", first_sight.reconcile, workers=2),
        cluster=cluster,
        resync_seconds=resync_interval(memo),
        quota_queue=WorkQueue(
            "computequotas",
            quota_controller.reconcile,
            workers=1,
            on_error=failure_reporter(ComputeQuota.KIND, quotas, writer),
        ),
        migrations=migrations,
        policies=policies,
        migration_controller=migration_controller,
        migration_queue=WorkQueue(
            "migrations",
            migration_controller.reconcile,
            workers=4,
            on_error=failure_reporter(VirtualMachineMigration.KIND, migrations, writer),
        ),
        evacuation_controller=evacuation_controller,
        evacuation_queue=WorkQueue("evacuations", evacuation_controller.reconcile, workers=2),
        computeclusters=computeclusters,
        computecluster_controller=computecluster_controller,
        computecluster_queue=WorkQueue(
            "computeclusters",
            computecluster_controller.reconcile,
            workers=1,
            on_error=failure_reporter(ComputeCluster.KIND, computeclusters, writer),
        ),
    )
    migration_controller.requeue = rt.migration_queue.add
    tune_gc()
    memo.runtime = rt  # before anything runs that looks for it
    host_controller.on_health_change = functools.partial(_on_health_change, rt)
    vm_controller.ha_cluster = functools.partial(_ha_cluster, rt.computeclusters)
    rt.host_queue.start()
    rt.first_sight_queue.start()
    rt.pool_queue.start()
    rt.switch_queue.start()
    rt.vm_queue.start()
    rt.vm_verify_queue.start()
    rt.appliance_queue.start()
    rt.quota_queue.start()
    rt.migration_queue.start()
    rt.evacuation_queue.start()
    rt.computecluster_queue.start()
    for body in rt.hosts:  # hosts in maintenance go on evacuating
        rt.evacuation_queue.add(key_of(body))
    _queue_running_migrations(rt)  # each resumes where its status says (vdc.operations)
    for body in list(rt.vms):  # as a watch's initial listing: every VM looked at once (and confirmed)
        vm_event(rt, "ADDED", body)
    rt.vm_watch = vm_watch
    rt.vm_watching = asyncio.create_task(vm_watch.run(), name="vm-watch")
    rt.resync = asyncio.create_task(_resync(rt), name="resync")
    stats_interval = getattr(memo, "stats_interval", None)
    if stats_interval:  # metrics are served: datacenter and VM metrics, metering
        rt.demand = DemandTracker(getattr(memo, "demand_half_life", 60.0))
        rt.stats = StatsRefresher(connections, vms, stats_interval, demand=rt.demand)
        drs_controller.demand = rt.demand
        rt.collector = DatacenterCollector(
            hosts, pools, switches, vms, rt.stats.current, ledger=cluster.ledger, demand=rt.stats.current_demand
        )
        REGISTRY.register(rt.collector)
        rt.stats.start()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    if rt.vm_watching is not None:
        await cancel_and_wait(rt.vm_watching)
    if rt.vm_watch is not None:
        await rt.vm_watch.close()
    if rt.resync is not None:
        rt.resync.cancel()
    if rt.stats is not None:
        await rt.stats.stop()
    if rt.collector is not None:
        REGISTRY.unregister(rt.collector)
    await rt.vm_verify_queue.stop()
    await rt.vm_queue.stop()
    await rt.appliance_queue.stop()
    await rt.quota_queue.stop()
    await rt.migration_queue.stop()
    await rt.evacuation_queue.stop()
    await rt.computecluster_queue.stop()
    await rt.pool_queue.stop()
    await rt.switch_queue.stop()
    await rt.host_queue.stop()
    await rt.first_sight_queue.stop()
    await rt.connections.close_all()
    await rt.vm_controller.writer.close()


def _only_our_status_changed(event: kopf.RawEvent, body: dict[str, Any]) -> bool:
    """A MODIFIED event whose spec generation we already acted on: our own status write coming back."""
    if event["type"] != "MODIFIED" or body["metadata"].get("deletionTimestamp"):
        return False
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed is not None and observed == body["metadata"].get("generation")


def _event(event: kopf.RawEvent, body: dict[str, Any], old: dict[str, Any] | None, own_write: bool) -> ObjectEvent:
    """``own_write``: the event is our own metadata write coming back (``ObjectCache.own_write``)."""
    kind: EventType = event["type"] if event["type"] in ("ADDED", "MODIFIED", "DELETED") else "MODIFIED"
    own = (own_write and kind == "MODIFIED") or _only_our_status_changed(event, body)
    return ObjectEvent(kind, key_of(body), body, old, own)


def _restart_requested(body: dict[str, Any]) -> bool:
    """A restart annotation newer than the last boot (metadata changes leave the generation alone)."""
    return restart_requested(body)


def _take_in(cache: ObjectCache, event: kopf.RawEvent) -> ObjectEvent:
    """The cache (and so the cluster view) takes the event in; the event as the watches' map functions see it."""
    body: dict[str, Any] = dict(event["object"])
    old = cache.delivered(key_of(body))
    own_write = cache.own_write(body)
    if event["type"] == "DELETED":
        cache.remove(body)
    else:
        cache.upsert(body)
    return _event(event, body, old, own_write)


def _queued_kind_event(
    rt: Runtime, plural: str, kind: str, cache: ObjectCache, queue: WorkQueue[Key], event: kopf.RawEvent
) -> ObjectEvent:
    """The event handler of a kind whose controller acts on spec changes: the cache (and the cluster view)
    takes the event in, a status-less object is sighted, a change is queued, the watchers are told."""
    change = _take_in(cache, event)
    rt.sighted(plural, change.key, event, change.body)
    if not change.deleted and change.changed:
        queue.add(change.key)
    rt.fan_out(kind, change)
    return change


# The watch-event handlers are coroutines though nothing in them waits: kopf runs a plain function on a
# thread of its executor, once per watch event (a sixth of the operator's CPU at 1,000 VMs), and the
# caches and work queues they feed belong to the event loop.


@kopf.on.event(GROUP, VERSION, "hosts")
async def host_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    change = _take_in(rt.hosts, event)
    rt.sighted("hosts", change.key, event, change.body)
    if change.changed or REMOVE_ORPHANS_ANNOTATION in (
        change.body["metadata"].get("annotations") or {}
    ):  # an admin asked for the host's orphans to go (metadata changes leave the generation alone)
        rt.host_queue.add(change.key)
    standby_asked = change.old is not None and standby_intended(change.old) != standby_intended(change.body)
    if standby_asked:  # DPM's annotation came or went (the generation stays)
        rt.host_queue.add(change.key)
    if change.changed or standby_asked:  # maintenance (or Standby) begun or ended
        rt.evacuation_queue.add(change.key)
    rt.fan_out("Host", change)


def vm_event(rt: Runtime, kind: WatchEventType, body: dict[str, Any]) -> None:
    """A VirtualMachine watch event (vdc.kube.watch, not kopf: VMs come by the thousand). Its deletion is
    the VM controller's too (a VM with a deletionTimestamp is queued like any change)."""
    event: kopf.RawEvent = {"type": kind, "object": cast(kopf.RawBody, body)}
    change = _take_in(rt.vms, event)
    if change.deleted:
        rt.vm_controller.forget(str(change.body["metadata"].get("uid")))
    else:
        rt.sighted("virtualmachines", change.key, event, change.body)
        if change.changed or _restart_requested(change.body):
            rt.vm_queue.add(change.key)
    rt.fan_out("VirtualMachine", change)


async def _delete_or_wait(
    rt: Runtime,
    info: KindInfo,
    body: kopf.Body,
    delete: Callable[[dict[str, Any]], Awaitable[str]],
    logger: kopf.Logger,
) -> None:
    """Run a controller's deletion; while it must wait, say why once (an Event) and retry."""
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


@kopf.on.event(GROUP, VERSION, "storagepools")
async def pool_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    _queued_kind_event(rt, "storagepools", "StoragePool", rt.pools, rt.pool_queue, event)


@kopf.on.event(GROUP, VERSION, "virtualswitches")
async def switch_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    _queued_kind_event(rt, "virtualswitches", "VirtualSwitch", rt.switches, rt.switch_queue, event)


@kopf.on.delete(GROUP, VERSION, "virtualswitches")
async def switch_delete(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    await _delete_or_wait(rt, VirtualSwitch.KIND, body, rt.switch_controller.delete, logger)


@kopf.on.event(GROUP, VERSION, "appliances")
async def appliance_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    _queued_kind_event(rt, "appliances", "Appliance", rt.appliances, rt.appliance_queue, event)


@kopf.on.delete(GROUP, VERSION, "appliances")
async def appliance_delete(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    await _delete_or_wait(rt, Appliance.KIND, body, rt.appliance_controller.delete, logger)


@kopf.on.delete(GROUP, VERSION, "storagepools")
async def pool_delete(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    await _delete_or_wait(rt, StoragePool.KIND, body, rt.pool_controller.delete, logger)


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Namespace labels decide allowedNamespaces selectors: the watches say who looks again."""
    rt = runtime(memo)
    rt.fan_out("Namespace", _take_in(rt.namespaces, event))


@kopf.on.event(GROUP, VERSION, "computequotas")
async def quota_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    _queued_kind_event(rt, "computequotas", "ComputeQuota", rt.quotas, rt.quota_queue, event)


@kopf.on.event(GROUP, VERSION, "virtualmachinemigrations")
async def migration_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    change = _take_in(rt.migrations, event)
    rt.sighted("virtualmachinemigrations", change.key, event, change.body)
    if not change.deleted and (change.changed or change.body["metadata"].get("deletionTimestamp")):
        rt.migration_queue.add(change.key)
    phase = (change.body.get("status") or {}).get("phase")
    if change.deleted or phase in ("Succeeded", "Failed", "Cancelled"):  # the controller wakes slot waiters
        host = (change.body["metadata"].get("labels") or {}).get(EVACUATION_LABEL)
        if host:  # an evacuation's migration ended: its Host's evacuation status moves on
            rt.evacuation_queue.add(("", host))
    rt.fan_out("VirtualMachineMigration", change)


@kopf.on.delete(GROUP, VERSION, "virtualmachinemigrations")
async def migration_delete(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    """Deleting a migration cancels it: the libvirt job is aborted and its steps undone before it goes."""
    rt = runtime(memo)
    try:
        outcome = await rt.migration_controller.delete(dict(body))
    except DeletionWaits as exc:
        raise kopf.TemporaryError(str(exc), delay=1) from exc
    logger.info(outcome)


@kopf.on.event(GROUP, VERSION, "migrationpolicies")
async def policy_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Policies are read when a migration is scheduled and watched: a cache is all they need."""
    _take_in(runtime(memo).policies, event)


@kopf.on.event(GROUP, VERSION, "computeclusters")
async def computecluster_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A cluster counts again on its own changes; its watches requeue it on any Host change, and the other
    clusters on its selector changing (a host in two clusters is a member of neither)."""
    rt = runtime(memo)
    _queued_kind_event(rt, "computeclusters", "ComputeCluster", rt.computeclusters, rt.computecluster_queue, event)
