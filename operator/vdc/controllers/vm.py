"""VirtualMachine: place, observe, plan, act, report. The plan itself is ``vm_plan.plan_vm`` (pure)."""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from vdc.api.conditions import READY, RECONCILING, STALLED, Condition, ConditionStatus, now_rfc3339, set_condition
from vdc.api.quantity import to_bytes
from vdc.api.virtualmachine import Phase, VirtualMachine, VirtualMachineStatus
from vdc.controllers.host import HostController, host_is_schedulable
from vdc.controllers.vm_domain import UnsupportedSpec, domain_for, domain_name
from vdc.controllers.vm_plan import VmPlan, plan_vm
from vdc.kube.cache import Key, ObjectCache
from vdc.kube.client import KubeWriter
from vdc.libvirt import domains
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.domain_xml import DomainConfig
from vdc.libvirt.errors import HostUnreachable, LibvirtFailure
from vdc.libvirt.host_facts import read_host_facts
from vdc.scheduler.placement import HostCandidate, PlacementRequest, place

log = logging.getLogger(__name__)

SCHEDULED = "Scheduled"
RESTART_REQUIRED = "RestartRequired"
STOPPING_POLL_SECONDS = 2.0
UNREACHABLE_POLL_SECONDS = 15.0

PRINTABLE = {"Stopped": "Stopped", "Running": "Running"}


class DeletionBlocked(Exception):
    """The VM's domain cannot be removed now (its host is unreachable); says how to get out."""


def _requested(vm: dict[str, Any]) -> tuple[int, int]:
    spec = vm.get("spec", {})
    return int(spec.get("cpu", {}).get("count", 1)), to_bytes(spec.get("memory", {}).get("size", "0"))


class VmController:
    def __init__(
        self,
        vms: ObjectCache,
        hosts: ObjectCache,
        connections: ConnectionManager,
        writer: KubeWriter,
        host_controller: HostController,
    ) -> None:
        self.vms = vms
        self.hosts = hosts
        self.connections = connections
        self.writer = writer
        self.host_controller = host_controller
        self._assumed: dict[str, str] = {}
        """uid -> host chosen but not yet visible in the cached status (kube-scheduler's assume cache)."""
        self._shutdown_since: dict[str, float] = {}

    # --- placement -------------------------------------------------------------------------
    def host_of(self, vm: dict[str, Any]) -> str | None:
        return (vm.get("status") or {}).get("host") or self._assumed.get(vm["metadata"].get("uid", ""))

    def _candidates(self, exclude_uid: str) -> list[HostCandidate]:
        used: dict[str, tuple[int, int]] = {}
        for other in self.vms:
            if other["metadata"].get("uid") == exclude_uid:
                continue
            host = self.host_of(other)
            if host:
                cpus, memory = _requested(other)
                c, m = used.get(host, (0, 0))
                used[host] = (c + cpus, m + memory)
        candidates = []
        for body in self.hosts:
            name = body["metadata"]["name"]
            status = body.get("status") or {}
            alloc = status.get("allocatable") or {}
            conn = self.connections.get(name)
            cpus, memory = used.get(name, (0, 0))
            candidates.append(
                HostCandidate(
                    name=name,
                    labels=body["metadata"].get("labels") or {},
                    ready=host_is_schedulable(body) and conn is not None and conn.connected,
                    maintenance=bool(body.get("spec", {}).get("maintenance")),
                    allocatable_cpus=int(alloc.get("cpus", 0)),
                    allocatable_memory=to_bytes(alloc.get("memory", "0")),
                    allocated_cpus=cpus,
                    allocated_memory=memory,
                )
            )
        return candidates

    async def _find_existing(self, uid: str) -> str | None:
        """Adoption: a domain with this UUID already on a connected host (e.g. after a crash mid-create)."""
        for name in self.connections.names():
            conn = self.connections.get(name)
            if conn is None or not conn.connected:
                continue
            try:
                if await conn.call(lambda c: domains.domain_exists(c, uid)):
                    return name
            except LibvirtFailure:
                continue
        return None

    # --- reconcile -------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> float | None:
        body = self.vms.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        generation = body["metadata"].get("generation")
        try:
            vm = VirtualMachine.model_validate(body)
        except ValidationError as exc:
            await self._report(body, None, "Failed", generation, stalled=("InvalidSpec", str(exc)))
            return None
        uid = str(vm.metadata["uid"])
        old = vm.status or VirtualMachineStatus()

        host = self.host_of(body) or await self._find_existing(uid)
        if host is None:
            cpus, memory = _requested(body)
            decision = place(
                PlacementRequest(cpus=cpus, memory=memory, pinned_host=vm.spec.host, selector=vm.spec.host_selector),
                self._candidates(uid),
            )
            if decision.host is None:
                await self._report(
                    body, old, "Scheduling", generation, scheduled=("False", "Unschedulable", decision.reason)
                )
                return None  # retried when hosts change
            host = decision.host
            self._assumed[uid] = host
            await self.writer.event(VirtualMachine.KIND, body, "Scheduled", decision.reason)
        scheduled: tuple[ConditionStatus, str, str] = ("True", "Scheduled", f"placed on host {host}")

        conn = self.connections.get(host)
        if conn is None or not conn.connected:
            why = conn.last_error if conn else "no such Host"
            await self._report(body, old, "Unknown", generation, host=host, scheduled=scheduled,
                               unknown=f"host {host} is unreachable: {why}")  # fmt: skip
            return UNREACHABLE_POLL_SECONDS
        try:
            facts = self.host_controller.facts(host)
            if facts is None:
                facts = await conn.call(read_host_facts)
            host_spec = (self.hosts.get(("", host)) or {}).get("spec", {})
            desired = domain_for(vm, domain_type=facts.domain_type(host_spec.get("virtualization", "Auto")))
        except UnsupportedSpec as exc:
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=("UnsupportedSpec", str(exc)))  # fmt: skip
            return None
        desired = _with_generation(desired, generation)
        try:
            return await self._converge(body, vm, old, conn, host, desired, generation, scheduled)
        except domains.NameTaken as exc:
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=("DomainNameTaken", str(exc)))  # fmt: skip
            return None
        except HostUnreachable as exc:
            await self._report(body, old, "Unknown", generation, host=host, scheduled=scheduled, unknown=str(exc))
            return UNREACHABLE_POLL_SECONDS

    async def _converge(
        self,
        body: dict[str, Any],
        vm: VirtualMachine,
        old: VirtualMachineStatus,
        conn: HostConnection,
        host: str,
        desired: DomainConfig,
        generation: int | None,
        scheduled: tuple[ConditionStatus, str, str],
    ) -> float | None:
        uid = desired.uuid
        strategy = vm.spec.run_strategy
        observed = await conn.call(lambda c: domains.observe_domain(c, uid))
        since = self._shutdown_since.get(uid)
        plan = plan_vm(
            strategy,
            desired,
            observed,
            booted_before=old.boot_time is not None,
            shutdown_elapsed=None if since is None else time.monotonic() - since,
            grace_seconds=vm.spec.termination_grace_period_seconds,
        )
        if plan.actions:
            await self._act(body, conn, host, desired, plan, old, observed is None)
            observed = await conn.call(lambda c: domains.observe_domain(c, uid))
            since = self._shutdown_since.get(uid)
            plan = plan_vm(
                strategy,
                desired,
                observed,
                booted_before=old.boot_time is not None or "start" in plan.actions,
                shutdown_elapsed=None if since is None else time.monotonic() - since,
                grace_seconds=vm.spec.termination_grace_period_seconds,
            )
        if (observed is None or observed.state != "running") and plan.phase != "Stopping":
            self._shutdown_since.pop(uid, None)
        boot_time = old.boot_time
        if plan.phase == "Running" and (old.phase != "Running" or boot_time is None):
            boot_time = now_rfc3339()
        await self._report(body, old, plan.phase, generation, host=host, scheduled=scheduled, plan=plan,
                           boot_time=boot_time, domain=desired)  # fmt: skip
        return STOPPING_POLL_SECONDS if plan.phase in ("Stopping", "Starting") else None

    async def _act(
        self,
        body: dict[str, Any],
        conn: HostConnection,
        host: str,
        desired: DomainConfig,
        plan: VmPlan,
        old: VirtualMachineStatus,
        missing: bool,
    ) -> None:
        uid = desired.uuid
        for action in plan.actions:
            log.info("vm %s/%s on %s: %s", desired.owner.namespace, desired.owner.name, host, action)
            if action == "define":
                await conn.call(lambda c: domains.define(c, desired))
            elif action == "start":
                await conn.call(lambda c: domains.start(c, uid))
            elif action == "shutdown":
                await conn.call(lambda c: domains.shutdown(c, uid))
                self._shutdown_since[uid] = time.monotonic()
            elif action == "destroy":
                await conn.call(lambda c: domains.destroy(c, uid))
            elif action == "set-memory":
                await conn.call(lambda c: domains.set_memory(c, uid, desired.current_memory_kib))
        if "start" in plan.actions and old.phase == "Running":
            what = "undefined" if missing else "shut off"
            await self.writer.event(
                VirtualMachine.KIND, body, "DriftRepaired",
                f"domain {desired.name} was {what} on host {host} behind the operator's back; started it again",
                warning=True,
            )  # fmt: skip
        elif "start" in plan.actions:
            await self.writer.event(VirtualMachine.KIND, body, "Started", f"domain {desired.name} started on {host}")
        elif "destroy" in plan.actions or "shutdown" in plan.actions:
            await self.writer.event(VirtualMachine.KIND, body, "Stopping", plan.message)

    # --- status ----------------------------------------------------------------------------
    async def _report(
        self,
        body: dict[str, Any],
        old: VirtualMachineStatus | None,
        phase: Phase,
        generation: int | None,
        *,
        host: str | None = None,
        scheduled: tuple[ConditionStatus, str, str] | None = None,
        plan: VmPlan | None = None,
        boot_time: str | None = None,
        domain: DomainConfig | None = None,
        stalled: tuple[str, str] | None = None,
        unknown: str | None = None,
    ) -> None:
        old = old or VirtualMachineStatus()
        conds: list[Condition] = list(old.conditions)
        if scheduled is not None:
            conds = set_condition(conds, SCHEDULED, *scheduled, observed_generation=generation)
        if stalled is not None:
            conds = set_condition(conds, READY, "False", stalled[0], stalled[1], observed_generation=generation)
            conds = set_condition(conds, STALLED, "True", stalled[0], stalled[1], observed_generation=generation)
            conds = set_condition(conds, RECONCILING, "False", stalled[0], observed_generation=generation)
        elif unknown is not None:
            conds = set_condition(conds, READY, "Unknown", "HostUnreachable", unknown, observed_generation=generation)
            conds = set_condition(conds, STALLED, "False", "HostUnreachable", observed_generation=generation)
            conds = set_condition(
                conds, RECONCILING, "True", "HostUnreachable", unknown, observed_generation=generation
            )
        elif plan is not None:
            ready: ConditionStatus = "True" if plan.ready else "False"
            conds = set_condition(conds, READY, ready, plan.reason, plan.message, observed_generation=generation)
            conds = set_condition(conds, STALLED, "False", plan.reason, observed_generation=generation)
            busy: ConditionStatus = "False" if plan.ready else "True"
            conds = set_condition(conds, RECONCILING, busy, plan.reason, plan.message, observed_generation=generation)
            if plan.restart_required:
                conds = set_condition(conds, RESTART_REQUIRED, "True", "SpecChanged",
                                      "changes take effect at the next restart: " + ", ".join(plan.restart_required),
                                      observed_generation=generation)  # fmt: skip
            else:
                conds = set_condition(conds, RESTART_REQUIRED, "False", "UpToDate", observed_generation=generation)
        elif scheduled is not None and scheduled[0] == "False":
            conds = set_condition(conds, READY, "False", "Unschedulable", scheduled[2], observed_generation=generation)
            conds = set_condition(conds, STALLED, "False", "Unschedulable", observed_generation=generation)
            conds = set_condition(conds, RECONCILING, "True", "Unschedulable", scheduled[2],
                                  observed_generation=generation)  # fmt: skip
        meta = body["metadata"]
        status = old.model_copy(
            update={
                "observed_generation": generation,
                "conditions": conds,
                "phase": phase,
                "printable_status": phase,
                "host": host or old.host,
                "domain_uuid": meta.get("uid") if host else old.domain_uuid,
                "domain_name": domain_name(meta["namespace"], meta["name"]) if host else old.domain_name,
                "boot_time": boot_time if plan is not None else old.boot_time,
                "restart_required_fields": list(plan.restart_required) if plan else old.restart_required_fields,
            }
        )
        wire = status.to_wire()
        old_wire = body.get("status") or {}
        if wire != old_wire and await self.writer.patch_status(VirtualMachine.KIND, body, wire):
            self.vms.note_status((meta["namespace"], meta["name"]), wire)
            if stalled is not None and old.phase != phase:
                await self.writer.event(VirtualMachine.KIND, body, stalled[0], stalled[1], warning=True)
            if scheduled is not None and scheduled[0] == "False" and _condition_message(old, SCHEDULED) != scheduled[2]:
                await self.writer.event(VirtualMachine.KIND, body, "FailedScheduling", scheduled[2], warning=True)
        if host and (status.host == host):
            self._assumed.pop(str(meta.get("uid")), None)

    # --- deletion --------------------------------------------------------------------------
    async def delete(self, body: dict[str, Any]) -> str:
        """Remove the VM's domain. Raises DeletionBlocked while its host cannot be reached."""
        meta = body["metadata"]
        uid = str(meta["uid"])
        annotations = meta.get("annotations") or {}
        host = self.host_of(body)
        self._assumed.pop(uid, None)
        self._shutdown_since.pop(uid, None)
        if host is None:
            return "the VM was never placed on a host"
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
        return f"domain removed from host {host}" if removed else f"no domain was left on host {host}"


ORPHAN_ANNOTATION = "vdc.dev/orphan-domain"
"""Set to "true" on a VM being deleted to finish deletion without reaching its host."""


def _condition_message(status: VirtualMachineStatus, type_: str) -> str | None:
    return next((c.message for c in status.conditions if c.type == type_), None)


def _with_generation(config: DomainConfig, generation: int | None) -> DomainConfig:
    import dataclasses

    return dataclasses.replace(config, owner=dataclasses.replace(config.owner, generation=generation))
