"""What an Appliance's status says about its package, and where its base images go. Pure.

The import itself (fetching, verifying, converting, uploading) is :mod:`vdc.controllers.appliance`;
here the parsed OVF envelope becomes the API's status parts, and a disk becomes a base volume name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from vdc.api.appliance import (
    ApplianceDisk,
    ApplianceNetwork,
    ApplianceNic,
    ApplianceProperty,
    StartupEntry,
)
from vdc.api.appliance import DeploymentOption as ApiDeploymentOption
from vdc.api.appliance import VirtualSystem as ApiVirtualSystem
from vdc.api.quantity import format_bytes_mi
from vdc.controllers.vm_appliance import VM_NIC_MODELS
from vdc.ovf.envelope import Envelope, VirtualSystem
from vdc.ovf.hardware import default_configuration, summarize

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def base_volume_name(namespace: str, appliance: str, uid: str, disk_id: str) -> str:
    """``appliance_<ns>_<name>_<uid8>_<disk>.qcow2``: one per appliance disk, the same on every host.

    The uid part keeps a re-created appliance of the same name from finding the old one's images.
    """
    disk = _UNSAFE.sub("-", disk_id)[:64] or hashlib.sha256(disk_id.encode()).hexdigest()[:8]
    return f"appliance_{namespace}_{appliance}_{uid[:8]}_{disk}.qcow2"


@dataclass(frozen=True)
class DiskImage:
    """A disk whose content comes from a file of the package."""

    disk_id: str
    file: str
    """The file's name in the package (its href)."""
    format: str
    """qemu-img's name for it: vmdk, raw, qcow2."""
    capacity_bytes: int


@dataclass(frozen=True)
class Description:
    """The status parts of a parsed package."""

    ovf_version: str
    virtual_systems: list[ApiVirtualSystem]
    deployment_options: list[ApiDeploymentOption]
    properties: list[ApplianceProperty]
    networks: list[ApplianceNetwork]
    startup: list[StartupEntry]
    images: list[DiskImage]


def _api_system(
    envelope: Envelope,
    system: VirtualSystem,
    option: str | None,
    formats: dict[str, str],
    volume_names: dict[str, str],
) -> ApiVirtualSystem:
    """The status form of ``system``'s hardware in deployment option ``option`` (None: the default)."""
    hw = summarize(envelope, system, configuration=option)
    os = system.operating_system
    os_name = None
    if os is not None:
        os_name = os.description or os.vmw_os_type or os.vbox_os_type or (str(os.id) if os.id else None)
    return ApiVirtualSystem(
        id=system.id,
        name=system.name,
        os=os_name[:256] if os_name else None,
        cpus=hw.cpus,
        memory=format_bytes_mi(hw.memory_bytes) if hw.memory_bytes else None,
        firmware={"efi": "UEFI", "bios": "BIOS", None: None}[hw.firmware],
        disks=[
            ApplianceDisk(
                id=d.disk_id or f"disk{i}",
                capacity=format_bytes_mi(d.capacity_bytes) if d.capacity_bytes else None,
                format=formats.get(d.disk_id or ""),
                file=d.file,
                volume=volume_names.get(d.disk_id or "") if d.file else None,  # a blank disk has no base image
                bus=d.bus if d.bus in ("ide", "scsi", "sata", "virtio") else None,
            )
            for i, d in enumerate(hw.disks)
        ],
        nics=[ApplianceNic(network=n.network or "", model=n.preferred_model(VM_NIC_MODELS)) for n in hw.nics],
    )


def describe(envelope: Envelope, volume_names: dict[str, str]) -> Description:
    """``volume_names``: disk id -> base volume name (see :func:`base_volume_name`)."""
    images = []
    formats: dict[str, str] = {}
    for disk in envelope.disks:
        if disk.format is not None:
            formats[disk.disk_id] = disk.format.kind + (f" {disk.format.subformat}" if disk.format.subformat else "")
        if disk.file_ref is None:
            continue  # an empty disk of the given capacity: the VM gets a blank one
        ref = envelope.file(disk.file_ref)
        assert ref is not None  # parse_envelope checked every reference
        qemu_format = disk.format.qemu_format if disk.format is not None else "vmdk"
        images.append(DiskImage(disk.disk_id, ref.href, qemu_format, disk.capacity_bytes))
    systems = [_api_system(envelope, s, None, formats, volume_names) for s in envelope.virtual_systems()]
    default = default_configuration(envelope)
    options = [
        ApiDeploymentOption(
            id=option.id,
            label=option.label[:256] if option.label else None,
            description=option.description[:4096] if option.description else None,
            default=option.id == default,
            virtual_systems=[
                _api_system(envelope, s, option.id, formats, volume_names) for s in envelope.virtual_systems()
            ],
            property_defaults={
                p.full_key: value
                for p in envelope.properties()
                if (value := p.default_for(option.id)) is not None and value != p.default
            },
        )
        for option in envelope.deployment_options
    ]
    properties = []
    seen: set[str] = set()
    for prop in envelope.properties():
        key = prop.full_key
        if key in seen:
            continue
        seen.add(key)
        properties.append(
            ApplianceProperty(
                key=key,
                type=prop.type,
                default=prop.default,
                user_configurable=prop.user_configurable,
                label=prop.label[:256] if prop.label else None,
                description=prop.description[:4096] if prop.description else None,
            )
        )
    return Description(
        ovf_version=envelope.ovf_version or envelope.version,
        virtual_systems=systems,
        deployment_options=options,
        properties=properties,
        networks=[ApplianceNetwork(name=n.name, description=n.description) for n in envelope.networks],
        startup=[
            StartupEntry(
                id=s.id, order=s.order, start_delay=s.start_delay, stop_delay=s.stop_delay, stop_action=s.stop_action
            )
            for s in envelope.startup()
        ],
        images=images,
    )
