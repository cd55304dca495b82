"""Datacenter metrics yielded at scrape time from what the operator already holds: the object caches
(Host, StoragePool, VirtualSwitch and VirtualMachine bodies with their status), the latest VM
stats snapshot and the measured demand (``vdc.metrics.demand``), when it is tracked. Nothing here
calls libvirt or the API server; an object or VM that went away simply yields no series at the next
scrape.

``families`` is pure (bodies and stats in, metric families out); ``DatacenterCollector`` binds it to
live sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vdc.api.quantity import to_bytes, to_decimal
from vdc.cluster.requests import NOTHING, Requested
from vdc.metrics.demand import VmDemand
from vdc.metrics.vmstats import VmStats

Body = dict[str, Any]


@dataclass(frozen=True)
class Spec:
    name: str
    doc: str
    labels: tuple[str, ...]
    type: Literal["gauge", "counter"] = "gauge"
    field: str | None = None
    """For per-VM metrics: the ``VmStats`` attribute that holds the value."""

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.doc, labels=self.labels)
        return GaugeMetricFamily(self.name, self.doc, labels=self.labels)


H = ("host",)
P = ("pool", "host")
S = ("switch",)
V = ("namespace", "name", "host")
INFO = {
    "hostname": "hostname",
    "libvirt_version": "libvirtVersion",
    "hypervisor": "hypervisor",
    "hypervisor_version": "hypervisorVersion",
}
"""``vdc_host_info`` label -> Host status field."""
PHASE = ("host", "phase")

SPECS = [
    Spec("vdc_host_ready", "1 when the Host is Ready (its libvirt answers), else 0", H),
    Spec("vdc_host_maintenance", "1 when the Host is cordoned (spec.maintenance)", H),
    Spec("vdc_host_info", "Host facts as labels (value 1)", ("host", *INFO)),
    Spec("vdc_host_capacity_cpus", "Host CPUs", H),
    Spec("vdc_host_capacity_memory_bytes", "Host memory", H),
    Spec("vdc_host_allocatable_cpus", "vCPUs offered to VMs (capacity less reserved, times overcommit)", H),
    Spec("vdc_host_allocatable_memory_bytes", "Memory offered to VMs (capacity less reserved, times overcommit)", H),
    Spec("vdc_host_allocated_cpus", "vCPUs the VMs placed on the Host ask for", H),
    Spec("vdc_host_allocated_memory_bytes", "Memory the VMs placed on the Host ask for", H),
    Spec("vdc_host_reservable_cpus", "CPU VMs' QoS reservations may guarantee (capacity less reserved)", H),
    Spec("vdc_host_reservable_memory_bytes", "Memory VMs' QoS reservations may guarantee", H),
    Spec("vdc_host_reserved_cpus", "CPU the VMs placed on the Host reserve (spec.qos.cpu.reservation)", H),
    Spec("vdc_host_reserved_memory_bytes", "Memory the VMs placed on the Host reserve", H),
    Spec("vdc_host_domains", "Domains on the Host (total; managed = ours; running = ours running)", ("host", "kind")),
    Spec(
        "vdc_host_orphans",
        "Our domains and volumes on the Host whose VirtualMachine no longer exists (kind = domain, volume); "
        "removed only when asked (vdc gc --host, annotation vdc.dev/remove-orphans)",
        ("host", "kind"),
    ),
    Spec("vdc_virtualmachines", "VirtualMachines by namespace, host (empty: unplaced), phase", ("namespace", *PHASE)),
    Spec("vdc_storagepool_ready", "1 when the StoragePool is Ready, else 0", ("pool",)),
    Spec("vdc_storagepool_state", "The pool's state on a host (value 1)", ("pool", "host", "state")),
    Spec("vdc_storagepool_capacity_bytes", "Pool capacity on a host", P),
    Spec("vdc_storagepool_allocation_bytes", "Pool allocation on a host", P),
    Spec("vdc_storagepool_available_bytes", "Pool space available to VMs on a host (less reserved)", P),
    Spec("vdc_storagepool_volumes", "Volumes this operator created in the pool on a host", P),
    Spec("vdc_virtualswitch_ready", "1 when the VirtualSwitch is Ready, else 0", S),
    Spec("vdc_virtualswitch_state", "The switch's network state on a host (value 1)", ("switch", "host", "state")),
    Spec("vdc_virtualswitch_addresses_allocated", "Addresses the switch's IPAM has handed out", S),
    Spec("vdc_virtualswitch_addresses_free", "Addresses left in the switch's range", S),
    Spec("vdc_vm_state", "The VM's libvirt domain state (value 1)", (*V, "state")),
    Spec("vdc_vm_vcpus", "vCPUs of the VM's domain", V, field="vcpus"),
    Spec("vdc_vm_memory_bytes", "Memory of the VM's domain (current balloon)", V, field="memory_bytes"),
    Spec("vdc_vm_cpu_seconds_total", "CPU time the VM's domain used", V, "counter", "cpu_seconds"),
    Spec("vdc_vm_disk_read_bytes_total", "Bytes read by the VM's disks", V, "counter", "disk_read_bytes"),
    Spec("vdc_vm_disk_write_bytes_total", "Bytes written by the VM's disks", V, "counter", "disk_write_bytes"),
    Spec("vdc_vm_disk_read_ops_total", "Read requests of the VM's disks", V, "counter", "disk_reads"),
    Spec("vdc_vm_disk_write_ops_total", "Write requests of the VM's disks", V, "counter", "disk_writes"),
    Spec("vdc_vm_disk_capacity_bytes", "Capacity of the VM's disks", V, field="disk_capacity_bytes"),
    Spec("vdc_vm_network_receive_bytes_total", "Bytes received by the VM's NICs", V, "counter", "net_rx_bytes"),
    Spec("vdc_vm_network_transmit_bytes_total", "Bytes sent by the VM's NICs", V, "counter", "net_tx_bytes"),
    Spec("vdc_vm_network_receive_packets_total", "Packets received by the VM's NICs", V, "counter", "net_rx_packets"),
    Spec("vdc_vm_network_transmit_packets_total", "Packets sent by the VM's NICs", V, "counter", "net_tx_packets"),
]
DEMAND_SPECS = [
    Spec("vdc_vm_cpu_demand_cores", "The VM's measured CPU demand in cores (cpu time rate, smoothed)", V),
    Spec("vdc_vm_memory_demand_bytes", "The VM's measured memory demand (its balloon's current size)", V),
    Spec("vdc_host_cpu_demand_cores", "The measured CPU demand of the VMs running on the Host, in cores", H),
    Spec("vdc_host_memory_demand_bytes", "The measured memory demand of the VMs running on the Host", H),
]
"""Families only when demand is tracked (the collector was given it)."""
VM_FIELDS = {spec.name: spec.field for spec in SPECS if spec.field is not None}
"""Per-VM metric -> the ``VmStats`` attribute it reports."""


def _ready(status: Body) -> float:
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return 1.0 if cond is not None and cond.get("status") == "True" else 0.0


def _cores(value: Any) -> float | None:
    """A CPU quantity (``1500m``, ``2``) in cores."""
    if value is None:
        return None
    try:
        return float(to_decimal(value))
    except (ValueError, TypeError, ArithmeticError):
        return None


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return to_bytes(value)
    except (ValueError, TypeError, ArithmeticError):
        return None


def families(
    hosts: Iterable[Body],
    pools: Iterable[Body],
    switches: Iterable[Body],
    vms: Iterable[Body],
    stats: Iterable[VmStats],
    allocated: Mapping[str, Requested] | None = None,
    demand: Iterable[VmDemand] | None = None,
) -> list[Metric]:
    """Every datacenter metric family (empty families included) from object bodies and VM stats.
    ``allocated``: the cluster's allocation ledger (host -> what its VMs request; the same figures the
    scheduler and the Host status use); None: what each Host's status last said. ``demand``: the VMs'
    measured demand (the ``DEMAND_SPECS`` families; every Host has its sums, 0 without VMs); None: not
    tracked, no such families."""
    out = {spec.name: spec.family() for spec in (SPECS if demand is None else [*SPECS, *DEMAND_SPECS])}

    def add(name: str, labels: Iterable[str], value: float | None) -> None:
        if value is not None:
            out[name].add_metric(list(labels), value)

    host_names = []
    for body in hosts:
        host, status = body["metadata"]["name"], body.get("status") or {}
        host_names.append(host)
        add("vdc_host_ready", [host], _ready(status))
        add("vdc_host_maintenance", [host], 1.0 if (body.get("spec") or {}).get("maintenance") else 0.0)
        if status.get("hostname"):
            info = [status.get(field) or "" for field in INFO.values()]
            add("vdc_host_info", [host, *info], 1.0)
        for part in ("capacity", "allocatable") if allocated is not None else ("capacity", "allocatable", "allocated"):
            res = status.get(part) or {}
            add(f"vdc_host_{part}_cpus", [host], res.get("cpus"))
            add(f"vdc_host_{part}_memory_bytes", [host], _bytes(res.get("memory")))
        reservable = status.get("reservable") or {}
        add("vdc_host_reservable_cpus", [host], _cores(reservable.get("cpu")))
        add("vdc_host_reservable_memory_bytes", [host], _bytes(reservable.get("memory")))
        if allocated is not None:
            used = allocated.get(host, NOTHING)
            add("vdc_host_allocated_cpus", [host], used.vcpus)
            add("vdc_host_allocated_memory_bytes", [host], used.memory_bytes)
            add("vdc_host_reserved_cpus", [host], used.cpu_reservation_millis / 1000)
            add("vdc_host_reserved_memory_bytes", [host], used.memory_reservation_bytes)
        else:
            reserved = status.get("reserved") or {}
            add("vdc_host_reserved_cpus", [host], _cores(reserved.get("cpu")))
            add("vdc_host_reserved_memory_bytes", [host], _bytes(reserved.get("memory")))
        for kind, count in (status.get("domains") or {}).items():
            add("vdc_host_domains", [host, kind], count)
        if (orphans := status.get("orphans")) is not None:
            add("vdc_host_orphans", [host, "domain"], orphans.get("domainCount", 0))
            add("vdc_host_orphans", [host, "volume"], orphans.get("volumeCount", 0))

    placed: Counter[tuple[str, str, str]] = Counter()
    for body in vms:
        status = body.get("status") or {}
        placed[body["metadata"].get("namespace") or "", status.get("host") or "", status.get("phase") or ""] += 1
    for labels, count in sorted(placed.items()):
        add("vdc_virtualmachines", labels, count)

    for body in pools:
        pool, status = body["metadata"]["name"], body.get("status") or {}
        add("vdc_storagepool_ready", [pool], _ready(status))
        for per_host in status.get("hosts") or []:
            where = [pool, per_host.get("host", "")]
            add("vdc_storagepool_state", [*where, per_host.get("state", "Unknown")], 1.0)
            add("vdc_storagepool_capacity_bytes", where, _bytes(per_host.get("capacity")))
            add("vdc_storagepool_allocation_bytes", where, _bytes(per_host.get("allocation")))
            add("vdc_storagepool_available_bytes", where, _bytes(per_host.get("available")))
            add("vdc_storagepool_volumes", where, per_host.get("volumes"))

    for body in switches:
        switch, status = body["metadata"]["name"], body.get("status") or {}
        add("vdc_virtualswitch_ready", [switch], _ready(status))
        for per_host in status.get("hosts") or []:
            add("vdc_virtualswitch_state", [switch, per_host.get("host", ""), per_host.get("state", "Unknown")], 1.0)
        add("vdc_virtualswitch_addresses_allocated", [switch], len(status.get("allocations") or []))
        add("vdc_virtualswitch_addresses_free", [switch], status.get("freeAddresses"))

    for vm in stats:
        vm_labels = [vm.namespace, vm.name, vm.host]
        add("vdc_vm_state", [*vm_labels, vm.state], 1.0)
        for name, attr in VM_FIELDS.items():
            add(name, vm_labels, getattr(vm, attr))

    if demand is not None:
        host_cpu = dict.fromkeys(host_names, 0.0)
        host_memory = dict.fromkeys(host_cpu, 0)
        for vm_demand in demand:
            vm_labels = [vm_demand.namespace, vm_demand.name, vm_demand.host]
            add("vdc_vm_cpu_demand_cores", vm_labels, vm_demand.cpu_cores)
            add("vdc_vm_memory_demand_bytes", vm_labels, vm_demand.memory_bytes)
            host_cpu[vm_demand.host] = host_cpu.get(vm_demand.host, 0.0) + vm_demand.cpu_cores
            host_memory[vm_demand.host] = host_memory.get(vm_demand.host, 0) + (vm_demand.memory_bytes or 0)
        for host, cores in sorted(host_cpu.items()):
            add("vdc_host_cpu_demand_cores", [host], cores)
            add("vdc_host_memory_demand_bytes", [host], host_memory[host])
    return list(out.values())


class DatacenterCollector(Collector):
    """Yields ``families`` from live sources at scrape time. Safe to run off the event loop: the
    caches are copied (``ObjectCache`` iterates over a copy) and the stats snapshot is immutable."""

    def __init__(
        self,
        hosts: Iterable[Body],
        pools: Iterable[Body],
        switches: Iterable[Body],
        vms: Iterable[Body],
        stats: Callable[[], Iterable[VmStats]],
        ledger: Callable[[], Mapping[str, Requested]] | None = None,
        demand: Callable[[], Iterable[VmDemand]] | None = None,
    ) -> None:
        """``ledger``: the cluster's allocation ledger (``ClusterView.ledger``); ``demand``: the VMs'
        measured demand (``StatsRefresher.current_demand``), None: no demand families."""
        self._hosts, self._pools, self._switches, self._vms, self._stats = hosts, pools, switches, vms, stats
        self._ledger, self._demand = ledger, demand

    def describe(self) -> Iterator[Metric]:
        specs = SPECS if self._demand is None else [*SPECS, *DEMAND_SPECS]
        return iter([spec.family() for spec in specs])

    def collect(self) -> Iterator[Metric]:
        allocated = self._ledger() if self._ledger is not None else None
        demand = self._demand() if self._demand is not None else None
        return iter(families(self._hosts, self._pools, self._switches, self._vms, self._stats(), allocated, demand))
