"""Policy for a VM's disks as a whole: each disk's volume (through its ``disk_sources`` source), the
room they need per pool, and the guest's device names. Pure."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

from vdc.api.virtualmachine import Disk, VirtualMachine
from vdc.controllers.disk_sources import VolumePlan, source_of


def plan_volumes(
    vm: VirtualMachine, appliance_images: Mapping[str, Mapping[str | None, str]] | None = None
) -> list[VolumePlan]:
    """``appliance_images``: appliance name -> its base volumes by disk id (None: the first disk's)."""
    return [source_of(disk).plan(vm, disk, appliance_images or {}) for disk in vm.spec.disks]


def pool_bytes(plans: Sequence[VolumePlan]) -> dict[str, int]:
    """Bytes the VM's new volumes need per pool (existing volumes and clone bases need none)."""
    need: dict[str, int] = {}
    for plan in plans:
        need[plan.pool] = need.get(plan.pool, 0) + plan.source.reserve(plan)
    return need


_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}


def target_devices(disks: Sequence[Disk]) -> dict[str, str]:
    """Guest device names in spec order per bus family: vda, vdb … / sda … / hda …"""
    counters: dict[str, int] = {}
    out = {}
    for disk in disks:
        bus = "sata" if source_of(disk).cdrom and disk.bus == "virtio" else disk.bus
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
