"""Host maintenance: evacuate the host's VMs, each as its ``evictionStrategy`` says.

LiveMigrate and LiveMigrateIfPossible VMs get one VirtualMachineMigration each (named after the host
and the VM, so a restart never makes a second), within the MigrationPolicies' parallelism limits,
which the migrations themselves wait for. A failed migration of a LiveMigrate VM blocks the evacuation
and is retried (deleted, then made again) after :data:`RETRY_SECONDS`; a LiveMigrateIfPossible VM
whose migration failed is shut down instead, as a Shutdown VM is: the VM controller keeps such VMs
stopped while their host is in maintenance (:func:`maintenance_stop`), and starts them again when it
ends. None VMs stay and block. Ending maintenance moves nothing back (that is DRS's job).

The plan (:func:`plan_evacuation`) is pure; the controller reads the caches, makes and deletes the
migrations, and writes the Host's ``status.evacuation``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiException

from vdc.api.host import BlockingVm, Evacuation, Host, evacuating
from vdc.api.migration import VirtualMachineMigration
from vdc.cluster.view import ClusterView
from vdc.controllers.vm_vapp import parse_time
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter

log = logging.getLogger(__name__)

EVACUATION_LABEL = "vdc.dev/evacuating-host"
"""On the migrations an evacuation makes: the host it empties."""
RETRY_SECONDS = 30.0
"""How long a failed evacuation migration of a LiveMigrate VM stays before it is tried again."""
POLL_SECONDS = 5.0
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def migration_name(host: str, vm: str) -> str:
    """The one migration an evacuation makes for a VM (a DNS subdomain of at most 253 characters)."""
    name = f"evacuate-{host}-{vm}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


@dataclass(frozen=True)
class VmOnHost:
    """What the plan needs of one VM placed on the host."""

    key: Key
    strategy: str
    running: bool
    migration: Mapping[str, Any] | None = None
    """The evacuation's migration of this VM, if there is one."""


@dataclass
class EvacuationPlan:
    """What to do now, and what to show."""

    status: Evacuation
    create: list[Key] = field(default_factory=list)
    """VMs to make a migration for."""
    retry: list[Key] = field(default_factory=list)
    """(namespace, migration name) of failed migrations to delete, so they are made again."""


def plan_evacuation(vms: Iterable[VmOnHost], now: float, migrated: int = 0) -> EvacuationPlan:
    """One look at a host in maintenance (``migrated``: VMs its evacuation moved away already). Pure."""
    total = migrating = shut_down = remaining = 0
    blocking: list[BlockingVm] = []
    create: list[Key] = []
    retry: list[Key] = []
    for vm in sorted(vms, key=lambda v: v.key):
        total += 1
        namespace, name = vm.key
        if not vm.running:
            if vm.strategy == "Shutdown" or _failed(vm.migration):
                shut_down += 1
            continue
        remaining += 1
        if vm.strategy == "None":
            blocking.append(BlockingVm(namespace=namespace, name=name, reason="evictionStrategy None: left running"))
            continue
        if vm.strategy == "Shutdown":
            continue  # the VM controller is shutting it down
        status = (vm.migration or {}).get("status") or {}
        phase = status.get("phase")
        if vm.migration is None or phase == "Succeeded":
            create.append(vm.key)  # Succeeded yet running here: it was moved back; move it again
            migrating += 1
        elif phase not in TERMINAL:
            migrating += 1
        elif vm.strategy == "LiveMigrateIfPossible":
            continue  # failed: shut down instead (maintenance_stop)
        else:
            ended = status.get("completionTime")
            if ended is None or now - parse_time(ended) >= RETRY_SECONDS:
                retry.append((namespace, str(vm.migration["metadata"]["name"])))
            why = status.get("message") or phase
            blocking.append(BlockingVm(namespace=namespace, name=name, reason=f"live migration {phase}: {why}"[:256]))
    left = sum(1 for b in blocking if b.reason.startswith("evictionStrategy None"))
    if remaining == left:
        phase = "Evacuated"  # VMs left by evictionStrategy None excepted (they are listed as blocking)
    elif len(blocking) > left and migrating == 0:
        phase = "Blocked"
    else:
        phase = "Evacuating"
    evacuation = Evacuation(
        phase=phase,
        total=total,
        migrating=migrating,
        migrated=migrated,
        shut_down=shut_down,
        remaining=remaining,
        blocking=blocking[:100],
    )
    return EvacuationPlan(evacuation, create, retry)


def _failed(migration: Mapping[str, Any] | None) -> bool:
    return ((migration or {}).get("status") or {}).get("phase") in ("Failed", "Cancelled")


def maintenance_stop(cluster: ClusterView, migrations: ObjectCache, vm: Mapping[str, Any]) -> str | None:
    """Why the VM controller must keep this VM stopped now (None: it need not): its host is in maintenance
    and its evictionStrategy is Shutdown, or LiveMigrateIfPossible and its evacuation migration failed."""
    host = (vm.get("status") or {}).get("host")
    if not host:
        return None
    host_body = cluster.hosts.get(("", str(host)))
    if host_body is None or not evacuating(host_body):
        return None
    strategy = (vm.get("spec") or {}).get("evictionStrategy") or "LiveMigrate"
    if strategy == "Shutdown":
        return f"host {host} is in maintenance and the VM's evictionStrategy is Shutdown"
    if strategy == "LiveMigrateIfPossible":
        meta = vm["metadata"]
        mine = migrations.get((str(meta.get("namespace")), migration_name(str(host), str(meta.get("name")))))
        if _failed(mine):
            why = ((mine or {}).get("status") or {}).get("message") or "failed"
            return f"host {host} is in maintenance and the VM could not be live-migrated ({why})"
    return None


class EvacuationController:
    """Reconciles a Host (key ``("", name)``) in maintenance: its evacuation."""

    def __init__(self, hosts: ObjectCache, vms: ObjectCache, migrations: ObjectCache, cluster: ClusterView,
                 writer: KubeWriter) -> None:  # fmt: skip
        self.hosts = hosts
        self.vms = vms
        self.migrations = migrations
        self.cluster = cluster
        self.writer = writer

    async def reconcile(self, key: Key, now: float | None = None) -> float | None:
        body = self.hosts.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        host = key[1]
        status = body.get("status") or {}
        if not evacuating(body):
            if status.get("evacuation") is not None:
                await self._write(body, None)
            return None
        on_host = []
        for vm_key in self.cluster.vms_on(host):
            vm = self.vms.get(vm_key)
            if vm is None or (vm.get("status") or {}).get("host") != host:
                continue
            vm_status = vm.get("status") or {}
            running = vm_status.get("phase") in ("Running", "Starting", "Stopping", "Paused")
            migration = self.migrations.get((vm_key[0], migration_name(host, vm_key[1])))
            strategy = (vm.get("spec") or {}).get("evictionStrategy") or "LiveMigrate"
            on_host.append(VmOnHost(vm_key, strategy, running, migration))
        migrated = sum(
            1
            for m in self.migrations
            if (m["metadata"].get("labels") or {}).get(EVACUATION_LABEL) == host
            and (m.get("status") or {}).get("phase") == "Succeeded"
            and (m.get("status") or {}).get("source") == host
        )
        plan = plan_evacuation(on_host, time.time() if now is None else now, migrated)
        for namespace, name in plan.retry:
            await self.writer.delete(VirtualMachineMigration.KIND, namespace, name)
        for namespace, vm_name in plan.create:
            await self._create(host, namespace, vm_name)
        await self._write(body, plan.status.to_wire())
        return POLL_SECONDS if plan.status.phase != "Evacuated" else 30.0

    async def _create(self, host: str, namespace: str, vm: str) -> None:
        name = migration_name(host, vm)
        existing = self.migrations.get((namespace, name))
        if existing is not None:
            if ((existing.get("status") or {}).get("phase")) == "Succeeded":
                await self.writer.delete(VirtualMachineMigration.KIND, namespace, name)  # made again next time
            return
        manifest = {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachineMigration",
            "metadata": {"name": name, "namespace": namespace, "labels": {EVACUATION_LABEL: host}},
            "spec": {"vm": vm},
        }
        try:
            made = await self.writer.create(VirtualMachineMigration.KIND, namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:  # made already (the cache had not seen it)
                raise
            return
        self.migrations.upsert(made)
        log.info("host %s: evacuating %s/%s by migration %s", host, namespace, vm, name)

    async def _write(self, body: dict[str, Any], evacuation: dict[str, Any] | None) -> None:
        status = body.get("status") or {}
        if status.get("evacuation") == evacuation:
            return
        sent = await self.writer.patch_status(Host.KIND, body, {**status, "evacuation": evacuation})
        if sent:
            self.hosts.note_status(key_of(body), sent)
