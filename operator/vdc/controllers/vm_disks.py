"""Policy for a VM's disks: which volume each disk is, where, in what format, and what the guest sees. Pure."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from vdc.api.quantity import to_bytes
from vdc.api.virtualmachine import Disk, VirtualMachine
from vdc.controllers.storagepool import libvirt_pool_name

SEED_BYTES = 1 << 20
"""Room a cloud-init seed ISO takes in its pool, for placement."""

VolumeKind = Literal["blank", "clone", "volume", "cloudInit", "ovfEnv"]
ISO_KINDS = ("cloudInit", "ovfEnv")
"""Volumes the operator builds as ISO images (a CD-ROM for the guest)."""


class DiskSpecError(ValueError):
    """The disk cannot be realised as asked (the message says what to change)."""


class ApplianceImagesMissing(DiskSpecError):
    """A disk's appliance is not Ready yet: wait for it."""


class PoolMissing(DiskSpecError):
    """The disk's pool is not (yet) running on the VM's host: wait for it."""


@dataclass(frozen=True)
class VolumePlan:
    disk: str
    kind: VolumeKind
    pool: str
    """The StoragePool's name."""
    volume: str
    format: Literal["qcow2", "raw", "iso"]
    capacity: int | None
    """Bytes wanted (None: as it is / as the base)."""
    base_volume: str | None = None
    delete_with_vm: bool = True
    device: Literal["disk", "cdrom"] = "disk"

    @property
    def libvirt_pool(self) -> str:
        return libvirt_pool_name(self.pool)


def volume_name(namespace: str, vm: str, disk: str, ext: str) -> str:
    """``<namespace>_<vm>_<disk>.<ext>``: deterministic, unique, and recognisably ours."""
    return f"{namespace}_{vm}_{disk}.{ext}"


def plan_volumes(
    vm: VirtualMachine, appliance_images: Mapping[str, Mapping[str | None, str]] | None = None
) -> list[VolumePlan]:
    """``appliance_images``: appliance name -> its base volumes by disk id (None: the first disk's)."""
    ns, name = str(vm.metadata["namespace"]), str(vm.metadata["name"])
    plans = []
    for disk in vm.spec.disks:
        src = disk.source
        policy = disk.deletion_policy
        if src.blank is not None:
            plans.append(VolumePlan(disk.name, "blank", src.blank.pool, volume_name(ns, name, disk.name, "qcow2"),
                                    "qcow2", to_bytes(src.blank.size), delete_with_vm=policy != "Retain"))  # fmt: skip
        elif src.clone is not None:
            base = src.clone.base_volume
            if src.clone.appliance is not None:
                ref = src.clone.appliance
                images = (appliance_images or {}).get(ref.name)
                if images is None:
                    raise ApplianceImagesMissing(f"disk {disk.name}: appliance {ref.name} is not Ready")
                base = images.get(ref.disk)
                if base is None:
                    raise DiskSpecError(
                        f"disk {disk.name}: appliance {ref.name} has no disk {ref.disk!r} with an image"
                    )
            plans.append(VolumePlan(
                disk.name, "clone", src.clone.pool, volume_name(ns, name, disk.name, "qcow2"), "qcow2",
                to_bytes(src.clone.size) if src.clone.size else None, base_volume=base,
                delete_with_vm=policy != "Retain",
            ))  # fmt: skip
        elif src.volume is not None:
            plans.append(VolumePlan(disk.name, "volume", src.volume.pool, src.volume.name, "raw", None,
                                    delete_with_vm=policy == "Delete"))  # fmt: skip
        elif src.cloud_init is not None:
            plans.append(VolumePlan(disk.name, "cloudInit", src.cloud_init.pool,
                                    volume_name(ns, name, disk.name, "iso"), "iso", None,
                                    delete_with_vm=policy != "Retain", device="cdrom"))  # fmt: skip
        elif src.ovf_env is not None:
            plans.append(VolumePlan(disk.name, "ovfEnv", src.ovf_env.pool, volume_name(ns, name, disk.name, "iso"),
                                    "iso", None, delete_with_vm=policy != "Retain", device="cdrom"))  # fmt: skip
    return plans


def pool_bytes(plans: Sequence[VolumePlan]) -> dict[str, int]:
    """Bytes the VM's new volumes need per pool (existing volumes and clone bases need none)."""
    need: dict[str, int] = {}
    for plan in plans:
        size = plan.capacity or 0 if plan.kind in ("blank", "clone") else SEED_BYTES if plan.kind in ISO_KINDS else 0
        need[plan.pool] = need.get(plan.pool, 0) + size
    return need


_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}


def target_devices(disks: Sequence[Disk]) -> dict[str, str]:
    """Guest device names in spec order per bus family: vda, vdb … / sda … / hda …"""
    counters: dict[str, int] = {}
    out = {}
    for disk in disks:
        iso = disk.source.cloud_init is not None or disk.source.ovf_env is not None
        bus = "sata" if iso and disk.bus == "virtio" else disk.bus
        prefix = _PREFIX[bus]
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        out[disk.name] = prefix + _letters(index)
    return out


def _letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = string.ascii_lowercase[rem] + letters
    return letters
