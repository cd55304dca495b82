"""VirtualMachine: place, observe, plan, act, report. The plan itself is ``vm_plan.plan_vm`` (pure)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import kubernetes
from pydantic import ValidationError

from vdc.api.appliance import ApplianceStatus
from vdc.api.common import Bandwidth, SecretKeyRef
from vdc.api.conditions import READY, RECONCILING, STALLED, Condition, ConditionStatus, now_rfc3339, set_condition
from vdc.api.quantity import format_bytes_mi, to_bytes
from vdc.api.virtualmachine import DiskStatus, InterfaceStatus, Phase, VirtualMachine, VirtualMachineStatus
from vdc.cloudinit import CloudInitError, build_seed_iso, seed_meta_data
from vdc.controllers.errors import DeletionWaits, ReportedFailure, first_line
from vdc.controllers.host import HostController, host_is_schedulable
from vdc.controllers.storagepool import pools_on
from vdc.controllers.virtualswitch import SwitchController, allocation_for, libvirt_network_name, switches_on
from vdc.controllers.vm_appliance import (
    ApplianceMismatch,
    ApplianceWait,
    Sibling,
    StopBehaviour,
    StopSibling,
    appliance_status,
    base_volumes,
    chosen_system,
    property_values,
    spec_defaults,
    startup_wait,
    stop_behaviour,
    stop_wait,
)
from vdc.controllers.vm_disks import (
    ApplianceImagesMissing,
    DiskSpecError,
    PoolMissing,
    VolumePlan,
    plan_volumes,
    pool_bytes,
    target_devices,
)
from vdc.controllers.vm_domain import AttachedVolume, UnsupportedSpec, domain_for, domain_name
from vdc.controllers.vm_plan import RESTART_ANNOTATION, VmPlan, plan_vm, restart_pending
from vdc.controllers.vm_volumes import delete_volumes, ensure_volumes, grow
from vdc.ipam import mac_for, owner_of
from vdc.keylocks import KeyLocks
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt import domains, storage
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.domain_xml import BandwidthConfig, BandwidthLimitConfig, DomainConfig, InterfaceConfig
from vdc.libvirt.errors import ConfigRejected, HookRefused, HostUnreachable, LibvirtFailure
from vdc.libvirt.host_facts import read_host_facts
from vdc.libvirt.storage import VolumeObservation
from vdc.ovf.environment import environment_iso, environment_xml
from vdc.scheduler.placement import HostCandidate, PlacementRequest, place
from vdc.tenancy.view import TenancyView, host_files_of

log = logging.getLogger(__name__)

SCHEDULED = "Scheduled"
RESTART_REQUIRED = "RestartRequired"
HOST_FILE_REFUSED = "HostFileRefused"
"""Stalled reason: the host's vdc qemu hook refused the VM's kernel/initrd (a symlink out of bounds)."""
STOPPING_POLL_SECONDS = 2.0
WAITING_FOR_STOP_ORDER = "WaitingForStopOrder"
"""Ready/Reconciling reason of a vApp member held back from stopping until the members after it stopped."""
_GUEST_MAY_RUN = ("Running", "Starting", "Stopping", "Migrating", "Unknown")
"""Phases in which a VM's guest may be on (any other: it is off, or was never started)."""
UNREACHABLE_POLL_SECONDS = 15.0

PRINTABLE = {"Stopped": "Stopped", "Running": "Running"}


class DeletionBlocked(DeletionWaits):
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
        pools: ObjectCache | None = None,
        switches: ObjectCache | None = None,
        switch_controller: SwitchController | None = None,
        appliances: ObjectCache | None = None,
        tenancy: TenancyView | None = None,
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
        self._assumed: dict[str, str] = {}
        """uid -> host chosen but not yet visible in the cached status (kube-scheduler's assume cache)."""
        self._shutdown_since: dict[str, float] = {}
        """uid -> when (epoch seconds) the guest was asked to shut down; kept in status too (durable)."""
        self._disk_status: dict[str, list[DiskStatus]] = {}
        self._locks: KeyLocks[Key] = KeyLocks()
        self._deleted: set[str] = set()
        """uids whose deletion ran: a reconcile that comes after must not make anything again."""
        self._nic_status: dict[str, list[InterfaceStatus]] = {}

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
                    pools=pools_on(self.pools, name),
                    switches=switches_on(self.switches, name),
                    host_files=host_files_of(body),
                )
            )
        return candidates

    async def _find_existing(self, uid: str) -> str | None:
        """Adoption: a domain with this UUID already on a connected host (e.g. after a crash mid-create)."""
        holding = await self._hosts_holding(uid)
        return holding[0] if holding else None

    async def _hosts_holding(self, uid: str) -> list[str]:
        """Every connected host with a domain of this UUID (more than one only after a crash of an older
        version, or a host that came back after its VM was restarted elsewhere)."""
        found = []
        for name in sorted(self.connections.names()):
            conn = self.connections.get(name)
            if conn is None or not conn.connected:
                continue
            try:
                if await conn.call(lambda c: domains.domain_exists(c, uid)):
                    found.append(name)
            except LibvirtFailure:
                continue
        return found

    # --- NICs ------------------------------------------------------------------------------
    def _nics(self, vm: VirtualMachine) -> tuple[list[tuple[InterfaceConfig, InterfaceStatus]], str | None]:
        """Each NIC's port on its switch, with the address the switch's IPAM gave it; or what to wait for.

        Raises AddressRefused when the switch's IPAM refused the NIC (a taken or foreign address)."""
        ns, name, uid = str(vm.metadata["namespace"]), str(vm.metadata["name"]), str(vm.metadata["uid"])
        out = []
        for nic in vm.spec.interfaces:
            switch = self.switches.get(("", nic.switch))
            if switch is None:
                return [], f"switch {nic.switch} does not exist"
            owner = owner_of(ns, name, nic.name)
            refused = (self.switch_controller.errors.get(nic.switch, {}) if self.switch_controller else {}).get(owner)
            if refused:
                raise AddressRefused(f"interface {nic.name}: {refused}")
            allocation = allocation_for(switch, owner)
            mac = nic.mac_address or mac_for(uid, nic.name)
            if allocation is None or allocation.mac != mac or allocation.pending:
                return [], f"interface {nic.name}: waiting for an address on switch {nic.switch}"
            bandwidth = _bandwidth(switch.get("spec", {}).get("bandwidth"), nic.bandwidth)
            out.append((
                InterfaceConfig(network=libvirt_network_name(nic.switch), mac=mac, model=nic.model,
                                bandwidth=bandwidth, link_state=nic.link_state),
                InterfaceStatus(name=nic.name, mac_address=mac, ip_addresses=[allocation.ip], switch=nic.switch),
            ))  # fmt: skip
        return out, None

    # --- appliances ------------------------------------------------------------------------
    def _appliances_of(self, vm: VirtualMachine) -> dict[str, ApplianceStatus]:
        """The Ready appliances the VM is made from (fromAppliance, clone disks); ApplianceWait when one
        is not Ready yet, ApplianceMismatch when one failed."""
        ns = str(vm.metadata["namespace"])
        refs = {(d.source.clone.appliance.namespace or ns, d.source.clone.appliance.name)
                for d in vm.spec.disks if d.source.clone and d.source.clone.appliance}  # fmt: skip
        if vm.spec.from_appliance is not None:
            refs.add((vm.spec.from_appliance.namespace or ns, vm.spec.from_appliance.name))
        return {name: appliance_status(self.appliances.get((where, name)), name) for where, name in sorted(refs)}

    def _ovf_env(self, vm: VirtualMachine, appliances: dict[str, ApplianceStatus]) -> bytes:
        source = vm.spec.from_appliance
        if source is None:
            raise DiskSpecError("an ovfEnv disk needs spec.fromAppliance")
        status = appliances[source.name]
        system = chosen_system(status, source.virtual_system, source.deployment_option)
        values = property_values(status, source.properties, source.deployment_option)
        platform = {"Kind": "vdc-operator", "Vendor": "vdc.dev"}
        return environment_iso(environment_xml(system.id, values, platform))

    def _start_order_wait(self, vm: VirtualMachine) -> str | None:
        """Why a vApp member may not start yet (StartupSection order of its appliance), or None."""
        source = vm.spec.from_appliance
        if source is None:
            return None
        ns = str(vm.metadata["namespace"])
        body = self.appliances.get((source.namespace or ns, source.name))
        if body is None:
            return None
        status = ApplianceStatus.model_validate(body.get("status") or {})
        if not status.startup:
            return None
        mine = chosen_system(status, source.virtual_system).id
        siblings = []
        ages: dict[str, float] = {}
        now = time.time()
        for other in self.vms:
            spec = other.get("spec") or {}
            other_source = spec.get("fromAppliance") or {}
            other_ns = other["metadata"].get("namespace")
            if (
                other_ns != ns
                or other_source.get("name") != source.name
                or other_source.get("namespace", ns) != (source.namespace or ns)
            ):
                continue
            other_status = other.get("status") or {}
            system = other_source.get("virtualSystem") or status.virtual_systems[0].id
            boot = other_status.get("bootTime")
            siblings.append(Sibling(system, other_status.get("phase"), boot))
            if boot:
                ages[boot] = now - _parse_time(boot)
        return startup_wait(status.startup, mine, siblings, ages)

    def _stop_order(self, body: dict[str, Any]) -> tuple[str | None, StopBehaviour] | None:
        """For a vApp member (fromAppliance, a StartupSection): why it may not stop yet (None: it may) and
        how it stops (stopAction, stopDelay). None for any other VM. Read from the raw body: a VM being
        deleted need not be valid."""
        source = (body.get("spec") or {}).get("fromAppliance") or {}
        if not source.get("name"):
            return None
        meta = body["metadata"]
        ns = str(meta.get("namespace"))
        where = source.get("namespace") or ns
        appliance = self.appliances.get((where, source["name"]))
        if appliance is None:
            return None
        status = ApplianceStatus.model_validate(appliance.get("status") or {})
        if not status.startup or not status.virtual_systems:
            return None
        first = status.virtual_systems[0].id
        siblings = []
        for other in self.vms:
            other_meta, other_spec = other["metadata"], other.get("spec") or {}
            other_source = other_spec.get("fromAppliance") or {}
            if (
                other_meta.get("uid") == meta.get("uid")
                or other_meta.get("namespace") != ns
                or other_source.get("name") != source["name"]
                or (other_source.get("namespace") or ns) != where
            ):
                continue
            siblings.append(
                StopSibling(
                    name=str(other_meta.get("name")),
                    virtual_system=other_source.get("virtualSystem") or first,
                    stopping=bool(other_meta.get("deletionTimestamp")) or other_spec.get("runStrategy") == "Halted",
                    stopped=(other.get("status") or {}).get("phase") not in _GUEST_MAY_RUN,
                )
            )
        mine = source.get("virtualSystem") or first
        return stop_wait(status.startup, mine, siblings), stop_behaviour(status.startup, mine)

    # --- disks -----------------------------------------------------------------------------
    async def _seed(self, vm: VirtualMachine) -> bytes:
        """The cloud-init seed ISO for the VM (user data from the spec or a Secret in its namespace)."""
        ci = vm.spec.cloud_init
        if ci is None:
            raise DiskSpecError("a disk has source.cloudInit but spec.cloudInit is missing")
        ns = str(vm.metadata["namespace"])

        async def from_secret(ref: SecretKeyRef | None, inline: str | None) -> str | None:
            if ref is None:
                return inline
            try:
                data = await self.writer.secret_data(ns, ref.name)
            except kubernetes.client.ApiException as exc:
                raise DiskSpecError(f"cloud-init Secret {ns}/{ref.name}: {exc.reason}") from exc
            if ref.key not in data:
                raise DiskSpecError(f"cloud-init Secret {ns}/{ref.name} has no key {ref.key}")
            return base64.b64decode(data[ref.key]).decode()

        user_data = await from_secret(ci.user_data_secret_ref, ci.user_data)
        network_data = await from_secret(ci.network_data_secret_ref, ci.network_data)
        meta = seed_meta_data(ns, str(vm.metadata["name"]), str(vm.metadata["uid"]), ci.meta_data)
        return await asyncio.to_thread(build_seed_iso, user_data, meta, network_data)

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
            if plan.capacity is None or plan.kind not in ("blank", "clone") or current.capacity_bytes >= plan.capacity:
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

    # --- reconcile -------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> float | None:
        async with self._locks.hold(key):  # never alongside the VM's deletion
            return await self._reconcile(key)

    async def _reconcile(self, key: Key) -> float | None:
        body = self.vms.get(key)
        if body is None or body["metadata"].get("deletionTimestamp") or body["metadata"].get("uid") in self._deleted:
            return None
        generation = body["metadata"].get("generation")
        try:
            vm = VirtualMachine.model_validate(body)
        except ValidationError as exc:
            await self._report(body, None, "Failed", generation, stalled=("InvalidSpec", str(exc)))
            return None
        uid = str(vm.metadata["uid"])
        old = vm.status or VirtualMachineStatus()
        if uid not in self._shutdown_since and old.shutdown_requested_at:  # asked before a restart
            self._shutdown_since[uid] = _parse_time(old.shutdown_requested_at)
        access = self.tenancy.check_vm(vm)
        refusals = list(access.refusals)
        host_files = _host_files_of(vm)
        if host_files and not self.tenancy.hosts_serving_files(key[0], host_files):
            files = ", ".join(host_files)
            refusals.append(f"spec.boot.kernel: no Host lets namespace {key[0]} boot from {files} (a cluster "
                            "admin declares directories in a Host's spec.hostFiles.allowedPaths)")  # fmt: skip
        if refusals:  # before anything is written or created anywhere, every refusal at once
            await self._report(body, old, "Failed", generation, stalled=("AccessDenied", "; ".join(refusals)))
            return None
        if _stalled_reason(old) == HOST_FILE_REFUSED and old.observed_generation == generation:
            return None  # the host's hook refused this spec's files: only a new spec (or a re-created VM) helps
        try:
            appliances = self._appliances_of(vm)
            source = vm.spec.from_appliance
            if source is not None:
                where = source.namespace or str(vm.metadata["namespace"])
                pool = str((self.appliances.get((where, source.name)) or {})["spec"]["storagePool"])
                patch = spec_defaults(body["spec"], appliances[source.name], pool)
                if patch:
                    await self.writer.patch_spec(VirtualMachine.KIND, body, patch)
                    log.info("vm %s/%s: spec filled in from appliance %s", *key, source.name)
                    return None  # the watch brings the new spec
            plans = plan_volumes(vm, {name: base_volumes(status) for name, status in appliances.items()})
        except (ApplianceWait, ApplianceImagesMissing) as exc:
            await self._report(body, old, "Provisioning", generation, waiting=("WaitingForAppliance", str(exc)))
            return None  # appliance events bring it back
        except ApplianceMismatch as exc:
            await self._report(body, old, "Failed", generation, stalled=("ApplianceMismatch", str(exc)))
            return None
        except DiskSpecError as exc:
            await self._report(body, old, "Failed", generation, stalled=("UnsupportedSpec", str(exc)))
            return None
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:  # changed meanwhile: its watch event brings it back
                return None
            raise

        host = self.host_of(body)
        if host is None and (host := await self._find_existing(uid)) is not None:
            self._assumed[uid] = host  # counted (quota, capacity) from now on, before its status says so
        if host is not None and (refused := self.tenancy.host_files_refusal(host, key[0], host_files)):
            await self._report(body, old, "Failed", generation, stalled=("AccessDenied", refused))
            return None
        if host is None:
            # From the quota check to the assumed placement nothing awaits: VMs reconciled concurrently
            # see each other's placements, so many VMs created at once cannot over-commit the quota.
            over = self.tenancy.quota_refusal(body, self.host_of)
            if over is not None:
                await self._report(body, old, "Scheduling", generation, scheduled=("False", "QuotaExceeded", over),
                                   stalled=("QuotaExceeded", over))  # fmt: skip
                return None  # VM deletions and quota changes bring it back
            cpus, memory = _requested(body)
            decision = place(
                PlacementRequest(
                    cpus=cpus,
                    memory=memory,
                    pinned_host=vm.spec.host,
                    selector=vm.spec.host_selector,
                    pool_bytes=pool_bytes(plans),
                    switches=frozenset(nic.switch for nic in vm.spec.interfaces),
                    images={name: frozenset(status.hosts) for name, status in appliances.items()},
                    host_files=host_files,
                    tenant=self.tenancy.tenant(key[0]),
                ),
                self._candidates(uid),
            )
            if decision.host is None:
                await self._report(
                    body, old, "Scheduling", generation, scheduled=("False", "Unschedulable", decision.reason)
                )
                return None  # retried when hosts change
            host = decision.host
            self._assumed[uid] = host
            # The placement is in status before anything is made on the host: a crash from here on finds
            # the volumes and domain where they were made, never places the VM again elsewhere (leaking them).
            placed: tuple[ConditionStatus, str, str] = ("True", "Scheduled", f"placed on host {host}")
            await self._report(body, old, "Provisioning", generation, host=host, scheduled=placed,
                               waiting=("Provisioning", f"placed on host {host}"))  # fmt: skip
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
            seed = await self._seed(vm) if any(p.kind == "cloudInit" for p in plans) else None
            ovf_env = functools.partial(self._ovf_env, vm, appliances)
            volumes = await conn.call(lambda c: ensure_volumes(c, plans, seed, ovf_env))
            nics, waiting_for = self._nics(vm)
            if waiting_for is not None:
                await self._report(body, old, "Provisioning", generation, host=host, scheduled=scheduled,
                                   waiting=("WaitingForAddress", waiting_for))  # fmt: skip
                return STOPPING_POLL_SECONDS
            host_spec = (self.hosts.get(("", host)) or {}).get("spec", {})
            desired = domain_for(
                vm,
                domain_type=facts.domain_type(host_spec.get("virtualization", "Auto")),
                volumes={d: AttachedVolume(v.path, _format(v)) for d, v in volumes.items()},
                interfaces=[config for config, _ in nics],
                host_file_dirs=self.tenancy.host_file_dirs(host),
            )
            self._nic_status[uid] = [status for _, status in nics]
            volumes = await self._grow(conn, vm, plans, volumes, desired)
        except PoolMissing as exc:
            await self._report(body, old, "Provisioning", generation, host=host, scheduled=scheduled,
                               waiting=("WaitingForPool", str(exc)))  # fmt: skip
            return UNREACHABLE_POLL_SECONDS
        except AddressRefused as exc:  # a taken or foreign address, or one another VM holds too (a conflict)
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=("AddressRefused", str(exc)))  # fmt: skip
            return None
        except (UnsupportedSpec, DiskSpecError, CloudInitError, LookupError) as exc:
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=("UnsupportedSpec", str(exc)))  # fmt: skip
            return None
        except HostUnreachable as exc:
            await self._report(body, old, "Unknown", generation, host=host, scheduled=scheduled, unknown=str(exc))
            return UNREACHABLE_POLL_SECONDS
        except LibvirtFailure as exc:
            message = await self._libvirt_failed(body, old, "Provisioning", generation, host, scheduled, exc)
            raise ReportedFailure(message) from exc  # the work queue retries with backoff
        desired = _with_generation(desired, generation)
        owner = f"{key[0]}/{key[1]} ({uid})"
        self._disk_status[uid] = [
            DiskStatus(name=p.disk, host=host, pool=p.pool, volume=p.volume, path=volumes[p.disk].path,
                       capacity=format_bytes_mi(volumes[p.disk].capacity_bytes),
                       allocation=format_bytes_mi(volumes[p.disk].allocation_bytes),
                       access=access.volumes.get(p.disk),
                       owner=owner if access.volumes.get(p.disk) == "Owned" else None)
            for p in plans
        ]  # fmt: skip
        try:
            return await self._converge(body, vm, old, conn, host, desired, generation, scheduled)
        except HookRefused as exc:
            # The host resolved the VM's files (symlinks) and refused them: the domain never ran; remove it.
            await conn.call(lambda c: domains.remove(c, uid))
            refusal = f"host {host} refused to start the domain: {exc.refusal}"
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=(HOST_FILE_REFUSED, refusal))  # fmt: skip
            return None
        except domains.NameTaken as exc:
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=("DomainNameTaken", str(exc)))  # fmt: skip
            return None
        except HostUnreachable as exc:
            await self._report(body, old, "Unknown", generation, host=host, scheduled=scheduled, unknown=str(exc))
            return UNREACHABLE_POLL_SECONDS
        except LibvirtFailure as exc:
            message = await self._libvirt_failed(body, old, "Starting", generation, host, scheduled, exc)
            raise ReportedFailure(message) from exc  # the work queue retries with backoff

    async def _libvirt_failed(
        self,
        body: dict[str, Any],
        old: VirtualMachineStatus,
        phase: Phase,
        generation: int | None,
        host: str,
        scheduled: tuple[ConditionStatus, str, str],
        exc: LibvirtFailure,
    ) -> str:
        """A libvirt error reaches status within the attempt that met it (with the host it happened on, so
        deletion finds what was made there), and a Warning Event once per distinct message. The message."""
        message = f"host {host}: {first_line(exc)}"
        if isinstance(exc, ConfigRejected):  # libvirt refuses the spec: retrying alone will not help
            await self._report(body, old, "Failed", generation, host=host, scheduled=scheduled,
                               stalled=("LibvirtRejected", message))  # fmt: skip
            return message
        await self._report(body, old, phase, generation, host=host, scheduled=scheduled,
                           waiting=("LibvirtError", message))  # fmt: skip
        if _condition_message(old, READY) != message:
            await self.writer.event(VirtualMachine.KIND, body, "LibvirtError", message, warning=True)
        return message

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
        annotations = body["metadata"].get("annotations") or {}
        restart = restart_pending(annotations.get(RESTART_ANNOTATION), old.boot_time)
        stop = self._stop_order(body) if strategy == "Halted" else None  # a vApp member: stop order, stopAction
        grace = vm.spec.termination_grace_period_seconds
        if stop is not None and stop[1].grace_seconds is not None:
            grace = stop[1].grace_seconds
        plan = plan_vm(
            strategy,
            desired,
            observed,
            booted_before=old.boot_time is not None,
            shutdown_elapsed=None if since is None else time.time() - since,
            grace_seconds=grace,
            restart_requested=restart,
        )
        start_wait = self._start_order_wait(vm) if "start" in plan.actions else None
        plan = _stop_ordered(_held_back(plan, start_wait), stop)
        started = "start" in plan.actions
        if plan.actions:
            await self._act(body, conn, host, desired, plan, old, observed is None)
            observed = await conn.call(lambda c: domains.observe_domain(c, uid))
            since = self._shutdown_since.get(uid)
            plan = plan_vm(
                strategy,
                desired,
                observed,
                booted_before=old.boot_time is not None or started,
                shutdown_elapsed=None if since is None else time.time() - since,
                grace_seconds=grace,
                restart_requested=restart and not started,
            )
            plan = _stop_ordered(_held_back(plan, start_wait), stop)
        if plan.reason == WAITING_FOR_STOP_ORDER and _condition_message(old, READY) != plan.message:
            await self.writer.event(VirtualMachine.KIND, body, WAITING_FOR_STOP_ORDER, plan.message)
        if (observed is None or observed.state != "running") and plan.phase != "Stopping":
            self._shutdown_since.pop(uid, None)
        if self._nic_status.get(uid):
            leases = await conn.call(lambda c: domains.lease_addresses(c, uid)) if observed and observed.live else {}
            self._nic_status[uid] = nic_status_observed(self._nic_status[uid], observed, leases)
        boot_time = old.boot_time
        if plan.phase == "Running" and (old.phase != "Running" or boot_time is None or started):
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
                self._shutdown_since.pop(uid, None)  # a restart's shutdown is over
            elif action == "shutdown":
                await conn.call(lambda c: domains.shutdown(c, uid))
                self._shutdown_since[uid] = time.time()
            elif action == "destroy":
                await conn.call(lambda c: domains.destroy(c, uid))
            elif action == "set-memory":
                await conn.call(lambda c: domains.set_memory(c, uid, desired.current_memory_kib))
            elif action == "set-link-state":
                await conn.call(lambda c: domains.set_link_states(c, uid, desired.interfaces))
        if plan.reason == "Restarting" and ("start" in plan.actions or "shutdown" in plan.actions):
            await self.writer.event(VirtualMachine.KIND, body, "Restarting", plan.message)
        elif "start" in plan.actions and old.phase == "Running":
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
        waiting: tuple[str, str] | None = None,
    ) -> None:
        old = old or VirtualMachineStatus()
        conds: list[Condition] = list(old.conditions)
        if scheduled is not None:
            conds = set_condition(conds, SCHEDULED, *scheduled, observed_generation=generation)
        if stalled is not None:
            conds = set_condition(conds, READY, "False", stalled[0], stalled[1], observed_generation=generation)
            conds = set_condition(conds, STALLED, "True", stalled[0], stalled[1], observed_generation=generation)
            conds = set_condition(conds, RECONCILING, "False", stalled[0], observed_generation=generation)
        elif waiting is not None:
            conds = set_condition(conds, READY, "False", waiting[0], waiting[1], observed_generation=generation)
            conds = set_condition(conds, STALLED, "False", waiting[0], observed_generation=generation)
            conds = set_condition(conds, RECONCILING, "True", waiting[0], waiting[1], observed_generation=generation)
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
                "shutdown_requested_at": _rfc3339(self._shutdown_since.get(str(meta.get("uid")))),
                "restart_required_fields": list(plan.restart_required) if plan else old.restart_required_fields,
                "disks": self._disk_status.get(str(meta.get("uid")), old.disks),
                "interfaces": self._nic_status.get(str(meta.get("uid")), old.interfaces),
            }
        )
        wire = status.to_wire()
        old_wire = body.get("status") or {}
        if wire != old_wire and (sent := await self.writer.patch_status(VirtualMachine.KIND, body, wire)):
            self.vms.note_status((meta["namespace"], meta["name"]), sent)
            if stalled is not None and old.phase != phase:
                await self.writer.event(VirtualMachine.KIND, body, stalled[0], stalled[1], warning=True)
            if (
                plan is not None
                and plan.restart_required
                and list(plan.restart_required) != old.restart_required_fields
            ):
                fields = ", ".join(plan.restart_required)
                message = f"changes take effect at the next restart: {fields}"
                await self.writer.event(VirtualMachine.KIND, body, "RestartRequired", message)
            if scheduled is not None and scheduled[0] == "False" and _condition_message(old, SCHEDULED) != scheduled[2]:
                await self.writer.event(VirtualMachine.KIND, body, "FailedScheduling", scheduled[2], warning=True)
        if host and (status.host == host):
            self._assumed.pop(str(meta.get("uid")), None)

    # --- deletion --------------------------------------------------------------------------
    def forget(self, uid: str) -> None:
        """The VM is gone from the API: drop what was kept about it in memory."""
        self._deleted.discard(uid)
        self._nic_status.pop(uid, None)
        self._disk_status.pop(uid, None)
        self._assumed.pop(uid, None)
        self._shutdown_since.pop(uid, None)

    async def delete(self, body: dict[str, Any]) -> str:
        """Remove the VM's domain and the volumes it owns from its host, and any copy of its domain from
        every other connected host. Raises DeletionBlocked while its host cannot be reached."""
        async with self._locks.hold(key_of(body)):  # a reconcile in flight finishes first
            self._deleted.add(str(body["metadata"]["uid"]))
            return await self._delete(body)

    async def _delete(self, body: dict[str, Any]) -> str:
        meta = body["metadata"]
        uid = str(meta["uid"])
        annotations = meta.get("annotations") or {}
        placed = self.host_of(body)
        holding = await self._hosts_holding(uid)  # also a domain made before status said so
        hosts = sorted({*holding, *([placed] if placed else [])})
        if holding:
            await self._stop_in_order(body, holding)  # a vApp member: DeletionWaits while it must wait
        self._assumed.pop(uid, None)
        self._shutdown_since.pop(uid, None)
        if not hosts:
            return "the VM was never placed on a host"
        outcomes = [await self._delete_on(body, host, annotations) for host in hosts]
        self._disk_status.pop(uid, None)
        return "; ".join(outcomes)

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
        generation = body["metadata"].get("generation")
        await self._report(body, old, "Stopping", generation, waiting=(WAITING_FOR_STOP_ORDER, message))

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
            plans = plan_volumes(VirtualMachine.model_validate(body))
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


ORPHAN_ANNOTATION = "vdc.dev/orphan-domain"
"""Set to "true" on a VM being deleted to finish deletion without reaching its host."""


def _host_files_of(vm: VirtualMachine) -> tuple[str, ...]:
    """The host files the VM names (kernel, initrd)."""
    kernel = vm.spec.boot.kernel
    return () if kernel is None else tuple(p for p in (kernel.kernel, kernel.initrd) if p)


def _stalled_reason(status: VirtualMachineStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == STALLED and c.status == "True"), None)


def _condition_message(status: VirtualMachineStatus, type_: str) -> str | None:
    return next((c.message for c in status.conditions if c.type == type_), None)


class AddressRefused(ValueError):
    """The switch's IPAM refused a NIC's address (the message names it)."""


def _held_back(plan: VmPlan, start_wait: str | None) -> VmPlan:
    """``plan`` without its start while a vApp member before it has not started (StartupSection order)."""
    if start_wait is None or "start" not in plan.actions:
        return plan
    actions = tuple(a for a in plan.actions if a != "start")
    return dataclasses.replace(
        plan, actions=actions, phase="Starting", ready=False, reason="WaitingForStartOrder", message=start_wait
    )


def _stop_ordered(plan: VmPlan, stop: tuple[str | None, StopBehaviour] | None) -> VmPlan:
    """``plan`` for a vApp member being stopped (``stop``: see ``VmController._stop_order``): without its
    shutdown or destroy while a member after it in the start order has not stopped; with stopAction
    powerOff, forced off at once instead of asked to shut down."""
    if stop is None or not {"shutdown", "destroy"} & set(plan.actions):
        return plan
    wait, behaviour = stop
    if wait is not None:
        actions = tuple(a for a in plan.actions if a not in ("shutdown", "destroy"))
        return dataclasses.replace(
            plan, actions=actions, phase="Stopping", ready=False, reason=WAITING_FOR_STOP_ORDER, message=wait
        )
    if behaviour.power_off and "shutdown" in plan.actions:
        actions = tuple("destroy" if a == "shutdown" else a for a in plan.actions)
        return dataclasses.replace(plan, actions=actions, message="forcing the domain off (vApp stopAction powerOff)")
    return plan


def _parse_time(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def nic_status_observed(
    nics: list[InterfaceStatus], observed: domains.DomainObservation | None, leases: dict[str, tuple[str, ...]]
) -> list[InterfaceStatus]:
    """NIC status with what the host shows: each NIC's host device (tap) while the domain runs, and the
    addresses the guest leased besides the IPAM's (the IPAM's first)."""
    devices = {i.mac: i.target_dev for i in (observed.live.interfaces if observed and observed.live else ())}
    out = []
    for nic in nics:
        ipam = nic.ip_addresses[:1]
        leased = [ip for ip in leases.get(nic.mac_address or "", ()) if ip not in ipam]
        out.append(
            nic.model_copy(update={"host_device": devices.get(nic.mac_address or ""), "ip_addresses": ipam + leased})
        )
    return out


def _bandwidth(switch_default: dict[str, Any] | None, nic: Bandwidth | None) -> BandwidthConfig | None:
    """The NIC's limits, never above the switch's (a port group's policy, lowered per port)."""

    def pick(direction: str) -> BandwidthLimitConfig | None:
        base: dict[str, int] | None = (switch_default or {}).get(direction)
        own = getattr(nic, direction) if nic is not None else None
        if base is None:
            return None if own is None else BandwidthLimitConfig(own.average, own.peak, own.burst)
        if own is None:
            return BandwidthLimitConfig(base["average"], base.get("peak"), base.get("burst"))

        def lower(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return BandwidthLimitConfig(
            min(own.average, base["average"]), lower(own.peak, base.get("peak")), lower(own.burst, base.get("burst"))
        )

    inbound, outbound = pick("inbound"), pick("outbound")
    return BandwidthConfig(inbound, outbound) if inbound or outbound else None


def _format(volume: VolumeObservation) -> Literal["qcow2", "raw", "iso"]:
    return volume.format if volume.format in ("qcow2", "raw", "iso") else "raw"


def _with_generation(config: DomainConfig, generation: int | None) -> DomainConfig:
    import dataclasses

    return dataclasses.replace(config, owner=dataclasses.replace(config.owner, generation=generation))
