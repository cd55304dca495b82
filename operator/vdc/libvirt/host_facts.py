"""What a host is (CPUs, memory, versions, hypervisor), read in one go on a live connection."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    host_uuid: str
    cpus: int
    memory_bytes: int
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    domain_types: frozenset[str]
    """Domain types the host can run for x86_64 (``kvm`` only with hardware virtualisation)."""

    def domain_type(self, virtualization: str = "Auto") -> str:
        """The domain type for guests: ``virtualization`` is Host.spec.virtualization (Auto/KVM/Emulated)."""
        if "test" in self.domain_types and not self.domain_types & {"kvm", "qemu"}:
            return "test"  # libvirt's test driver
        if virtualization == "KVM" or (virtualization == "Auto" and "kvm" in self.domain_types):
            return "kvm"
        return "qemu"


def parse_capabilities(xml: str) -> tuple[str, frozenset[str]]:
    """Host UUID and the x86_64 domain types from a capabilities document."""
    root = ET.fromstring(xml)
    host_uuid = root.findtext("host/uuid", default="")
    types: set[str] = set()
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is None or arch.get("name") not in ("x86_64", "i686"):
            continue
        for domain in arch.findall("domain"):
            if domain.get("type"):
                types.add(str(domain.get("type")))
    return host_uuid, frozenset(types)


def read_host_facts(conn: libvirt.virConnect) -> HostFacts:
    """Blocking: call through HostConnection.call."""
    info = conn.getInfo()
    host_uuid, types = parse_capabilities(conn.getCapabilities())
    try:
        hypervisor_version = _version(conn.getVersion())
    except libvirt.libvirtError:
        hypervisor_version = ""
    return HostFacts(
        hostname=conn.getHostname(),
        host_uuid=host_uuid,
        cpus=int(info[2]),
        memory_bytes=int(info[1]) * 1024 * 1024,
        libvirt_version=_version(conn.getLibVersion()),
        hypervisor=conn.getType(),
        hypervisor_version=hypervisor_version,
        domain_types=types,
    )
