"""The friendly hardware of one virtual system: CPUs, memory, disks (with their bus), NICs, CD-ROMs.

This is where RASD items become a VM shape: it picks the hardware section and deployment option,
follows ``HostResource`` to the DiskSection and References, and ``Parent`` to the controller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from vdc.ovf.envelope import (
    DiskFormat,
    Envelope,
    HardwareItem,
    VirtualDisk,
    VirtualHardwareSection,
    VirtualSystem,
    host_resource_target,
)
from vdc.ovf.errors import InvalidDescriptor
from vdc.ovf.units import to_bytes

Bus = Literal["ide", "scsi", "sata", "virtio", "nvme", "other"]
Firmware = Literal["bios", "efi"]

# Memory items without AllocationUnits are in MiB (what ovftool and VirtualBox mean).
DEFAULT_MEMORY_UNITS = "byte * 2^20"


@dataclass(frozen=True)
class DiskDrive:
    """A disk attached to the system: its size, the image file it starts from, and its bus."""

    disk_id: str | None
    capacity_bytes: int | None
    file: str | None = None
    format: DiskFormat | None = None
    bus: Bus | None = None
    controller_model: str | None = None


@dataclass(frozen=True)
class NetworkAdapter:
    """A NIC: the OVF network it connects to and its adapter model (lower case: e1000, vmxnet3 …).

    ``model`` is the descriptor's first choice; ``alternatives`` every model ``ResourceSubType`` lists
    (``"VMXNET3 virtio"``), in its order of preference, when it lists more than one.
    """

    network: str | None
    model: str | None = None
    mac: str | None = None
    alternatives: tuple[str, ...] = ()

    def preferred_model(self, supported: Iterable[str]) -> str | None:
        """The first alternative in ``supported``, else the first choice."""
        known = set(supported)
        return next((m for m in self.alternatives or (self.model,) if m in known), self.model)


# Adapter names as exporters write them -> one name per model.
_NIC_ALIASES = {"pcnet32": "pcnet", "vlance": "pcnet", "flexible": "pcnet", "virtio-net": "virtio", "pv": "virtio"}
# oVirt/RHV write its interface type number (VmInterfaceType) as the ResourceSubType.
_OVIRT_NIC_TYPES = {"0": "rtl8139", "1": "rtl8139", "2": "e1000", "3": "virtio"}
# oVirt's ovf:disk-interface of a <Disk> -> the bus.
_OVIRT_INTERFACES: dict[str, Bus] = {"virtio": "virtio", "virtio_scsi": "scsi", "ide": "ide", "sata": "sata"}


def nic_models(item: HardwareItem) -> tuple[str, ...]:
    """The adapter models a NIC item names, normalised (``PCNet32`` is ``pcnet``, oVirt's ``3`` is virtio)."""
    models: list[str] = []
    for name in item.sub_types:
        model = _OVIRT_NIC_TYPES.get(name) or _NIC_ALIASES.get(name.lower(), name.lower())
        if model not in models:
            models.append(model)
    return tuple(models)


@dataclass(frozen=True)
class CdDrive:
    """A CD/DVD drive, with the package file (ISO) it holds if any."""

    bus: Bus | None = None
    file: str | None = None


@dataclass(frozen=True)
class HardwareSummary:
    cpus: int | None = None
    memory_bytes: int | None = None
    cores_per_socket: int | None = None
    firmware: Firmware | None = None
    disks: tuple[DiskDrive, ...] = ()
    nics: tuple[NetworkAdapter, ...] = ()
    cdroms: tuple[CdDrive, ...] = ()
    floppies: int = 0


def controller_bus(item: HardwareItem) -> Bus | None:
    """The bus a controller item provides; None when the item is not a disk controller."""
    subtype = (item.resource_sub_type or "").lower()
    if item.kind == "ide":
        return "ide"
    if item.kind == "scsi":
        return "scsi"
    if item.kind == "storage-controller":
        if "ahci" in subtype or "sata" in subtype:
            return "sata"
        if "nvme" in subtype:
            return "nvme"
        if "virtio" in subtype:
            return "virtio"
        return "other"
    return None


def select_hardware(system: VirtualSystem, system_type: str | None = None) -> VirtualHardwareSection:
    """The section for ``system_type`` (a prefix such as ``vmx`` or ``virtualbox``), else the first."""
    if system_type:
        for section in system.hardware:
            if any(t.startswith(system_type) for t in section.system_types):
                return section
    return system.hardware[0]


def default_configuration(envelope: Envelope) -> str | None:
    """The DeploymentOptionSection's default, else its first option, else None."""
    options = envelope.deployment_options
    return next((o.id for o in options if o.default), options[0].id if options else None)


def option_ids(envelope: Envelope) -> tuple[str, ...]:
    return tuple(o.id for o in envelope.deployment_options)


def _single(items: list[HardwareItem], what: str, system: VirtualSystem) -> HardwareItem | None:
    if len(items) > 1:
        names = ", ".join(i.instance_id for i in items)
        raise InvalidDescriptor(f"<VirtualSystem id={system.id!r}> has {len(items)} {what} items ({names})")
    return items[0] if items else None


def summarize(
    envelope: Envelope,
    system: VirtualSystem,
    *,
    configuration: str | None = None,
    system_type: str | None = None,
) -> HardwareSummary:
    """The hardware of ``system`` for ``configuration`` (default: the descriptor's default option)."""
    section = select_hardware(system, system_type)
    chosen = configuration if configuration is not None else default_configuration(envelope)
    if chosen is not None and chosen not in option_ids(envelope):
        known = ", ".join(option_ids(envelope)) or "none"
        raise InvalidDescriptor(f"deployment option {chosen!r} is not in the descriptor (it has: {known})")
    items = list(section.items_for(chosen))
    where = f"<VirtualSystem id={system.id!r}>"

    cpu = _single([i for i in items if i.kind == "cpu"], "CPU", system)
    cpus = cpu.virtual_quantity if cpu is not None else None
    if cpu is not None and not cpus:
        raise InvalidDescriptor(f"{where} {cpu.what}: VirtualQuantity must be a positive CPU count")

    memory = _single([i for i in items if i.kind == "memory"], "memory", system)
    memory_bytes = None
    if memory is not None:
        quantity = str(memory.virtual_quantity) if memory.virtual_quantity is not None else None
        memory_bytes = to_bytes(
            quantity, memory.allocation_units, f"{where} {memory.what}", default_units=DEFAULT_MEMORY_UNITS
        )
        if memory_bytes == 0:
            raise InvalidDescriptor(f"{where} {memory.what}: memory must be positive")

    controllers = {i.instance_id: i for i in items if controller_bus(i) is not None}

    def bus_of(item: HardwareItem) -> tuple[Bus | None, str | None]:
        controller = controllers.get(item.parent or "")
        if controller is None:
            return None, None
        return controller_bus(controller), controller.resource_sub_type

    disks: list[DiskDrive] = []
    cdroms: list[CdDrive] = []
    for item in items:
        if item.kind == "disk":
            drive = _disk_drive(envelope, item, *bus_of(item), where)
            if drive.disk_id is None or all(d.disk_id != drive.disk_id for d in disks):  # one disk, however attached
                disks.append(drive)
        elif item.kind in ("cdrom", "dvd"):
            file = None
            for resource in item.host_resources:
                target = host_resource_target(resource)
                if target is not None and target[0] == "file":
                    reference = envelope.file(target[1])
                    file = reference.href if reference else None
            cdroms.append(CdDrive(bus=bus_of(item)[0], file=file))
    nics = [
        NetworkAdapter(
            network=item.connections[0] if item.connections else None,
            model=models[0] if models else None,
            mac=item.address,
            alternatives=models if len(models) > 1 else (),
        )
        for item in items
        if item.kind == "nic"
        for models in (nic_models(item),)
    ]
    return HardwareSummary(
        cpus=cpus,
        memory_bytes=memory_bytes,
        cores_per_socket=cpu.cores_per_socket if cpu is not None else None,
        firmware=_firmware(system, section),
        disks=tuple(disks),
        nics=tuple(nics),
        cdroms=tuple(cdroms),
        floppies=sum(1 for i in items if i.kind == "floppy"),
    )


def _href_disk(envelope: Envelope, resource: str) -> VirtualDisk | None:
    """oVirt's ``HostResource`` ``<image>/<volume>``: the disk whose file has that href or id (the whole
    path or its last part, which oVirt's OVA export names its files by), or whose id it is."""
    text = resource.strip()
    names = {text, text.rpartition("/")[2]}
    for disk in envelope.disks:
        file = envelope.file(disk.file_ref) if disk.file_ref else None
        if (file is not None and names & {file.href, file.id}) or disk.disk_id in names:
            return disk
    return None


def _disk_drive(envelope: Envelope, item: HardwareItem, bus: Bus | None, model: str | None, where: str) -> DiskDrive:
    for resource in item.host_resources:
        target = host_resource_target(resource)
        ovirt_disk = _href_disk(envelope, resource) if target is None else None
        if target is not None:
            kind, ref = target
        elif ovirt_disk is not None:
            kind, ref = "disk", ovirt_disk.disk_id
        else:
            continue
        if kind == "disk":
            disk = envelope.disk(ref)
            if disk is None:  # parse_envelope checked this; an Envelope built by hand may not be
                raise InvalidDescriptor(f"{where} {item.what}: unknown disk {ref!r}")
            file = envelope.file(disk.file_ref) if disk.file_ref else None
            return DiskDrive(
                disk_id=disk.disk_id,
                capacity_bytes=disk.capacity_bytes,
                file=file.href if file else None,
                format=disk.format,
                bus=bus or _OVIRT_INTERFACES.get((disk.interface or "").lower()),
                controller_model=model,
            )
        reference = envelope.file(ref)
        if reference is None:
            raise InvalidDescriptor(f"{where} {item.what}: unknown file {ref!r}")
        return DiskDrive(disk_id=None, capacity_bytes=None, file=reference.href, bus=bus, controller_model=model)
    raise InvalidDescriptor(f"{where} {item.what}: a disk item without an ovf:/disk/ or ovf:/file/ HostResource")


def _firmware(system: VirtualSystem, section: VirtualHardwareSection) -> Firmware | None:
    vmw = section.vmw_config.get("firmware", "").lower()
    vbox = (system.vbox_machine.firmware or "").lower() if system.vbox_machine else ""
    for value in (vmw, vbox):
        if value.startswith("efi"):
            return "efi"
        if value == "bios":
            return "bios"
    return None
