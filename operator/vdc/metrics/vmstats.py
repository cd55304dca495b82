"""Per-VM statistics from one bulk ``getAllDomainStats`` call per host.

``read_domain_stats`` is the only blocking part (run it through ``HostConnection.call``); the rest is
pure: libvirt's flat stats dictionaries become typed ``VmStats`` of the VMs we own, found by domain
UUID (= the VirtualMachine's ``metadata.uid``). Statistics a driver does not report stay ``None``
(libvirt's test driver reports only the state) and produce no series.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
# Do not wait for a domain that is busy with a job (a migration, say): report what can be read now.
STATS_FLAGS = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)

STATE_NAMES: dict[int, str] = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
RUNNING_STATES = frozenset({"running", "blocked", "shutdown"})
"""States in which a domain holds its resources and is metered ("shutdown": being shut down)."""


@dataclass(frozen=True)
class DomainRecord:
    """One domain of one ``getAllDomainStats`` answer, as plain data."""

    name: str
    uuid: str
    stats: Mapping[str, Any]


def read_domain_stats(conn: libvirt.virConnect) -> list[DomainRecord]:
    """Every domain's statistics in one call (blocking: run through ``HostConnection.call``)."""
    return [
        DomainRecord(dom.name(), dom.UUIDString(), dict(stats))
        for dom, stats in conn.getAllDomainStats(STATS_GROUPS, STATS_FLAGS)
    ]


@dataclass(frozen=True)
class VmStats:
    """What one VM's domain reports, labelled with the VM it belongs to."""

    namespace: str
    name: str
    host: str
    uid: str
    state: str
    vcpus: int | None = None
    memory_bytes: int | None = None
    cpu_seconds: float | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    disk_reads: int | None = None
    disk_writes: int | None = None
    disk_capacity_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    net_rx_packets: int | None = None
    net_tx_packets: int | None = None

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


def _int(stats: Mapping[str, Any], key: str) -> int | None:
    value = stats.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _device_sum(stats: Mapping[str, Any], group: str, field: str) -> int | None:
    """The sum of ``<group>.<i>.<field>`` over the group's devices; None when no device reports it."""
    count = _int(stats, f"{group}.count") or 0
    values = [v for i in range(count) if (v := _int(stats, f"{group}.{i}.{field}")) is not None]
    return sum(values) if values else None


def parse_stats(namespace: str, name: str, host: str, uid: str, stats: Mapping[str, Any]) -> VmStats:
    """libvirt's flat stats of one domain -> ``VmStats`` (sums over disks and NICs)."""
    state_code = _int(stats, "state.state")
    cpu_ns = _int(stats, "cpu.time")
    balloon_kib = _int(stats, "balloon.current")
    if balloon_kib is None:
        balloon_kib = _int(stats, "balloon.maximum")
    return VmStats(
        namespace=namespace,
        name=name,
        host=host,
        uid=uid,
        state=STATE_NAMES.get(state_code, "nostate") if state_code is not None else "nostate",
        vcpus=_int(stats, "vcpu.current"),
        memory_bytes=balloon_kib * 1024 if balloon_kib is not None else None,
        cpu_seconds=cpu_ns / 1e9 if cpu_ns is not None else None,
        disk_read_bytes=_device_sum(stats, "block", "rd.bytes"),
        disk_write_bytes=_device_sum(stats, "block", "wr.bytes"),
        disk_reads=_device_sum(stats, "block", "rd.reqs"),
        disk_writes=_device_sum(stats, "block", "wr.reqs"),
        disk_capacity_bytes=_device_sum(stats, "block", "capacity"),
        net_rx_bytes=_device_sum(stats, "net", "rx.bytes"),
        net_tx_bytes=_device_sum(stats, "net", "tx.bytes"),
        net_rx_packets=_device_sum(stats, "net", "rx.pkts"),
        net_tx_packets=_device_sum(stats, "net", "tx.pkts"),
    )


def split_domain_name(domain: str) -> tuple[str, str] | None:
    """``<namespace>_<name>`` -> (namespace, name); None for a name we would not have given."""
    namespace, sep, name = domain.partition("_")
    return (namespace, name) if sep and namespace and name and "_" not in name else None


Owner = Callable[[str], "tuple[str, str] | None"]
"""domain UUID -> (namespace, name) of the VirtualMachine that owns it, or None."""


def vm_stats(host: str, records: Sequence[DomainRecord], owner: Owner) -> list[VmStats]:
    """The records of our VMs' domains: the UUID must be a known VM's uid and the name its
    ``<namespace>_<name>`` (anything else on the host is not ours and not reported)."""
    out = []
    for record in records:
        vm = owner(record.uuid)
        if vm is None or split_domain_name(record.name) != vm:
            continue
        out.append(parse_stats(vm[0], vm[1], host, record.uuid, record.stats))
    return out
