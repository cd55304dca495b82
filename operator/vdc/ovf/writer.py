"""Export: an OVF 1.x descriptor from a ``HardwareSummary``, a SHA-256 manifest, and the OVA tar
(signed, with a ``.cert``, when given a ``Signer``).

One VirtualSystem per descriptor (``build_descriptor``), or a vApp: one flat VirtualSystemCollection
of systems with a StartupSection (``build_collection_descriptor``). ProductSections (with their
properties) are written for systems and collections. Disk ids are numbered across the package.
Controllers are made from the disks' and CD-ROMs' buses: one per (bus, model), a new one when a
controller is full (2 devices on IDE, 15 on SCSI, 30 on SATA). The VMware ``vmw:`` namespace is
used for what DMTF has no element for (firmware, cores per socket), as ovftool does; other
importers ignore it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vdc.ovf.envelope import OVF1_NS, RASD_NS, VMW_NS, VSSD_NS, ProductSection, StartupItem
from vdc.ovf.errors import OvfError
from vdc.ovf.hardware import Bus, HardwareSummary
from vdc.ovf.manifest import Algorithm, Manifest, ManifestEntry, Progress, build_manifest
from vdc.ovf.signature import Signer, sign_manifest
from vdc.ovf.units import units_for

ET.register_namespace("ovf", OVF1_NS)
ET.register_namespace("rasd", RASD_NS)
ET.register_namespace("vssd", VSSD_NS)
ET.register_namespace("vmw", VMW_NS)

# ResourceType and the ResourceSubType written when the summary names no controller model.
_CONTROLLERS: dict[Bus, tuple[int, str | None, int]] = {  # bus: (ResourceType, default subtype, slots)
    "ide": (5, None, 2),
    "scsi": (6, None, 15),
    "sata": (20, "AHCI", 30),
    "nvme": (20, "vmware.nvme.controller", 64),
    "virtio": (20, "virtio", 1024),
    "other": (20, None, 1024),
}


@dataclass(frozen=True)
class ExportSystem:
    """What goes into the descriptor besides the hardware."""

    id: str
    hardware: HardwareSummary
    name: str | None = None
    os_id: int = 0  # CIM_OperatingSystem.OsType; 0 is "Unknown"
    os_description: str | None = None
    vmw_os_type: str | None = None
    annotation: str | None = None
    system_type: str = "vmx-13"  # the oldest hardware version current ESXi and ovftool accept; others ignore it
    products: tuple[ProductSection, ...] = ()


@dataclass(frozen=True)
class ExportCollection:
    """A vApp: systems (not nested collections) and when each starts and stops."""

    id: str
    systems: tuple[ExportSystem, ...]
    name: str | None = None
    annotation: str | None = None
    startup: tuple[StartupItem, ...] = ()
    products: tuple[ProductSection, ...] = ()


def _o(tag: str) -> str:
    return f"{{{OVF1_NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | int | None = None, **attrs: str | int | None) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def _content_element(
    parent: ET.Element, tag: str, content_id: str, info: str, name: str | None, annotation: str | None
) -> ET.Element:
    """``<VirtualSystem>`` or ``<VirtualSystemCollection>`` with its Info, Name and AnnotationSection."""
    el = _sub(parent, _o(tag), **{_o("id"): content_id})
    _sub(el, _o("Info"), info)
    if name:
        _sub(el, _o("Name"), name)
    if annotation:
        section = _sub(el, _o("AnnotationSection"))
        _sub(section, _o("Info"), "Annotation")
        _sub(section, _o("Annotation"), annotation)
    return el


def _item(parent: ET.Element, fields: dict[str, str | int | None]) -> ET.Element:
    """An ``<Item>`` with its RASD properties in the schema's (alphabetical) order."""
    item = _sub(parent, _o("Item"))
    for key in sorted(fields):
        value = fields[key]
        if value is not None:
            _sub(item, f"{{{RASD_NS}}}{key}", value)
    return item


def build_descriptor(system: ExportSystem, file_sizes: Mapping[str, int]) -> bytes:
    """The descriptor for ``system``; ``file_sizes`` gives each referenced file's size in bytes."""
    return _envelope(system, (system,), file_sizes)


def build_collection_descriptor(collection: ExportCollection, file_sizes: Mapping[str, int]) -> bytes:
    """The descriptor of a vApp: one VirtualSystemCollection holding ``collection.systems``."""
    if not collection.systems:
        raise OvfError(f"collection {collection.id!r} holds no system")
    ids = [collection.id, *(s.id for s in collection.systems)]
    for system_id in ids:
        if ids.count(system_id) > 1:
            raise OvfError(f"id {system_id!r} is used twice in collection {collection.id!r}")
    for item in collection.startup:
        if item.id not in ids[1:]:
            raise OvfError(f"startup item {item.id!r} is not a system of collection {collection.id!r}")
    return _envelope(collection, collection.systems, file_sizes)


def _envelope(
    content: ExportSystem | ExportCollection, systems: tuple[ExportSystem, ...], file_sizes: Mapping[str, int]
) -> bytes:
    root = ET.Element(_o("Envelope"), {_o("version"): "1.0"})
    references = _sub(root, _o("References"))
    file_ids: dict[str, str] = {}

    def file_id(href: str) -> str:
        if href not in file_ids:
            if href not in file_sizes:
                raise OvfError(f"no size given for file {href!r}")
            file_ids[href] = f"file{len(file_ids) + 1}"
            attrs: dict[str, str | int | None] = {
                _o("href"): href,
                _o("id"): file_ids[href],
                _o("size"): file_sizes[href],
            }
            _sub(references, _o("File"), **attrs)
        return file_ids[href]

    disk_ids: list[list[str | None]] = []  # per system, per disk
    section: ET.Element | None = None
    number = 0
    for system in systems:
        disk_ids.append([])
        for disk in system.hardware.disks:
            number += 1
            if disk.disk_id is None and disk.capacity_bytes is None and disk.file:
                disk_ids[-1].append(None)  # a disk item that points at a file directly
                continue
            if disk.capacity_bytes is None:
                raise OvfError(f"disk {number}: a capacity is needed")
            if section is None:
                section = _sub(root, _o("DiskSection"))
                _sub(section, _o("Info"), "Virtual disks")
            capacity, units = units_for(disk.capacity_bytes)
            disk_id = disk.disk_id or f"vmdisk{number}"
            disk_ids[-1].append(disk_id)
            attrs: dict[str, str | int | None] = {
                _o("capacity"): capacity,
                _o("capacityAllocationUnits"): units,
                _o("diskId"): disk_id,
                _o("fileRef"): file_id(disk.file) if disk.file else None,
                _o("format"): disk.format.uri if disk.format else None,
            }
            _sub(section, _o("Disk"), **attrs)
    networks = list(dict.fromkeys(n.network for s in systems for n in s.hardware.nics if n.network))
    if networks:
        section = _sub(root, _o("NetworkSection"))
        _sub(section, _o("Info"), "Logical networks")
        for network in networks:
            _sub(section, _o("Network"), **{_o("name"): network})

    if isinstance(content, ExportCollection):
        vsc = _content_element(
            root, "VirtualSystemCollection", content.id, "A virtual appliance (vApp)", content.name, content.annotation
        )
        if content.startup:
            startup = _sub(vsc, _o("StartupSection"))
            _sub(startup, _o("Info"), "Start and stop order of the virtual machines")
            for item in content.startup:
                attrs = {
                    _o("id"): item.id,
                    _o("order"): item.order,
                    _o("startDelay"): item.start_delay,
                    _o("waitingForGuest"): "true" if item.waiting_for_guest else "false",
                    _o("startAction"): item.start_action,
                    _o("stopDelay"): item.stop_delay,
                    _o("stopAction"): item.stop_action,
                }
                _sub(startup, _o("Item"), **attrs)
        for product in content.products:
            _product_section(vsc, product)
        for system, ids in zip(systems, disk_ids, strict=True):
            _virtual_system(vsc, system, ids, file_id)
    else:
        _virtual_system(root, content, disk_ids[0], file_id)

    ET.indent(root, space="  ")
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def _product_section(parent: ET.Element, product: ProductSection) -> None:
    """``<ProductSection>``; a property's class and instance are the section's (None: take the section's)."""
    section = _sub(parent, _o("ProductSection"), **{_o("class"): product.class_id, _o("instance"): product.instance})
    _sub(section, _o("Info"), product.info or "Information about the installed software")
    for tag, value in (
        ("Product", product.product),
        ("Vendor", product.vendor),
        ("Version", product.version),
        ("FullVersion", product.full_version),
        ("ProductUrl", product.product_url),
        ("VendorUrl", product.vendor_url),
    ):
        if value is not None:
            _sub(section, _o(tag), value)
    for prop in product.properties:
        if prop.class_id not in (None, product.class_id) or prop.instance not in (None, product.instance):
            raise OvfError(f"property {prop.full_key!r}: its class or instance is not its ProductSection's")
        attrs: dict[str, str | int | None] = {
            _o("key"): prop.key,
            _o("type"): prop.type,
            _o("qualifiers"): prop.qualifiers,
            _o("userConfigurable"): "true" if prop.user_configurable else None,
            _o("value"): prop.default,
            _o("password"): "true" if prop.password else None,
        }
        element = _sub(section, _o("Property"), **attrs)
        if prop.label is not None:
            _sub(element, _o("Label"), prop.label)
        if prop.description is not None:
            _sub(element, _o("Description"), prop.description)


def _virtual_system(
    parent: ET.Element, system: ExportSystem, disk_ids: list[str | None], file_id: Callable[[str], str]
) -> None:
    hw = system.hardware
    vs = _content_element(parent, "VirtualSystem", system.id, "A virtual machine", system.name, system.annotation)
    os_section = _sub(
        vs, _o("OperatingSystemSection"), **{_o("id"): system.os_id, f"{{{VMW_NS}}}osType": system.vmw_os_type}
    )
    _sub(os_section, _o("Info"), "The guest operating system")
    if system.os_description:
        _sub(os_section, _o("Description"), system.os_description)
    section = _sub(vs, _o("VirtualHardwareSection"))
    _sub(section, _o("Info"), "Virtual hardware requirements")
    vssd = _sub(section, _o("System"))
    _sub(vssd, f"{{{VSSD_NS}}}ElementName", "Virtual Hardware Family")
    _sub(vssd, f"{{{VSSD_NS}}}InstanceID", 0)
    _sub(vssd, f"{{{VSSD_NS}}}VirtualSystemIdentifier", system.id)
    _sub(vssd, f"{{{VSSD_NS}}}VirtualSystemType", system.system_type)

    if hw.cores_per_socket is not None and hw.cpus is None:
        raise OvfError("cores per socket given without a CPU count")
    next_id = iter(range(1, 1 << 30))
    if hw.cpus is not None:
        cpu = _item(
            section,
            {
                "ElementName": f"{hw.cpus} virtual CPU(s)",
                "InstanceID": next(next_id),
                "ResourceType": 3,
                "VirtualQuantity": hw.cpus,
            },
        )
        if hw.cores_per_socket is not None:
            _sub(cpu, f"{{{VMW_NS}}}CoresPerSocket", hw.cores_per_socket, **{_o("required"): "false"})
    if hw.memory_bytes is not None:
        quantity, units = units_for(hw.memory_bytes)
        _item(
            section,
            {
                "AllocationUnits": units,
                "ElementName": "Memory",
                "InstanceID": next(next_id),
                "ResourceType": 4,
                "VirtualQuantity": quantity,
            },
        )

    controllers: dict[tuple[Bus, str | None], tuple[int, int]] = {}  # (bus, model) -> (instance id, used slots)

    def attach(bus: Bus | None, model: str | None) -> tuple[int | None, int | None]:
        if bus is None:
            return None, None
        resource_type, default_model, slots = _CONTROLLERS[bus]
        key = (bus, model)
        instance, used = controllers.get(key, (0, slots))
        if used >= slots:
            instance, used = next(next_id), 0
            _item(
                section,
                {
                    "ElementName": f"{bus} controller",
                    "InstanceID": instance,
                    "ResourceSubType": model or default_model,
                    "ResourceType": resource_type,
                },
            )
        controllers[key] = (instance, used + 1)
        return instance, used

    for number, (disk, written_id) in enumerate(zip(hw.disks, disk_ids, strict=True), start=1):
        controller, address = attach(disk.bus, disk.controller_model)
        resource = f"ovf:/disk/{written_id}" if written_id else f"ovf:/file/{file_id(disk.file or '')}"
        _item(
            section,
            {
                "AddressOnParent": address,
                "ElementName": f"Hard disk {number}",
                "HostResource": resource,
                "InstanceID": next(next_id),
                "Parent": controller,
                "ResourceType": 17,
            },
        )
    for number, cdrom in enumerate(hw.cdroms, start=1):
        controller, address = attach(cdrom.bus, None)
        image = f"ovf:/file/{file_id(cdrom.file)}" if cdrom.file else None
        _item(
            section,
            {
                "AddressOnParent": address,
                "AutomaticAllocation": "false",
                "ElementName": f"CD/DVD drive {number}",
                "HostResource": image,
                "InstanceID": next(next_id),
                "Parent": controller,
                "ResourceType": 15,
            },
        )
    for number, nic in enumerate(hw.nics, start=1):
        _item(
            section,
            {
                "Address": nic.mac,
                "AutomaticAllocation": "true",
                "Connection": nic.network,
                "ElementName": f"Network adapter {number}",
                "InstanceID": next(next_id),
                "ResourceSubType": nic.model,
                "ResourceType": 10,
            },
        )
    for number in range(1, hw.floppies + 1):
        _item(
            section,
            {
                "AutomaticAllocation": "false",
                "ElementName": f"Floppy drive {number}",
                "InstanceID": next(next_id),
                "ResourceType": 14,
            },
        )
    if hw.firmware:
        _sub(
            section,
            f"{{{VMW_NS}}}Config",
            **{_o("required"): "false", f"{{{VMW_NS}}}key": "firmware", f"{{{VMW_NS}}}value": hw.firmware},
        )

    for product in system.products:
        _product_section(vs, product)


def manifest_for(
    descriptor_name: str, descriptor: bytes, files: Mapping[str, Path], algorithm: Algorithm = "SHA256"
) -> Manifest:
    """The manifest of a package: the descriptor's digest, then each file's (read streaming)."""
    descriptor_entry = ManifestEntry(algorithm, descriptor_name, hashlib.new(algorithm.lower(), descriptor).hexdigest())
    return Manifest((descriptor_entry, *build_manifest(files, algorithm).entries))


class _CountingReader:
    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if self._progress and data:
            self._progress(len(data))
        return data


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0o644, 0, 0, 0, "", ""
    return info


def write_ova(
    out: Path,
    descriptor_name: str,
    descriptor: bytes,
    files: Mapping[str, Path],
    *,
    algorithm: Algorithm = "SHA256",
    progress: Progress | None = None,
    signer: Signer | None = None,
) -> Manifest:
    """Write the OVA: descriptor, manifest, certificate (with ``signer``), then ``files`` (package
    name → local path) in order, as DSP0243 wants.

    With ``signer``, ``<stem>.cert`` holds the signature of the manifest's bytes (``signer.algorithm``,
    RSA PKCS#1 v1.5 or ECDSA) and the signer's certificate chain, in ovftool's form.
    Written to ``out`` + ``.part`` and renamed, so a crash never leaves a half OVA under ``out``.
    The tar is POSIX (pax only where ustar cannot hold a name or size), with fixed owner and mtime.
    """
    manifest = manifest_for(descriptor_name, descriptor, files, algorithm)
    manifest_data = manifest.to_text().encode()
    stem = descriptor_name.rsplit(".", 1)[0]
    certificate = sign_manifest(manifest_data, f"{stem}.mf", signer) if signer is not None else None
    partial = out.with_name(out.name + ".part")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(descriptor_name, len(descriptor)), io.BytesIO(descriptor))
        tar.addfile(_tarinfo(f"{stem}.mf", len(manifest_data)), io.BytesIO(manifest_data))
        if certificate is not None:
            tar.addfile(_tarinfo(f"{stem}.cert", len(certificate)), io.BytesIO(certificate))
        for name, path in files.items():
            with path.open("rb") as stream:
                tar.addfile(_tarinfo(name, path.stat().st_size), _CountingReader(stream, progress))
    partial.rename(out)
    return manifest
