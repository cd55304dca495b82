"""Disk sources: one class per kind of ``spec.disks[].source`` (Nova's ``virt/libvirt/volume/`` driver per
type is the model). Each plans its volume, makes sure it exists on a host, gives the disk's libvirt
parameters and deletes it. Adding a source: one class here and one line in ``SOURCES``.

``plan``/``disk_config`` are pure; ``ensure``/``delete`` block on libvirt (run them through
``HostConnection.call``); ``prepare`` may await (reading a Secret) before that."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import kubernetes
import libvirt

from vdc.api.appliance import ApplianceStatus
from vdc.api.common import IOTUNE_LIMITS, IoBurst, IoTune, SecretKeyRef
from vdc.api.quantity import to_bytes
from vdc.api.virtualmachine import Disk, VirtualMachine
from vdc.cloudinit import build_seed_iso, seed_meta_data
from vdc.controllers.storagepool import libvirt_pool_name
from vdc.controllers.vm_appliance import chosen_system, property_values
from vdc.libvirt import storage
from vdc.libvirt.domain_xml import DiskConfig, IoTuneConfig
from vdc.libvirt.errors import InvalidState, NotFound
from vdc.libvirt.storage import VolumeObservation
from vdc.libvirt.storage_xml import BackingStoreConfig, VolumeConfig
from vdc.ovf.environment import environment_iso, environment_xml

SEED_BYTES = 1 << 20
"""Room a seed ISO (cloud-init, OVF environment) takes in its pool, for placement."""

VolumeFormat = Literal["qcow2", "raw", "iso"]


class DiskSpecError(ValueError):
    """The disk cannot be realised as asked (the message says what to change)."""


class ApplianceImagesMissing(DiskSpecError):
    """A disk's appliance is not Ready yet: wait for it."""


class PoolMissing(DiskSpecError):
    """The disk's pool is not (yet) running on the VM's host: wait for it."""


@dataclass(frozen=True)
class VolumePlan:
    disk: str
    kind: str
    """The source's ``SOURCES`` key: blank, clone, volume, cloudInit, ovfEnv."""
    pool: str
    """The StoragePool's name."""
    volume: str
    format: VolumeFormat
    capacity: int | None
    """Bytes wanted (None: as it is / as the base)."""
    base_volume: str | None = None
    delete_with_vm: bool = True
    device: Literal["disk", "cdrom"] = "disk"

    @property
    def libvirt_pool(self) -> str:
        return libvirt_pool_name(self.pool)

    @property
    def source(self) -> DiskSource:
        return SOURCES[self.kind]


@dataclass(frozen=True)
class AttachedVolume:
    """Where a disk's volume is on the host."""

    path: str
    format: VolumeFormat
    pool: str = ""
    pool_iotune: IoTune | None = None
    """The pool's default disk limits (spec.diskIotune): the disk's own may only lower them."""


Content = Callable[[], bytes]
"""Builds a volume's content (an ISO image); called only when the volume is missing."""


class SourceContext(Protocol):
    """What ``prepare`` may read: Secrets of the VM's namespace, the appliances the VM is made from."""

    @property
    def appliances(self) -> Mapping[str, ApplianceStatus]: ...

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]: ...


def volume_name(namespace: str, vm: str, disk: str, ext: str) -> str:
    """``<namespace>_<vm>_<disk>.<ext>``: deterministic, unique, and recognisably ours."""
    return f"{namespace}_{vm}_{disk}.{ext}"


class DiskSource(Protocol):
    kind: ClassVar[str]
    field: ClassVar[str]
    """The attribute of ``api.virtualmachine.DiskSource`` that selects this source."""
    cdrom: ClassVar[bool]
    grows: ClassVar[bool]
    """The volume grows when the spec's size does."""

    def appliance(self, disk: Disk) -> tuple[str | None, str] | None:
        """The appliance (namespace, None: the VM's; name) the disk is made from, if any: its images."""

    def plan(self, vm: VirtualMachine, disk: Disk, images: Mapping[str, Mapping[str | None, str]]) -> VolumePlan:
        """Which volume the disk is. ``images``: appliance name -> its base volumes by disk id."""

    def reserve(self, plan: VolumePlan) -> int:
        """Bytes a new volume takes in its pool, for placement."""

    async def prepare(self, vm: VirtualMachine, context: SourceContext) -> Content | None:
        """What ``ensure`` needs besides the host (the seed ISO's content)."""

    def ensure(self, conn: libvirt.virConnect, plan: VolumePlan, content: Content | None) -> VolumeObservation:
        """The volume exists on the host (made when missing)."""

    def disk_config(self, disk: Disk, target_dev: str, volume: AttachedVolume) -> DiskConfig:
        """The libvirt ``<disk>`` of the disk."""

    def delete(self, conn: libvirt.virConnect, plan: VolumePlan) -> bool:
        """Remove the volume if its policy says so; whether it was deleted."""


# --- shared behaviour ------------------------------------------------------------------------
def _lookup(
    conn: libvirt.virConnect, plan: VolumePlan, name: str, *, refresh: bool = False
) -> VolumeObservation | None:
    # Per-disk lookups, not a listing of the whole pool (which may hold thousands of volumes). Only a
    # volume we did not make (an existing volume, a clone's base) may need a pool refresh to be seen.
    try:
        return storage.observe_volume(conn, plan.libvirt_pool, name, refresh=refresh)
    except (NotFound, InvalidState):
        raise PoolMissing(f"disk {plan.disk}: pool {plan.pool} is not running on this host") from None


def _find(conn: libvirt.virConnect, plan: VolumePlan, name: str) -> VolumeObservation | None:
    return _lookup(conn, plan, name) or _lookup(conn, plan, name, refresh=True)


class IoTuneConflict(ValueError):
    """A disk's limits cannot be lowered from its pool's as written (the message says what to change)."""


def _lower(a: int | None, b: int | None) -> int | None:
    a, b = a or None, b or None  # 0 is no limit
    return b if a is None else a if b is None else min(a, b)


def lowered_iotune(own: IoTune | None, pool: IoTune | None, *, disk: str = "", pool_name: str = "") -> IoTune | None:
    """A disk's limits under its pool's defaults: each limit the lower of the two that are set, the burst
    too (a pool's limit is a ceiling the disk may only lower, as a switch's bandwidth is for a NIC).

    Raises IoTuneConflict where the pool caps a total and the disk sets read/write of the same kind (or
    the other way round): libvirt takes one or the other, and neither alone keeps both ceilings."""
    if pool is None:
        return own
    if own is None:
        return pool
    for kind in ("bytes", "iops"):
        total, split = f"total_{kind}_sec", (f"read_{kind}_sec", f"write_{kind}_sec")
        for ceiling, other in ((pool, own), (own, pool)):
            if getattr(ceiling, total) and any(getattr(other, s) for s in split):
                which = "the pool" if ceiling is pool else f"disk {disk}"
                raise IoTuneConflict(
                    f"disk {disk}: {which} limits total {kind}/s and the other read/write {kind}/s of pool "
                    f"{pool_name}'s defaults (spec.diskIotune): set the same kind of limit on both"
                )
    values = {name: _lower(getattr(own, name), getattr(pool, name)) for name in IOTUNE_LIMITS}
    burst = None
    if own.burst is not None or pool.burst is not None:
        mine, theirs = own.burst or IoBurst(), pool.burst or IoBurst()
        peaks = {
            name: _lower(getattr(mine, name), getattr(theirs, name)) if values[name] else None for name in IOTUNE_LIMITS
        }
        if any(peaks.values()):
            burst = IoBurst(**peaks, seconds=_lower(mine.seconds, theirs.seconds))
    return IoTune(**values, burst=burst)


def _iotune(tune: IoTune | None) -> IoTuneConfig | None:
    """The disk's limits as libvirt takes them; a 0 is no limit, and a burst below its limit is raised to
    it (a pool's lower limit may leave a disk's burst under it)."""
    if tune is None:
        return None
    values: dict[str, int | None] = {}
    for name in IOTUNE_LIMITS:
        limit = getattr(tune, name) or None
        peak = getattr(tune.burst, name) if tune.burst is not None and limit is not None else None
        values[name] = limit
        values[f"{name}_max"] = max(peak, limit) if peak is not None and limit is not None else None
        values[f"{name}_max_length"] = tune.burst.seconds if peak is not None and tune.burst is not None else None
    if not any(values.values()):
        return None
    return IoTuneConfig(**values)


class _Source:
    """What every source shares: the disk XML, deletion, no preparation, no appliance."""

    kind: ClassVar[str]
    field: ClassVar[str]
    cdrom: ClassVar[bool] = False
    grows: ClassVar[bool] = False

    def spec(self, disk: Disk) -> Any:
        return getattr(disk.source, self.field)

    def appliance(self, disk: Disk) -> tuple[str | None, str] | None:
        return None

    def reserve(self, plan: VolumePlan) -> int:
        return 0

    async def prepare(self, vm: VirtualMachine, context: SourceContext) -> Content | None:
        return None

    def _new(self, vm: VirtualMachine, disk: Disk, pool: str, ext: str, **kwargs: Any) -> VolumePlan:
        ns, name = str(vm.metadata["namespace"]), str(vm.metadata["name"])
        return VolumePlan(
            disk.name, self.kind, pool, volume_name(ns, name, disk.name, ext),
            delete_with_vm=disk.deletion_policy != "Retain", device="cdrom" if self.cdrom else "disk", **kwargs,
        )  # fmt: skip

    def disk_config(self, disk: Disk, target_dev: str, volume: AttachedVolume) -> DiskConfig:
        cdrom = self.cdrom or volume.format == "iso"
        return DiskConfig(
            target_dev=target_dev,
            bus="sata" if cdrom and disk.bus == "virtio" else disk.bus,
            source_file=volume.path,
            driver_type="raw" if cdrom else volume.format,  # type: ignore[arg-type]
            device="cdrom" if cdrom else "disk",
            readonly=disk.read_only or cdrom,
            serial=disk.serial,
            boot_order=disk.boot_order,
            cache=disk.cache,
            io=disk.io,
            iotune=_iotune(lowered_iotune(disk.iotune, volume.pool_iotune, disk=disk.name, pool_name=volume.pool)),
        )

    def delete(self, conn: libvirt.virConnect, plan: VolumePlan) -> bool:
        pool_here = plan.delete_with_vm and storage.observe_pool(conn, plan.libvirt_pool) is not None
        return pool_here and storage.delete_volume(conn, plan.libvirt_pool, plan.volume)


# --- the sources ------------------------------------------------------------------------------
class Blank(_Source):
    """A new empty qcow2 volume of the given size."""

    kind, field, grows = "blank", "blank", True

    def plan(self, vm: VirtualMachine, disk: Disk, images: Mapping[str, Mapping[str | None, str]]) -> VolumePlan:
        src = self.spec(disk)
        return self._new(vm, disk, src.pool, "qcow2", format="qcow2", capacity=to_bytes(src.size))

    def reserve(self, plan: VolumePlan) -> int:
        return plan.capacity or 0

    def ensure(self, conn: libvirt.virConnect, plan: VolumePlan, content: Content | None) -> VolumeObservation:
        vol = _lookup(conn, plan, plan.volume)
        return vol or storage.create_volume(
            conn, plan.libvirt_pool, VolumeConfig(plan.volume, plan.capacity or 0, format="qcow2")
        )


class Clone(_Source):
    """A copy-on-write qcow2 overlay on a base volume (named, or an appliance's image)."""

    kind, field, grows = "clone", "clone", True

    def appliance(self, disk: Disk) -> tuple[str | None, str] | None:
        ref = self.spec(disk).appliance
        return None if ref is None else (ref.namespace, ref.name)

    def plan(self, vm: VirtualMachine, disk: Disk, images: Mapping[str, Mapping[str | None, str]]) -> VolumePlan:
        src = self.spec(disk)
        base = src.base_volume
        if src.appliance is not None:
            ref = src.appliance
            found = images.get(ref.name)
            if found is None:
                raise ApplianceImagesMissing(f"disk {disk.name}: appliance {ref.name} is not Ready")
            base = found.get(ref.disk)
            if base is None:
                raise DiskSpecError(f"disk {disk.name}: appliance {ref.name} has no disk {ref.disk!r} with an image")
        size = to_bytes(src.size) if src.size else None
        return self._new(vm, disk, src.pool, "qcow2", format="qcow2", capacity=size, base_volume=base)

    def reserve(self, plan: VolumePlan) -> int:
        return plan.capacity or 0

    def ensure(self, conn: libvirt.virConnect, plan: VolumePlan, content: Content | None) -> VolumeObservation:
        vol = _lookup(conn, plan, plan.volume)
        if vol is not None:
            return vol
        base = _find(conn, plan, plan.base_volume or "")
        if base is None:
            raise DiskSpecError(f"disk {plan.disk}: base volume {plan.base_volume} not found in pool {plan.pool}")
        backing_format: Literal["qcow2", "raw"] = "qcow2" if base.format == "qcow2" else "raw"
        capacity = max(plan.capacity or 0, base.capacity_bytes)
        backing = BackingStoreConfig(base.path, backing_format)
        return storage.create_volume(
            conn, plan.libvirt_pool, VolumeConfig(plan.volume, capacity, format="qcow2", backing=backing)
        )


class Existing(_Source):
    """A volume that exists already; deleted with the VM only when its policy is Delete."""

    kind, field = "volume", "volume"

    def plan(self, vm: VirtualMachine, disk: Disk, images: Mapping[str, Mapping[str | None, str]]) -> VolumePlan:
        src = self.spec(disk)
        return VolumePlan(
            disk.name, self.kind, src.pool, src.name, "raw", None, delete_with_vm=disk.deletion_policy == "Delete"
        )

    def ensure(self, conn: libvirt.virConnect, plan: VolumePlan, content: Content | None) -> VolumeObservation:
        vol = _find(conn, plan, plan.volume)
        if vol is None:
            raise DiskSpecError(f"disk {plan.disk}: volume {plan.volume} not found in pool {plan.pool}")
        return vol


class _Iso(_Source):
    """An ISO image the operator builds and uploads (a CD-ROM for the guest)."""

    cdrom = True

    def plan(self, vm: VirtualMachine, disk: Disk, images: Mapping[str, Mapping[str | None, str]]) -> VolumePlan:
        return self._new(vm, disk, self.spec(disk).pool, "iso", format="iso", capacity=None)

    def reserve(self, plan: VolumePlan) -> int:
        return SEED_BYTES

    missing: ClassVar[str]

    def ensure(self, conn: libvirt.virConnect, plan: VolumePlan, content: Content | None) -> VolumeObservation:
        vol = _lookup(conn, plan, plan.volume)
        if vol is not None:
            return vol
        if content is None:
            raise DiskSpecError(f"disk {plan.disk}: {self.missing}")
        return storage.upload_volume(conn, plan.libvirt_pool, plan.volume, content(), "iso")


class CloudInit(_Iso):
    """The cloud-init NoCloud seed (user data inline or from a Secret of the VM's namespace)."""

    kind, field, missing = "cloudInit", "cloud_init", "spec.cloudInit is missing"

    async def prepare(self, vm: VirtualMachine, context: SourceContext) -> Content | None:
        ci = vm.spec.cloud_init
        if ci is None:
            raise DiskSpecError("a disk has source.cloudInit but spec.cloudInit is missing")
        ns = str(vm.metadata["namespace"])

        async def from_secret(ref: SecretKeyRef | None, inline: str | None) -> str | None:
            if ref is None:
                return inline
            try:
                data = await context.secret_data(ns, ref.name)
            except kubernetes.client.ApiException as exc:
                raise DiskSpecError(f"cloud-init Secret {ns}/{ref.name}: {exc.reason}") from exc
            if ref.key not in data:
                raise DiskSpecError(f"cloud-init Secret {ns}/{ref.name} has no key {ref.key}")
            return base64.b64decode(data[ref.key]).decode()

        user_data = await from_secret(ci.user_data_secret_ref, ci.user_data)
        network_data = await from_secret(ci.network_data_secret_ref, ci.network_data)
        meta = seed_meta_data(ns, str(vm.metadata["name"]), str(vm.metadata["uid"]), ci.meta_data)
        seed = await asyncio.to_thread(build_seed_iso, user_data, meta, network_data)
        return lambda: seed


class OvfEnv(_Iso):
    """The OVF environment of a VM made from an Appliance (its properties' values)."""

    kind, field, missing = "ovfEnv", "ovf_env", "an ovfEnv disk needs spec.fromAppliance"

    async def prepare(self, vm: VirtualMachine, context: SourceContext) -> Content | None:
        source = vm.spec.from_appliance
        if source is None:
            return None
        appliances = context.appliances

        def build() -> bytes:  # only when the volume is missing
            status = appliances[source.name]
            system = chosen_system(status, source.virtual_system, source.deployment_option)
            values = property_values(status, source.properties, source.deployment_option)
            platform = {"Kind": "vdc-operator", "Vendor": "vdc.dev"}
            return environment_iso(environment_xml(system.id, values, platform))

        return build


SOURCES: dict[str, DiskSource] = {
    source.kind: source for source in (Blank(), Clone(), Existing(), CloudInit(), OvfEnv())
}
"""Every disk source by kind."""


def source_of(disk: Disk) -> DiskSource:
    for source in SOURCES.values():
        if getattr(disk.source, source.field) is not None:
            return source
    raise DiskSpecError(f"disk {disk.name}: no source set")
