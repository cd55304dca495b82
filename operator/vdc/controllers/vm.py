"""VirtualMachine: a reconcile is four steps, *place → provision on a host → converge → report*.

* ``place``: the host the VM is on (adopted from libvirt, or chosen by the scheduler and written to
  status before anything is made there);
* ``provision(vm, host)``: volumes, seed ISOs, NIC ports and the domain definition for ``host`` (any
  host: migration and HA provision on a target that is not ``status.host``);
* ``converge``: the run strategy applied to the domain there (``vm_plan.plan_vm``, pure);
* ``report``: an ``Outcome`` becomes the status (``vm_status.vm_status``, pure) and Events.

A step that cannot go on raises ``Halt`` with the outcome to report."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes
import libvirt
from pydantic import ValidationError

from vdc.api.appliance import ApplianceStatus
from vdc.api.common import IoTune
from vdc.api.conditions import READY, now_rfc3339
from vdc.api.meta import FINALIZER
from vdc.api.operation import OperationRef
from vdc.api.quantity import format_bytes_mi
from vdc.api.virtualmachine import (
    RESTART_ANNOTATION,
    DiskStatus,
    InterfaceStatus,
    Phase,
    VirtualMachine,
    VirtualMachineStatus,
    restart_pending,
)
from vdc.cloudinit import CloudInitError
from vdc.cluster.requests import requested
from vdc.cluster.view import ClusterView
from vdc.controllers.disk_sources import (
    ApplianceImagesMissing,
    AttachedVolume,
    DiskSpecError,
    PoolMissing,
    VolumeFormat,
    VolumePlan,
    source_of,
)
from vdc.controllers.errors import DeletionWaits, ReportedFailure, first_line
from vdc.controllers.host import HostController
from vdc.controllers.host_health import RestartCandidate, refusal, waiting_for
from vdc.controllers.virtualswitch import SwitchController, allocation_for, libvirt_network_name
from vdc.controllers.vm_appliance import (
    ApplianceMismatch,
    ApplianceWait,
    StopBehaviour,
    appliance_status,
    base_volumes,
    spec_defaults,
)
from vdc.controllers.vm_disks import plan_volumes, pool_bytes, target_devices
from vdc.controllers.vm_domain import UnsupportedSpec, domain_for, domain_name
from vdc.controllers.vm_nics import AddressRefused, WaitingForAddress, bandwidth, nic_status_observed
from vdc.controllers.vm_plan import GUEST_RESET, VmPlan, plan_vm
from vdc.controllers.vm_qos import disks_in_force, interfaces_in_force, qos_in_force
from vdc.controllers.vm_status import (
    RESERVATION_NOT_GUARANTEED,
    Converged,
    Event,
    Outcome,
    State,
    VmRef,
    condition_message,
    stalled_reason,
    vm_events,
    vm_status,
)
from vdc.controllers.vm_vapp import (
    WAITING_FOR_STOP_ORDER,
    held_back,
    parse_time,
    start_order_wait,
    stop_order,
    stop_ordered,
)
from vdc.controllers.vm_volumes import delete_volumes, ensure_volumes, grow
from vdc.ipam import mac_for, owner_of
from vdc.keylocks import KeyLocks
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt import domains, storage
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.domain_xml import DiskConfig, DomainConfig, InterfaceConfig
from vdc.libvirt.errors import ConfigRejected, HookRefused, HostUnreachable, LibvirtFailure
from vdc.libvirt.host_facts import read_host_facts
from vdc.libvirt.storage import VolumeObservation
from vdc.operations.ownership import converge_hold, owner
from vdc.scheduler.placement import DEFAULT_POLICY, PlacementRequest, place
from vdc.tenancy.view import TenancyView
from vdc.workqueue import TokenBucket

log = logging.getLogger(__name__)

HOST_FILE_REFUSED = "HostFileRefused"
"""Stalled reason: the host's vdc qemu hook refused the VM's kernel/initrd (a symlink out of bounds)."""
DOMAIN_ON_SEVERAL_HOSTS = "DomainOnSeveralHosts"
"""Stalled reason: the VM has no host in status and more than one host holds its domain."""
STOPPING_POLL_SECONDS = 2.0
UNREACHABLE_POLL_SECONDS = 15.0
STARTUP_GRACE_SECONDS = 40.0
"""After the operator starts, a healthy host whose connection is still being opened for the first time (up to
libvirt's open timeout) is waited for quietly: its VMs are not reported unreachable in between (a restart
rewrote the status of VMs looked at before their host's connection was up, twice)."""
CONNECTING_POLL_SECONDS = 5.0
FINALIZER_RETRY_SECONDS = 0.5
DELETION_RETRY_SECONDS = 15.0
"""How soon a deletion that must wait (DeletionWaits) is tried again."""


@dataclasses.dataclass(frozen=True)
class Settled:
    """A VM as its last settled reconcile saw it: the object's version, its host, its domain's fingerprint."""

    resource_version: str
    host: str
    fingerprint: int


@dataclasses.dataclass(frozen=True)
class HaCluster:
    """The ComputeCluster whose HA protects a host."""

    name: str
    disk_leases: bool
    """Its hosts' disks are leased (virtlockd): a Failed host's VMs may restart though it is not fenced."""


HA_WAIT_SECONDS = 2.0
"""How often a VM waiting for its turn to be restarted by HA (priority, order, rate) looks again."""
HA_RESTARTS_PER_SECOND = 10.0
HA_RESTART_BURST = 20
"""HA restarts placed per second (a burst of that many at once): a failed host's VMs do not all hit the
surviving hosts' libvirtds and the API server in the same instant."""


class DeletionBlocked(DeletionWaits):
    """The VM's domain cannot be removed now (its host is unreachable); says how to get out."""


class Halt(Exception):
    """A step ends the reconcile: ``outcome`` is reported (None: nothing to report), ``requeue`` returned,
    and ``then`` raised afterwards (a failure the work queue retries with backoff)."""

    def __init__(
        self, outcome: Outcome | None, requeue: float | None = None, then: BaseException | None = None
    ) -> None:
        super().__init__(outcome.message if outcome else "")
        self.outcome, self.requeue, self.then = outcome, requeue, then


@dataclass(frozen=True)
class Inputs:
    """What the VM's spec resolves to before any host is involved."""

    vm: VirtualMachine
    ref: VmRef
    appliances: dict[str, ApplianceStatus]
    plans: list[VolumePlan]
    access: Mapping[str, str]
    """disk -> how the namespace may use its volume (Owned, Adopted, …)."""
    host_files: tuple[str, ...]


@dataclass(frozen=True)
class Provisioned:
    """The VM made on a host, short of running: its volumes, NIC ports and the domain to define."""

    host: str
    conn: HostConnection
    desired: DomainConfig
    disks: list[DiskStatus]
    interfaces: list[InterfaceStatus]


@dataclass(frozen=True)
class _SourceContext:
    appliances: Mapping[str, ApplianceStatus]
    writer: KubeWriter

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return await self.writer.secret_data(namespace, name)


def ref_of(body: dict[str, Any]) -> VmRef:
    meta = body["metadata"]
    return VmRef(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")), meta.get("generation"))


# What each planned action does on the host: (connection, the domain wanted, the disks the domain has live).
_ActionStep = Callable[[libvirt.virConnect, DomainConfig, Sequence[DiskConfig]], object]
_ACTION_STEPS: Mapping[str, _ActionStep] = {
    "define": lambda c, d, live: domains.define(c, d),
    "start": lambda c, d, live: domains.start(c, d.uuid),
    "shutdown": lambda c, d, live: domains.shutdown(c, d.uuid),
    "destroy": lambda c, d, live: domains.destroy(c, d.uuid),
    "set-memory": lambda c, d, live: domains.set_memory(c, d.uuid, d.current_memory_kib),
    "set-link-state": lambda c, d, live: domains.set_link_states(c, d.uuid, d.interfaces),
    "set-bandwidth": lambda c, d, live: domains.set_bandwidth(c, d.uuid, d.interfaces),
    "set-cpu-tune": lambda c, d, live: domains.set_cpu_tune(c, d.uuid, d.cputune),
    "set-memory-tune": lambda c, d, live: domains.set_memory_tune(c, d.uuid, d.memtune),
    "set-io-tune": lambda c, d, live: domains.set_io_tune(c, d.uuid, d.disks, live),
}


class VmController:
    def __init__(
        self,
        vms: ObjectCache,
        hosts: ObjectCache,
        connections: ConnectionManager,
        writer: KubeWriter,
        host_controller: HostController,
        pools: ObjectCache | None = None,
        switches: ObjectCache | None = None,
        switch_controller: SwitchController | None = None,
        appliances: ObjectCache | None = None,
        tenancy: TenancyView | None = None,
        cluster: ClusterView | None = None,
    ) -> None:
        self.pools = pools if pools is not None else ObjectCache()
        self.appliances = appliances if appliances is not None else ObjectCache()
        self.switches = switches if switches is not None else ObjectCache()
        self.switch_controller = switch_controller
        self.vms = vms
        self.hosts = hosts
        self.connections = connections
        self.writer = writer
        self.host_controller = host_controller
        self.tenancy = tenancy or TenancyView(
            namespaces=ObjectCache(), hosts=hosts, pools=self.pools, switches=self.switches,
            appliances=self.appliances, vms=vms, quotas=ObjectCache(),
        )  # fmt: skip
        if cluster is None and isinstance(host_controller, HostController):
            cluster = host_controller.cluster  # the one view the operator shares
        self.cluster = (
            cluster
            if cluster is not None
            else ClusterView(hosts=hosts, vms=vms, pools=self.pools, switches=self.switches, appliances=self.appliances)
        )
        """The VM -> host assignment (status.host, else the reservation placement made) and the ledger."""
        self._shutdown_since: dict[str, float] = {}
        """uid -> when (epoch seconds) the guest was asked to shut down; kept in status too (durable)."""
        self._started = time.monotonic()
        self._scheduled: dict[str, Event] = {}
        """uid -> the Scheduled Event of a placement just written, not posted yet: it goes out folded into the
        Started Event that normally follows (one Event per new VM, not two), else with the next report."""
        self._locks: KeyLocks[Key] = KeyLocks()
        self._deleted: set[str] = set()
        self._deletion_blocked: set[str] = set()
        self._finalized: set[str] = set()
        """uids whose finalizer we removed (until the watch says the VM is gone: :meth:`forget`)."""
        self._settled: dict[str, Settled] = {}
        """uid -> how its last reconcile that left it Current (nothing to look at again) saw it (:meth:`verify`)."""
        self._starting: dict[str, str] = {}
        """uid -> host of the starts this controller made whose STARTED event has not come yet (:meth:`own_start`)."""
        self.maintenance_stop: Callable[[dict[str, Any]], str | None] = lambda body: None
        self._restart_tokens = TokenBucket(HA_RESTARTS_PER_SECOND, HA_RESTART_BURST)
        self.ha_cluster: Callable[[str], HaCluster | None] = lambda host: None
        """The ComputeCluster with HA enabled that holds a host (its member), or None: no restart elsewhere."""
        self.operation_exists: Callable[[str, OperationRef], bool] = lambda namespace, ref: True
        self.demand_loads: Callable[[Mapping[str, Any], Sequence[str]], Mapping[str, float]] = lambda vm, hosts: {}
        """Host -> measured load, for the hosts of ComputeClusters whose DRS places the VM by demand
        (vdc.controllers.drs.DrsController.demand_loads); empty: the default policy."""
        self.rule_refusals: Callable[[Mapping[str, Any], Sequence[str]], Mapping[str, str]] = lambda vm, hosts: {}
        """Host -> why a ComputeCluster's must rule forbids the VM there (vdc.controllers.drs.rules_hook)."""
        self.admission_refusals: Callable[[list[str], int, int, str | None], Mapping[str, str]] = (
            lambda hosts, cpus, memory, source: {}
        )
        """Host -> why its ComputeCluster's HA admission control refuses a VM of ``cpus`` and ``memory`` moving
        from ``source`` (None: a new placement); vdc.controllers.computecluster.admission_refusals."""
        """Whether the operation a VM's status.operation names still exists (its kind's cache)."""
        """Why a VM must be kept stopped for its host's maintenance (vdc.controllers.evacuation), or None."""
        """uids whose deletion ran: a reconcile that comes after must not make anything again."""

    # --- reconcile: place -> provision -> converge -> report --------------------------------
    async def reconcile(self, key: Key) -> float | None:
        async with self._locks.hold(key):  # never alongside the VM's deletion
            return await self._reconcile(key)

    async def _reconcile(self, key: Key) -> float | None:
        body = self.vms.get(key)
        if body is not None and body["metadata"].get("deletionTimestamp"):
            return await self._finalize(body)
        if body is None or body["metadata"].get("uid") in self._deleted:
            return None
        hold = converge_hold(body)
        if hold is not None and not self._owner_gone(body):
            log.debug("vm %s/%s: not converged: %s", *key, hold)  # the operation reports the VM meanwhile
            return None
        if hold is not None:
            body = await self._release_from_gone_owner(body)
        try:
            vm = VirtualMachine.model_validate(body)
        except ValidationError as exc:
            await self.report(body, None, Outcome(ref_of(body), "Failed", "Failed", "InvalidSpec", str(exc)))
            return None
        old = vm.status or VirtualMachineStatus()
        uid = str(vm.metadata["uid"])
        if uid not in self._shutdown_since and old.shutdown_requested_at:  # asked before a restart
            self._shutdown_since[uid] = parse_time(old.shutdown_requested_at)
        self._settled.pop(uid, None)
        try:
            body = await self._with_finalizer(body)
            inputs = await self._admit(body, vm, old)
            host, placed_now = await self.place(body, inputs, old)
            provisioned = await self._provision_or_halt(inputs, host, old)
            outcome, requeue, fingerprint = await self.converge(body, inputs, old, provisioned, placed_now=placed_now)
        except Halt as halt:
            if halt.outcome is not None:
                await self.report(body, old, halt.outcome)
            if halt.then is not None:
                raise halt.then from halt.then.__cause__
            return halt.requeue
        written = await self.report(body, old, outcome)
        if requeue is None and outcome.state == "Current" and fingerprint is not None and outcome.host:
            # The version the VM has after this reconcile: its status write's when it wrote one (settled on the
            # version before, a VM whose status changed was reconciled in full again at the next resync).
            version = written or str(body["metadata"].get("resourceVersion"))
            self._settled[uid] = Settled(version, outcome.host, fingerprint)
        return requeue

    async def verify(self, key: Key) -> bool:
        """Whether the VM is still as its last settled reconcile left it, asked cheaply (the safety-net resync):
        the same object version, and its domain read back the same (:func:`domains.domain_fingerprint`: two
        XML reads, no parse, no plan, no write). False: it needs a full reconcile."""
        body = self.vms.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return False
        settled = self._settled.get(str(body["metadata"].get("uid")))
        if settled is None:
            return False
        # Another version: changed since, unless it is our own status write not back from the watch yet (the
        # cached body keeps the version from before it); a change by anyone else comes as a watch event.
        if settled.resource_version != str(body["metadata"].get("resourceVersion")) and not self.vms.status_pending(
            key
        ):
            return False
        conn = self.connections.get(settled.host)
        if conn is None or not conn.connected:
            return False
        uid = str(body["metadata"]["uid"])
        try:
            return await conn.call(functools.partial(domains.domain_fingerprint, uuid=uid)) == settled.fingerprint
        except LibvirtFailure:
            return False

    async def _with_finalizer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body with our finalizer, added now if it lacks it: before the VM is admitted, placed or made
        anything for, so that its deletion always comes through us (:meth:`_finalize`), whatever its
        spec asks (a spec refused now may have made something under an earlier generation)."""
        if FINALIZER in (body["metadata"].get("finalizers") or ()):
            return body
        # Its watch event is not queued again: this reconcile goes on with the VM the patch makes.
        self.vms.expect_own_finalizer(key_of(body), str(body["metadata"].get("resourceVersion")), FINALIZER)
        added = await self.writer.add_finalizer(VirtualMachine.KIND, body, FINALIZER)
        if added is None:  # the VM changed meanwhile: look again at its newer version
            raise Halt(None, FINALIZER_RETRY_SECONDS)
        return {**body, "metadata": added["metadata"]}

    def _owner_gone(self, body: dict[str, Any]) -> bool:
        ref = owner(body)
        return ref is not None and not self.operation_exists(str(body["metadata"].get("namespace")), ref)

    async def _release_from_gone_owner(self, body: dict[str, Any]) -> dict[str, Any]:
        """The operation that owned the VM is gone without releasing it (removed with its finalizer by
        hand): the VM is the VM controller's again, with an Event that says so."""
        ref = owner(body)
        status = {k: v for k, v in (body.get("status") or {}).items() if k != "operation"}
        sent = await self.writer.patch_status(VirtualMachine.KIND, body, status, unchanged=True)
        if sent:
            self.vms.note_status(key_of(body), sent)
        if ref is not None:
            message = f"{ref.kind} {ref.name} owned the VM and is gone: the operator manages the VM again"
            await self.writer.event(VirtualMachine.KIND, body, "OperationGone", message, warning=True)
        return self.vms.get(key_of(body)) or {**body, "status": status}

    async def _admit(self, body: dict[str, Any], vm: VirtualMachine, old: VirtualMachineStatus) -> Inputs:
        """The spec checked against what the namespace may use, filled in from its appliance, and resolved
        (appliances, volumes); Halt when it cannot go on."""
        ref = ref_of(body)
        access = self.tenancy.check_vm(vm)
        refusals = list(access.refusals)
        host_files = _host_files_of(vm)
        if host_files and not self.tenancy.any_host_serves_files(ref.namespace, host_files):
            files = ", ".join(host_files)
            refusals.append(f"spec.boot.kernel: no Host lets namespace {ref.namespace} boot from {files} (a "
                            "cluster admin declares directories in a Host's spec.hostFiles.allowedPaths)")  # fmt: skip
        if refusals:  # before anything is written or created anywhere, every refusal at once
            raise Halt(Outcome(ref, "Failed", "Failed", "AccessDenied", "; ".join(refusals)))
        if stalled_reason(old) == HOST_FILE_REFUSED and old.observed_generation == ref.generation:
            raise Halt(None)  # the host's hook refused this spec's files: only a new spec (or a re-created VM) helps
        try:
            appliances = self._appliances_of(vm)
            await self._fill_in_from_appliance(body, vm, appliances)
            return self._resolve(vm, appliances, access.volumes)
        except (ApplianceWait, ApplianceImagesMissing) as exc:  # appliance events bring it back
            raise Halt(Outcome(ref, "Provisioning", "InProgress", "WaitingForAppliance", str(exc))) from exc
        except ApplianceMismatch as exc:
            raise Halt(Outcome(ref, "Failed", "Failed", "ApplianceMismatch", str(exc))) from exc
        except DiskSpecError as exc:
            raise Halt(Outcome(ref, "Failed", "Failed", "UnsupportedSpec", str(exc))) from exc
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:  # changed meanwhile: its watch event brings it back
                raise Halt(None) from exc
            raise

    async def _fill_in_from_appliance(
        self, body: dict[str, Any], vm: VirtualMachine, appliances: dict[str, ApplianceStatus]
    ) -> None:
        """What the spec leaves out comes from the VM's appliance, written into the spec once; Halt then
        (the watch brings the new spec)."""
        source = vm.spec.from_appliance
        if source is None:
            return
        where = source.namespace or str(vm.metadata["namespace"])
        pool = str((self.appliances.get((where, source.name)) or {})["spec"]["storagePool"])
        patch = spec_defaults(body["spec"], appliances[source.name], pool)
        if patch:
            await self.writer.patch_spec(VirtualMachine.KIND, body, patch)
            log.info("vm %s/%s: spec filled in from appliance %s", where, vm.metadata["name"], source.name)
            raise Halt(None)

    def resolve(self, vm: VirtualMachine) -> Inputs:
        """The VM's spec resolved against its appliances and tenancy (raises as :meth:`_resolve`)."""
        return self._resolve(vm)

    def _resolve(
        self,
        vm: VirtualMachine,
        appliances: dict[str, ApplianceStatus] | None = None,
        access: Mapping[str, str] | None = None,
    ) -> Inputs:
        """The VM's appliances and volume plans (raises ApplianceWait, ApplianceMismatch, DiskSpecError)."""
        appliances = self._appliances_of(vm) if appliances is None else appliances
        plans = plan_volumes(vm, {name: base_volumes(status) for name, status in appliances.items()})
        access = self.tenancy.check_vm(vm).volumes if access is None else access
        meta = vm.metadata
        generation = meta.get("generation")
        ref = VmRef(
            str(meta["namespace"]),
            str(meta["name"]),
            str(meta["uid"]),
            generation if isinstance(generation, int) else None,
        )
        return Inputs(vm, ref, appliances, plans, access, _host_files_of(vm))

    # --- place -----------------------------------------------------------------------------
    def host_of(self, vm: dict[str, Any]) -> str | None:
        return self.cluster.host_of(vm)

    async def place(self, body: dict[str, Any], inputs: Inputs, old: VirtualMachineStatus) -> tuple[str, bool]:
        """The VM's host: its status, or the one host holding its domain (adoption), or the scheduler's
        choice, written to status before anything is made there. Halt when there is none. The flag: placed
        by the scheduler just now, so no host holds its domain (:meth:`_find_existing` found none)."""
        ref = inputs.ref
        host = self.host_of(body)
        if host is None:
            holders = await self._find_existing(ref.uid)
            if len(holders) > 1:
                message = (f"domain {ref.uid} exists on hosts {', '.join(holders)}: remove it from all but "
                           "one (virsh undefine) or delete the VM")  # fmt: skip
                outcome = Outcome(ref, "Unknown", "Failed", DOMAIN_ON_SEVERAL_HOSTS, message)  # a Warning Event too
                raise Halt(outcome, UNREACHABLE_POLL_SECONDS)
            if holders:
                host = holders[0]
                self.cluster.reserve(body, host)  # counted (quota, capacity) before its status says so
        if host is not None and not self._connected(host) and self._first_connecting(host):
            raise Halt(None, CONNECTING_POLL_SECONDS)  # the connection requeues the host's VMs when it is up
        if host is not None and not self._connected(host):
            host = await self._failover(body, inputs, old, host)
        if host is not None and (refused := self.tenancy.host_files_refusal(host, ref.namespace, inputs.host_files)):
            raise Halt(Outcome(ref, "Failed", "Failed", "AccessDenied", refused))
        if host is not None:
            return host, False
        host, why = self._schedule(body, inputs)
        # The placement is in status before anything is made on the host: a crash from here on finds
        # the volumes and domain where they were made, never places the VM again elsewhere (leaking them).
        placed = f"placed on host {host}"
        await self.report(body, old, Outcome(ref, "Provisioning", "InProgress", "Provisioning", placed, host=host))
        self._scheduled[ref.uid] = Event("Scheduled", why)
        return host, True

    def _health(self, host: str) -> tuple[str, str]:
        """(state, message) of HA's judgement of ``host`` (vdc.controllers.host_health), from its status."""
        ha = ((self.hosts.get(("", host)) or {}).get("status") or {}).get("ha") or {}
        return str(ha.get("state") or "Healthy"), str(ha.get("message") or "")

    def _restart_candidate(self, body: dict[str, Any]) -> RestartCandidate:
        spec = body.get("spec") or {}
        availability = spec.get("availability") or {}
        shared = {str(p["metadata"]["name"]) for p in self.pools if (p.get("spec") or {}).get("shared")}
        disks = (body.get("status") or {}).get("disks") or []
        local = sorted({str(d["pool"]) for d in disks if d.get("pool") and d["pool"] not in shared})
        return RestartCandidate(
            namespace=str(body["metadata"].get("namespace")),
            name=str(body["metadata"].get("name")),
            priority=str(availability.get("restartPriority") or "Medium"),
            wants_running=spec.get("runStrategy", "Always") != "Halted",
            pinned=bool(spec.get("host")),
            local_pools=tuple(local),
            restart_after=tuple(availability.get("restartAfter") or ()),
        )

    async def _failover(self, body: dict[str, Any], inputs: Inputs, old: VirtualMachineStatus, host: str) -> str:
        """The VM's host is unreachable. Only when HA judged it Fenced (powered off for sure) is the VM placed
        on another host, once, written to status before anything is made there (a crash from then on goes on
        there); until then it stays Unknown with HA's reason. See vdc.controllers.host_health."""
        ref = inputs.ref
        state, why = self._health(host)
        protector = self.ha_cluster(host)
        leased = state == "Failed" and protector is not None and protector.disk_leases
        if state != "Fenced" and not leased:
            if state in ("Suspect", "Failed"):
                message = f"host {host} is unreachable ({state}): {why}"
                raise Halt(Outcome(ref, "Unknown", "Unknown", "HostUnreachable", message, host=host),
                           UNREACHABLE_POLL_SECONDS)  # fmt: skip
            return host  # provisioning says it is unreachable
        if protector is None:
            message = (f"host {host} failed and is fenced, but no ComputeCluster with spec.ha.enabled holds it: the "
                       "VM is not restarted elsewhere")  # fmt: skip
            raise Halt(
                Outcome(ref, "Unknown", "Unknown", "NotRestartable", message, host=host), UNREACHABLE_POLL_SECONDS
            )
        candidate = self._restart_candidate(body)
        refused = refusal(candidate, host)
        if refused is not None:
            raise Halt(
                Outcome(ref, "Unknown", "Unknown", "NotRestartable", refused, host=host), UNREACHABLE_POLL_SECONDS
            )
        if candidate.wants_running:
            # The failed host's other VMs from the index (not a scan of every VM), and only the VMs of its
            # restart order looked up: this runs for each VM of a failed host, every HA_WAIT_SECONDS.
            on_host = (self.vms.get(key) for key in self.cluster.vms_on(host) if key != key_of(body))
            others = [c for b in on_host if b is not None and (c := self._restart_candidate(b)).wants_running
                      and refusal(c, host) is None]  # fmt: skip
            running = {(ref.namespace, name) for name in candidate.restart_after
                       if _phase(self.vms.get((ref.namespace, name))) == "Running"}  # fmt: skip
            waits = waiting_for(candidate, others, running)
            if waits is not None:
                message = f"host {host} failed and is fenced; the restart waits for {waits}"
                raise Halt(Outcome(ref, "Unknown", "Unknown", "WaitingToRestart", message, host=host), HA_WAIT_SECONDS)
        if not self._restart_tokens.take():
            message = f"host {host} failed and is fenced; HA restarts are rate-limited ({HA_RESTARTS_PER_SECOND:g}/s)"
            raise Halt(Outcome(ref, "Unknown", "Unknown", "WaitingToRestart", message, host=host), HA_WAIT_SECONDS)
        target, why_there = self._schedule(body, inputs)
        self.cluster.move(body, target)  # the next restart placed before this one's status write sees it there
        log.info("vm %s/%s: HA restart placed on %s (host %s %s)", ref.namespace, ref.name, target, host, state)
        how = "was fenced" if state == "Fenced" else "cannot be fenced, but its disks are leased"
        message = (
            f"host {host} failed and {how}: ComputeCluster {protector.name} restarts the VM on {target} ({why_there})"
        )
        disks = [d.model_copy(update={"host": target}) for d in old.disks]
        events = (Event("HaRestart", message, warning=True),)
        outcome = Outcome(
            ref, "Provisioning", "InProgress", "HaRestart", message, host=target, disks=disks, events=events
        )
        try:
            await self.report(body, old, outcome)
        except BaseException:
            # Not in status: nothing may be made on the target (a crash then would restart the VM elsewhere
            # again, beside this copy); the next reconcile decides afresh.
            self.cluster.release(body)
            raise
        return target

    def _schedule(self, body: dict[str, Any], inputs: Inputs) -> tuple[str, str]:
        """A host for the VM (and why), assumed at once; Halt when quota, capacity or admission control refuse it.

        From the quota check to the assumed placement nothing awaits: VMs reconciled concurrently see
        each other's placements, so many VMs created at once cannot over-commit the quota."""
        ref = inputs.ref
        over = self.tenancy.quota_refusal(body, self.host_of)
        if over is not None:  # VM deletions and quota changes bring it back
            raise Halt(Outcome(ref, "Scheduling", "Failed", "QuotaExceeded", over,
                               unschedulable=("QuotaExceeded", over)))  # fmt: skip
        request = self.placement_request(body, inputs)
        candidates = self.cluster.candidates(key_of(body), connected=self._connected)
        forbidden = self.rule_refusals(body, [c.name for c in candidates])
        if forbidden:
            candidates = [dataclasses.replace(c, rule_refusal=forbidden.get(c.name)) for c in candidates]
        if self.host_of(body) is None:  # not an HA restart: that uses the room admission control kept for it
            refused = self.admission_refusals([c.name for c in candidates], request.cpus, request.memory, None)
            if refused:  # most often none: a copy of every candidate per VM was a tenth of a 10,000-VM rollout
                candidates = [dataclasses.replace(c, admission_refusal=refused.get(c.name)) for c in candidates]
        loads = self.demand_loads(body, [c.name for c in candidates])
        if loads:  # a ComputeCluster with DRS places by measured demand
            candidates = [dataclasses.replace(c, demand_load=loads.get(c.name)) for c in candidates]
        decision = place(request, candidates, "Demand" if loads else DEFAULT_POLICY)
        if decision.host is None:  # retried when hosts or ComputeClusters change
            raise Halt(Outcome(ref, "Scheduling", "InProgress", "Unschedulable", decision.reason,
                               unschedulable=("Unschedulable", decision.reason)))  # fmt: skip
        self.cluster.reserve(body, decision.host)
        return decision.host, decision.reason

    def placement_request(self, body: dict[str, Any], inputs: Inputs) -> PlacementRequest:
        """What the VM needs of a host: the scheduler's input for a new placement, or a migration's."""
        spec = inputs.vm.spec
        asked = requested(body)
        return PlacementRequest(
            cpus=asked.vcpus,
            memory=asked.memory_bytes,
            cpu_reservation_millis=asked.cpu_reservation_millis,
            memory_reservation=asked.memory_reservation_bytes,
            pinned_host=spec.host,
            selector=spec.host_selector,
            pool_bytes=pool_bytes(inputs.plans),
            switches=frozenset(nic.switch for nic in spec.interfaces),
            images={name: frozenset(status.hosts) for name, status in inputs.appliances.items()},
            host_files=inputs.host_files,
            tenant=self.tenancy.tenant(inputs.ref.namespace),
        )

    def connected(self, host: str) -> bool:
        return self._connected(host)

    def _connected(self, host: str) -> bool:
        conn = self.connections.get(host)
        return conn is not None and conn.connected

    def _first_connecting(self, host: str) -> bool:
        """Whether the operator started moments ago and ``host``, healthy by HA's last word, has not had its
        connection opened or failed yet (see STARTUP_GRACE_SECONDS)."""
        if time.monotonic() - self._started > STARTUP_GRACE_SECONDS or self._health(host)[0] != "Healthy":
            return False
        if self.hosts.get(("", host)) is None:
            return False  # no such Host: said as it always was
        conn = self.connections.get(host)
        return conn is None or (not conn.connected and conn.last_error is None)

    async def _find_existing(self, uid: str) -> list[str]:
        """Every connected host with a domain of this UUID: adoption (a crash mid-create) when there is one;
        more than one only after a crash of an older version, a host that came back after its VM was
        restarted elsewhere, or a migration.

        A host is asked (a lookup) only when its connection's index of domains says it holds the UUID or
        does not know (not listed yet): a "yes" is confirmed, so the hosts found are the ones asking every
        host finds, and a new VM costs no call at all (not one per host: VMs x hosts calls at scale).

        A "no" misses nothing asking would find. The index is the host's listing taken after the connection
        subscribed to lifecycle events, plus every event since (``vdc.libvirt.domain_index``): it lacks a
        domain only in the event latency (milliseconds) after libvirt made it. No domain this process makes
        is asked about within it: a VM's domain is made only on the host ``host_of`` names first (status,
        reservation, HA move) and ``place`` asks only when it names none, while ``_delete`` adds that host to
        what is found. A domain made elsewhere in that instant (by a migration to its target, by hand) is a
        race that asking can lose as well: the hosts are asked one after another, and one asked a moment
        before the domain appears is not asked again. Anything made before the connection opened (an
        earlier run, a restored etcd, an upgrade) is in the listing. A disconnected host is skipped, as
        always; a reconnected one is asked each time until its domains are listed again."""
        found = []
        for name in sorted(self.connections.names()):
            conn = self.connections.get(name)
            if conn is None or not conn.connected:
                continue
            if conn.holds_domain(uid) is False:
                continue
            try:
                if await conn.call(lambda c: domains.domain_exists(c, uid)):
                    found.append(name)
            except LibvirtFailure:
                continue
        return found

    # --- provision -------------------------------------------------------------------------
    async def provision(self, vm: VirtualMachine, host: str, inputs: Inputs | None = None) -> Provisioned:
        """Everything the VM needs on ``host`` short of running there: its volumes (each made by its disk
        source, seed ISOs included), its NICs' ports and the domain definition for that host. ``host`` need
        not be ``status.host`` (a migration's or an HA restart's target). Nothing is written to the API.

        Raises HostUnreachable, PoolMissing, WaitingForAddress, AddressRefused, DiskSpecError,
        UnsupportedSpec, CloudInitError, LibvirtFailure (and what resolving the spec raises)."""
        inputs = inputs or self._resolve(vm)
        conn = self.connections.get(host)
        if conn is None or not conn.connected:
            raise HostUnreachable(f"host {host} is unreachable: {conn.last_error if conn else 'no such Host'}")
        facts = self.host_controller.facts(host)
        if facts is None:
            facts = await conn.call(read_host_facts)
        context = _SourceContext(inputs.appliances, self.writer)
        contents = {p.disk: await p.source.prepare(vm, context) for p in inputs.plans}
        # No volumes: no call (a thread hop per VM at scale for nothing).
        volumes = await conn.call(lambda c: ensure_volumes(c, inputs.plans, contents)) if inputs.plans else {}
        nics = self._nics(vm)
        pools = {p.disk: p.pool for p in inputs.plans}
        host_spec = (self.hosts.get(("", host)) or {}).get("spec", {})
        desired = domain_for(
            vm,
            domain_type=facts.domain_type(host_spec.get("virtualization", "Auto")),
            volumes={d: AttachedVolume(v.path, _format(v), *self._pool_tune(pools[d])) for d, v in volumes.items()},
            interfaces=[config for config, _ in nics],
            host_file_dirs=self.tenancy.host_file_dirs(host),
            generation=inputs.ref.generation,
        )
        volumes = await self._grow(conn, vm, inputs.plans, volumes, desired)
        ref = inputs.ref
        owner = f"{ref.namespace}/{ref.name} ({ref.uid})"
        disks = [
            DiskStatus(name=p.disk, host=host, pool=p.pool, volume=p.volume, path=volumes[p.disk].path,
                       capacity=format_bytes_mi(volumes[p.disk].capacity_bytes),
                       allocation=format_bytes_mi(volumes[p.disk].allocation_bytes),
                       access=inputs.access.get(p.disk),
                       owner=owner if inputs.access.get(p.disk) == "Owned" else None)
            for p in inputs.plans
        ]  # fmt: skip
        return Provisioned(host, conn, desired, disks, [status for _, status in nics])

    def _pool_tune(self, pool: str) -> tuple[str, IoTune | None]:
        """(the pool, its default disk limits: spec.diskIotune, None when it has none or it does not parse)."""
        wire = ((self.pools.get(("", pool)) or {}).get("spec") or {}).get("diskIotune")
        try:
            return pool, IoTune.model_validate(wire) if wire else None
        except ValidationError:
            return pool, None

    async def _provision_or_halt(self, inputs: Inputs, host: str, old: VirtualMachineStatus) -> Provisioned:
        try:
            return await self.provision(inputs.vm, host, inputs)
        except Exception as exc:
            halt = _halt_for(exc, inputs.ref, host, "Provisioning", old)
            if halt is None:
                raise
            raise halt from exc

    def _nics(self, vm: VirtualMachine) -> list[tuple[InterfaceConfig, InterfaceStatus]]:
        """Each NIC's port on its switch, with the address the switch's IPAM gave it.

        Raises WaitingForAddress until every NIC has one, AddressRefused when the switch's IPAM refused
        the NIC (a taken or foreign address)."""
        ns, name, uid = str(vm.metadata["namespace"]), str(vm.metadata["name"]), str(vm.metadata["uid"])
        out = []
        for nic in vm.spec.interfaces:
            switch = self.switches.get(("", nic.switch))
            if switch is None:
                raise WaitingForAddress(f"switch {nic.switch} does not exist")
            owner = owner_of(ns, name, nic.name)
            refused = (self.switch_controller.errors.get(nic.switch, {}) if self.switch_controller else {}).get(owner)
            if refused:
                raise AddressRefused(f"interface {nic.name}: {refused}")
            allocation = allocation_for(switch, owner)
            mac = nic.mac_address or mac_for(uid, nic.name)
            if allocation is None or allocation.mac != mac or allocation.pending:
                raise WaitingForAddress(f"interface {nic.name}: waiting for an address on switch {nic.switch}")
            limits = bandwidth(switch.get("spec", {}).get("bandwidth"), nic.bandwidth)
            out.append((
                InterfaceConfig(network=libvirt_network_name(nic.switch), mac=mac, model=nic.model,
                                bandwidth=limits, link_state=nic.link_state),
                InterfaceStatus(name=nic.name, mac_address=mac, ip_addresses=[allocation.ip], switch=nic.switch),
            ))  # fmt: skip
        return out

    async def _grow(
        self,
        conn: HostConnection,
        vm: VirtualMachine,
        plans: list[VolumePlan],
        volumes: dict[str, VolumeObservation],
        desired: DomainConfig,
    ) -> dict[str, VolumeObservation]:
        """Volumes smaller than the spec grow: live through QEMU when running, else on the host."""
        uid = desired.uuid
        devices = target_devices(vm.spec.disks)
        for plan in plans:
            current = volumes[plan.disk]
            if plan.capacity is None or not plan.source.grows or current.capacity_bytes >= plan.capacity:
                continue
            observed = await conn.call(functools.partial(domains.observe_domain, uuid=uid))
            if observed is not None and observed.state in ("running", "paused"):
                await conn.call(
                    functools.partial(
                        domains.block_resize, uuid=uid, target_dev=devices[plan.disk], capacity_bytes=plan.capacity
                    )
                )
            else:
                await conn.call(functools.partial(grow, plan=plan, current=current))
            grown = await conn.call(
                functools.partial(storage.observe_volume, pool=plan.libvirt_pool, name=plan.volume, refresh=True)
            )
            volumes[plan.disk] = grown or current
        return volumes

    # --- converge --------------------------------------------------------------------------
    async def converge(
        self, body: dict[str, Any], inputs: Inputs, old: VirtualMachineStatus, made: Provisioned, *,
        placed_now: bool = False,
    ) -> tuple[Outcome, float | None, int | None]:  # fmt: skip
        """The run strategy applied to the domain on ``made.host``: the outcome to report, when to look again, and
        the fingerprint of the domain as last observed (None: no domain), for the resync's verify.
        ``placed_now``: the scheduler placed the VM in this reconcile, so its domain is not looked up first."""
        try:
            return await self._converge(body, inputs, old, made, placed_now)
        except HookRefused as exc:
            # The host resolved the VM's files (symlinks) and refused them: the domain never ran; remove it.
            await made.conn.call(lambda c: domains.remove(c, made.desired.uuid))
            refusal = f"host {made.host} refused to start the domain: {exc.refusal}"
            raise Halt(Outcome(inputs.ref, "Failed", "Failed", HOST_FILE_REFUSED, refusal, host=made.host)) from exc
        except Exception as exc:
            halt = _halt_for(exc, inputs.ref, made.host, "Starting", old)
            if halt is None:
                raise
            raise halt from exc

    async def _converge(
        self, body: dict[str, Any], inputs: Inputs, old: VirtualMachineStatus, made: Provisioned, placed_now: bool
    ) -> tuple[Outcome, float | None, int | None]:
        vm, conn, desired = inputs.vm, made.conn, made.desired
        uid = desired.uuid
        strategy = vm.spec.run_strategy
        held = self.maintenance_stop(body)
        if held is not None:  # its host is in maintenance and it is not to be migrated: kept stopped
            strategy = "Halted"
        # Placed just now: no host had its domain a moment ago and nothing but this reconcile makes one
        # for a VM with no host (the VM's lock is held), so there is nothing to look up.
        observed = None if placed_now else await conn.call(lambda c: domains.observe_domain(c, uid))
        annotations = body["metadata"].get("annotations") or {}
        restart = restart_pending(annotations.get(RESTART_ANNOTATION), old.boot_time)
        stop = self._stop_order(body) if strategy == "Halted" else None  # a vApp member: stop order, stopAction
        grace = vm.spec.termination_grace_period_seconds
        if stop is not None and stop[1].grace_seconds is not None:
            grace = stop[1].grace_seconds

        def planned(observed: domains.DomainObservation | None, started: bool) -> VmPlan:
            since = self._shutdown_since.get(uid)
            plan = plan_vm(
                strategy,
                desired,
                observed,
                booted_before=old.boot_time is not None or started,
                shutdown_elapsed=None if since is None else time.time() - since,
                grace_seconds=grace,
                restart_requested=restart and not started,
                vm_monitoring=vm.spec.availability.vm_monitoring,
            )
            return plan

        plan = planned(observed, False)
        start_wait = self._start_order_wait(vm) if "start" in plan.actions else None
        plan = stop_ordered(held_back(plan, start_wait), stop)
        started = "start" in plan.actions
        events: list[Event] = []
        if plan.actions:
            acted, observed = await self._act(conn, made.host, desired, plan, old, observed)
            events += acted
            plan = stop_ordered(held_back(planned(observed, started), start_wait), stop)
        if plan.reason == WAITING_FOR_STOP_ORDER and condition_message(old, READY) != plan.message:
            events.append(Event(WAITING_FOR_STOP_ORDER, plan.message))
        if (observed is None or observed.state != "running") and plan.phase != "Stopping":
            self._shutdown_since.pop(uid, None)
        interfaces = made.interfaces
        live = observed.live if observed is not None else None
        if interfaces:
            leases = await conn.call(lambda c: domains.lease_addresses(c, uid)) if observed and observed.live else {}
            interfaces = interfaces_in_force(nic_status_observed(interfaces, observed, leases), live)
        disks = disks_in_force(made.disks, live, target_devices(vm.spec.disks)) if made.disks else made.disks
        boot_time = old.boot_time
        if plan.phase == "Running" and (old.phase != "Running" or boot_time is None or started):
            boot_time = now_rfc3339()
        reason, message = plan.reason, plan.message
        if held is not None and plan.phase in ("Stopping", "Stopped"):
            reason, message = "HostMaintenance", held if plan.phase == "Stopped" else f"{held}: {plan.message}"
        state: State = "Current" if plan.ready else "Failed" if plan.failed else "InProgress"
        asked = self.cluster.requested(key_of(body))  # the ledger's, parsed once per body
        overdrawn = None
        if asked.cpu_reservation_millis or asked.memory_reservation_bytes:
            overdrawn = self.cluster.reservations_overdrawn(made.host)
        outcome = Outcome(
            inputs.ref, plan.phase, state, reason, message,
            unschedulable=(RESERVATION_NOT_GUARANTEED, overdrawn) if overdrawn else None,
            host=made.host, converged=Converged(boot_time, plan.restart_required, qos_in_force(live)), disks=disks,
            interfaces=interfaces, events=tuple(events),
        )  # fmt: skip
        fingerprint = observed.fingerprint if observed is not None else None  # what the resync verifies against
        return outcome, STOPPING_POLL_SECONDS if plan.phase in ("Stopping", "Starting") else None, fingerprint

    async def _act(
        self, conn: HostConnection, host: str, desired: DomainConfig, plan: VmPlan, old: VirtualMachineStatus,
        observed: domains.DomainObservation | None,
    ) -> tuple[list[Event], domains.DomainObservation | None]:  # fmt: skip
        """The plan's actions on the host (``observed``: the domain they were planned from), then the domain read
        back, in one call on the host's thread (a call per action and one to read back cost a thread hop
        each); the Events that tell of them, and the domain as it is now."""
        uid = desired.uuid
        live_disks = observed.live.disks if observed is not None and observed.live is not None else ()
        log.info("vm %s/%s on %s: %s", desired.owner.namespace, desired.owner.name, host, ", ".join(plan.actions))

        done: list[str] = []

        def act(c: libvirt.virConnect) -> domains.DomainObservation | None:
            handles = domains.DomainHandles(c).connection()  # the domain looked up once for all of it
            for action in plan.actions:
                _ACTION_STEPS[action](handles, desired, live_disks)
                done.append(action)
            return domains.observe_domain(handles, uid)

        if "start" in plan.actions:
            self._starting[uid] = host  # before: libvirt may tell of it before the call returns
        try:
            now = await conn.call(act)
        finally:  # what was done, even when a later action failed
            if "start" not in done:
                self._starting.pop(uid, None)
            else:
                self._shutdown_since.pop(uid, None)  # a restart's shutdown is over
            if "shutdown" in done:
                self._shutdown_since[uid] = time.time()
        return self._act_events(host, desired, plan, old, missing=observed is None), now

    def _act_events(
        self, host: str, desired: DomainConfig, plan: VmPlan, old: VirtualMachineStatus, *, missing: bool
    ) -> list[Event]:
        """The Events that tell of the plan's actions (``missing``: the domain was not defined before them)."""
        if plan.reason == "Restarting" and ("start" in plan.actions or "shutdown" in plan.actions):
            return [Event("Restarting", plan.message)]
        if plan.reason == GUEST_RESET:
            return [Event(GUEST_RESET, f"{plan.message} (domain {desired.name} on {host})", warning=True)]
        if "start" in plan.actions and old.phase == "Running":
            what = "undefined" if missing else "shut off"
            message = f"domain {desired.name} was {what} on host {host} behind the operator's back; started it again"
            return [Event("DriftRepaired", message, warning=True)]
        if "start" in plan.actions:
            return [Event("Started", f"domain {desired.name} started on {host}")]
        if "destroy" in plan.actions or "shutdown" in plan.actions:
            return [Event("Stopping", plan.message)]
        return []

    # --- report ----------------------------------------------------------------------------
    async def report(self, body: dict[str, Any], old: VirtualMachineStatus | None, outcome: Outcome) -> str | None:
        """Write ``vm_status(old, outcome)`` when it differs from the status the VM has, with its Events; the
        resourceVersion the write gave the VM, None when nothing was written. When the controller asked the
        guest to shut down is the one thing it remembers (and keeps here)."""
        uid = outcome.vm.uid
        outcome = dataclasses.replace(outcome, shutdown_requested_at=_rfc3339(self._shutdown_since.get(uid)))
        status = vm_status(old, outcome)
        wire = status.to_wire()
        changed = wire != (body.get("status") or {})
        written = await self.writer.write_status(VirtualMachine.KIND, body, wire) if changed else None
        if written is not None:
            self.vms.note_status(key_of(body), written.patch)
            for event in vm_events(old, outcome):
                await self.writer.event(VirtualMachine.KIND, body, event.reason, event.message, warning=event.warning)
        for event in _with_scheduled(outcome.events, self._scheduled.pop(uid, None)):
            await self.writer.event(VirtualMachine.KIND, body, event.reason, event.message, warning=event.warning)
        return None if written is None else written.resource_version

    # --- vApps ------------------------------------------------------------------------
    def _appliances_of(self, vm: VirtualMachine) -> dict[str, ApplianceStatus]:
        """The Ready appliances the VM is made from (fromAppliance, clone disks); ApplianceWait when one
        is not Ready yet, ApplianceMismatch when one failed."""
        ns = str(vm.metadata["namespace"])
        made_from = [source_of(d).appliance(d) for d in vm.spec.disks]
        refs = {(where or ns, name) for where, name in filter(None, made_from)}
        if vm.spec.from_appliance is not None:
            refs.add((vm.spec.from_appliance.namespace or ns, vm.spec.from_appliance.name))
        return {name: appliance_status(self.appliances.get((where, name)), name) for where, name in sorted(refs)}

    def _start_order_wait(self, vm: VirtualMachine) -> str | None:
        return start_order_wait(vm, self.appliances, self.vms, time.time())

    def _stop_order(self, body: dict[str, Any]) -> tuple[str | None, StopBehaviour] | None:
        return stop_order(body, self.appliances, self.vms)

    # --- deletion --------------------------------------------------------------------------
    def forget(self, uid: str) -> None:
        """The VM is gone from the API: drop what was kept about it in memory."""
        self._deleted.discard(uid)
        self._deletion_blocked.discard(uid)
        self._finalized.discard(uid)
        self._settled.pop(uid, None)
        self.cluster.forget(uid)
        self._shutdown_since.pop(uid, None)
        self._scheduled.pop(uid, None)
        self._starting.pop(uid, None)

    def own_start(self, host: str, uid: str) -> bool:
        """Whether a STARTED event of ``uid``'s domain on ``host`` is the start this controller made (answered
        once per start). Nothing to look at then: the reconcile that started it reads the domain back."""
        if self._starting.get(uid) != host:
            return False
        del self._starting[uid]
        return True

    async def delete(self, body: dict[str, Any]) -> str:
        """Remove the VM's domain and the volumes it owns from its host, and any copy of its domain from
        every other connected host. Raises DeletionBlocked while its host cannot be reached."""
        async with self._locks.hold(key_of(body)):  # a reconcile in flight finishes first
            self._deleted.add(str(body["metadata"]["uid"]))
            return await self._delete(body)

    async def _finalize(self, body: dict[str, Any]) -> float | None:
        """A VM being deleted (in the VM queue, under its key's lock): its domain and volumes go, then our
        finalizer, and the API server removes the object. While the deletion must wait (an unreachable host,
        a vApp stop order) one Event says why and it is tried again; the work queue retries any failure."""
        meta = body["metadata"]
        uid = str(meta["uid"])
        if FINALIZER not in (meta.get("finalizers") or ()) or uid in self._finalized:
            return None  # never ours, or done (an older event may still show it): the API server removes it
        self._deleted.add(uid)
        try:
            outcome = await self._delete(body)
        except DeletionWaits as exc:
            if uid not in self._deletion_blocked:  # one Event, not one per retry
                self._deletion_blocked.add(uid)
                await self.writer.event(VirtualMachine.KIND, body, "DeletionBlocked", str(exc), warning=True)
            log.info("vm %s/%s: deletion waits: %s", meta["namespace"], meta["name"], exc)
            return DELETION_RETRY_SECONDS
        self._deletion_blocked.discard(uid)
        if not await self.writer.remove_finalizer(VirtualMachine.KIND, body, FINALIZER):
            return FINALIZER_RETRY_SECONDS  # its finalizers changed meanwhile: again with the newer body
        self._finalized.add(uid)
        log.info("vm %s/%s deleted: %s", meta["namespace"], meta["name"], outcome)
        return None

    async def _delete(self, body: dict[str, Any]) -> str:
        meta = body["metadata"]
        uid = str(meta["uid"])
        annotations = meta.get("annotations") or {}
        placed = self.host_of(body)
        holding = await self._find_existing(uid)  # also a domain made before status said so
        hosts = sorted({*holding, *([placed] if placed else [])})
        if holding:
            await self._stop_in_order(body, holding)  # a vApp member: DeletionWaits while it must wait
        self.cluster.release(body)
        self._shutdown_since.pop(uid, None)
        if not hosts:
            return "the VM was never placed on a host"
        return "; ".join([await self._delete_on(body, host, annotations) for host in hosts])

    async def _stop_in_order(self, body: dict[str, Any], hosts: list[str]) -> None:
        """Before a vApp member's domain is removed: the members after it in the start order stop first,
        and with stopAction guestShutdown and a stopDelay its guest gets that long to shut down (ACPI).
        Raises DeletionWaits meanwhile (the deletion is retried); the reason is in status too."""
        stop = self._stop_order(body)
        if stop is None:
            return
        wait, behaviour = stop
        uid = str(body["metadata"]["uid"])
        if wait is None and (behaviour.power_off or behaviour.grace_seconds is None):
            return  # forced off at once, as any VM being deleted
        for host in hosts:
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                continue  # _delete_on says what to do about an unreachable host
            observed = await conn.call(lambda c: domains.observe_domain(c, uid))
            if observed is None or observed.state not in ("running", "paused"):
                continue
            if wait is not None:
                await self._stop_waits(body, wait)
                raise DeletionWaits(wait)
            assert behaviour.grace_seconds is not None
            since = self._shutdown_since.get(uid)
            if since is None:
                await conn.call(lambda c: domains.shutdown(c, uid))
                since = self._shutdown_since[uid] = time.time()
            elapsed = time.time() - since
            if elapsed < behaviour.grace_seconds:
                message = (
                    f"waiting for the guest to shut down before the domain is removed "
                    f"({int(elapsed)}s of {behaviour.grace_seconds}s, its vApp stopDelay)"
                )
                await self._stop_waits(body, message)
                raise DeletionWaits(message)

    async def _stop_waits(self, body: dict[str, Any], message: str) -> None:
        """A VM being deleted says in its status why its domain is not removed yet."""
        try:
            old = VirtualMachineStatus.model_validate(body.get("status") or {})
        except ValidationError:
            return
        await self.report(body, old, Outcome(ref_of(body), "Stopping", "InProgress", WAITING_FOR_STOP_ORDER, message))

    async def _delete_on(self, body: dict[str, Any], host: str, annotations: dict[str, str]) -> str:
        meta = body["metadata"]
        uid = str(meta["uid"])
        if self.hosts.get(("", host)) is None:
            return f"host {host} no longer exists; nothing to clean up there"
        conn = self.connections.get(host)
        if conn is None or not conn.connected:
            if annotations.get(ORPHAN_ANNOTATION) == "true":
                return f"host {host} is unreachable; domain {uid} left behind as {ORPHAN_ANNOTATION} asks"
            raise DeletionBlocked(
                f"host {host} is unreachable, so domain {domain_name(meta['namespace'], meta['name'])} cannot be "
                f"removed. Bring the host back, delete the Host object, or annotate this VM with "
                f"{ORPHAN_ANNOTATION}=true to finish deletion and leave the domain behind."
            )
        removed = await conn.call(lambda c: domains.remove(c, uid))
        try:
            vm = VirtualMachine.model_validate(body)
            plans = plan_volumes(vm, _names_only_images(vm))
        except (ValidationError, DiskSpecError):
            plans = []
        # An existing volume is deleted with the VM only when the VM's namespace owns or adopted it: never
        # a published volume, an appliance's image, or one the VM was refused. Nor one another VM uses.
        access = {d.get("name"): d.get("access") for d in (body.get("status") or {}).get("disks") or []}
        plans = [p for p in plans if p.kind != "volume" or access.get(p.disk) in ("Owned", "Adopted")]
        users = self._volume_users(uid, host)
        in_use = [p for p in plans if (p.pool, p.volume) in users]
        plans = [p for p in plans if (p.pool, p.volume) not in users]
        deleted = await conn.call(lambda c: delete_volumes(c, plans))
        kept = [p.volume for p in plans if p.volume not in deleted]
        outcome = f"domain removed from host {host}" if removed else f"no domain was left on host {host}"
        if deleted:
            outcome += f"; deleted volumes {', '.join(deleted)}"
        if kept:
            outcome += f"; kept volumes {', '.join(kept)}"
        for p in in_use:
            outcome += f"; kept volume {p.volume}: VM {users[(p.pool, p.volume)]} uses it"
        return outcome

    def _volume_users(self, uid: str, host: str) -> dict[tuple[str | None, str | None], str]:
        """(pool, volume) -> a live VM other than ``uid`` whose disks on ``host`` use it."""
        users: dict[tuple[str | None, str | None], str] = {}
        for other in self.vms:
            meta = other["metadata"]
            if meta.get("uid") == uid:
                continue
            for disk in (other.get("status") or {}).get("disks") or []:
                if disk.get("host") == host:
                    users[(disk.get("pool"), disk.get("volume"))] = f"{meta.get('namespace')}/{meta['name']}"
        return users


def _names_only_images(vm: VirtualMachine) -> dict[str, dict[str | None, str]]:
    """Base images for planning only the VM's own volumes' names (to delete them): a clone's name does
    not depend on its base, and the VM may outlive its appliance (or have moved to another host)."""
    images: dict[str, dict[str | None, str]] = {}
    for disk in vm.spec.disks:
        clone = disk.source.clone
        if clone is not None and clone.appliance is not None:
            images.setdefault(clone.appliance.name, {})[clone.appliance.disk] = ""
    return images


ORPHAN_ANNOTATION = "vdc.dev/orphan-domain"
"""Set to "true" on a VM being deleted to finish deletion without reaching its host."""


def _phase(body: dict[str, Any] | None) -> str | None:
    return ((body or {}).get("status") or {}).get("phase")


def _host_files_of(vm: VirtualMachine) -> tuple[str, ...]:
    """The host files the VM names (kernel, initrd)."""
    kernel = vm.spec.boot.kernel
    return () if kernel is None else tuple(p for p in (kernel.kernel, kernel.initrd) if p)


def _halt_for(exc: Exception, ref: VmRef, host: str, phase: Phase, old: VirtualMachineStatus) -> Halt | None:
    """What a failure while provisioning or converging on ``host`` means for the VM (``phase``: the one it
    is in meanwhile): a Halt with the outcome to report; None when it is unexpected.

    A libvirt error reaches status within the attempt that met it (with the host it happened on, so
    deletion finds what was made there), and a Warning Event once per distinct message; the work queue
    retries it with backoff."""

    def halt(phase: Phase, state: State, reason: str, message: str, requeue: float | None = None) -> Halt:
        return Halt(Outcome(ref, phase, state, reason, message, host=host), requeue)

    if isinstance(exc, PoolMissing):
        return halt("Provisioning", "InProgress", "WaitingForPool", str(exc), UNREACHABLE_POLL_SECONDS)
    if isinstance(exc, WaitingForAddress):
        return halt("Provisioning", "InProgress", "WaitingForAddress", str(exc), STOPPING_POLL_SECONDS)
    if isinstance(exc, AddressRefused):  # a taken or foreign address, or one another VM holds too
        return halt("Failed", "Failed", "AddressRefused", str(exc))
    if isinstance(exc, UnsupportedSpec | DiskSpecError | CloudInitError | LookupError):
        return halt("Failed", "Failed", "UnsupportedSpec", str(exc))
    if isinstance(exc, domains.NameTaken):
        return halt("Failed", "Failed", "DomainNameTaken", str(exc))
    if isinstance(exc, HostUnreachable):
        return halt("Unknown", "Unknown", "HostUnreachable", str(exc), UNREACHABLE_POLL_SECONDS)
    if not isinstance(exc, LibvirtFailure):
        return None
    message = f"host {host}: {first_line(exc)}"
    if isinstance(exc, ConfigRejected):  # libvirt refuses the spec: retrying alone will not help
        stalled = halt("Failed", "Failed", "LibvirtRejected", message)
        stalled.then = ReportedFailure(message)
        stalled.then.__cause__ = exc
        return stalled
    events = () if condition_message(old, READY) == message else (Event("LibvirtError", message, warning=True),)
    failed = Halt(Outcome(ref, phase, "InProgress", "LibvirtError", message, host=host, events=events))
    failed.then = ReportedFailure(message)
    failed.then.__cause__ = exc
    return failed


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _format(volume: VolumeObservation) -> VolumeFormat:
    return volume.format if volume.format in ("qcow2", "raw", "iso") else "raw"


def _with_scheduled(events: Sequence[Event], scheduled: Event | None) -> list[Event]:
    """``events``, with a placement's pending Scheduled Event folded into its Started Event (why the host
    was chosen, said once), or posted before them when the VM did not start."""
    if scheduled is None:
        return list(events)
    if not any(e.reason == "Started" for e in events):
        return [scheduled, *events]
    return [
        dataclasses.replace(e, message=f"{e.message}; scheduled: {scheduled.message}") if e.reason == "Started" else e
        for e in events
    ]
