"""VM stats (``vdc.metrics.vmstats`` and ``refresher.StatsRefresher``): libvirt's flat
``getAllDomainStats`` dictionaries -> typed ``VmStats`` of our VMs only (UUID = the VM's uid and name
``<namespace>_<name>``), and one real bulk call through ``HostConnection.call`` against libvirt's
in-process test driver (which reports only the state)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from vdc.cluster.requests import requested
from vdc.kube.cache import ObjectCache
from vdc.libvirt.connection import ConnectionManager
from vdc.metrics import REGISTRY
from vdc.metrics.refresher import StatsRefresher
from vdc.metrics.vmstats import DomainRecord, parse_stats, read_domain_stats, split_domain_name, vm_stats

UID = "0f3c9a52-1d55-4a4b-9b65-0a6e7f1d2c3b"

# What QEMU's driver returns for a running VM with two disks and one NIC (trimmed).
QEMU_STATS: dict[str, Any] = {
    "state.state": libvirt.VIR_DOMAIN_RUNNING,
    "state.reason": 1,
    "cpu.time": 12_500_000_000,
    "cpu.user": 9_000_000_000,
    "cpu.system": 3_000_000_000,
    "balloon.current": 98304,
    "balloon.maximum": 131072,
    "vcpu.current": 2,
    "vcpu.maximum": 4,
    "net.count": 1,
    "net.0.name": "vnet3",
    "net.0.rx.bytes": 4096,
    "net.0.rx.pkts": 40,
    "net.0.tx.bytes": 2048,
    "net.0.tx.pkts": 21,
    "block.count": 2,
    "block.0.name": "vda",
    "block.0.rd.reqs": 100,
    "block.0.rd.bytes": 409600,
    "block.0.wr.reqs": 10,
    "block.0.wr.bytes": 40960,
    "block.0.capacity": 2 * 2**30,
    "block.1.name": "sda",
    "block.1.rd.reqs": 5,
    "block.1.rd.bytes": 2048,
    "block.1.capacity": 372736,
}


def test_qemu_stats_become_typed_sums() -> None:
    vm = parse_stats("tenant-a", "web", "hv1", UID, QEMU_STATS)
    assert (vm.namespace, vm.name, vm.host, vm.uid) == ("tenant-a", "web", "hv1", UID)
    assert vm.state == "running" and vm.running
    assert vm.vcpus == 2
    assert vm.memory_bytes == 98304 * 1024
    assert vm.cpu_seconds == pytest.approx(12.5)
    assert (vm.disk_read_bytes, vm.disk_reads) == (409600 + 2048, 105)
    assert (vm.disk_write_bytes, vm.disk_writes) == (40960, 10)  # sda reports no writes: not a zero
    assert vm.disk_capacity_bytes == 2 * 2**30 + 372736
    assert (vm.net_rx_bytes, vm.net_tx_bytes, vm.net_rx_packets, vm.net_tx_packets) == (4096, 2048, 40, 21)


def test_what_a_driver_does_not_report_stays_unknown() -> None:
    vm = parse_stats("ns", "vm", "h", UID, {"state.state": libvirt.VIR_DOMAIN_SHUTOFF, "state.reason": 1})
    assert vm.state == "shutoff" and not vm.running
    assert vm.vcpus is vm.memory_bytes is vm.cpu_seconds is vm.disk_read_bytes is vm.net_rx_bytes is None


def test_balloon_maximum_when_current_is_missing() -> None:
    assert parse_stats("ns", "vm", "h", UID, {"balloon.maximum": 1024}).memory_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("state", "name", "running"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, "running", True),
        (libvirt.VIR_DOMAIN_BLOCKED, "blocked", True),
        (libvirt.VIR_DOMAIN_SHUTDOWN, "shutdown", True),
        (libvirt.VIR_DOMAIN_PAUSED, "paused", False),
        (libvirt.VIR_DOMAIN_CRASHED, "crashed", False),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, "pmsuspended", False),
        (99, "nostate", False),
    ],
)
def test_states(state: int, name: str, running: bool) -> None:
    vm = parse_stats("ns", "vm", "h", UID, {"state.state": state})
    assert (vm.state, vm.running) == (name, running)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [("tenant-a_web", ("tenant-a", "web")), ("web", None), ("_web", None), ("ns_", None), ("a_b_c", None)],
)
def test_domain_names(domain: str, expected: tuple[str, str] | None) -> None:
    assert split_domain_name(domain) == expected


def test_only_our_domains_are_reported() -> None:
    other = str(uuid.uuid4())
    owners = {UID: ("tenant-a", "web"), other: ("tenant-b", "db")}
    records = [
        DomainRecord("tenant-a_web", UID, QEMU_STATS),
        DomainRecord("someone-elses", str(uuid.uuid4()), QEMU_STATS),  # not a VM we know
        DomainRecord("tenant-b_impostor", other, QEMU_STATS),  # a known uid under another name
    ]
    stats = vm_stats("hv1", records, owners.get)
    assert [(s.namespace, s.name, s.host) for s in stats] == [("tenant-a", "web", "hv1")]


def test_requested_from_the_vm_object() -> None:
    body = {
        "spec": {"cpu": {"count": 3}, "memory": {"size": "256Mi"}},
        "status": {"disks": [{"name": "root", "capacity": "1Gi"}, {"name": "seed", "capacity": "364Ki"}, {}]},
    }
    got = requested(body)
    assert (got.vcpus, got.memory_bytes, got.disk_bytes) == (3, 256 * 2**20, 2**30 + 364 * 1024)


# --- libvirt's test driver, for real ----------------------------------------------------------------


def _domain_xml(name: str, uid: str) -> str:
    return (
        f"<domain type='test'><name>{name}</name><uuid>{uid}</uuid><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )


@pytest.fixture
def test_domain() -> Iterator[tuple[str, str]]:
    """A running domain named and identified as the operator would, on the shared test:///default."""
    conn = libvirt.open("test:///default")
    uid = str(uuid.uuid4())
    name = f"metrics-{uid[:8]}_vm"
    dom = conn.defineXML(_domain_xml(name, uid))
    dom.create()
    try:
        yield name, uid
    finally:
        dom.destroy()
        dom.undefine()
        conn.close()


def test_one_bulk_call_on_the_test_driver(test_domain: tuple[str, str]) -> None:
    name, uid = test_domain
    conn = libvirt.open("test:///default")
    try:
        records = read_domain_stats(conn)
    finally:
        conn.close()
    mine = [r for r in records if r.uuid == uid]
    assert [r.name for r in mine] == [name]
    namespace, vm = name.split("_")
    stats = vm_stats("t", records, {uid: (namespace, vm)}.get)
    assert [(s.name, s.state, s.running) for s in stats] == [("vm", "running", True)]


@pytest.mark.asyncio(loop_scope="session")  # libvirt's event loop is one per process (see test_host_connection)
async def test_refresher_through_host_connection(test_domain: tuple[str, str]) -> None:
    name, uid = test_domain
    namespace, vm = name.split("_")
    vms = ObjectCache()
    vms.upsert({"metadata": {"namespace": namespace, "name": vm, "uid": uid}, "spec": {"cpu": {"count": 1}}})
    connections = ConnectionManager()  # no event callbacks: nothing to dispatch
    host = f"stats-{uid[:8]}"
    conn = await connections.ensure(host, "test:///default")
    try:
        for _ in range(500):
            if conn.connected and conn.holds_domain(uid) is not None:  # its domains listed (a call too)
                break
            await asyncio.sleep(0.01)
        assert conn.connected
        calls = REGISTRY.get_sample_value("vdc_libvirt_call_duration_seconds_count", {"host": host}) or 0.0
        refresher = StatsRefresher(connections, vms, interval=15.0)
        assert refresher.current() == []
        await refresher.refresh()
        got = refresher.current()
        assert [(s.namespace, s.name, s.host, s.state) for s in got] == [(namespace, vm, host, "running")]
        # the one bulk call went through HostConnection.call (and so its instruments)
        assert REGISTRY.get_sample_value("vdc_libvirt_call_duration_seconds_count", {"host": host}) == calls + 1
        vms.remove({"metadata": {"namespace": namespace, "name": vm}})
        assert refresher.current() == []  # a VM that went away has no series, even before the next refresh
    finally:
        await connections.close_all()
