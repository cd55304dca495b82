"""What `/metrics` exposes: the datacenter collector's families from object bodies and VM stats, the
operator's instruments at their choke points (work queue, metering), the text format as promtool
lints it, the Grafana dashboard's metric names, the HTTP server and the `vdc run` flags."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import rig
from vdc.cli.main import build_parser
from vdc.instruments import RECONCILE_ERRORS, child
from vdc.metrics import REGISTRY, server
from vdc.metrics.collectors import SPECS, DatacenterCollector, families
from vdc.metrics.metering import Usage
from vdc.metrics.refresher import record_usage
from vdc.metrics.vmstats import VmStats
from vdc.workqueue import WorkQueue

DASHBOARD = rig.REPO / "charts" / "vdc-operator" / "dashboards" / "vdc-overview.json"
GIB = 2**30


def _cond(status: str) -> list[dict[str, str]]:
    return [
        {"type": "Ready", "status": status, "reason": "R", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}
    ]


HOSTS: list[dict[str, Any]] = [
    {
        "metadata": {"name": "hv1"},
        "spec": {"uri": "qemu+ssh://root@hv1/system", "maintenance": True},
        "status": {
            "conditions": _cond("True"),
            "phase": "Maintenance",
            "hostname": "hv1.example.com",
            "libvirtVersion": "9.0.0",
            "hypervisor": "QEMU",
            "hypervisorVersion": "7.2.0",
            "capacity": {"cpus": 16, "memory": "32768Mi"},
            "allocatable": {"cpus": 64, "memory": "30720Mi"},
            "allocated": {"cpus": 3, "memory": "352Mi"},
            "reservable": {"cpu": "16", "memory": "32768Mi"},
            "reserved": {"cpu": "1500m", "memory": "256Mi"},
            "domains": {"total": 4, "managed": 2, "running": 1},
            "orphans": {"domainCount": 1, "volumeCount": 0},
        },
    },
    {"metadata": {"name": "hv2"}, "spec": {"uri": "qemu+ssh://root@hv2/system"}, "status": {"phase": "Connecting"}},
]
POOLS: list[dict[str, Any]] = [
    {
        "metadata": {"name": "fast"},
        "status": {
            "conditions": _cond("True"),
            "hosts": [
                {
                    "host": "hv1",
                    "state": "Running",
                    "capacity": "100Gi",
                    "allocation": "40Gi",
                    "available": "50Gi",
                    "volumes": 3,
                },
                {"host": "hv2", "state": "Pending"},
            ],
        },
    }
]
SWITCHES: list[dict[str, Any]] = [
    {
        "metadata": {"name": "lan"},
        "status": {
            "conditions": _cond("False"),
            "hosts": [{"host": "hv1", "state": "Active", "bridge": "vdcbr-1a2b3c"}],
            "allocations": [{"ip": "10.0.0.2", "mac": "52:54:00:00:00:01", "owner": "a/web/eth0"}],
            "freeAddresses": 250,
        },
    }
]
VMS: list[dict[str, Any]] = [
    {"metadata": {"namespace": "tenant-a", "name": "web"}, "status": {"host": "hv1", "phase": "Running"}},
    {"metadata": {"namespace": "tenant-a", "name": "db"}, "status": {"host": "hv1", "phase": "Running"}},
    {"metadata": {"namespace": "tenant-b", "name": "new"}, "status": {"phase": "Scheduling"}},
    {"metadata": {"namespace": "tenant-b", "name": "fresh"}},
]
STATS = [
    VmStats("tenant-a", "web", "hv1", "u1", "running", vcpus=2, memory_bytes=GIB, cpu_seconds=12.5,
            disk_read_bytes=411648, disk_write_bytes=40960, disk_reads=105, disk_writes=10,
            disk_capacity_bytes=2 * GIB, net_rx_bytes=4096, net_tx_bytes=2048, net_rx_packets=40, net_tx_packets=21),
    VmStats("tenant-a", "db", "hv1", "u2", "shutoff"),
]  # fmt: skip


@pytest.fixture
def populated() -> Iterator[CollectorRegistry]:
    """The operator's own registry with the datacenter collector attached, as `vdc run` has it."""
    collector = DatacenterCollector(HOSTS, POOLS, SWITCHES, VMS, lambda: STATS)
    REGISTRY.register(collector)
    try:
        yield REGISTRY
    finally:
        REGISTRY.unregister(collector)


def test_host_pool_switch_and_vm_samples(populated: CollectorRegistry) -> None:
    v = populated.get_sample_value
    assert v("vdc_host_ready", {"host": "hv1"}) == 1.0
    assert v("vdc_host_ready", {"host": "hv2"}) == 0.0
    assert v("vdc_host_maintenance", {"host": "hv1"}) == 1.0
    assert v("vdc_host_maintenance", {"host": "hv2"}) == 0.0
    info = {"host": "hv1", "hostname": "hv1.example.com", "libvirt_version": "9.0.0", "hypervisor": "QEMU",
            "hypervisor_version": "7.2.0"}  # fmt: skip
    assert v("vdc_host_info", info) == 1.0
    assert v("vdc_host_capacity_cpus", {"host": "hv1"}) == 16
    assert v("vdc_host_capacity_memory_bytes", {"host": "hv1"}) == 32 * GIB
    assert v("vdc_host_allocatable_cpus", {"host": "hv1"}) == 64
    assert v("vdc_host_allocated_memory_bytes", {"host": "hv1"}) == 352 * 2**20
    assert v("vdc_host_reservable_cpus", {"host": "hv1"}) == 16
    assert v("vdc_host_reservable_memory_bytes", {"host": "hv1"}) == 32 * GIB
    assert v("vdc_host_reserved_cpus", {"host": "hv1"}) == 1.5
    assert v("vdc_host_reserved_memory_bytes", {"host": "hv1"}) == 256 * 2**20
    assert v("vdc_host_capacity_cpus", {"host": "hv2"}) is None  # never connected: unknown, not zero
    assert v("vdc_host_reservable_cpus", {"host": "hv2"}) is None
    assert v("vdc_host_domains", {"host": "hv1", "kind": "running"}) == 1
    assert v("vdc_host_orphans", {"host": "hv1", "kind": "domain"}) == 1
    assert v("vdc_host_orphans", {"host": "hv1", "kind": "volume"}) == 0
    assert v("vdc_virtualmachines", {"namespace": "tenant-a", "host": "hv1", "phase": "Running"}) == 2
    assert v("vdc_virtualmachines", {"namespace": "tenant-b", "host": "", "phase": "Scheduling"}) == 1
    assert v("vdc_virtualmachines", {"namespace": "tenant-b", "host": "", "phase": ""}) == 1
    assert v("vdc_storagepool_ready", {"pool": "fast"}) == 1.0
    assert v("vdc_storagepool_state", {"pool": "fast", "host": "hv2", "state": "Pending"}) == 1.0
    assert v("vdc_storagepool_available_bytes", {"pool": "fast", "host": "hv1"}) == 50 * GIB
    assert v("vdc_storagepool_available_bytes", {"pool": "fast", "host": "hv2"}) is None
    assert v("vdc_storagepool_volumes", {"pool": "fast", "host": "hv1"}) == 3
    assert v("vdc_virtualswitch_ready", {"switch": "lan"}) == 0.0
    assert v("vdc_virtualswitch_state", {"switch": "lan", "host": "hv1", "state": "Active"}) == 1.0
    assert v("vdc_virtualswitch_addresses_allocated", {"switch": "lan"}) == 1
    assert v("vdc_virtualswitch_addresses_free", {"switch": "lan"}) == 250
    web = {"namespace": "tenant-a", "name": "web", "host": "hv1"}
    db = {"namespace": "tenant-a", "name": "db", "host": "hv1"}
    assert v("vdc_vm_state", {**web, "state": "running"}) == 1.0
    assert v("vdc_vm_state", {**db, "state": "shutoff"}) == 1.0
    assert v("vdc_vm_cpu_seconds_total", web) == 12.5
    assert v("vdc_vm_memory_bytes", web) == GIB
    assert v("vdc_vm_disk_read_ops_total", web) == 105
    assert v("vdc_vm_network_transmit_packets_total", web) == 21
    assert v("vdc_vm_cpu_seconds_total", db) is None  # not reported by the driver: no series


def test_a_vm_gone_from_the_snapshot_leaves_no_series() -> None:
    names = {s.labels.get("name") for m in families(HOSTS, POOLS, SWITCHES, VMS, STATS[1:]) for s in m.samples}
    assert "db" in names and "web" not in names


def test_described_families_cover_what_is_collected() -> None:
    described = {m.name for m in DatacenterCollector([], [], [], [], list).describe()}
    collected = {m.name for m in families(HOSTS, POOLS, SWITCHES, VMS, STATS) if m.samples}
    assert collected == described  # the realistic data above exercises every family
    assert len(described) == len(SPECS)


def test_record_usage_advances_the_namespace_counters() -> None:
    ns = f"meter-{uuid.uuid4().hex[:8]}"
    record_usage({ns: Usage(30.0, 15.0 * GIB, 0.0)})
    record_usage({ns: Usage(1.5, 0.0, 2.0)})
    assert REGISTRY.get_sample_value("vdc_metering_vcpu_seconds_total", {"namespace": ns}) == 31.5
    assert REGISTRY.get_sample_value("vdc_metering_memory_byte_seconds_total", {"namespace": ns}) == 15.0 * GIB
    assert REGISTRY.get_sample_value("vdc_metering_disk_byte_seconds_total", {"namespace": ns}) == 2.0


async def test_work_queue_instruments() -> None:
    name = f"q-{uuid.uuid4().hex[:8]}"
    outcomes = {"ok": None, "again": 3600.0}

    async def reconcile(key: str) -> float | None:
        if key == "bad":
            raise RuntimeError("boom")
        return outcomes[key]

    def v(metric: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(metric, {"controller": name, **labels})

    queue: WorkQueue[str] = WorkQueue(name, reconcile, workers=1, max_backoff=3600)
    for key in ("ok", "again", "bad", "ok"):  # the second "ok" is deduplicated
        queue.add(key)
    assert REGISTRY.get_sample_value("vdc_workqueue_depth", {"name": name}) == 3
    assert REGISTRY.get_sample_value("vdc_workqueue_adds_total", {"name": name}) == 3
    queue.start()
    try:
        for _ in range(500):
            if v("vdc_reconcile_time_seconds_count") == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await queue.stop()
    assert v("vdc_reconcile_total", result="success") == 1
    assert v("vdc_reconcile_total", result="requeue") == 1
    assert v("vdc_reconcile_total", result="error") == 1
    assert v("vdc_reconcile_errors_total") == 1
    assert v("vdc_reconcile_time_seconds_count") == 3
    assert REGISTRY.get_sample_value("vdc_workqueue_depth", {"name": name}) == 0


# --- promtool ---------------------------------------------------------------------------------------


def promtool(text: bytes) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return subprocess.run([tool, "check", "metrics"], input=text.decode(), capture_output=True, text=True, timeout=60)


def test_promtool_lints_what_it_should() -> None:
    """promtool really checks: a counter without _total and a metric without help fail."""
    result = promtool(b"# TYPE vdc_bad counter\nvdc_bad 1\n")
    assert result.returncode != 0, result


def test_exposition_passes_promtool(populated: CollectorRegistry) -> None:
    record_usage({"tenant-a": Usage(30.0, 15.0 * GIB, 150.0 * GIB)})
    text = generate_latest(populated)
    for needle in (b"vdc_vm_cpu_seconds_total{", b"vdc_host_ready{", b"vdc_metering_vcpu_seconds_total{"):
        assert needle in text
    result = promtool(text)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


# --- the dashboard ----------------------------------------------------------------------------------


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition", "query") and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def exposed(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def test_dashboard_uses_only_exposed_metrics(populated: CollectorRegistry) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(_exprs(dashboard))
    used = {name for expr in exprs for name in re.findall(r"\bvdc_[a-z0-9_]+", expr)}
    assert len(used) > 20
    missing = used - exposed(populated)
    assert not missing, f"the dashboard uses metrics the operator does not expose: {sorted(missing)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- the server and the flags -----------------------------------------------------------------------


async def test_server_serves_metrics_and_healthz(populated: CollectorRegistry) -> None:
    runner = await server.start(populated, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                body = await resp.text()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{port}/nope") as resp:
                assert resp.status == 404
        assert 'vdc_host_ready{host="hv1"} 1.0' in body
    finally:
        await runner.cleanup()


async def test_a_taken_port_fails_at_once() -> None:
    first = await server.start(CollectorRegistry(), "127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await server.start(CollectorRegistry(), "127.0.0.1", first.addresses[0][1])
    finally:
        await first.cleanup()


def test_run_flags() -> None:
    args = build_parser().parse_args(["run"])
    assert (args.metrics_port, args.metrics_address, args.stats_interval, args.liveness) == (
        8080,
        "0.0.0.0",
        15.0,
        None,
    )
    args = build_parser().parse_args(["run", "--metrics-port", "0", "--stats-interval", "2.5"])
    assert (args.metrics_port, args.stats_interval) == (0, 2.5)
    for bad in (["--metrics-port", "70000"], ["--stats-interval", "0"], ["--stats-interval", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", *bad])


def test_a_kept_label_child_is_the_served_series() -> None:
    name = f"q-{uuid.uuid4().hex[:8]}"
    child(RECONCILE_ERRORS, name).inc()
    child(RECONCILE_ERRORS, name).inc()
    assert child(RECONCILE_ERRORS, name) is RECONCILE_ERRORS.labels(name)
    assert REGISTRY.get_sample_value("vdc_reconcile_errors_total", {"controller": name}) == 2
