"""Sample objects of every vdc.dev kind in each of its states, with what Argo CD and kstatus must say.

The statuses come from the operator's own code wherever it exists, so the samples cannot drift from
what the operator writes: ``host_status``, ``pool_status`` and ``switch_status`` (pure), the VM
controller's ``_report`` (the one place VM status is written, fed by the pure ``plan_vm``) with a
fake writer, the Appliance import's status reporter (``_Reporter``, with the same fake writer), and
the ComputeQuota controller's ``reconcile`` (over a real ``TenancyView`` of sample VMs, same fake
writer), the ComputeCluster's pure ``cluster_status`` over sample hosts, the VirtualMachineMigration's
steps as the operation runner takes them (``advance`` over the migration's phases, then
``with_conditions``, as ``MigrationController._step``) with the controller's pure ``progress_of``, and
the pydantic models for everything.

Every kind also gets three derived samples: being deleted, its generation not yet observed, and no
status at all (just created, the operator has not seen it) — except a kind in :data:`STATES_OF_KIND`,
whose states differ (MigrationPolicy: configuration that never gets a status).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vdc.api import (
    Appliance,
    ComputeCluster,
    Host,
    MigrationPolicy,
    StoragePool,
    VirtualMachine,
    VirtualMachineMigration,
    VirtualSwitch,
)
from vdc.api.common import LabelSelector
from vdc.api.conditions import READY, STALLED, Condition, set_kstatus
from vdc.api.migration import PHASES, VirtualMachineMigrationStatus
from vdc.api.operation import OperationStatus
from vdc.api.virtualmachine import RunStrategy
from vdc.controllers.appliance import ApplianceController, _Reporter
from vdc.controllers.computecluster import HostSummary, Resources, cluster_status
from vdc.controllers.computequota import QuotaController
from vdc.controllers.host import HostObservation, host_status
from vdc.controllers.migration import progress_of
from vdc.controllers.storagepool import PoolOnHost, pool_status
from vdc.controllers.virtualswitch import SwitchOnHost, switch_status
from vdc.controllers.vm_plan import plan_vm
from vdc.controllers.vm_status import Converged, Outcome, VmRef, vm_status
from vdc.kube.cache import ObjectCache
from vdc.kube.patch import merge_patch
from vdc.libvirt.domain_xml import DomainConfig, OsConfig, OwnerMetadata
from vdc.libvirt.domains import DomainObservation
from vdc.libvirt.host_facts import HostFacts
from vdc.libvirt.migration import JobStats
from vdc.operations.plan import Plan, StepFailed, StepResult, advance
from vdc.operations.plan import Step as PlanStep
from vdc.operations.runner import with_conditions
from vdc.tenancy.view import TenancyView

GENERATION = 3
NOW = "2026-01-02T03:04:05Z"
UID = "0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11"
GIB = 1024**3

# What each category of state must look like to Argo CD (our Lua) and to kstatus (Flux).
EXPECTED: dict[str, tuple[str, str]] = {
    "ready": ("Healthy", "Current"),
    "stopped": ("Healthy", "Current"),  # stopped because the spec says so: Ready=True
    "working": ("Progressing", "InProgress"),  # Reconciling=True, or Ready=False/Unknown without Stalled
    "stalled": ("Degraded", "Failed"),
    "deleting": ("Progressing", "Terminating"),
    "not-observed": ("Progressing", "InProgress"),
    # kstatus cannot tell a custom resource that has no status yet from one that never gets one: it
    # says Current ("Resource is current"). Flux therefore counts a just-created object as healthy
    # until the operator's first status write. Argo CD (our Lua) waits.
    "no-status": ("Progressing", "Current"),
}
COMMON_STATES = ("ready", "working", "stalled", "deleting", "not-observed", "no-status")
"""The categories every kind has samples in, unless :data:`STATES_OF_KIND` says otherwise."""
STATES_OF_KIND: dict[str, tuple[str, ...]] = {
    # Configuration: each migration reads the policy that selects its VM; the operator writes no status
    # and adds no finalizer. It never works on one (no working), cannot find one stalled (the CRD refuses
    # a bad spec), observes no generation (no not-observed), and no status is its ready state. Deleting
    # remains: another party's finalizer can hold it.
    "MigrationPolicy": ("ready", "deleting"),
}
"""Kinds whose categories are not :data:`COMMON_STATES`, and theirs (exactly)."""
WITHOUT_STATUS = frozenset({"MigrationPolicy"})
"""Kinds the operator writes no status for: without a Ready condition they are Healthy, as kstatus says
Current (the other kinds' checks wait for Ready)."""


@dataclass(frozen=True)
class Sample:
    kind: str
    state: str
    category: str
    body: dict[str, Any]
    message: str = ""
    """Text both tools must pass on (the Stalled condition's message, say); empty: not checked."""

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.state}"

    @property
    def argo(self) -> str:
        return EXPECTED[self.category][0]

    @property
    def kstatus(self) -> str:
        return EXPECTED[self.category][1]


def _meta(name: str, namespace: str | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "uid": UID, "generation": GENERATION, "creationTimestamp": NOW}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _condition(status: Any, type_: str) -> Condition:
    return next(c for c in status.conditions if c.type == type_)


# --- Host -------------------------------------------------------------------------------------
FACTS = HostFacts(
    hostname="hv1",
    host_uuid="5d1f3c9e-0000-4000-8000-000000000001",
    cpus=8,
    memory_bytes=16 * GIB,
    libvirt_version="9.0.0",
    hypervisor="QEMU",
    hypervisor_version="7.2.0",
    domain_types=frozenset({"qemu"}),
)


def _host_samples() -> list[Sample]:
    host = Host.model_validate({"metadata": _meta("hv1"), "spec": {"uri": "qemu+unix:///system?socket=/run/x.sock"}})

    def body(status: Any) -> dict[str, Any]:
        return host.model_copy(update={"status": status}).to_wire()

    connected = HostObservation(connected=True, facts=FACTS, last_seen=datetime(2026, 1, 2, tzinfo=UTC))
    ready = host_status(host.spec, GENERATION, connected, None)
    connecting = host_status(host.spec, GENERATION, HostObservation(connected=False), None)
    lost = host_status(host.spec, GENERATION, HostObservation(connected=False, error="connection reset"), ready)
    # HostController.reconcile on a missing Secret: the status of an unreachable host, then Stalled.
    message = "host credentials: secret vdc-system/hv1-ssh not found; fix spec.credentialsSecretRef or the Secret"
    creds = host_status(host.spec, GENERATION, HostObservation(connected=False, error=message), None)
    creds = creds.model_copy(
        update={"conditions": set_kstatus(creds.conditions, "Failed", "CredentialsInvalid", message)}
    )
    return [
        Sample("Host", "connected", "ready", body(ready)),
        Sample("Host", "connecting", "working", body(connecting)),
        Sample("Host", "disconnected", "working", body(lost), _condition(lost, READY).message),
        Sample("Host", "credentials-invalid", "stalled", body(creds), message),
    ]


# --- StoragePool ------------------------------------------------------------------------------
def _pool_samples() -> list[Sample]:
    pool = StoragePool.model_validate(
        {"metadata": _meta("gitops-pool"), "spec": {"type": "dir", "target": {"path": "/var/lib/vdc/p"}}}
    )

    def body(results: list[PoolOnHost]) -> tuple[dict[str, Any], Any]:
        status = pool_status(pool, results, GENERATION, None)
        return pool.model_copy(update={"status": status}).to_wire(), status

    running = PoolOnHost("hv1", "running", capacity=100 * GIB, available=60 * GIB, volumes=2)
    ready, _ = body([running, PoolOnHost("hv2", "running", capacity=100 * GIB, available=50 * GIB)])
    building, _ = body([running, PoolOnHost("hv2", "building")])
    unreachable, _ = body([running, PoolOnHost("hv2", None, message="host hv2 is unreachable")])
    failed, failed_status = body([running, PoolOnHost("hv2", "failed", message="cannot create /var/lib/vdc/p")])
    no_hosts, _ = body([])
    return [
        Sample("StoragePool", "running", "ready", ready),
        Sample("StoragePool", "building", "working", building),
        Sample("StoragePool", "host-unreachable", "working", unreachable),
        Sample("StoragePool", "failed", "stalled", failed, _condition(failed_status, STALLED).message),
        Sample("StoragePool", "no-hosts", "working", no_hosts),
    ]


# --- VirtualSwitch ----------------------------------------------------------------------------
def _switch_samples() -> list[Sample]:
    spec = {"mode": "nat", "subnet": {"cidr": "10.78.0.0/24", "gateway": "10.78.0.1"}}
    switch = VirtualSwitch.model_validate({"metadata": _meta("gitops-lan"), "spec": spec})

    def body(results: list[SwitchOnHost], problem: str | None = None) -> tuple[dict[str, Any], Any]:
        status = switch_status(switch, results, None, GENERATION, None, problem)
        return switch.model_copy(update={"status": status}).to_wire(), status

    active = SwitchOnHost("hv1", "Active")
    ready, _ = body([active, SwitchOnHost("hv2", "Active")])
    inactive, _ = body([active, SwitchOnHost("hv2", "Inactive")])
    problem = "mode overlay needs a host agent that does not exist yet"
    unsupported, _ = body([], problem)
    no_hosts, _ = body([])
    return [
        Sample("VirtualSwitch", "active", "ready", ready),
        Sample("VirtualSwitch", "inactive-on-a-host", "working", inactive),
        Sample("VirtualSwitch", "unsupported", "stalled", unsupported, problem),
        Sample("VirtualSwitch", "no-hosts", "working", no_hosts),
    ]


# --- Appliance: the import's own status reporter -------------------------------------------------
Step = Callable[[_Reporter], Awaitable[object]]
"""One call of the Appliance import's status reporter."""


def _appliance_samples() -> list[Sample]:
    wire = Appliance.model_validate(
        {
            "metadata": _meta("gitops-appliance", "gitops-demo"),
            "spec": {"source": {"url": "https://example.com/a.ova"}, "storagePool": "gitops-pool"},
        }
    ).to_wire()

    def reported(*steps: Step) -> dict[str, Any]:
        """The Appliance after the import's reporter took ``steps`` (from no status)."""

        async def run() -> dict[str, Any]:
            cache, writer = ObjectCache(), _Writer()
            controller = ApplianceController(cache, ObjectCache(), ObjectCache(), None, writer, Path("/nonexistent"))  # type: ignore[arg-type]
            report = _Reporter(controller, cache.upsert(copy.deepcopy(wire)))
            for step in steps:
                await step(report)
            assert writer.status is not None
            return {**wire, "status": writer.status}  # the whole status it last wrote

        return asyncio.run(run())

    async def downloaded(report: _Reporter) -> None:
        """Progress as a download reports it: from its worker thread, written by the event loop."""
        report._last_progress = -math.inf  # the first report is not held back
        await asyncio.to_thread(report.counter(1000), 450)
        for _ in range(100):  # the write was handed to the event loop: let it run
            status = (report.controller.appliances.get(report.key) or {}).get("status", {})
            if status.get("progress", {}).get("bytesTotal"):
                return
            await asyncio.sleep(0)
        raise AssertionError("the progress was not written")

    def phase(name: str, message: str) -> Step:
        return lambda report: report.phase(name, message)

    failed = "manifest check failed: disk1.vmdk SHA256 differs"
    return [
        Sample("Appliance", "pending", "working", reported(lambda r: r.waiting("pool gitops-pool runs on no host"))),
        Sample("Appliance", "downloading", "working", reported(phase("Downloading", "fetching"), downloaded)),
        Sample("Appliance", "verifying", "working", reported(phase("Verifying", "checking the manifest"))),
        Sample("Appliance", "converting", "working", reported(phase("Converting", "uploading to hv1"))),
        Sample("Appliance", "ready", "ready", reported(phase("Converting", "uploading"), lambda r: r.ready(["hv1"]))),
        Sample("Appliance", "failed", "stalled", reported(lambda r: r.failed("ChecksumMismatch", failed)), failed),
    ]


# --- VirtualMachine: the controller's own status writer ---------------------------------------
class _Writer:
    """The KubeWriter surface a controller's status writer uses; keeps the status patch."""

    def __init__(self) -> None:
        self.status: dict[str, Any] | None = None

    async def patch_status(self, kind: Any, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.status = status
        return merge_patch(body.get("status") or {}, status)  # what KubeWriter sends

    async def event(self, *args: Any, **kwargs: Any) -> None:
        return None


DESIRED = DomainConfig(
    name="gitops-demo_web",
    uuid=UID,
    owner=OwnerMetadata(namespace="gitops-demo", name="web", uid=UID, generation=GENERATION),
    memory_kib=131072,
    current_memory_kib=131072,
    domain_type="qemu",
    os=OsConfig(kernel="/var/lib/libvirt/boot/vdc-tiny/vmlinuz", initrd="/var/lib/libvirt/boot/vdc-tiny/initrd.img"),
)


def _vm_samples() -> list[Sample]:
    def vm(strategy: RunStrategy) -> VirtualMachine:
        return VirtualMachine.model_validate(
            {
                "metadata": _meta("web", "gitops-demo"),
                "spec": {"runStrategy": strategy, "memory": {"size": "128Mi"}},
            }
        )

    ref = VmRef("gitops-demo", "web", UID, GENERATION)

    def report(strategy: RunStrategy, outcome: Outcome) -> dict[str, Any]:
        """The VM's status as the controller writes it (``vm_status``) from one reconcile's outcome."""
        body = vm(strategy).to_wire()
        return {**body, "status": merge_patch({}, vm_status(None, outcome).to_wire())}

    def planned(strategy: RunStrategy, observed: DomainObservation | None) -> dict[str, Any]:
        plan = plan_vm(strategy, DESIRED, observed, booted_before=True, shutdown_elapsed=None, grace_seconds=60)
        state = "Current" if plan.ready else "InProgress"
        converged = Converged(NOW, plan.restart_required)
        return report(
            strategy, Outcome(ref, plan.phase, state, plan.reason, plan.message, host="hv1", converged=converged)
        )

    running = DomainObservation(state="running", defined=DESIRED, live=DESIRED)
    off = DomainObservation(state="shutoff", cause="shutdown", defined=DESIRED)
    unschedulable = "0/2 hosts fit: 2 have too few CPUs"
    unreachable = "host hv1 is unreachable: timeout"
    no_pool = "pool 'fast' is not running on host hv1"
    bad_spec = "disk 'data': clone of an Appliance image is not built yet"
    return [
        Sample("VirtualMachine", "running", "ready", planned("Always", running)),
        Sample("VirtualMachine", "halted-stopped", "stopped", planned("Halted", off)),
        Sample("VirtualMachine", "halted-defined", "stopped", planned("Halted", None)),
        Sample("VirtualMachine", "manual-stopped", "stopped", planned("Manual", off)),
        Sample("VirtualMachine", "once-done", "stopped", planned("Once", off)),
        Sample("VirtualMachine", "manual-running", "ready", planned("Manual", running)),
        Sample("VirtualMachine", "starting", "working", planned("Always", None)),
        Sample("VirtualMachine", "restarting", "working", planned("Always", off)),
        Sample("VirtualMachine", "stopping", "working", planned("Halted", running)),
        Sample(
            "VirtualMachine",
            "unschedulable",
            "working",
            report(
                "Always",
                Outcome(
                    ref,
                    "Scheduling",
                    "InProgress",
                    "Unschedulable",
                    unschedulable,
                    unschedulable=("Unschedulable", unschedulable),
                ),
            ),
        ),
        Sample(
            "VirtualMachine",
            "waiting-for-pool",
            "working",
            report("Always", Outcome(ref, "Provisioning", "InProgress", "WaitingForPool", no_pool, host="hv1")),
        ),
        Sample(
            "VirtualMachine",
            "host-unreachable",
            "working",
            report("Always", Outcome(ref, "Unknown", "Unknown", "HostUnreachable", unreachable, host="hv1")),
        ),
        Sample(
            "VirtualMachine",
            "invalid-spec",
            "stalled",
            report("Always", Outcome(ref, "Failed", "Failed", "UnsupportedSpec", bad_spec)),
            bad_spec,
        ),
    ]


# --- ComputeQuota: the controller's reconcile over its namespace's VMs --------------------------
def _quota_vm(name: str, host: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {**_meta(name, "gitops-demo"), "uid": f"{UID[:-2]}{len(name):02d}"}
    return {"metadata": meta, "spec": spec, "status": {"host": host} if host else {}}


QUOTA_VMS = [
    _quota_vm("web", "hv1", {"cpu": {"count": 2}, "memory": {"size": "512Mi"}, "interfaces": [{"switch": "internet"}]}),
    _quota_vm("db", "hv2", {"cpu": {"count": 4}, "memory": {"size": "1Gi", "max": "2Gi"}}),
    _quota_vm("unplaced", None, {"cpu": {"count": 8}, "memory": {"size": "8Gi"}}),  # not counted
]
"""Placed: 2 VMs, 6 vCPUs, 2560Mi of memory, 1 public address."""


def _quota_samples() -> list[Sample]:
    def reconciled(hard: dict[str, Any], generation: int = GENERATION) -> dict[str, Any]:
        """The ComputeQuota with ``hard`` at ``generation`` after ``QuotaController.reconcile`` (from no status)."""
        body = {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "ComputeQuota",
            "metadata": {**_meta("gitops-quota", "gitops-demo"), "generation": generation},
            "spec": {"hard": hard},
        }
        quotas, vms, switches, empty, writer = ObjectCache(), ObjectCache(), ObjectCache(), ObjectCache(), _Writer()
        for vm in QUOTA_VMS:
            vms.upsert(copy.deepcopy(vm))
        switches.upsert({"metadata": {"name": "internet", "uid": UID}, "spec": {"public": True}})
        tenancy = TenancyView(
            namespaces=empty, hosts=empty, pools=empty, switches=switches, appliances=empty, vms=vms, quotas=quotas
        )
        controller = QuotaController(quotas, tenancy, lambda vm: (vm.get("status") or {}).get("host"), writer)  # type: ignore[arg-type]
        assert asyncio.run(controller.reconcile(quotas.upsert(copy.deepcopy(body)))) is None
        assert writer.status is not None
        return {**body, "status": writer.status}

    limits = {"virtualMachines": 10, "vcpus": 16, "memory": "32Gi", "publicAddresses": 2}
    within = reconciled(limits)
    lowered = reconciled({**limits, "vcpus": 4})  # below what runs: nothing stops, nothing new is placed
    # The controller counts in one go and never reports Reconciling=True: its only state of work
    # under way is a spec it has not acted on yet, here a limit raised after it counted the old one.
    edited = reconciled(limits, GENERATION - 1)
    edited["metadata"]["generation"], edited["spec"] = GENERATION, {"hard": {**limits, "memory": "64Gi"}}
    # Refused by the model. The CRD's pattern refuses it as well: only an object stored under an older,
    # looser schema gets here, but this is the controller's Stalled report.
    bad = "'32 GiB' is not a non-negative Kubernetes quantity"
    invalid = reconciled({**limits, "memory": "32 GiB"})
    return [
        Sample("ComputeQuota", "within-limits", "ready", within),
        Sample("ComputeQuota", "over-a-lowered-limit", "ready", lowered),
        Sample("ComputeQuota", "limit-edited", "working", edited, f"generation is {GENERATION}"),
        Sample("ComputeQuota", "invalid-spec", "stalled", invalid, bad),
    ]


# --- ComputeCluster: the pure cluster_status over sample hosts -----------------------------------
def _cluster_samples() -> list[Sample]:
    hosts = [
        HostSummary(f"hv{i}", {"rack": "a"}, ready=True, allocatable=Resources(16, 64 * GIB),
                    allocated=Resources(4, 16 * GIB))
        for i in (1, 2, 3)
    ]  # fmt: skip

    def body(spec: dict[str, Any], hosts: list[HostSummary], others: dict[str, Any] | None = None) -> dict[str, Any]:
        cluster = ComputeCluster.model_validate({"metadata": _meta("gitops-cluster"), "spec": spec})
        selectors = {k: LabelSelector.model_validate(v) for k, v in (others or {}).items()}
        status = cluster_status("gitops-cluster", cluster.spec, hosts, selectors, generation=GENERATION, now=NOW)
        return {**cluster.to_wire(), "status": status.to_wire()}

    ha = {"enabled": True, "admissionControl": {"policy": "HostFailuresTolerated", "hostFailuresTolerated": 1}}
    rack = {"hostSelector": {"matchLabels": {"rack": "a"}}, "ha": ha}
    protected = body(rack, hosts)
    # Two of three hosts down: nothing to restart on. Not the spec's fault: Ready=False, not Stalled.
    down = [hosts[0]] + [HostSummary(h.name, h.labels, allocatable=h.allocatable) for h in hosts[1:]]
    exposed = body(rack, down)
    clash = body(rack, hosts, {"everything": {}})
    return [
        Sample("ComputeCluster", "protected", "ready", protected),
        Sample("ComputeCluster", "not-protected", "working", exposed, "needs at least 2 hosts Ready"),
        Sample("ComputeCluster", "host-in-two-clusters", "stalled", clash, "make the hostSelectors disjoint"),
    ]


# --- VirtualMachineMigration: the operation runner's steps --------------------------------------
MIGRATED = "operation failed: migration out job: unexpectedly failed"
"""libvirt's error of the failed migration sample."""


def _migration_samples() -> list[Sample]:
    migration = VirtualMachineMigration.model_validate(
        {"metadata": _meta("web-to-hv2", "gitops-demo"), "spec": {"vm": "web"}}
    )

    def body(status: VirtualMachineMigrationStatus) -> dict[str, Any]:
        return migration.model_copy(update={"status": status}).to_wire()

    async def undone(_: None) -> StepResult:
        return StepResult()

    def conditioned(status: OperationStatus) -> VirtualMachineMigrationStatus:
        """``status`` with the conditions the runner derives from its phase (the one place they are set)."""
        return VirtualMachineMigrationStatus.model_validate(with_conditions(status, GENERATION).to_wire())

    def step(
        status: VirtualMachineMigrationStatus,
        outcome: StepResult | StepFailed | None = None,
        *,
        cancel: str | None = None,
        **record: Any,
    ) -> VirtualMachineMigrationStatus:
        """One reconcile as ``MigrationController._step`` makes it: ``advance`` runs the step (or an undo),
        whose outcome is ``outcome`` and whose status fields are ``record``; then ``with_conditions``."""

        async def run(_: None) -> StepResult:
            if isinstance(outcome, StepFailed):
                raise outcome
            return outcome or StepResult()

        plan: Plan[None] = Plan(tuple(PlanStep(phase, run, undone) for phase in PHASES))
        result = asyncio.run(advance(plan, status, None, cancel=cancel, now=NOW))
        return conditioned(result.status.model_copy(update=record))

    def rolled_back(status: VirtualMachineMigrationStatus) -> VirtualMachineMigrationStatus:
        """Every completed step undone, newest first, one per reconcile, to Failed or Cancelled."""
        while status.phase not in ("Failed", "Cancelled"):
            status = step(status)
        return status

    # Pending claims the VM; Scheduling picks the target and a slot; PreparingTarget makes the volumes.
    scheduling = step(
        VirtualMachineMigrationStatus(),
        StepResult(message="VM web runs on hv1; claimed for the migration"),
        source="hv1",
        vm_uid=UID,
    )
    no_slot = "waiting for a slot: 2 migrations run into or out of host hv1 (parallelMigrationsPerHost 2)"
    waiting_for_slot = step(scheduling, StepResult.waiting(no_slot))
    preparing = step(scheduling, StepResult(message="target hv2: 6 of 8 CPUs free"), target="hv2")
    recorded = step(
        preparing, StepResult.waiting("recorded the volumes to make on the target", 0), created_volumes=["root"]
    )
    migrating = step(recorded, StepResult(message="target hv2 has the VM's volumes and NIC ports"))
    started = step(migrating, StepResult.waiting("migrating memory and disks root from hv1 to hv2"), attempts=1)
    stats = JobStats(
        active=True,
        memory_processed=64 * 2**20,
        memory_remaining=64 * 2**20,
        memory_total=128 * 2**20,
        disk_processed=512 * 2**20,
        disk_remaining=512 * 2**20,
        disk_total=1024 * 2**20,
        iteration=2,
        elapsed_ms=9000,
    )
    progress = progress_of(stats)  # 50%: 576Mi of 1152Mi copied
    copying = step(started, StepResult.waiting(f"migrating: {progress.percent}% copied"), progress=progress)
    done = progress.model_copy(update={"percent": 100, "downtime_milliseconds": 41})
    moved = "moved from hv1 to hv2 in 12.3s, downtime 41 ms"
    succeeded = step(copying, StepResult(message=moved), progress=done)

    # A failure while migrating: recorded, then every step undone, to Failed.
    failing = step(copying, StepFailed(f"libvirt: {MIGRATED}"), libvirt_error=f"{MIGRATED}\nqemu: connection lost")
    undoing = step(failing)  # the libvirt job undone; PreparingTarget's volumes next
    failed = rolled_back(failing)
    # Refused at the start: nothing to undo but the claim.
    not_running = "VM web is not running (phase Stopped): only a running VM can be live-migrated"
    refused = rolled_back(step(VirtualMachineMigrationStatus(), StepFailed(not_running)))
    # The controller's answer to a body its model refuses (an object stored under an older schema).
    invalid = "invalid spec: 1 validation error for VirtualMachineMigration"
    bad_spec = conditioned(VirtualMachineMigrationStatus(phase="Failed", message=invalid))
    # Deleted while migrating: cancelled, the steps undone. The status the operator writes at the end
    # is checked alone too (below, ready), though the deletion is still in front of it until the
    # finalizer goes.
    cancelling = step(copying, cancel="the migration was deleted")
    cancelled = rolled_back(cancelling)
    deleted_midway = body(step(cancelling))
    deleted_midway["metadata"]["deletionTimestamp"] = NOW
    deleted_midway["metadata"]["finalizers"] = ["vdc.dev/finalizer"]

    kind = "VirtualMachineMigration"
    return [
        Sample(kind, "succeeded", "ready", body(succeeded)),
        Sample(kind, "cancelled", "ready", body(cancelled)),
        Sample(kind, "scheduling-waiting-for-a-slot", "working", body(waiting_for_slot), no_slot),
        Sample(kind, "preparing-target", "working", body(recorded)),
        Sample(kind, "migration-starting", "working", body(started)),
        Sample(kind, "migrating", "working", body(copying), "50% copied"),
        Sample(kind, "rolling-back", "working", body(failing), MIGRATED),
        Sample(kind, "undoing", "working", body(undoing)),
        Sample(kind, "failed", "stalled", body(failed), MIGRATED),
        Sample(kind, "refused", "stalled", body(refused), not_running),
        Sample(kind, "invalid-spec", "stalled", body(bad_spec), invalid),
        Sample(kind, "cancelling", "deleting", deleted_midway),
    ]


# --- MigrationPolicy: configuration, no status ----------------------------------------------------
def _policy_samples() -> list[Sample]:
    spec = {"bandwidth": "64Mi", "parallelMigrationsPerHost": 1, "vmSelector": {"matchLabels": {"tier": "db"}}}
    created = MigrationPolicy.model_validate({"metadata": _meta("gitops-db"), "spec": spec}).to_wire()
    edited = copy.deepcopy(created)
    edited["metadata"]["generation"] = GENERATION + 1  # no generation is ever observed: still Healthy
    edited["spec"]["bandwidth"] = "128Mi"
    # The operator adds no finalizer: only someone else's holds a deletion (foreground deletion, say).
    deleting = copy.deepcopy(created)
    deleting["metadata"]["deletionTimestamp"] = NOW
    deleting["metadata"]["finalizers"] = ["foregroundDeletion"]
    return [
        Sample("MigrationPolicy", "created", "ready", created),
        Sample("MigrationPolicy", "edited", "ready", edited),
        Sample("MigrationPolicy", "deleting", "deleting", deleting),
    ]


# --- derived states, for every kind -----------------------------------------------------------
def _derived(ready: Sample) -> list[Sample]:
    deleting = copy.deepcopy(ready.body)
    deleting["metadata"]["deletionTimestamp"] = NOW
    deleting["metadata"]["finalizers"] = ["vdc.dev/finalizer"]
    edited = copy.deepcopy(ready.body)
    edited["metadata"]["generation"] = GENERATION + 1  # a spec edit the operator has not acted on yet
    fresh = copy.deepcopy(ready.body)
    del fresh["status"]
    return [
        Sample(ready.kind, "deleting", "deleting", deleting),
        Sample(ready.kind, "generation-not-observed", "not-observed", edited, f"generation is {GENERATION + 1}"),
        Sample(ready.kind, "no-status", "no-status", fresh),
    ]


@functools.cache
def samples() -> tuple[Sample, ...]:
    result: list[Sample] = []
    for per_kind in (
        _host_samples(),
        _pool_samples(),
        _switch_samples(),
        _appliance_samples(),
        _vm_samples(),
        _quota_samples(),
        _cluster_samples(),
        _migration_samples(),
    ):
        result += per_kind
        result += _derived(next(s for s in per_kind if s.category == "ready"))
    result += _policy_samples()  # its own states (STATES_OF_KIND), none derived
    return tuple(result)
