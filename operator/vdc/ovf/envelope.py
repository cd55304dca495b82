"""OVF descriptors (DMTF DSP0243 1.x and 2.x) parsed into frozen dataclasses, one per element.

The classes hold what the descriptor says and nothing more; choosing between alternatives (which
hardware section, which deployment option) and turning RASD items into disks and NICs is done by
``vdc.ovf.hardware``. ``parse_envelope`` refuses DTDs, entities and external references
(``HostileXml``) and checks that the descriptor is consistent: unique ids, every reference resolves,
sizes are sane (``InvalidDescriptor`` naming the element).

Flavours handled: plain DMTF, VMware (``vmw:`` namespace: ``vmw:Config``, ``vmw:ExtraConfig``,
``vmw:osType``, ``vmw:CoresPerSocket``), VirtualBox (``vbox:Machine``, ``vbox:OSType``), OVF 2.x
``EthernetPortItem``/``StorageItem``, and oVirt/RHV and virt-v2v exports: the envelope namespace with
a trailing slash, ``<Section xsi:type="ovf:…_Type">`` and ``<Content>``, ``rasd:InstanceId``, a GUID
where the OS id goes, disks sized by ``ovf:size`` in GiB instead of ``ovf:capacity``, a ``fileRef``
or ``HostResource`` that holds a file's href, oVirt's format URIs and ``ovf:volume-format``.
Attributes are read in the OVF namespace first and unqualified second (some exporters forget it).
VMware's pre-standard OVF 0.9 is refused with a message saying how to convert it.

Deployment options (DSP0243 9.8): items may share an InstanceID when their ``ovf:configuration``
attributes differ; for a chosen option the item naming it replaces the one naming none. Properties
may carry a default per option (``<Value ovf:value=… ovf:configuration=…/>``).
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Self, TypeVar

import defusedxml
import defusedxml.ElementTree as DET

from vdc.ovf.errors import HostileXml, InvalidDescriptor, UnsupportedFeature
from vdc.ovf.units import MAX_BYTES, parse_count, to_bytes

OVF1_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF1_NS_SLASH = OVF1_NS + "/"
"""oVirt/RHV and virt-v2v write the 1.x namespace with a trailing slash."""
OVF09_NS = "http://www.vmware.com/schema/ovf/1/envelope"
"""VMware's pre-standard OVF 0.9 (VMware Studio, ESX 3.5): refused."""
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
CIM_SCHEMA = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
RASD_NS = CIM_SCHEMA + "CIM_ResourceAllocationSettingData"
VSSD_NS = CIM_SCHEMA + "CIM_VirtualSystemSettingData"
EPASD_NS = CIM_SCHEMA + "CIM_EthernetPortAllocationSettingData"
SASD_NS = CIM_SCHEMA + "CIM_StorageAllocationSettingData"
VMW_NS = "http://www.vmware.com/schema/ovf"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# A descriptor is a few KiB to a few hundred KiB; more is not a descriptor.
MAX_DESCRIPTOR_BYTES = 16 << 20

OvfVersion = Literal["1.x", "2.x"]
_OVF_NAMESPACES: dict[str, OvfVersion] = {OVF1_NS: "1.x", OVF1_NS_SLASH: "1.x", OVF2_NS: "2.x"}


# --- reading helpers -----------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _attr(el: ET.Element, name: str, ns: str | None = None) -> str | None:
    """Attribute ``name`` in ``ns`` (default: either OVF namespace), else unqualified."""
    for namespace in (ns,) if ns else (OVF1_NS, OVF1_NS_SLASH, OVF2_NS):
        value = el.get(f"{{{namespace}}}{name}")
        if value is not None:
            return value
    return el.get(name)


def _required_attr(el: ET.Element, name: str, what: str) -> str:
    value = _attr(el, name)
    if value is None or not value.strip():
        raise InvalidDescriptor(f"{what} has no ovf:{name}")
    return value.strip()


def _children(el: ET.Element, local: str) -> Iterator[ET.Element]:
    return (child for child in el if isinstance(child.tag, str) and _local(child.tag) == local)


def _child(el: ET.Element, local: str) -> ET.Element | None:
    return next(_children(el, local), None)


def _child_text(el: ET.Element, local: str) -> str | None:
    child = _child(el, local)
    if child is None:
        return None
    return (child.text or "").strip()


def _child_texts(el: ET.Element, local: str) -> tuple[str, ...]:
    """The non-empty texts of every ``local`` child (``HostResource``, ``Connection`` …)."""
    return tuple(text for child in _children(el, local) if (text := (child.text or "").strip()))


def _bool(value: str | None, what: str, default: bool) -> bool:
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise InvalidDescriptor(f"{what}: {value!r} is not a boolean")


def _optional_count(value: str | None, what: str) -> int | None:
    return None if value is None else parse_count(value, what)


def section_kind(el: ET.Element) -> str:
    """``DiskSection`` for ``<DiskSection>`` and for ``<Section xsi:type="ovf:DiskSection_Type">``."""
    local = _local(el.tag)
    if local in ("Section", "Content"):
        xsi_type = el.get(f"{{{XSI_NS}}}type")
        if xsi_type:
            return xsi_type.rpartition(":")[2].removesuffix("_Type")
    return local


def _sections(el: ET.Element, kind: str) -> Iterator[ET.Element]:
    return (child for child in el if isinstance(child.tag, str) and section_kind(child) == kind)


def _section(el: ET.Element, kind: str) -> ET.Element | None:
    return next(_sections(el, kind), None)


def _section_children(el: ET.Element, kind: str, local: str) -> Iterator[ET.Element]:
    """The ``local`` children of the first ``kind`` section of ``el`` (none if there is no such section)."""
    section = _section(el, kind)
    return _children(section, local) if section is not None else iter(())


# --- References ----------------------------------------------------------------------------------

Compression = Literal["gzip"]


@dataclass(frozen=True)
class FileReference:
    """``<File>`` of ``<References>``: a file of the package (or a URL outside it)."""

    id: str
    href: str
    size: int | None = None
    compression: Compression | None = None
    chunk_size: int | None = None

    @property
    def is_external(self) -> bool:
        """An absolute URL rather than a file of the package."""
        return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.href) is not None

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        file_id = _required_attr(el, "id", "<File>")
        what = f"<File id={file_id!r}>"
        href = _required_attr(el, "href", what)
        compression = _attr(el, "compression")
        if compression in (None, "", "identity"):
            compression = None
        elif compression != "gzip":
            raise UnsupportedFeature(f"{what}: compression {compression!r} is not supported (gzip is)")
        size = _optional_count(_attr(el, "size"), f"{what} size")
        if size is not None and size > MAX_BYTES:
            raise InvalidDescriptor(f"{what}: size {size} is absurd")
        chunk_size = _optional_count(_attr(el, "chunkSize"), f"{what} chunkSize")
        if chunk_size == 0:
            raise InvalidDescriptor(f"{what}: chunkSize must be positive")
        return cls(id=file_id, href=href, size=size, compression="gzip" if compression else None, chunk_size=chunk_size)


# --- DiskSection ---------------------------------------------------------------------------------

DiskKind = Literal["vmdk", "qcow2", "raw", "vhd", "vhdx", "iso"]

_VMDK_SPECS = (
    "http://www.vmware.com/interfaces/specifications/vmdk.html",
    "http://www.vmware.com/specifications/vmdk.html",
)
_VMDK_SUBFORMATS = {
    "streamoptimized": "streamOptimized",
    "compressed": "streamOptimized",  # the pre-1.0 name
    "sparse": "monolithicSparse",
    "monolithicsparse": "monolithicSparse",
}
QCOW2_URI = "http://www.gnome.org/~markmc/qcow-image-format.html"
RAW_URI = "https://www.qemu.org/docs/master/system/images.html#raw"
VHD_URI = "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx"
VHDX_URI = "https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx"
ISO_URI = "http://www.ecma-international.org/publications/files/ECMA-ST/Ecma-119.pdf"
OVIRT_RAW_URI = "http://en.wikipedia.org/wiki/Byte"
"""What oVirt/RHV and virt-v2v write for a raw image."""
_OTHER_FORMATS: dict[str, tuple[DiskKind, str | None]] = {
    QCOW2_URI: ("qcow2", None),
    "https://people.gnome.org/~markmc/qcow-image-format.html": ("qcow2", None),
    RAW_URI: ("raw", None),
    OVIRT_RAW_URI: ("raw", None),
    VHD_URI: ("vhd", None),
    VHDX_URI: ("vhdx", None),
    ISO_URI: ("iso", None),
}
_QEMU_FORMATS: dict[DiskKind, str] = {
    "vmdk": "vmdk",
    "qcow2": "qcow2",
    "raw": "raw",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "iso": "raw",
}


@dataclass(frozen=True)
class DiskFormat:
    """The ``ovf:format`` URI of a disk, read: ``vmdk``/``streamOptimized``, ``qcow2``, ``raw`` …"""

    kind: DiskKind
    subformat: str | None = None

    @property
    def qemu_format(self) -> str:
        """The name ``qemu-img -f`` knows it by."""
        return _QEMU_FORMATS[self.kind]

    @property
    def uri(self) -> str:
        """The canonical URI to write for it."""
        if self.kind == "vmdk":
            fragment = {"streamOptimized": "streamOptimized", "monolithicSparse": "sparse"}.get(self.subformat or "")
            if fragment is None:
                raise UnsupportedFeature(f"vmdk subformat {self.subformat!r} has no OVF format URI")
            return f"{_VMDK_SPECS[0]}#{fragment}"
        return next(uri for uri, known in _OTHER_FORMATS.items() if known == (self.kind, self.subformat))

    def __str__(self) -> str:
        return f"{self.kind} {self.subformat}" if self.subformat else self.kind

    @classmethod
    def from_uri(cls, uri: str, what: str) -> Self:
        text = uri.strip()
        base, _, fragment = text.partition("#")
        if base in _VMDK_SPECS or base.replace("https://", "http://") in _VMDK_SPECS:
            subformat = _VMDK_SUBFORMATS.get(fragment.lower())
            if subformat is None:
                raise UnsupportedFeature(f"{what}: vmdk subformat {fragment!r} of {uri!r} is not supported")
            return cls("vmdk", subformat)
        known = _OTHER_FORMATS.get(text) or _OTHER_FORMATS.get(text.replace("https://", "http://"))
        if known is None:
            raise UnsupportedFeature(f"{what}: disk format {uri!r} is not a format this library knows")
        return cls(*known)


# oVirt's ``ovf:volume-format`` says what the image is, whatever ``ovf:format`` claims (old RHEV
# exports name the vmdk spec for qcow2 images).
_OVIRT_VOLUME_FORMATS: dict[str, DiskFormat] = {"cow": DiskFormat("qcow2"), "raw": DiskFormat("raw")}


@dataclass(frozen=True)
class VirtualDisk:
    """``<Disk>`` of the ``DiskSection``; ``file_ref`` None is a blank disk of ``capacity_bytes``.

    ``interface`` is oVirt's ``ovf:disk-interface`` (``VirtIO``, ``VirtIO_SCSI``, ``IDE``, ``SATA``):
    its exports attach disks to no controller item and say the bus here instead.
    """

    disk_id: str
    capacity_bytes: int
    file_ref: str | None = None
    format: DiskFormat | None = None
    populated_size: int | None = None
    parent_ref: str | None = None
    interface: str | None = None

    @classmethod
    def from_xml(cls, el: ET.Element, properties: dict[str, str]) -> Self:
        disk_id = _required_attr(el, "diskId", "<Disk>")
        what = f"<Disk diskId={disk_id!r}>"
        capacity = _attr(el, "capacity")
        units = _attr(el, "capacityAllocationUnits")
        if capacity is None and _attr(el, "size") is not None:
            capacity, units = _attr(el, "size"), "byte * 2^30"  # oVirt/virt-v2v: ovf:size is the virtual size in GiB
        if capacity is None or not capacity.strip():
            raise InvalidDescriptor(f"{what} has no ovf:capacity")
        reference = re.fullmatch(r"\$\{([^}]+)\}", capacity.strip())
        if reference:  # capacity given by a ProductSection property (DSP0243 9.1)
            if reference.group(1) not in properties:
                raise InvalidDescriptor(f"{what}: capacity refers to unknown property {reference.group(1)!r}")
            capacity = properties[reference.group(1)]
        capacity_bytes = to_bytes(capacity, units, f"{what} capacity")
        if capacity_bytes == 0:
            raise InvalidDescriptor(f"{what}: capacity must be positive")
        format_uri = _attr(el, "format")
        volume_format = _OVIRT_VOLUME_FORMATS.get((_attr(el, "volume-format") or "").strip().lower())
        file_ref = _attr(el, "fileRef") or None
        if file_ref and not format_uri and volume_format is None:
            raise InvalidDescriptor(f"{what} has a fileRef but no ovf:format")
        populated = _optional_count(_attr(el, "populatedSize"), f"{what} populatedSize")
        return cls(
            disk_id=disk_id,
            capacity_bytes=capacity_bytes,
            file_ref=file_ref,
            format=volume_format or (DiskFormat.from_uri(format_uri, what) if format_uri else None),
            populated_size=populated,
            parent_ref=_attr(el, "parentRef") or None,
            interface=_attr(el, "disk-interface") or None,
        )


# --- NetworkSection, DeploymentOptionSection -------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """``<Network>`` of the ``NetworkSection``."""

    name: str
    description: str | None = None

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        return cls(name=_required_attr(el, "name", "<Network>"), description=_child_text(el, "Description"))


@dataclass(frozen=True)
class DeploymentOption:
    """``<Configuration>`` of the ``DeploymentOptionSection`` (e.g. small / medium / large)."""

    id: str
    label: str | None = None
    description: str | None = None
    default: bool = False

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        option_id = _required_attr(el, "id", "<Configuration>")
        return cls(
            id=option_id,
            label=_child_text(el, "Label"),
            description=_child_text(el, "Description"),
            default=_bool(_attr(el, "default"), f"<Configuration id={option_id!r}> default", False),
        )


# --- VirtualHardwareSection ------------------------------------------------------------------------

# CIM_ResourceAllocationSettingData.ResourceType values that matter for a VM.
RESOURCE_KINDS: dict[int, str] = {
    1: "other",
    3: "cpu",
    4: "memory",
    5: "ide",
    6: "scsi",
    7: "fc",
    8: "iscsi",
    10: "nic",
    11: "nic",
    14: "floppy",
    15: "cdrom",
    16: "dvd",
    17: "disk",
    20: "storage-controller",
    21: "disk-image",
    23: "usb",
    24: "graphics",
    35: "sound",
}


def _pairs(el: ET.Element, local: str) -> dict[str, str]:
    """VMware ``<vmw:Config vmw:key=… vmw:value=…/>`` (or ``ExtraConfig``) children as a dict."""
    pairs: dict[str, str] = {}
    for child in _children(el, local):
        key = _attr(child, "key", VMW_NS)
        if key:
            pairs[key] = _attr(child, "value", VMW_NS) or ""
    return pairs


_NULL_GUID = "00000000-0000-0000-0000-000000000000"
"""oVirt's Parent of an item that has none."""


@dataclass(frozen=True)
class HardwareItem:
    """One ``<Item>`` (RASD), ``<EthernetPortItem>`` (EPASD) or ``<StorageItem>`` (SASD)."""

    element: str
    instance_id: str
    resource_type: int
    element_name: str | None = None
    description: str | None = None
    resource_sub_type: str | None = None
    virtual_quantity: int | None = None
    allocation_units: str | None = None
    host_resources: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    parent: str | None = None
    address: str | None = None
    address_on_parent: str | None = None
    automatic_allocation: bool | None = None
    required: bool = True
    configurations: tuple[str, ...] = ()
    cores_per_socket: int | None = None
    vmw_config: dict[str, str] = field(default_factory=dict)

    @property
    def sub_types(self) -> tuple[str, ...]:
        """``ResourceSubType`` read as a list of alternatives (``"VMXNET3 virtio"``), in order of preference."""
        return tuple((self.resource_sub_type or "").replace(",", " ").split())

    def applies_to(self, configuration: str | None) -> bool:
        """In use for the deployment option ``configuration`` (an item naming none is in every option)."""
        return not self.configurations or configuration in self.configurations

    @property
    def kind(self) -> str:
        """``cpu``, ``memory``, ``disk``, ``nic``, ``ide`` … (``other`` for types not listed)."""
        return RESOURCE_KINDS.get(self.resource_type, "other")

    @property
    def what(self) -> str:
        return f"<{self.element} InstanceID={self.instance_id!r}>"

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        element = _local(el.tag)
        instance_id = _child_text(el, "InstanceID") or _child_text(el, "InstanceId")  # oVirt: InstanceId
        if not instance_id:
            raise InvalidDescriptor(f"<{element}> ({_child_text(el, 'ElementName')!r}) has no InstanceID")
        what = f"<{element} InstanceID={instance_id!r}>"
        resource_type = parse_count(_child_text(el, "ResourceType"), f"{what} ResourceType")
        quantity = _child_text(el, "VirtualQuantity")
        cores = _child_text(el, "CoresPerSocket") or _child_text(el, "cpu_per_socket")  # oVirt: cpu_per_socket
        sockets = _child_text(el, "num_of_sockets")
        if not quantity and sockets and cores and resource_type == 3:  # oVirt: the count is the topology's
            threads = _child_text(el, "threads_per_cpu") or "1"
            topology = [parse_count(v, f"{what} CPU topology") for v in (sockets, cores, threads)]
            quantity = str(topology[0] * topology[1] * topology[2])
        automatic = _child_text(el, "AutomaticAllocation")
        configuration = _attr(el, "configuration") or ""
        parent = _child_text(el, "Parent") or ""
        return cls(
            element=element,
            instance_id=instance_id,
            resource_type=resource_type,
            element_name=_child_text(el, "ElementName"),
            description=_child_text(el, "Description"),
            resource_sub_type=_child_text(el, "ResourceSubType") or None,
            virtual_quantity=_optional_count(quantity, f"{what} VirtualQuantity") if quantity else None,
            allocation_units=_child_text(el, "AllocationUnits") or _child_text(el, "VirtualQuantityUnits") or None,
            host_resources=_child_texts(el, "HostResource"),
            connections=_child_texts(el, "Connection"),
            parent=None if parent in ("", _NULL_GUID) else parent,
            address=_child_text(el, "Address") or _child_text(el, "MACAddress") or None,  # oVirt: MACAddress
            address_on_parent=_child_text(el, "AddressOnParent") or None,
            automatic_allocation=_bool(automatic, f"{what} AutomaticAllocation", True) if automatic else None,
            required=_bool(_attr(el, "required"), f"{what} required", True),
            configurations=tuple(configuration.split()),
            cores_per_socket=_optional_count(cores, f"{what} CoresPerSocket") if cores else None,
            vmw_config=_pairs(el, "Config"),
        )


@dataclass(frozen=True)
class VirtualHardwareSection:
    """``<VirtualHardwareSection>``: the ``System`` (VSSD) and the items."""

    system_types: tuple[str, ...] = ()
    system_name: str | None = None
    transport: tuple[str, ...] = ()
    items: tuple[HardwareItem, ...] = ()
    vmw_config: dict[str, str] = field(default_factory=dict)
    extra_config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_xml(cls, el: ET.Element, what: str) -> Self:
        system = _child(el, "System")
        types = _child_text(system, "VirtualSystemType") if system is not None else None
        items: list[HardwareItem] = []
        seen: set[tuple[str, str]] = set()
        for child in el:
            if isinstance(child.tag, str) and _local(child.tag) in ("Item", "EthernetPortItem", "StorageItem"):
                item = HardwareItem.from_xml(child)
                # Items may share an InstanceID across deployment options (DSP0243 9.8), not within one.
                for configuration in item.configurations or ("",):
                    if (item.instance_id, configuration) in seen:
                        option = f" in deployment option {configuration!r}" if configuration else ""
                        raise InvalidDescriptor(f"{what}: two items have InstanceID {item.instance_id!r}{option}")
                    seen.add((item.instance_id, configuration))
                items.append(item)
        return cls(
            system_types=tuple(types.replace(",", " ").split()) if types else (),
            system_name=_child_text(system, "ElementName") if system is not None else None,
            transport=tuple((_attr(el, "transport") or "").split()),
            items=tuple(items),
            vmw_config=_pairs(el, "Config"),
            extra_config=_pairs(el, "ExtraConfig"),
        )

    def item(self, instance_id: str) -> HardwareItem | None:
        return next((i for i in self.items if i.instance_id == instance_id), None)

    def items_for(self, configuration: str | None) -> tuple[HardwareItem, ...]:
        """The items in use for a deployment option: per InstanceID the item naming ``configuration``,
        else the one naming no option (DSP0243 9.8: the former replaces the latter)."""
        chosen: dict[str, HardwareItem] = {}
        for item in self.items:
            if not item.applies_to(configuration):
                continue
            current = chosen.get(item.instance_id)
            if current is None or (item.configurations and not current.configurations):
                chosen[item.instance_id] = item
        return tuple(chosen.values())


# --- OperatingSystemSection, ProductSection, StartupSection, EulaSection, AnnotationSection ----------


@dataclass(frozen=True)
class OperatingSystem:
    """``<OperatingSystemSection>``: the CIM OS id, VMware's ``vmw:osType``, VirtualBox's ``vbox:OSType``."""

    id: int | None = None
    version: str | None = None
    description: str | None = None
    vmw_os_type: str | None = None
    vbox_os_type: str | None = None

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        os_id = (_attr(el, "id") or "").strip()
        return cls(
            # oVirt writes a GUID where the CIM OS number goes; its Description names the OS.
            id=int(os_id) if re.fullmatch(r"\d{1,9}", os_id) else None,
            version=_attr(el, "version"),
            description=_child_text(el, "Description"),
            vmw_os_type=_attr(el, "osType", VMW_NS),
            vbox_os_type=_child_text(el, "OSType"),
        )


@dataclass(frozen=True)
class Property:
    """``<Property>`` of a ``ProductSection``; ``full_key`` is ``class.key.instance`` (DSP0243 9.5)."""

    key: str
    type: str = "string"
    qualifiers: str | None = None
    default: str | None = None
    user_configurable: bool = False
    password: bool = False
    label: str | None = None
    description: str | None = None
    class_id: str | None = None
    instance: str | None = None
    option_defaults: tuple[tuple[str, str], ...] = ()
    """``(deployment option, default)`` from ``<Value ovf:value=… ovf:configuration=…/>`` children."""

    @property
    def full_key(self) -> str:
        return ".".join(part for part in (self.class_id, self.key, self.instance) if part)

    def default_for(self, configuration: str | None) -> str | None:
        """The default in deployment option ``configuration``: its ``<Value>`` if any, else ``default``."""
        return next((v for c, v in self.option_defaults if c == configuration), self.default)

    @classmethod
    def from_xml(cls, el: ET.Element, class_id: str | None, instance: str | None) -> Self:
        key = _required_attr(el, "key", "<Property>")
        what = f"<Property key={key!r}>"
        option_defaults: list[tuple[str, str]] = []
        for value in _children(el, "Value"):
            text = _attr(value, "value")
            if text is None:
                raise InvalidDescriptor(f"{what}: a <Value> has no ovf:value")
            option_defaults.extend((c, text) for c in (_attr(value, "configuration") or "").split())
        return cls(
            key=key,
            type=_required_attr(el, "type", what),
            qualifiers=_attr(el, "qualifiers"),
            default=_attr(el, "value"),
            user_configurable=_bool(_attr(el, "userConfigurable"), f"{what} userConfigurable", False),
            password=_bool(_attr(el, "password"), f"{what} password", False),
            label=_child_text(el, "Label"),
            description=_child_text(el, "Description"),
            class_id=class_id,
            instance=instance,
            option_defaults=tuple(option_defaults),
        )


@dataclass(frozen=True)
class ProductSection:
    """``<ProductSection>``: product, vendor, version and the properties a deployment may set."""

    class_id: str | None = None
    instance: str | None = None
    info: str | None = None
    product: str | None = None
    vendor: str | None = None
    version: str | None = None
    full_version: str | None = None
    product_url: str | None = None
    vendor_url: str | None = None
    properties: tuple[Property, ...] = ()

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        class_id = _attr(el, "class") or None
        instance = _attr(el, "instance") or None
        properties: list[Property] = []
        for child in el:  # Properties may sit inside <Category> grouping only in spirit: they are siblings
            if isinstance(child.tag, str) and _local(child.tag) == "Property":
                properties.append(Property.from_xml(child, class_id, instance))
        return cls(
            class_id=class_id,
            instance=instance,
            info=_child_text(el, "Info"),
            product=_child_text(el, "Product"),
            vendor=_child_text(el, "Vendor"),
            version=_child_text(el, "Version"),
            full_version=_child_text(el, "FullVersion"),
            product_url=_child_text(el, "ProductUrl"),
            vendor_url=_child_text(el, "VendorUrl"),
            properties=tuple(properties),
        )


StartAction = Literal["powerOn", "none"]
StopAction = Literal["powerOff", "guestShutdown", "none"]
_START_ACTIONS: tuple[StartAction, ...] = ("powerOn", "none")
_STOP_ACTIONS: tuple[StopAction, ...] = ("powerOff", "guestShutdown", "none")
_Choice = TypeVar("_Choice", bound=str)


def _one_of(value: str, choices: tuple[_Choice, ...], what: str) -> _Choice:
    """``value`` as one of ``choices`` (typed), else ``InvalidDescriptor`` listing them."""
    for choice in choices:
        if choice == value:
            return choice
    raise InvalidDescriptor(f"{what} {value!r} is not {', '.join(choices[:-1])} or {choices[-1]}")


@dataclass(frozen=True)
class StartupItem:
    """``<Item>`` of a ``StartupSection``: when a member of a collection starts and stops."""

    id: str
    order: int
    start_delay: int = 0
    waiting_for_guest: bool = False
    start_action: StartAction = "powerOn"
    stop_delay: int = 0
    stop_action: StopAction = "powerOff"

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        item_id = _required_attr(el, "id", "<StartupSection><Item>")
        what = f"<StartupSection><Item id={item_id!r}>"
        return cls(
            id=item_id,
            order=parse_count(_attr(el, "order"), f"{what} order"),
            start_delay=parse_count(_attr(el, "startDelay") or "0", f"{what} startDelay"),
            waiting_for_guest=_bool(_attr(el, "waitingForGuest"), f"{what} waitingForGuest", False),
            start_action=_one_of(_attr(el, "startAction") or "powerOn", _START_ACTIONS, f"{what}: startAction"),
            stop_delay=parse_count(_attr(el, "stopDelay") or "0", f"{what} stopDelay"),
            stop_action=_one_of(_attr(el, "stopAction") or "powerOff", _STOP_ACTIONS, f"{what}: stopAction"),
        )


@dataclass(frozen=True)
class VBoxMachine:
    """The ``<vbox:Machine>`` VirtualBox embeds: its OS type (``Other_64``, ``Ubuntu_64`` …) and firmware."""

    uuid: str | None = None
    name: str | None = None
    os_type: str | None = None
    firmware: str | None = None

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        firmware = None
        hardware = _child(el, "Hardware")
        if hardware is not None:
            fw = _child(hardware, "Firmware")
            firmware = fw.get("type") if fw is not None else None
        return cls(uuid=el.get("uuid"), name=el.get("name"), os_type=el.get("OSType"), firmware=firmware)


def _texts(el: ET.Element, section: str, local: str) -> tuple[str, ...]:
    return tuple(t for s in _sections(el, section) if (t := _child_text(s, local)))


def _product_sections(el: ET.Element) -> tuple[ProductSection, ...]:
    return tuple(ProductSection.from_xml(s) for s in _sections(el, "ProductSection"))


def _annotation(el: ET.Element) -> str | None:
    """The first AnnotationSection's text."""
    return next(iter(_texts(el, "AnnotationSection", "Annotation")), None)


@dataclass(frozen=True)
class VirtualSystem:
    """``<VirtualSystem>``: one VM of the package."""

    id: str
    name: str | None = None
    info: str | None = None
    operating_system: OperatingSystem | None = None
    hardware: tuple[VirtualHardwareSection, ...] = ()
    products: tuple[ProductSection, ...] = ()
    eulas: tuple[str, ...] = ()
    annotation: str | None = None
    vbox_machine: VBoxMachine | None = None

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        system_id = _required_attr(el, "id", "<VirtualSystem>")
        what = f"<VirtualSystem id={system_id!r}>"
        os_section = _section(el, "OperatingSystemSection")
        machine = _child(el, "Machine")
        hardware = tuple(VirtualHardwareSection.from_xml(s, what) for s in _sections(el, "VirtualHardwareSection"))
        if not hardware:
            raise InvalidDescriptor(f"{what} has no VirtualHardwareSection")
        return cls(
            id=system_id,
            name=_child_text(el, "Name"),
            info=_child_text(el, "Info"),
            operating_system=OperatingSystem.from_xml(os_section) if os_section is not None else None,
            hardware=hardware,
            products=_product_sections(el),
            eulas=_texts(el, "EulaSection", "License"),
            annotation=_annotation(el),
            vbox_machine=VBoxMachine.from_xml(machine)
            if machine is not None and machine.tag.startswith(f"{{{VBOX_NS}}}")
            else None,
        )


@dataclass(frozen=True)
class VirtualSystemCollection:
    """``<VirtualSystemCollection>``: a vApp of systems (and nested collections) with a start order."""

    id: str
    name: str | None = None
    info: str | None = None
    contents: tuple[VirtualSystem | VirtualSystemCollection, ...] = ()
    startup: tuple[StartupItem, ...] = ()
    products: tuple[ProductSection, ...] = ()
    eulas: tuple[str, ...] = ()
    annotation: str | None = None

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        collection_id = _required_attr(el, "id", "<VirtualSystemCollection>")
        contents = tuple(_content(child) for child in el if _is_content(child))
        if not contents:
            raise InvalidDescriptor(f"<VirtualSystemCollection id={collection_id!r}> holds no virtual system")
        return cls(
            id=collection_id,
            name=_child_text(el, "Name"),
            info=_child_text(el, "Info"),
            contents=contents,
            startup=tuple(
                StartupItem.from_xml(item) for s in _sections(el, "StartupSection") for item in _children(s, "Item")
            ),
            products=_product_sections(el),
            eulas=_texts(el, "EulaSection", "License"),
            annotation=_annotation(el),
        )


Content = VirtualSystem | VirtualSystemCollection


def _is_content(el: ET.Element) -> bool:
    return isinstance(el.tag, str) and section_kind(el) in ("VirtualSystem", "VirtualSystemCollection")


def _content(el: ET.Element) -> Content:
    if section_kind(el) == "VirtualSystem":
        return VirtualSystem.from_xml(el)
    return VirtualSystemCollection.from_xml(el)


def iter_systems(content: Content) -> Iterator[VirtualSystem]:
    """Every VirtualSystem, depth first, in document order."""
    if isinstance(content, VirtualSystem):
        yield content
        return
    for child in content.contents:
        yield from iter_systems(child)


def iter_collections(content: Content) -> Iterator[VirtualSystemCollection]:
    if isinstance(content, VirtualSystemCollection):
        yield content
        for child in content.contents:
            yield from iter_collections(child)


def _products(content: Content) -> tuple[ProductSection, ...]:
    """Every ProductSection: the collections' first, then each system's, in document order."""
    collections = (p for c in iter_collections(content) for p in c.products)
    return (*collections, *(p for s in iter_systems(content) for p in s.products))


# --- Envelope --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The whole descriptor."""

    version: OvfVersion
    content: Content
    ovf_version: str | None = None
    references: tuple[FileReference, ...] = ()
    disks: tuple[VirtualDisk, ...] = ()
    networks: tuple[Network, ...] = ()
    deployment_options: tuple[DeploymentOption, ...] = ()

    def file(self, file_id: str) -> FileReference | None:
        return next((f for f in self.references if f.id == file_id), None)

    def disk(self, disk_id: str) -> VirtualDisk | None:
        return next((d for d in self.disks if d.disk_id == disk_id), None)

    def virtual_systems(self) -> tuple[VirtualSystem, ...]:
        return tuple(iter_systems(self.content))

    def products(self) -> tuple[ProductSection, ...]:
        """Every ProductSection: the collections' first, then each system's, in document order."""
        return _products(self.content)

    def properties(self) -> tuple[Property, ...]:
        return tuple(p for section in self.products() for p in section.properties)

    def startup(self) -> tuple[StartupItem, ...]:
        return tuple(item for c in iter_collections(self.content) for item in c.startup)


def _parse_xml(data: bytes | str, max_bytes: int) -> ET.Element:
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise InvalidDescriptor(f"descriptor is {size} bytes, more than the {max_bytes} accepted")
    try:
        root: ET.Element = DET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise HostileXml("descriptor refused: it has a DTD (<!DOCTYPE>), which OVF never needs") from None
    except defusedxml.EntitiesForbidden as e:
        raise HostileXml(f"descriptor refused: it declares entity {e.name!r}") from None
    except defusedxml.ExternalReferenceForbidden as e:
        raise HostileXml(f"descriptor refused: it refers to external resource {e.sysid!r}") from None
    except defusedxml.DefusedXmlException as e:
        raise HostileXml(f"descriptor refused: {e}") from None
    except ET.ParseError as e:
        raise InvalidDescriptor(f"descriptor is not well-formed XML: {e}") from None
    return root


def _property_defaults(content: Content) -> dict[str, str]:
    """Defaults of every property by key and full key, for ``${key}`` disk capacities."""
    defaults: dict[str, str] = {}
    for section in _products(content):
        for prop in section.properties:
            if prop.default is not None:
                defaults.setdefault(prop.key, prop.default)
                defaults.setdefault(prop.full_key, prop.default)
    return defaults


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InvalidDescriptor(f"{what} {value!r} appears twice")
        seen.add(value)


_HOST_RESOURCE = re.compile(r"^(?:ovf:)?/+(disk|file)/(.+)$")


def host_resource_target(value: str) -> tuple[Literal["disk", "file"], str] | None:
    """``ovf:/disk/d1`` → ("disk", "d1"); ``ovf:/file/f1`` → ("file", "f1"); None for anything else."""
    match = _HOST_RESOURCE.match(value.strip())
    if not match:
        return None
    return ("disk" if match.group(1) == "disk" else "file"), match.group(2)


def _check_consistency(envelope: Envelope) -> None:
    _unique([f.id for f in envelope.references], "<File> id")
    _unique([f.href for f in envelope.references], "<File> href")
    _unique([d.disk_id for d in envelope.disks], "<Disk> diskId")
    _unique([n.name for n in envelope.networks], "<Network> name")
    systems = envelope.virtual_systems()
    collections = list(iter_collections(envelope.content))
    # DSP0243 asks ids to be unique among siblings (vCloud Director names a vApp after its first VM);
    # a VM picks its system by id, so two systems of one id anywhere are refused too.
    for collection in collections:
        _unique(
            [c.id for c in collection.contents],
            f"<VirtualSystemCollection id={collection.id!r}>: VirtualSystem/VirtualSystemCollection id",
        )
    _unique([s.id for s in systems], "VirtualSystem id")
    file_ids = {f.id for f in envelope.references}
    disk_ids = {d.disk_id for d in envelope.disks}
    network_names = {n.name for n in envelope.networks}
    option_ids = {o.id for o in envelope.deployment_options}
    _unique([o.id for o in envelope.deployment_options], "<Configuration> id")
    if sum(o.default for o in envelope.deployment_options) > 1:
        raise InvalidDescriptor("DeploymentOptionSection: more than one <Configuration> has ovf:default=true")
    for disk in envelope.disks:
        if disk.file_ref and disk.file_ref not in file_ids:
            raise InvalidDescriptor(f"<Disk diskId={disk.disk_id!r}> refers to unknown file {disk.file_ref!r}")
        if disk.parent_ref and disk.parent_ref not in disk_ids:
            raise InvalidDescriptor(f"<Disk diskId={disk.disk_id!r}> has unknown parentRef {disk.parent_ref!r}")
    for system in systems:
        for section in system.hardware:
            for item in section.items:
                what = f"<VirtualSystem id={system.id!r}> {item.what}"
                unknown = [c for c in item.configurations if c not in option_ids]
                if unknown:
                    raise InvalidDescriptor(
                        f"{what}: ovf:configuration names {unknown[0]!r}, not an option of the DeploymentOptionSection"
                    )
                if item.parent and section.item(item.parent) is None:
                    raise InvalidDescriptor(f"{what}: Parent {item.parent!r} is not an item of the section")
                for resource in item.host_resources if item.kind in ("disk", "cdrom", "dvd", "floppy") else ():
                    target = host_resource_target(resource)
                    if target is None:
                        continue  # a host device path such as /dev/cdrom: not ours to resolve
                    kind, ref = target
                    if ref not in (disk_ids if kind == "disk" else file_ids):
                        raise InvalidDescriptor(f"{what}: HostResource {resource!r} refers to an unknown {kind}")
                if item.kind == "nic" and envelope.networks:
                    for connection in item.connections:
                        if connection not in network_names:
                            raise InvalidDescriptor(
                                f"{what}: Connection {connection!r} is not a network of the NetworkSection"
                            )
    for collection in collections:
        members = {c.id for c in collection.contents}
        _unique([i.id for i in collection.startup], f"<VirtualSystemCollection id={collection.id!r}> StartupSection id")
        for startup in collection.startup:
            if startup.id not in members:
                raise InvalidDescriptor(
                    f"<VirtualSystemCollection id={collection.id!r}> StartupSection names unknown system {startup.id!r}"
                )


def _file_ref_by_id(disk: VirtualDisk, references: tuple[FileReference, ...]) -> VirtualDisk:
    """oVirt and virt-v2v put the file's href (``<image>/<volume>``) in ``fileRef``: make it the id."""
    if disk.file_ref is None or any(f.id == disk.file_ref for f in references):
        return disk
    by_href = next((f for f in references if f.href == disk.file_ref), None)
    return dataclasses.replace(disk, file_ref=by_href.id) if by_href is not None else disk


def parse_envelope(data: bytes | str, *, max_bytes: int = MAX_DESCRIPTOR_BYTES) -> Envelope:
    """Parse and check an OVF descriptor. Raises an ``OvfError`` naming what is wrong."""
    root = _parse_xml(data, max_bytes)
    namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    if namespace == OVF09_NS:
        raise UnsupportedFeature(
            f"<Envelope> is VMware's pre-standard OVF 0.9 ({OVF09_NS!r}), which this library does not read: "
            "convert it to OVF 1.x first (ovftool in.ovf out.ova)"
        )
    if _local(root.tag) != "Envelope" or namespace not in _OVF_NAMESPACES:
        raise InvalidDescriptor(f"root element is {root.tag!r}, not an OVF <Envelope> in {OVF1_NS!r} or {OVF2_NS!r}")
    contents = [child for child in root if _is_content(child)]
    if len(contents) != 1:
        raise InvalidDescriptor(f"<Envelope> must hold exactly one VirtualSystem or collection, not {len(contents)}")
    content = _content(contents[0])
    defaults = _property_defaults(content)
    references = tuple(FileReference.from_xml(f) for f in _section_children(root, "References", "File"))
    disks = tuple(VirtualDisk.from_xml(d, defaults) for d in _section_children(root, "DiskSection", "Disk"))
    envelope = Envelope(
        version=_OVF_NAMESPACES[namespace],
        ovf_version=_attr(root, "version"),
        content=content,
        references=references,
        disks=tuple(_file_ref_by_id(d, references) for d in disks),
        networks=tuple(Network.from_xml(n) for n in _section_children(root, "NetworkSection", "Network")),
        deployment_options=tuple(
            DeploymentOption.from_xml(o) for o in _section_children(root, "DeploymentOptionSection", "Configuration")
        ),
    )
    _check_consistency(envelope)
    return envelope
