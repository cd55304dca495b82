"""VirtualMachineMigration: one live migration of one running VM, as an operation (``vdc.operations``).

Steps, one per reconcile, each recorded in status before the next begins:

- **Pending**: the VM exists and runs; the migration claims it (``status.operation``, conditional on the
  VM's resourceVersion), so the VM controller leaves it alone and no other operation takes it.
- **Scheduling**: the target — ``spec.targetHost`` or the scheduler's choice, by every rule that places a
  new VM, never the source — and a slot within the MigrationPolicy's parallelism limits.
- **PreparingTarget**: the VM's volumes on the target: none for disks on shared pools; for disks on
  local pools, new volumes (overlays on the appliance's base image there) that the migration fills.
  Which volumes it makes is recorded *before* it makes them, and a local volume that is already on the
  target is refused (the pool is not really local, or something else owns it).
- **Migrating**: a peer-to-peer live migration (``vdc.libvirt.migration``), watched through the source's
  job statistics. It ends when libvirt reports the guest running on the target: the source's copies of
  local volumes are removed and the VM's ``status.host`` is switched to the target — once, in the same
  write that releases the VM.

A failure or cancellation (deleting the migration) undoes the steps newest first: the libvirt job is
aborted (the guest runs on, on the source), the target's new volumes are removed, the VM released.
libvirt, not the operator, decides where the guest is: after a crash, the Migrating step looks at both
hosts before doing anything, so a migration that completed while the operator was away is recorded as
Succeeded and one that failed meanwhile as Failed — never started twice behind the user's back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import libvirt
from kubernetes.client import ApiException
from pydantic import ValidationError

from vdc.api.conditions import now_rfc3339
from vdc.api.migration import (
    DataProgress,
    MigrationProgress,
    VirtualMachineMigration,
    VirtualMachineMigrationStatus,
)
from vdc.api.operation import OperationRef
from vdc.api.quantity import format_bytes_mi
from vdc.api.virtualmachine import VirtualMachine
from vdc.cluster.view import ClusterView
from vdc.controllers.disk_sources import VolumePlan
from vdc.controllers.errors import DeletionWaits, first_line
from vdc.controllers.vm import Inputs, VmController
from vdc.controllers.vm_vapp import parse_time
from vdc.controllers.vm_volumes import delete_volumes
from vdc.instruments import MIGRATION_DOWNTIME, MIGRATION_DURATION, MIGRATIONS
from vdc.keylocks import KeyLocks
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt import domains
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.errors import HostUnreachable, LibvirtFailure
from vdc.libvirt.migration import (
    JobStats,
    MigrationRequest,
    Presence,
    abort_job,
    disk_targets,
    job_stats,
    migrate,
    presence,
    start_post_copy,
)
from vdc.libvirt.storage import VolumeObservation, observe_volume
from vdc.operations.migration_policy import Tuning, resolve, select_policy
from vdc.operations.ownership import OwnedByAnother, claim, owner, release
from vdc.operations.plan import CANCELLED, FAILED, SUCCEEDED, TERMINAL, Plan, Step, StepFailed, StepResult, advance
from vdc.operations.runner import with_conditions
from vdc.scheduler.placement import place

log = logging.getLogger(__name__)

KIND = VirtualMachineMigration.KIND
IN_FLIGHT = ("PreparingTarget", "Migrating")
"""Phases that hold a parallelism slot (a migration rolling back from them too)."""
POLL_SECONDS = 1.0
"""How often a running migration's progress is read."""
DELETE_STEPS = 20
"""Steps a deletion runs at once before it lets kopf retry."""


def _ref(body: Mapping[str, Any]) -> OperationRef:
    meta = body["metadata"]
    return OperationRef(kind=KIND.kind, name=str(meta["name"]), uid=str(meta["uid"]))


def vm_key(body: Mapping[str, Any]) -> Key:
    """The key of the VM a migration body moves."""
    return (str(body["metadata"].get("namespace") or ""), str((body.get("spec") or {}).get("vm") or ""))


@dataclass
class MigrationContext:
    """One reconcile of one migration: what it read, and the status fields its step sets."""

    body: dict[str, Any]
    migration: VirtualMachineMigration
    status: VirtualMachineMigrationStatus
    record: dict[str, Any] = field(default_factory=dict)
    """Status fields (snake_case) the step sets; written with the step's outcome, in the same patch."""

    @property
    def uid(self) -> str:
        return str(self.body["metadata"]["uid"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def current(self, name: str) -> Any:
        """A status field as this reconcile leaves it."""
        return self.record[name] if name in self.record else getattr(self.status, name)


def progress_of(stats: JobStats) -> MigrationProgress:
    """The job statistics as status shows them. Pure."""

    def q(value: int | None) -> str | None:
        return None if value is None else format_bytes_mi(value)

    memory = DataProgress(
        processed=q(stats.memory_processed), remaining=q(stats.memory_remaining), total=q(stats.memory_total)
    )
    disks = None
    if stats.disk_total:
        disks = DataProgress(
            processed=q(stats.disk_processed), remaining=q(stats.disk_remaining), total=q(stats.disk_total)
        )
    total = (stats.memory_total or 0) + (stats.disk_total or 0)
    done = (stats.memory_processed or 0) + (stats.disk_processed or 0)
    remaining = (stats.memory_remaining or 0) + (stats.disk_remaining or 0)
    percent = None
    if total:
        percent = min(99, int(100 * (total - remaining) / total)) if remaining else min(100, int(100 * done / total))
    return MigrationProgress(
        percent=percent,
        memory=memory,
        disks=disks,
        iteration=stats.iteration,
        dirty_rate=q(stats.dirty_rate),
        expected_downtime_milliseconds=stats.downtime_ms,
        elapsed_milliseconds=stats.elapsed_ms,
        post_copy=stats.post_copy or None,
    )


class MigrationController:
    def __init__(
        self,
        migrations: ObjectCache,
        vms: ObjectCache,
        policies: ObjectCache,
        namespaces: ObjectCache,
        connections: ConnectionManager,
        writer: KubeWriter,
        vm_controller: VmController,
        cluster: ClusterView,
    ) -> None:
        self.migrations = migrations
        self.vms = vms
        self.policies = policies
        self.namespaces = namespaces
        self.connections = connections
        self.writer = writer
        self.vm_controller = vm_controller
        self.cluster = cluster
        self._tasks: dict[str, asyncio.Task[None]] = {}
        """Migration uid -> the libvirt migration this process runs for it."""
        self._slots: dict[str, tuple[str, str]] = {}
        """Migration uid -> (source, target): slots taken here before status says so."""
        self._post_copy: set[str] = set()
        self.requeue: Callable[[Key], None] = lambda key: None
        """Put a migration on the work queue now (set by the handlers)."""
        self._locks: KeyLocks[Key] = KeyLocks()
        """One step at a time per migration: the work queue's and a deletion's."""
        self.plan: Plan[MigrationContext] = Plan(
            (
                Step("Pending", self._claim, self._release),
                Step("Scheduling", self._schedule, self._free_slot),
                Step("PreparingTarget", self._prepare, self._unprepare),
                Step("Migrating", self._migrate, self._abort),
            )
        )

    # --- reconcile ------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> float | None:
        body = self.migrations.get(key)
        if body is None:
            return None
        deleting = bool(body["metadata"].get("deletionTimestamp"))
        async with self._locks.hold(key):
            body = self.migrations.get(key) or body
            return await self._step(body, "the migration was deleted" if deleting else None)

    async def delete(self, body: dict[str, Any]) -> str:
        """Cancel the migration (abort the libvirt job, undo the steps) before it goes; DeletionWaits until
        it has ended."""
        current = self.migrations.get(key_of(body)) or body
        for _ in range(DELETE_STEPS):
            phase = (current.get("status") or {}).get("phase")
            if phase in TERMINAL:
                self._forget(str(current["metadata"]["uid"]))
                return f"migration {phase.lower()}"
            async with self._locks.hold(key_of(body)):
                current = self.migrations.get(key_of(body)) or current
                requeue = await self._step(current, "the migration was deleted")
            current = self.migrations.get(key_of(body)) or current
            if requeue is None or requeue > 0:
                break
        phase = (current.get("status") or {}).get("phase")
        if phase in TERMINAL:
            self._forget(str(current["metadata"]["uid"]))
            return f"migration {str(phase).lower()}"
        raise DeletionWaits(f"cancelling the migration: {(current.get('status') or {}).get('message') or phase}")

    async def _step(self, body: dict[str, Any], cancel: str | None) -> float | None:
        uid = str(body["metadata"]["uid"])
        generation = body["metadata"].get("generation")
        try:
            migration = VirtualMachineMigration.model_validate(body)
        except ValidationError as exc:
            status = VirtualMachineMigrationStatus(phase=FAILED, message=f"invalid spec: {first_line(exc)}")
            await self._write(body, cast(VirtualMachineMigrationStatus, with_conditions(status, generation)))
            return None
        status = migration.status or VirtualMachineMigrationStatus()
        if status.phase in TERMINAL:
            self._forget(uid)
            return None
        if status.target and (status.phase in IN_FLIGHT or status.rollback is not None):
            self.cluster.expect(vm_key(body), status.target)  # rebuilt after a restart
        ctx = MigrationContext(body, migration, status)
        if cancel is not None and status.rollback is None and status.phase == "Migrating" and await self._arrived(ctx):
            cancel = None  # too late: the guest runs on the target; the step records the success
        try:
            result = await advance(self.plan, status, ctx, cancel=cancel, now=now_rfc3339())
        except ApiException as exc:
            if exc.status != 409:
                raise
            await self._refresh(VirtualMachine.KIND, self.vms, self.vms.get(vm_key(body)))  # the VM changed
            return 0.5
        except HostUnreachable as exc:
            # Transient: the same step again soon (a lost target is the step's to judge, not this).
            await self._write(body, status.model_copy(update={"message": f"waiting: {first_line(exc)}"}))
            return 5.0
        new = cast(VirtualMachineMigrationStatus, result.status).model_copy(update=ctx.record)
        new = cast(VirtualMachineMigrationStatus, with_conditions(new, generation))
        if new.phase in TERMINAL:
            self._slots.pop(uid, None)  # before the write: its echo wakes the migrations waiting for a slot
        try:
            await self._write(body, new)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Changed since it was read (kopf's finalizer, a user's edit): read it again rather than wait
            # for the watch, which need not deliver a change this process made itself.
            await self._refresh(KIND, self.migrations, body)
            return 0.5
        if result.event is not None:
            reason, message = result.event
            await self.writer.event(KIND, body, reason, message, warning=reason in ("StepFailed", FAILED))
        if new.phase in TERMINAL:
            await self._ended(body, new)
            self._wake_waiting()
        return result.requeue_after

    def _wake_waiting(self) -> None:
        """A slot came free: the migrations waiting for one look again now, not at their next retry."""
        for other in self.migrations:
            if (other.get("status") or {}).get("phase") == "Scheduling":
                self.requeue(key_of(other))

    async def _refresh(self, info: Any, cache: ObjectCache, body: dict[str, Any] | None) -> None:
        if body is None:
            return
        fresh = await self.writer.read(info, body)
        if fresh is not None:
            cache.upsert(fresh)

    async def _write(self, body: dict[str, Any], status: VirtualMachineMigrationStatus) -> None:
        wire = status.to_wire()
        if wire == (body.get("status") or {}):
            return
        sent = await self.writer.patch_status(KIND, body, wire, unchanged=True)
        if sent:
            self.migrations.note_status(key_of(body), sent)
            # The resourceVersion moved on: the next step's conditional write needs the new one.
            fresh = await self.writer.read(KIND, body)
            if fresh is not None:
                self.migrations.upsert(fresh)

    async def _ended(self, body: dict[str, Any], status: VirtualMachineMigrationStatus) -> None:
        self._forget(str(body["metadata"]["uid"]))
        MIGRATIONS.labels(str(status.phase)).inc()
        if status.phase == SUCCEEDED and status.start_time and status.completion_time:
            MIGRATION_DURATION.observe(max(0.0, parse_time(status.completion_time) - parse_time(status.start_time)))
        downtime = status.progress.downtime_milliseconds if status.progress else None
        if status.phase == SUCCEEDED and downtime is not None:
            MIGRATION_DOWNTIME.observe(downtime / 1000)
        vm = self.vms.get(vm_key(body))
        if vm is None or status.phase == SUCCEEDED:
            return
        where = f"; it runs on {status.source}" if status.source else ""
        verb = "was cancelled" if status.phase == CANCELLED else "failed"
        message = f"migration {body['metadata']['name']} {verb}: {status.message or ''}{where}"
        reason = "MigrationFailed" if verb == "failed" else "MigrationCancelled"
        await self.writer.event(VirtualMachine.KIND, vm, reason, message, warning=verb == "failed")

    def _forget(self, uid: str) -> None:
        self._slots.pop(uid, None)
        self._post_copy.discard(uid)
        task = self._tasks.get(uid)
        if task is not None and task.done():
            self._tasks.pop(uid)
        key = self.migrations.key_for_uid(uid)
        body = self.migrations.get(key) if key else None
        if body is not None:
            self.cluster.unexpect(vm_key(body))

    # --- helpers ----------------------------------------------------------------------------------
    def _vm(self, ctx: MigrationContext) -> dict[str, Any]:
        body = self.vms.get(vm_key(ctx.body))
        if body is None:
            raise StepFailed(f"VirtualMachine {ctx.migration.spec.vm} does not exist in this namespace")
        return body

    def _conn(self, host: str) -> HostConnection | None:
        conn = self.connections.get(host)
        return conn if conn is not None and conn.connected else None

    async def _presence(self, host: str | None, uid: str) -> Presence | None:
        """Where the domain is on ``host``; None when the host cannot be asked."""
        conn = self._conn(host) if host else None
        if conn is None:
            return None
        try:
            return await conn.call(lambda c: presence(c, uid))
        except HostUnreachable:
            return None

    async def _arrived(self, ctx: MigrationContext) -> bool:
        """libvirt reports the guest running on the target and not on the source."""
        uid = str(ctx.status.vm_uid or "")
        if not uid or not ctx.status.target:
            return False
        there = await self._presence(ctx.status.target, uid)
        if there is None or not there.running:
            return False
        here = await self._presence(ctx.status.source, uid)
        return here is None or not here.running

    def tuning(self, vm: Mapping[str, Any], migration: VirtualMachineMigration) -> Tuning:
        namespace = self.namespaces.get(("", str(vm["metadata"].get("namespace"))))
        ns_labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
        vm_labels = vm["metadata"].get("labels") or {}
        return resolve(select_policy(self.policies, vm_labels, ns_labels), migration.spec.tuning)

    def _inputs(self, vm_body: dict[str, Any]) -> Inputs:
        try:
            return self.vm_controller.resolve(VirtualMachine.model_validate(vm_body))
        except Exception as exc:  # an appliance gone, a disk spec the VM controller refuses …
            raise StepFailed(f"the VM's spec cannot be resolved: {first_line(exc)}") from exc

    def busy(self, exclude: str) -> tuple[dict[str, int], int]:
        """Migrations holding a slot (host -> count, cluster-wide count), ``exclude`` aside."""
        holding: dict[str, tuple[str, str]] = dict(self._slots)
        for body in self.migrations:
            status = body.get("status") or {}
            uid = str(body["metadata"].get("uid"))
            if status.get("phase") in IN_FLIGHT and status.get("source") and status.get("target"):
                holding[uid] = (status["source"], status["target"])
        holding.pop(exclude, None)
        per_host: dict[str, int] = {}
        for source, target in holding.values():
            per_host[source] = per_host.get(source, 0) + 1
            per_host[target] = per_host.get(target, 0) + 1
        return per_host, len(holding)

    # --- Pending: claim the VM -------------------------------------------------------------------
    async def _claim(self, ctx: MigrationContext) -> StepResult:
        vm = self._vm(ctx)
        ref = _ref(ctx.body)
        status = vm.get("status") or {}
        current = owner(vm)
        if current is not None and current.uid == ref.uid:
            ctx.record.update(source=ctx.status.source or status.get("host"), vm_uid=str(vm["metadata"]["uid"]))
            return StepResult(message=f"VM {ctx.migration.spec.vm} is this migration's")
        if vm["metadata"].get("deletionTimestamp"):
            raise StepFailed(f"VM {ctx.migration.spec.vm} is being deleted")
        host = status.get("host")
        if status.get("phase") != "Running" or not host:
            raise StepFailed(
                f"VM {ctx.migration.spec.vm} is not running (phase {status.get('phase') or 'unknown'}): only a "
                "running VM can be live-migrated"
            )
        pinned = (vm.get("spec") or {}).get("host")
        if pinned:
            raise StepFailed(f"VM {ctx.migration.spec.vm} is pinned to host {pinned} (spec.host): unpin it to move it")
        try:
            patch = claim(vm, ref)
        except OwnedByAnother as exc:
            raise StepFailed(f"VM {ctx.migration.spec.vm} is already {exc}") from exc
        if patch is not None:
            await self._patch_vm(vm, {**patch, "printableStatus": "Migrating"})
        ctx.record.update(source=host, vm_uid=str(vm["metadata"]["uid"]))
        return StepResult(message=f"VM {ctx.migration.spec.vm} runs on {host}; claimed for the migration")

    async def _release(self, ctx: MigrationContext) -> StepResult:
        vm = self.vms.get(vm_key(ctx.body))
        if vm is None:
            return StepResult()
        patch = release(vm, _ref(ctx.body))
        if patch is not None:
            await self._patch_vm(vm, patch)
        return StepResult()

    async def _patch_vm(self, vm: dict[str, Any], changes: dict[str, Any]) -> None:
        """Change some fields of the VM's status (None removes one), if the VM is still as it was read."""
        status = {k: v for k, v in {**(vm.get("status") or {}), **changes}.items() if v is not None}
        sent = await self.writer.patch_status(VirtualMachine.KIND, vm, status, unchanged=True)
        if sent:
            self.vms.note_status(key_of(vm), sent)

    # --- Scheduling: the target and a slot --------------------------------------------------------
    async def _schedule(self, ctx: MigrationContext) -> StepResult:
        vm = self._vm(ctx)
        inputs = self._inputs(vm)
        tuning = self.tuning(vm, ctx.migration)
        ctx.record["policy"] = tuning.policy
        source = str(ctx.current("source"))
        wanted = ctx.migration.spec.target_host
        if wanted == source:
            raise StepFailed(f"targetHost {wanted} is the host the VM runs on")
        request = self.vm_controller.placement_request(vm, inputs)
        if wanted:
            request = dataclasses.replace(request, pinned_host=wanted)
            if self.cluster.host(wanted) is None:
                raise StepFailed(f"targetHost {wanted}: no such Host")
        candidates = [
            c for c in self.cluster.candidates(key_of(vm), connected=self.vm_controller.connected) if c.name != source
        ]
        # Into another ComputeCluster: its admission control must hold with the VM (within one, nothing changes).
        names = [c.name for c in candidates]
        refused = self.vm_controller.admission_refusals(names, request.cpus, request.memory, source)
        forbidden = self.vm_controller.rule_refusals(vm, names)
        candidates = [
            dataclasses.replace(c, admission_refusal=refused.get(c.name), rule_refusal=forbidden.get(c.name))
            for c in candidates
        ]
        decision = place(request, candidates)
        if decision.host is None:
            raise StepFailed(f"no host can take the VM: {decision.reason}")
        target = decision.host
        per_host, total = self.busy(exclude=ctx.uid)
        if total >= tuning.parallel_per_cluster:
            return StepResult.waiting(
                f"waiting for a slot: {total} migrations run in the cluster "
                f"(parallelMigrationsPerCluster {tuning.parallel_per_cluster})",
                retry_after=5,
            )
        for host in (source, target):
            if per_host.get(host, 0) >= tuning.parallel_per_host:
                return StepResult.waiting(
                    f"waiting for a slot: {per_host[host]} migrations run into or out of host {host} "
                    f"(parallelMigrationsPerHost {tuning.parallel_per_host})",
                    retry_after=5,
                )
        self._slots[ctx.uid] = (source, target)  # no await since counting: two cannot take the last slot
        self.cluster.expect(vm_key(ctx.body), target)
        ctx.record["target"] = target
        return StepResult(message=f"target {target}: {decision.reason}")

    async def _free_slot(self, ctx: MigrationContext) -> StepResult:
        self._slots.pop(ctx.uid, None)
        self.cluster.unexpect(vm_key(ctx.body))
        return StepResult()

    # --- PreparingTarget: the volumes on the target -----------------------------------------------
    def _local_plans(self, plans: list[VolumePlan]) -> list[VolumePlan]:
        """The plans of disks on pools that are not shared: their volumes are per host."""
        shared = self._shared_pools()
        return [plan for plan in plans if plan.pool not in shared]

    async def _prepare(self, ctx: MigrationContext) -> StepResult:
        target = str(ctx.current("target"))
        conn = self._conn(target)
        if conn is None:
            raise StepFailed(f"target host {target} is unreachable")
        vm = self._vm(ctx)
        inputs = self._inputs(vm)
        local = self._local_plans(inputs.plans)
        for plan in local:
            if plan.kind == "volume":
                raise StepFailed(
                    f"disk {plan.disk} is the existing volume {plan.volume} on pool {plan.pool}, which is not "
                    "shared: it cannot be copied to another host (use a shared pool)"
                )
        if local and not ctx.status.created_volumes:
            # Record what this migration will make on the target before making it: a crash in between
            # must not leave volumes nobody knows to remove. A local volume already there is not ours.
            for plan in local:
                found = await conn.call(functools.partial(_observe_volume, plan.libvirt_pool, plan.volume))
                if found is not None:
                    raise StepFailed(
                        f"volume {plan.volume} of disk {plan.disk} is already on target {target} (pool {plan.pool} "
                        "is not shared): remove it there, or mark the pool shared if every host sees the same files"
                    )
            ctx.record["created_volumes"] = [plan.disk for plan in local]
            return StepResult.waiting("recorded the volumes to make on the target", retry_after=0)
        try:
            made = await self.vm_controller.provision(VirtualMachine.model_validate(vm), target, inputs)
        except HostUnreachable:
            raise
        except Exception as exc:
            raise StepFailed(f"cannot prepare target {target}: {first_line(exc)}") from exc
        source_paths = {d.get("name"): d.get("path") for d in (vm.get("status") or {}).get("disks") or []}
        for disk in made.disks:
            before = source_paths.get(disk.name)
            if before and disk.path != before:
                raise StepFailed(f"disk {disk.name} would be at {disk.path} on {target}, not {before} as on the source")
        ctx.record["copied_disks"] = [plan.disk for plan in local if plan.device == "disk"]
        return StepResult(message=f"target {target} has the VM's volumes and NIC ports")

    async def _unprepare(self, ctx: MigrationContext) -> StepResult:
        created = set(ctx.status.created_volumes)
        target = ctx.status.target
        vm = self.vms.get(vm_key(ctx.body))
        if created and target and vm is not None:
            conn = self._conn(target)
            there = await self._presence(target, str(ctx.status.vm_uid or ""))
            if conn is None:
                return StepResult(message=f"target {target} is unreachable: its new volumes stay (orphans)")
            if there is not None and there.running:
                return StepResult(message=f"the guest runs on {target}: its volumes stay")
            plans = [plan for plan in self._inputs_or_none(vm) if plan.disk in created]
            await conn.call(lambda c: delete_volumes(c, plans))
        return StepResult()

    def _inputs_or_none(self, vm: dict[str, Any]) -> list[VolumePlan]:
        try:
            return list(self._inputs(vm).plans)
        except StepFailed:
            return []

    # --- Migrating ---------------------------------------------------------------------------------
    async def _request(
        self, ctx: MigrationContext, sconn: HostConnection, uid: str, target: str, tuning: Tuning
    ) -> MigrationRequest:
        spec = (self.cluster.hosts.get(("", target)) or {}).get("spec") or {}
        address = spec.get("underlayAddress")
        vm = self.vms.get(vm_key(ctx.body)) or {}
        copied = set(ctx.status.copied_disks)
        vm_disks = (vm.get("status") or {}).get("disks") or []
        paths = [str(d["path"]) for d in vm_disks if d.get("name") in copied]
        devices = await sconn.call(lambda c: disk_targets(c, uid, paths)) if paths else {}
        if len(devices) != len(paths):
            raise StepFailed(f"the running domain does not have every disk to copy ({', '.join(sorted(copied))})")
        return MigrationRequest(
            target_uri=str(spec.get("migrationUri") or spec.get("uri")),
            data_uri=f"tcp://{address}" if address else None,
            copy_disks=tuple(sorted(devices.values())),
            shared_disks=bool(
                self._shared_pools() & {d.get("pool") for d in (vm.get("status") or {}).get("disks") or []}
            ),
            bandwidth_mib=math.ceil(tuning.bandwidth_bytes / 2**20) if tuning.bandwidth_bytes else None,
            auto_converge=tuning.auto_converge,
            allow_post_copy=tuning.allow_post_copy,
            max_downtime_ms=tuning.max_downtime_ms,
        )

    async def _migrate(self, ctx: MigrationContext) -> StepResult:
        source, target = str(ctx.status.source), str(ctx.status.target)
        uid = str(ctx.status.vm_uid)
        sconn = self._conn(source)
        if sconn is None:
            return StepResult.waiting(f"source host {source} is unreachable", retry_after=5)
        here = await sconn.call(lambda c: presence(c, uid))
        there = await self._presence(target, uid)
        if there is not None and there.running and not here.running:
            return await self._complete(ctx, source, target, uid)
        task = self._tasks.get(ctx.uid)
        stats = await sconn.call(lambda c: job_stats(c, uid)) if here.exists else None
        if stats is not None and stats.active:
            return await self._watch(ctx, sconn, uid, stats)
        if task is not None and not task.done():
            return StepResult.waiting("starting the migration", retry_after=POLL_SECONDS)
        if task is not None:
            self._tasks.pop(ctx.uid, None)
            error = task.exception()
            if error is not None:
                ctx.record["libvirt_error"] = str(error)
                if ctx.status.libvirt_error and ctx.status.libvirt_error.startswith("aborted after"):
                    ctx.record["libvirt_error"] = f"{ctx.status.libvirt_error} ({first_line(error)})"
                    raise StepFailed(ctx.status.libvirt_error)
                raise StepFailed(f"libvirt: {first_line(error)}")
            return StepResult.waiting("the migration returned; looking for the guest on the target", retry_after=0.5)
        if not here.running:
            raise StepFailed(f"the guest is not running on {source} any more, nor on {target}")
        if ctx.status.libvirt_error and ctx.status.libvirt_error.startswith("aborted after"):
            raise StepFailed(ctx.status.libvirt_error)  # our own abort (timeout), seen after a restart
        if ctx.status.attempts and ctx.uid not in self._tasks:
            raise StepFailed(
                f"the migration started at {ctx.status.migration_started_at} ended while the operator was not "
                f"watching, and the guest still runs on {source}"
            )
        if there is None:
            raise StepFailed(f"target host {target} is unreachable")
        vm = self._vm(ctx)
        request = await self._request(ctx, sconn, uid, target, self.tuning(vm, ctx.migration))
        task = asyncio.create_task(
            sconn.call(lambda c: migrate(c, uid, request), long_running=True), name=f"migrate-{ctx.name}"
        )
        key = key_of(ctx.body)
        task.add_done_callback(lambda _: self.requeue(key))  # its end is looked at at once, not at the next poll
        self._tasks[ctx.uid] = task
        ctx.record.update(attempts=ctx.status.attempts + 1, migration_started_at=now_rfc3339())
        what = f"memory and disks {', '.join(ctx.status.copied_disks)}" if ctx.status.copied_disks else "memory"
        return StepResult.waiting(f"migrating {what} from {source} to {target}", retry_after=POLL_SECONDS)

    async def _watch(self, ctx: MigrationContext, sconn: HostConnection, uid: str, stats: JobStats) -> StepResult:
        progress = progress_of(stats)
        ctx.record["progress"] = progress
        vm = self._vm(ctx)
        tuning = self.tuning(vm, ctx.migration)
        elapsed = (stats.elapsed_ms or 0) / 1000
        data = (stats.memory_total or 0) + (stats.disk_total or 0)
        if data and elapsed > tuning.completion_timeout(data):
            await sconn.call(lambda c: abort_job(c, uid))
            ctx.record["libvirt_error"] = (
                f"aborted after {elapsed:.0f}s: over the completion timeout "
                f"({tuning.completion_timeout_per_gib}s per GiB of {format_bytes_mi(data)})"
            )
        elif tuning.allow_post_copy and elapsed > tuning.post_copy_after_seconds and ctx.uid not in self._post_copy:
            self._post_copy.add(ctx.uid)
            try:
                await sconn.call(lambda c: start_post_copy(c, uid))
            except LibvirtFailure as exc:
                log.info("migration %s: post-copy refused: %s", ctx.name, exc)
        return StepResult.waiting(f"migrating: {progress.percent or 0}% copied", retry_after=POLL_SECONDS)

    async def _complete(self, ctx: MigrationContext, source: str, target: str, uid: str) -> StepResult:
        vm = self.vms.get(vm_key(ctx.body))
        sconn = self._conn(source)
        left = ""
        if vm is not None and sconn is not None:
            local = self._local_plans(self._inputs_or_none(vm))
            await sconn.call(lambda c: _remove_leftover(c, uid))  # libvirt undefines it; a leftover one goes
            if local:
                await sconn.call(lambda c: delete_volumes(c, local))
        elif sconn is None:
            left = f"; the source's copies of local volumes stay on {source} (unreachable)"
        tconn = self._conn(target)
        downtime = None
        elapsed = ctx.status.progress.elapsed_milliseconds if ctx.status.progress else None
        if tconn is not None:
            done = await tconn.call(lambda c: job_stats(c, uid, completed=True))
            downtime = done.downtime_ms if done is not None else None
            if done is not None and done.elapsed_ms is not None:
                elapsed = done.elapsed_ms
        progress = (ctx.status.progress or MigrationProgress()).model_copy(
            update={"percent": 100, "downtime_milliseconds": downtime, "elapsed_milliseconds": elapsed}
        )
        ctx.record["progress"] = progress
        if vm is not None:
            await self._switch_host(vm, ctx, target)
        took = ""
        if ctx.status.migration_started_at:
            took = f" in {time.time() - _epoch(ctx.status.migration_started_at):.1f}s"
        shown = f", downtime {downtime} ms" if downtime is not None else ""
        return StepResult(message=f"moved from {source} to {target}{took}{shown}{left}")

    def _shared_pools(self) -> set[str]:
        return {str(b["metadata"]["name"]) for b in self.cluster.pools if (b.get("spec") or {}).get("shared")}

    async def _switch_host(self, vm: dict[str, Any], ctx: MigrationContext, target: str) -> None:
        """The VM's one host switch: status.host becomes the target in the write that releases the VM."""
        status = vm.get("status") or {}
        ref = _ref(ctx.body)
        if status.get("host") == target and owner(vm) is None:
            return
        disks = [{**d, "host": target} for d in status.get("disks") or []]
        patch: dict[str, Any] = {"host": target, "disks": disks}
        current = owner(vm)
        if current is not None and current.uid == ref.uid:
            patch["operation"] = None
        await self._patch_vm(vm, patch)
        self.cluster.reserve(vm, target)

    async def _abort(self, ctx: MigrationContext) -> StepResult:
        source, target, uid = ctx.status.source, ctx.status.target, str(ctx.status.vm_uid or "")
        sconn = self._conn(str(source)) if source else None
        if sconn is not None and uid:
            stats = await sconn.call(lambda c: job_stats(c, uid))
            if stats is not None and stats.active:
                await sconn.call(lambda c: abort_job(c, uid))
                return StepResult.waiting("aborting the libvirt migration job", retry_after=POLL_SECONDS)
        task = self._tasks.get(ctx.uid)
        if task is not None and not task.done():
            return StepResult.waiting("waiting for libvirt to end the migration", retry_after=POLL_SECONDS)
        self._tasks.pop(ctx.uid, None)
        there = await self._presence(target, uid) if target and uid else None
        here = await self._presence(source, uid) if source and uid else None
        if there is not None and there.exists and not there.running and here is not None and here.running:
            tconn = self._conn(str(target))
            if tconn is not None:  # an incoming domain libvirt left paused on the target
                await tconn.call(lambda c: domains.destroy(c, uid))
        return StepResult()


def _remove_leftover(conn: libvirt.virConnect, uid: str) -> None:
    """Undefine the migrated-away domain on the source if libvirt has not (it may be doing so right now)."""
    try:
        domains.remove(conn, uid)
    except LibvirtFailure:
        if domains.domain_exists(conn, uid):
            raise


def _observe_volume(pool: str, volume: str, conn: libvirt.virConnect) -> VolumeObservation | None:
    return observe_volume(conn, pool, volume)


def _epoch(rfc3339: str) -> float:
    return parse_time(rfc3339)
