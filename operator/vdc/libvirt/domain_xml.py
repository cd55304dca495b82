"""libvirt domain XML: one small frozen dataclass per element, converted to and from XML.

The classes here only translate between Python objects and libvirt's domain XML (the way Nova's
``nova.virt.libvirt.config`` and virt-manager's ``virtinst`` do it): no policy, no naming, no I/O,
no libvirt calls. XML is built with :mod:`xml.etree.ElementTree`'s element API, never by formatting
strings, and every text or attribute value is checked to be representable in XML 1.0.

Parsing reads back every field that :meth:`to_xml` writes and ignores what we do not model, so the
XML libvirt returns for a defined or running domain (``virDomainGetXMLDesc``: aliases, addresses,
controllers, default devices, ``<resource>``, ``<seclabel>``, ``<clock>``, ``<video>`` …) parses.

libvirt canonicalises a few things when it defines a domain; a config read back from libvirt equals
the one written except for these (compare accordingly, and prefer ``VIR_DOMAIN_XML_INACTIVE``):

* an HVM domain with neither ``os.boot_devices`` nor any disk ``boot_order`` gets
  ``boot_devices=("hd",)``;
* an interface without ``target_dev`` gets a generated one (``testnetN`` from the test driver,
  ``vnetN`` from the QEMU driver while the domain runs);
* the QEMU driver expands a machine alias (``q35`` -> ``pc-q35-7.2``) and, for ``host-model``, shows
  the expanded ``custom`` CPU in the live XML of a running domain.

Values libvirt would silently drop are refused at construction instead (an empty ``<iotune>``,
``<bandwidth>`` or ``<cputune>``; a limit of 0; ``max_vcpus`` equal to ``vcpus``), so that "None"
is the one way to say "not set" and a round trip through libvirt is exact.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal, Self, get_args

from vdc.libvirt.xml_common import BandwidthConfig, BandwidthLimitConfig, XmlError, XmlHelpers

OWNER_NS = "https://vdc.dev/xmlns/owner/v1"
"""XML namespace of our ownership metadata inside a domain's ``<metadata>``."""
OWNER_PREFIX = "vdc"
OWNER_TAG = f"{{{OWNER_NS}}}owner"
HOST_FILES_TAG = f"{{{OWNER_NS}}}hostFiles"
ALLOWED_TAG = f"{{{OWNER_NS}}}allowed"

ET.register_namespace(OWNER_PREFIX, OWNER_NS)

DomainType = Literal["qemu", "kvm", "test"]
"""test: libvirt's test driver (fake domains, for scale tests)."""
CpuMode = Literal["default", "host-passthrough", "host-model", "custom"]
Firmware = Literal["bios", "efi"]
BootDevice = Literal["hd", "cdrom", "network", "fd"]
DiskBus = Literal["virtio", "sata", "scsi", "ide"]
DiskDevice = Literal["disk", "cdrom"]
DriverType = Literal["qcow2", "raw"]
CacheMode = Literal["default", "none", "writethrough", "writeback", "directsync", "unsafe"]
IoMode = Literal["default", "native", "threads", "io_uring"]
NicModel = Literal["virtio", "e1000", "e1000e", "rtl8139"]
LinkState = Literal["up", "down"]
GraphicsType = Literal["vnc"]
LifecycleAction = Literal["destroy", "restart", "preserve", "rename-restart"]
CrashAction = Literal["destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart"]
WatchdogModel = Literal["i6300esb", "ib700", "itco"]
WatchdogAction = Literal["reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi"]

_CPU_MODES: tuple[CpuMode, ...] = get_args(CpuMode)
_DOMAIN_TYPES: tuple[DomainType, ...] = get_args(DomainType)
_FIRMWARES: tuple[Firmware, ...] = get_args(Firmware)
_BOOT_DEVICES: tuple[BootDevice, ...] = get_args(BootDevice)
_DISK_BUSES: tuple[DiskBus, ...] = get_args(DiskBus)
_DISK_DEVICES: tuple[DiskDevice, ...] = get_args(DiskDevice)
_DRIVER_TYPES: tuple[DriverType, ...] = get_args(DriverType)
_CACHE_MODES: tuple[CacheMode, ...] = get_args(CacheMode)
_IO_MODES: tuple[IoMode, ...] = get_args(IoMode)
_NIC_MODELS: tuple[NicModel, ...] = get_args(NicModel)
_LINK_STATES: tuple[LinkState, ...] = get_args(LinkState)
_GRAPHICS_TYPES: tuple[GraphicsType, ...] = get_args(GraphicsType)
_LIFECYCLE_ACTIONS: tuple[LifecycleAction, ...] = get_args(LifecycleAction)
_CRASH_ACTIONS: tuple[CrashAction, ...] = get_args(CrashAction)
_WATCHDOG_MODELS: tuple[WatchdogModel, ...] = get_args(WatchdogModel)
_WATCHDOG_ACTIONS: tuple[WatchdogAction, ...] = get_args(WatchdogAction)

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_MEMORY_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


class DomainXmlError(XmlError):
    """The XML is not a domain we can read, or a config cannot be expressed in libvirt XML."""


# --- helpers -------------------------------------------------------------------------------------


_xml = XmlHelpers(DomainXmlError)


def _kib(el: ET.Element) -> int:
    """A libvirt memory element (``<memory unit='MiB'>512</memory>``) in KiB, rounded up like libvirt."""
    unit = (el.get("unit") or "KiB").lower()
    if unit not in _MEMORY_UNITS:
        raise DomainXmlError(f"<{el.tag}>: unknown unit {el.get('unit')!r}")
    return math.ceil(_xml.integer(el.text, f"<{el.tag}>") * _MEMORY_UNITS[unit] / 1024)


def _positive(value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise DomainXmlError(f"{what} must be at least 1 (use None for no limit), got {value}")


# --- metadata ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnerMetadata:
    """Who owns a domain: ``<vdc:owner namespace=… name=… uid=… generation=…/>`` inside ``<metadata>``.

    ``host_file_dirs`` are the host directories the domain's host files (kernel, initrd, dtb) must
    lie in, for the vdc qemu hook on the host (:mod:`vdc.hooks.libvirt_qemu`), which resolves the files
    at every start: ``<vdc:hostFiles><vdc:allowed path=…/>…</vdc:hostFiles>`` inside ``<vdc:owner>``.
    They are a child of the owner element because libvirt keeps only one element per namespace
    directly under ``<metadata>``. Empty: none written, and the hook refuses any host file.
    """

    namespace: str
    name: str
    uid: str
    generation: int | None = None
    host_file_dirs: tuple[str, ...] = ()

    def to_xml(self) -> ET.Element:
        el = _xml.new(
            OWNER_TAG,
            {"namespace": self.namespace, "name": self.name, "uid": self.uid, "generation": self.generation},
        )
        if self.host_file_dirs:
            files = _xml.sub(el, HOST_FILES_TAG)
            for path in self.host_file_dirs:
                _xml.sub(files, ALLOWED_TAG, {"path": path})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, OWNER_TAG)
        return cls(
            namespace=_xml.attr(el, "namespace"),
            name=_xml.attr(el, "name"),
            uid=_xml.attr(el, "uid"),
            generation=_xml.opt_integer(el.get("generation"), "owner generation"),
            host_file_dirs=tuple(_xml.attr(a, "path") for a in el.findall(f"{HOST_FILES_TAG}/{ALLOWED_TAG}")),
        )


def owner_from_domain_xml(text: str) -> OwnerMetadata | None:
    """The owner recorded in a domain's XML, or None for a domain we did not create.

    Cheap: a domain whose XML does not mention our namespace is not parsed at all. Raises
    :class:`DomainXmlError` when the XML carries our owner element but it is malformed.
    """
    if OWNER_NS not in text:
        return None
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DomainXmlError(f"not well-formed XML: {e}") from None
    el = root.find(f"metadata/{OWNER_TAG}")
    return None if el is None else OwnerMetadata.from_xml(el)


# --- CPU -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuConfig:
    """``<cpu>``: model mode and topology. Mode default without topology means no ``<cpu>`` at all."""

    mode: CpuMode = "default"
    model: str | None = None
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if (self.mode == "custom") != bool(self.model):
            raise DomainXmlError("cpu model is required with mode custom and only allowed with it")
        topology = (self.sockets, self.cores, self.threads)
        if any(v is None for v in topology) and any(v is not None for v in topology):
            raise DomainXmlError("cpu topology needs all of sockets, cores and threads, or none")
        for name, value in zip(("sockets", "cores", "threads"), topology, strict=True):
            _positive(value, f"cpu {name}")

    @property
    def is_empty(self) -> bool:
        """True when libvirt's defaults apply and no ``<cpu>`` element is written."""
        return self.mode == "default" and self.sockets is None

    def to_xml(self) -> ET.Element:
        el = _xml.new("cpu")
        if self.mode == "custom":
            el.set("mode", "custom")
            el.set("match", "exact")
            _xml.sub(el, "model", {"fallback": "forbid"}, self.model)
        elif self.mode != "default":
            el.set("mode", self.mode)
        if self.sockets is not None:
            _xml.sub(el, "topology", {"sockets": self.sockets, "cores": self.cores, "threads": self.threads})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "cpu")
        model = el.find("model")
        model_name = model.text if model is not None and model.text else None
        mode_attr = el.get("mode")
        if mode_attr is None:
            mode: CpuMode = "custom" if model_name else "default"
        else:
            mode = _xml.pick(mode_attr, _CPU_MODES, "cpu mode")
        topology = el.find("topology")
        return cls(
            mode=mode,
            model=model_name if mode == "custom" else None,
            sockets=None if topology is None else _xml.integer(topology.get("sockets"), "cpu topology sockets"),
            cores=None if topology is None else _xml.integer(topology.get("cores"), "cpu topology cores"),
            threads=None if topology is None else _xml.integer(topology.get("threads"), "cpu topology threads"),
        )


@dataclass(frozen=True)
class CpuTuneConfig:
    """``<cputune>``: CFS shares, the per-vCPU period and quota, and the whole domain's (``global_*``)
    period and quota (microseconds). At least one must be set."""

    shares: int | None = None
    period: int | None = None
    quota: int | None = None
    global_period: int | None = None
    global_quota: int | None = None

    def __post_init__(self) -> None:
        if all(getattr(self, tag) is None for tag in _CPUTUNE_TAGS):
            raise DomainXmlError("cputune needs at least one of " + ", ".join(_CPUTUNE_TAGS) + " (use None for none)")
        _positive(self.shares, "cputune shares")
        _positive(self.period, "cputune period")
        _positive(self.global_period, "cputune global_period")
        for tag in ("quota", "global_quota"):
            value = getattr(self, tag)
            if value is not None and value != -1 and value < 1:
                raise DomainXmlError(f"cputune {tag} must be -1 (unlimited) or at least 1, got {value}")

    def to_xml(self) -> ET.Element:
        el = _xml.new("cputune")
        for tag in _CPUTUNE_TAGS:
            value = getattr(self, tag)
            if value is not None:
                _xml.sub(el, tag, text=value)
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self | None:
        """None when the element holds none of the values we model (e.g. only ``<vcpupin>``)."""
        _xml.expect_tag(el, "cputune")
        values = {tag: _xml.opt_integer(_xml.text(el.find(tag)), f"cputune {tag}") for tag in _CPUTUNE_TAGS}
        if all(v is None for v in values.values()):
            return None
        return cls(**values)


_CPUTUNE_TAGS = ("shares", "period", "quota", "global_period", "global_quota")
_MEMTUNE_TAGS = ("hard_limit", "soft_limit")


@dataclass(frozen=True)
class MemTuneConfig:
    """``<memtune>``: the domain cgroup's hard and soft memory limits (KiB). At least one must be set."""

    hard_limit: int | None = None
    soft_limit: int | None = None

    def __post_init__(self) -> None:
        if self.hard_limit is None and self.soft_limit is None:
            raise DomainXmlError("memtune needs hard_limit or soft_limit (use None for none)")
        _positive(self.hard_limit, "memtune hard_limit")
        _positive(self.soft_limit, "memtune soft_limit")

    def to_xml(self) -> ET.Element:
        el = _xml.new("memtune")
        for tag in _MEMTUNE_TAGS:
            value = getattr(self, tag)
            if value is not None:
                _xml.sub(el, tag, {"unit": "KiB"}, value)
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self | None:
        """None when the element holds none of the limits we model (e.g. only ``swap_hard_limit``)."""
        _xml.expect_tag(el, "memtune")
        values = {tag: None if (found := el.find(tag)) is None else _kib(found) for tag in _MEMTUNE_TAGS}
        if all(v is None for v in values.values()):
            return None
        return cls(**values)


# --- OS ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsConfig:
    """``<os>``: architecture, machine, firmware, direct kernel boot and the legacy boot order.

    ``boot_devices`` (``<boot dev=…/>``) must stay empty when any disk has a ``boot_order``: libvirt
    refuses both at once.
    """

    arch: str = "x86_64"
    machine: str | None = "q35"
    firmware: Firmware = "bios"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot_devices: tuple[BootDevice, ...] = ()

    def __post_init__(self) -> None:
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise DomainXmlError("initrd and cmdline need a kernel")

    def to_xml(self) -> ET.Element:
        el = _xml.new("os", {"firmware": "efi" if self.firmware == "efi" else None})
        _xml.sub(el, "type", {"arch": self.arch, "machine": self.machine}, "hvm")
        for tag in ("kernel", "initrd", "cmdline"):
            value = getattr(self, tag)
            if value is not None:
                _xml.sub(el, tag, text=value)
        for dev in self.boot_devices:
            _xml.sub(el, "boot", {"dev": dev})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "os")
        os_type = _xml.child(el, "type")
        firmware = el.get("firmware")
        return cls(
            arch=_xml.attr(os_type, "arch"),
            machine=os_type.get("machine"),
            firmware=_xml.pick(firmware, _FIRMWARES, "os firmware") if firmware is not None else "bios",
            kernel=_xml.text(el.find("kernel")),
            initrd=_xml.text(el.find("initrd")),
            cmdline=_xml.text(el.find("cmdline")),
            boot_devices=tuple(_xml.pick(b.get("dev"), _BOOT_DEVICES, "os boot dev") for b in el.findall("boot")),
        )


# --- disks ---------------------------------------------------------------------------------------

IOTUNE_LIMITS = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
)
_IOTUNE_FIELDS = (
    *IOTUNE_LIMITS,
    *(f"{name}_max" for name in IOTUNE_LIMITS),
    *(f"{name}_max_length" for name in IOTUNE_LIMITS),
)


@dataclass(frozen=True)
class IoTuneConfig:
    """``<iotune>``: disk throttling (QEMU's, no cgroups needed). At least one limit; total_* excludes
    read_*/write_* (libvirt's rule). ``*_max`` is a burst rate above the limit, allowed for ``*_max_length``
    seconds (QEMU's default: 1); each needs the one before it."""

    total_bytes_sec: int | None = None
    read_bytes_sec: int | None = None
    write_bytes_sec: int | None = None
    total_iops_sec: int | None = None
    read_iops_sec: int | None = None
    write_iops_sec: int | None = None
    total_bytes_sec_max: int | None = None
    read_bytes_sec_max: int | None = None
    write_bytes_sec_max: int | None = None
    total_iops_sec_max: int | None = None
    read_iops_sec_max: int | None = None
    write_iops_sec_max: int | None = None
    total_bytes_sec_max_length: int | None = None
    read_bytes_sec_max_length: int | None = None
    write_bytes_sec_max_length: int | None = None
    total_iops_sec_max_length: int | None = None
    read_iops_sec_max_length: int | None = None
    write_iops_sec_max_length: int | None = None

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name in _IOTUNE_FIELDS]
        if all(v is None for v in values):
            raise DomainXmlError("iotune needs at least one limit (use None for no limits)")
        for name, value in zip(_IOTUNE_FIELDS, values, strict=True):
            _positive(value, f"iotune {name}")
        if self.total_bytes_sec is not None and (self.read_bytes_sec is not None or self.write_bytes_sec is not None):
            raise DomainXmlError("iotune total_bytes_sec cannot be combined with read_bytes_sec/write_bytes_sec")
        if self.total_iops_sec is not None and (self.read_iops_sec is not None or self.write_iops_sec is not None):
            raise DomainXmlError("iotune total_iops_sec cannot be combined with read_iops_sec/write_iops_sec")
        for name in IOTUNE_LIMITS:
            limit, peak, length = (getattr(self, f"{name}{s}") for s in ("", "_max", "_max_length"))
            if peak is not None and (limit is None or peak < limit):
                raise DomainXmlError(f"iotune {name}_max needs {name} and must be at least it")
            if length is not None and peak is None:
                raise DomainXmlError(f"iotune {name}_max_length needs {name}_max")

    def to_xml(self) -> ET.Element:
        el = _xml.new("iotune")
        for name in _IOTUNE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                _xml.sub(el, name, text=value)
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self | None:
        """None when the element holds none of the values we model (e.g. only ``group_name``). A burst
        without its limit and a burst length without its burst enforce nothing: dropped (libvirt keeps a
        length when a burst is removed)."""
        _xml.expect_tag(el, "iotune")
        values = {name: _xml.opt_integer(_xml.text(el.find(name)), f"iotune {name}") or None for name in _IOTUNE_FIELDS}
        for name in IOTUNE_LIMITS:
            if values[name] is None:
                values[f"{name}_max"] = None
            if values[f"{name}_max"] is None:
                values[f"{name}_max_length"] = None
        if all(v is None for v in values.values()):
            return None
        return cls(**values)


@dataclass(frozen=True)
class DiskConfig:
    """``<disk type='file'>``: a file-backed disk or CD-ROM (an empty CD-ROM drive has no source)."""

    target_dev: str
    bus: DiskBus = "virtio"
    source_file: str | None = None
    driver_type: DriverType = "raw"
    device: DiskDevice = "disk"
    readonly: bool = False
    serial: str | None = None
    boot_order: int | None = None
    cache: CacheMode = "default"
    io: IoMode = "default"
    iotune: IoTuneConfig | None = None

    def __post_init__(self) -> None:
        _positive(self.boot_order, "disk boot order")

    def to_xml(self) -> ET.Element:
        el = _xml.new("disk", {"type": "file", "device": self.device})
        _xml.sub(
            el,
            "driver",
            {
                "name": "qemu",
                "type": self.driver_type,
                "cache": None if self.cache == "default" else self.cache,
                "io": None if self.io == "default" else self.io,
            },
        )
        if self.source_file is not None:
            _xml.sub(el, "source", {"file": self.source_file})
        _xml.sub(el, "target", {"dev": self.target_dev, "bus": self.bus})
        if self.iotune is not None:
            el.append(self.iotune.to_xml())
        if self.boot_order is not None:
            _xml.sub(el, "boot", {"order": self.boot_order})
        if self.readonly:
            _xml.sub(el, "readonly")
        if self.serial is not None:
            _xml.sub(el, "serial", text=self.serial)
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "disk")
        if el.get("type", "file") != "file":
            raise DomainXmlError(f"disk type {el.get('type')!r} is not modelled (only 'file')")
        driver = el.find("driver")
        source = el.find("source")
        target = _xml.child(el, "target")
        boot = el.find("boot")
        iotune = el.find("iotune")
        driver_type = None if driver is None else driver.get("type")
        return cls(
            target_dev=_xml.attr(target, "dev"),
            bus=_xml.pick(target.get("bus"), _DISK_BUSES, "disk target bus"),
            source_file=None if source is None else source.get("file"),
            driver_type="raw" if driver_type is None else _xml.pick(driver_type, _DRIVER_TYPES, "disk driver type"),
            device=_xml.pick(el.get("device", "disk"), _DISK_DEVICES, "disk device"),
            readonly=el.find("readonly") is not None,
            serial=_xml.text(el.find("serial")),
            boot_order=None if boot is None else _xml.integer(boot.get("order"), "disk boot order"),
            cache=_xml.pick(driver.get("cache", "default") if driver is not None else "default", _CACHE_MODES, "cache"),
            io=_xml.pick(driver.get("io", "default") if driver is not None else "default", _IO_MODES, "disk io"),
            iotune=None if iotune is None else IoTuneConfig.from_xml(iotune),
        )


# --- network interfaces --------------------------------------------------------------------------


@dataclass(frozen=True)
class InterfaceConfig:
    """``<interface type='network'>`` on a libvirt network. ``mac`` is lowercase, as libvirt returns it."""

    network: str
    mac: str
    model: NicModel = "virtio"
    bandwidth: BandwidthConfig | None = None
    link_state: LinkState = "up"
    target_dev: str | None = None

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac):
            raise DomainXmlError(f"interface mac {self.mac!r} is not a lowercase aa:bb:cc:dd:ee:ff address")

    def to_xml(self) -> ET.Element:
        el = _xml.new("interface", {"type": "network"})
        _xml.sub(el, "mac", {"address": self.mac})
        _xml.sub(el, "source", {"network": self.network})
        if self.bandwidth is not None:
            el.append(self.bandwidth.to_xml())
        if self.target_dev is not None:
            _xml.sub(el, "target", {"dev": self.target_dev})
        _xml.sub(el, "model", {"type": self.model})
        _xml.sub(el, "link", {"state": self.link_state})
        return el

    def to_string(self) -> str:
        """The ``<interface>`` element on one line (for ``virDomainUpdateDeviceFlags``)."""
        return ET.tostring(self.to_xml(), encoding="unicode")

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "interface")
        if el.get("type") != "network":
            raise DomainXmlError(f"interface type {el.get('type')!r} is not modelled (only 'network')")
        bandwidth = el.find("bandwidth")
        target = el.find("target")
        link = el.find("link")
        return cls(
            network=_xml.attr(_xml.child(el, "source"), "network"),
            mac=_xml.attr(_xml.child(el, "mac"), "address"),
            model=_xml.pick(_xml.attr(_xml.child(el, "model"), "type"), _NIC_MODELS, "interface model"),
            bandwidth=None if bandwidth is None else _xml.read(BandwidthConfig.from_xml, bandwidth),
            link_state="up" if link is None else _xml.pick(link.get("state"), _LINK_STATES, "interface link state"),
            target_dev=None if target is None else target.get("dev"),
        )


# --- console and display -------------------------------------------------------------------------


@dataclass(frozen=True)
class SerialConsoleConfig:
    """A pty ``<serial>`` on port 0 (the guest's ttyS0) plus the ``<console>`` aliasing it."""

    log_file: str | None = None

    def to_xml(self) -> ET.Element:
        """The ``<serial>`` element; :meth:`console_xml` gives the matching ``<console>``."""
        el = _xml.new("serial", {"type": "pty"})
        if self.log_file is not None:
            _xml.sub(el, "log", {"file": self.log_file, "append": "on"})
        _xml.sub(el, "target", {"port": 0})
        return el

    def console_xml(self) -> ET.Element:
        el = _xml.new("console", {"type": "pty"})
        _xml.sub(el, "target", {"type": "serial", "port": 0})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "serial")
        if el.get("type") != "pty":
            raise DomainXmlError(f"serial type {el.get('type')!r} is not modelled (only 'pty')")
        log = el.find("log")
        return cls(log_file=None if log is None else log.get("file"))


@dataclass(frozen=True)
class GraphicsConfig:
    """``<graphics type='vnc'>`` on an automatically chosen port, listening on one address."""

    type: GraphicsType
    listen: str = "127.0.0.1"

    def to_xml(self) -> ET.Element:
        el = _xml.new("graphics", {"type": self.type, "port": -1, "autoport": "yes", "listen": self.listen})
        _xml.sub(el, "listen", {"type": "address", "address": self.listen})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "graphics")
        listen = next((li.get("address") for li in el.findall("listen") if li.get("type") == "address"), None)
        listen = listen or el.get("listen")
        if listen is None:
            raise DomainXmlError("graphics has no listen address")
        return cls(type=_xml.pick(el.get("type"), _GRAPHICS_TYPES, "graphics type"), listen=listen)


# --- watchdog ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchdogConfig:
    """``<watchdog model='i6300esb' action='pause'/>``: a watchdog device and what QEMU does when it fires
    (``pause``: the domain is paused with reason watchdog, for the operator's VM monitoring to decide)."""

    model: WatchdogModel = "i6300esb"
    action: WatchdogAction = "pause"

    def to_xml(self) -> ET.Element:
        return _xml.new("watchdog", {"model": self.model, "action": self.action})

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "watchdog")
        return cls(
            model=_xml.pick(el.get("model"), _WATCHDOG_MODELS, "watchdog model"),
            action=_xml.pick(el.get("action", "reset"), _WATCHDOG_ACTIONS, "watchdog action"),
        )


# --- the domain ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainConfig:
    """``<domain>``: a whole libvirt domain definition.

    ``vcpus`` are the vCPUs online at boot; ``max_vcpus`` (when set, larger than ``vcpus``) is the
    most that can be hot-plugged. ``memory_kib`` is the maximum memory, ``current_memory_kib`` what the
    balloon gives the guest. ``emulator`` is written only when given. ``memballoon=False`` writes
    ``<memballoon model='none'/>``; ``rng`` adds a virtio RNG fed from ``/dev/urandom``; ``watchdog`` a
    watchdog device.
    ``<features><acpi/><apic/></features>`` is always written (graceful shutdown goes through ACPI).
    """

    name: str
    uuid: str
    owner: OwnerMetadata
    memory_kib: int
    current_memory_kib: int
    vcpus: int = 1
    max_vcpus: int | None = None
    domain_type: DomainType = "kvm"
    cpu: CpuConfig = CpuConfig()
    os: OsConfig = OsConfig()
    disks: tuple[DiskConfig, ...] = ()
    interfaces: tuple[InterfaceConfig, ...] = ()
    serial: SerialConsoleConfig | None = None
    graphics: GraphicsConfig | None = None
    cputune: CpuTuneConfig | None = None
    memtune: MemTuneConfig | None = None
    emulator: str | None = None
    on_poweroff: LifecycleAction = "destroy"
    on_reboot: LifecycleAction = "restart"
    on_crash: CrashAction = "destroy"
    memballoon: bool = True
    rng: bool = True
    watchdog: WatchdogConfig | None = None

    def __post_init__(self) -> None:
        _xml.check_uuid(self.uuid, "domain uuid")
        if not self.name or "/" in self.name:
            raise DomainXmlError(f"domain name {self.name!r} must be non-empty and contain no '/'")
        _positive(self.vcpus, "vcpus")
        if self.max_vcpus is not None and self.max_vcpus <= self.vcpus:
            raise DomainXmlError("max_vcpus must exceed vcpus (use None when they are equal)")
        _positive(self.memory_kib, "memory_kib")
        _positive(self.current_memory_kib, "current_memory_kib")
        if self.current_memory_kib > self.memory_kib:
            raise DomainXmlError("current_memory_kib cannot exceed memory_kib")
        if self.cpu.sockets is not None and self.cpu.cores is not None and self.cpu.threads is not None:
            topology = self.cpu.sockets * self.cpu.cores * self.cpu.threads
            if topology != (self.max_vcpus or self.vcpus):
                raise DomainXmlError(
                    f"cpu topology {self.cpu.sockets}x{self.cpu.cores}x{self.cpu.threads} must equal the maximum "
                    f"vCPU count {self.max_vcpus or self.vcpus}"
                )
        if self.os.boot_devices and any(d.boot_order is not None for d in self.disks):
            raise DomainXmlError("os boot_devices and per-disk boot_order cannot be used together")

    def to_xml(self) -> ET.Element:
        root = _xml.new("domain", {"type": self.domain_type})
        _xml.sub(root, "name", text=self.name)
        _xml.sub(root, "uuid", text=self.uuid)
        _xml.sub(root, "metadata").append(self.owner.to_xml())
        _xml.sub(root, "memory", {"unit": "KiB"}, self.memory_kib)
        _xml.sub(root, "currentMemory", {"unit": "KiB"}, self.current_memory_kib)
        if self.memtune is not None:
            root.append(self.memtune.to_xml())
        if self.max_vcpus is None:
            _xml.sub(root, "vcpu", text=self.vcpus)
        else:
            _xml.sub(root, "vcpu", {"current": self.vcpus}, self.max_vcpus)
        if self.cputune is not None:
            root.append(self.cputune.to_xml())
        root.append(self.os.to_xml())
        features = _xml.sub(root, "features")
        _xml.sub(features, "acpi")
        _xml.sub(features, "apic")
        if not self.cpu.is_empty:
            root.append(self.cpu.to_xml())
        _xml.sub(root, "on_poweroff", text=self.on_poweroff)
        _xml.sub(root, "on_reboot", text=self.on_reboot)
        _xml.sub(root, "on_crash", text=self.on_crash)

        devices = _xml.sub(root, "devices")
        if self.emulator is not None:
            _xml.sub(devices, "emulator", text=self.emulator)
        for disk in self.disks:
            devices.append(disk.to_xml())
        if any(d.bus == "scsi" for d in self.disks):
            # Without it libvirt picks an emulated HBA (lsilogic); virtio-scsi is what guests expect.
            _xml.sub(devices, "controller", {"type": "scsi", "index": 0, "model": "virtio-scsi"})
        for nic in self.interfaces:
            devices.append(nic.to_xml())
        if self.serial is not None:
            devices.append(self.serial.to_xml())
            devices.append(self.serial.console_xml())
        if self.graphics is not None:
            devices.append(self.graphics.to_xml())
        if self.watchdog is not None:
            devices.append(self.watchdog.to_xml())
        _xml.sub(devices, "memballoon", {"model": "virtio" if self.memballoon else "none"})
        if self.rng:
            rng = _xml.sub(devices, "rng", {"model": "virtio"})
            _xml.sub(rng, "backend", {"model": "random"}, "/dev/urandom")
        return root

    def to_string(self) -> str:
        """The domain XML, indented two spaces, without a trailing newline. Made once per instance (the
        instance is frozen): a reconcile checks it can be written and then defines it."""
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = _xml.to_string(self.to_xml())
            object.__setattr__(self, "_text", text)
        return text

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "domain")
        owner = el.find(f"metadata/{OWNER_TAG}")
        if owner is None:
            raise DomainXmlError("domain has no vdc owner metadata: not one of ours")
        memory = _kib(_xml.child(el, "memory"))
        current = el.find("currentMemory")
        vcpu = _xml.child(el, "vcpu")
        max_vcpus = _xml.integer(vcpu.text, "vcpu")
        current_vcpus = _xml.opt_integer(vcpu.get("current"), "vcpu current")
        cputune = el.find("cputune")
        memtune = el.find("memtune")
        cpu = el.find("cpu")
        devices = el.find("devices")
        if devices is None:
            devices = ET.Element("devices")
        serial = next((s for s in devices.findall("serial") if s.get("type") == "pty"), None)
        graphics = next((g for g in devices.findall("graphics") if g.get("type") in _GRAPHICS_TYPES), None)
        balloon = devices.find("memballoon")
        watchdog = next((w for w in devices.findall("watchdog") if w.get("model") in _WATCHDOG_MODELS), None)
        return cls(
            name=_xml.text(_xml.child(el, "name")) or "",
            uuid=(_xml.text(_xml.child(el, "uuid")) or "").strip(),
            owner=OwnerMetadata.from_xml(owner),
            memory_kib=memory,
            current_memory_kib=memory if current is None else _kib(current),
            vcpus=max_vcpus if current_vcpus is None else current_vcpus,
            max_vcpus=None if current_vcpus is None or current_vcpus == max_vcpus else max_vcpus,
            domain_type=_xml.pick(el.get("type"), _DOMAIN_TYPES, "domain type"),
            cpu=CpuConfig() if cpu is None else CpuConfig.from_xml(cpu),
            os=OsConfig.from_xml(_xml.child(el, "os")),
            disks=tuple(
                DiskConfig.from_xml(d)
                for d in devices.findall("disk")
                if d.get("type", "file") == "file" and d.get("device", "disk") in _DISK_DEVICES
            ),
            interfaces=tuple(
                InterfaceConfig.from_xml(i) for i in devices.findall("interface") if i.get("type") == "network"
            ),
            serial=None if serial is None else SerialConsoleConfig.from_xml(serial),
            graphics=None if graphics is None else GraphicsConfig.from_xml(graphics),
            cputune=None if cputune is None else CpuTuneConfig.from_xml(cputune),
            memtune=None if memtune is None else MemTuneConfig.from_xml(memtune),
            emulator=_xml.text(devices.find("emulator")),
            on_poweroff=_xml.pick(_xml.text(el.find("on_poweroff")) or "destroy", _LIFECYCLE_ACTIONS, "on_poweroff"),
            on_reboot=_xml.pick(_xml.text(el.find("on_reboot")) or "restart", _LIFECYCLE_ACTIONS, "on_reboot"),
            on_crash=_xml.pick(_xml.text(el.find("on_crash")) or "destroy", _CRASH_ACTIONS, "on_crash"),
            memballoon=balloon is not None and balloon.get("model") != "none",
            rng=any(
                r.get("model") == "virtio" and b.get("model") == "random"
                for r in devices.findall("rng")
                for b in r.findall("backend")
            ),
            watchdog=None if watchdog is None else WatchdogConfig.from_xml(watchdog),
        )

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls.from_xml(_xml.parse(text))


__all__ = [
    "IOTUNE_LIMITS",
    "OWNER_NS",
    "BandwidthConfig",
    "BandwidthLimitConfig",
    "CpuConfig",
    "CpuTuneConfig",
    "DiskConfig",
    "DomainConfig",
    "DomainXmlError",
    "GraphicsConfig",
    "InterfaceConfig",
    "IoTuneConfig",
    "OsConfig",
    "OwnerMetadata",
    "SerialConsoleConfig",
    "WatchdogConfig",
    "owner_from_domain_xml",
]
