"""The requeue fan-out each controller declares (``WATCHES``), run over a cluster view: what is requeued
when another kind changes (the policy handlers.py used to hold, kept as it was)."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.cluster import ClusterView, ObjectEvent, Watch
from vdc.controllers import appliance, computequota, host, storagepool, virtualswitch, vm_watches
from vdc.kube.cache import Key, ObjectCache, key_of

pytestmark = pytest.mark.unit

CONTROLLERS: dict[str, tuple[Watch, ...]] = {
    "hosts": host.WATCHES,
    "pools": storagepool.WATCHES,
    "switches": virtualswitch.WATCHES,
    "appliances": appliance.WATCHES,
    "vms": vm_watches.WATCHES,
    "quotas": computequota.WATCHES,
}


def obj(name: str, ns: str = "", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"u-{ns}-{name}", **extra.pop("meta", {})}, **extra}


@pytest.fixture
def view() -> ClusterView:
    caches = {k: ObjectCache() for k in ("hosts", "vms", "pools", "switches", "appliances", "namespaces", "quotas")}
    v = ClusterView(**caches)
    v.pools.upsert(obj("fast"))
    v.switches.upsert(obj("lan"))
    v.appliances.upsert(obj("web", "t"))
    v.quotas.upsert(obj("q", "t"))
    v.vms.upsert(obj("placed", "t", spec={"interfaces": [{"switch": "lan"}]}, status={"host": "h1"}))
    v.vms.upsert(obj("waiting", "t", spec={"fromAppliance": {"name": "web"}}))
    v.vms.upsert(obj("other", "u", spec={}))
    return v


def fan_out(view: ClusterView, kind: str, event: ObjectEvent) -> dict[str, list[Key]]:
    out = {}
    for controller, watches in CONTROLLERS.items():
        keys = sorted({key for w in watches if w.kind == kind for key in w.map(view, event)})
        if keys:
            out[controller] = keys
    return out


def event(type_: str, body: dict[str, Any], old: dict[str, Any] | None = None, own: bool = False) -> ObjectEvent:
    return ObjectEvent(type_, key_of(body), body, old, own)  # type: ignore[arg-type]


def test_a_host_change_requeues_pools_switches_appliances_and_unplaced_vms(view: ClusterView) -> None:
    got = fan_out(view, "Host", event("MODIFIED", obj("h1"), own=True))
    assert got == {
        "pools": [("", "fast")],
        "switches": [("", "lan")],
        "appliances": [("t", "web")],
        "vms": [("t", "waiting"), ("u", "other")],
    }


def test_a_vm_change_requeues_its_switches_and_quotas_a_deletion_the_unplaced(view: ClusterView) -> None:
    body = view.vms.get(("t", "placed")) or {}
    assert fan_out(view, "VirtualMachine", event("MODIFIED", body, body)) == {
        "switches": [("", "lan")], "quotas": [("t", "q")]}  # fmt: skip
    assert fan_out(view, "VirtualMachine", event("MODIFIED", body, body, own=True)) == {}  # our write back
    moved = {**body, "status": {"host": "h2"}}
    assert fan_out(view, "VirtualMachine", event("MODIFIED", moved, body, own=True)) == {"quotas": [("t", "q")]}
    view.vms.remove(body)
    assert fan_out(view, "VirtualMachine", event("DELETED", body, body)) == {
        "switches": [("", "lan")], "quotas": [("t", "q")], "vms": [("t", "waiting"), ("u", "other")]}  # fmt: skip


def test_switch_pool_appliance_namespace_and_quota_changes(view: ClusterView) -> None:
    unplaced = [("t", "waiting"), ("u", "other")]
    assert fan_out(view, "VirtualSwitch", event("MODIFIED", obj("lan"), own=True)) == {
        "vms": [("t", "placed"), *unplaced]}  # fmt: skip
    assert fan_out(view, "StoragePool", event("MODIFIED", obj("fast"), own=True)) == {"vms": unplaced}
    progress = obj("web", "t", status={"phase": "Importing"})
    assert fan_out(view, "Appliance", event("MODIFIED", progress, own=True)) == {}
    ready = obj("web", "t", status={"phase": "Ready"})
    assert fan_out(view, "Appliance", event("MODIFIED", ready, own=True)) == {"vms": [("t", "waiting")]}
    relabelled = obj("t", meta={"labels": {"team": "x"}})
    assert fan_out(view, "Namespace", event("MODIFIED", relabelled, obj("t"))) == {
        "appliances": [("t", "web")], "vms": [("t", "placed"), ("t", "waiting")]}  # fmt: skip
    assert fan_out(view, "Namespace", event("MODIFIED", obj("t"), obj("t"))) == {}
    assert fan_out(view, "ComputeQuota", event("MODIFIED", obj("q", "t"), own=True)) == {}
    assert fan_out(view, "ComputeQuota", event("MODIFIED", obj("q", "t"))) == {"vms": [("t", "waiting")]}


def test_a_pools_spec_change_requeues_its_vms_its_status_writes_do_not(view: ClusterView) -> None:
    """A pool's default disk limits (spec.diskIotune) reach its running VMs; its own status writes do not."""
    disk = {"name": "root", "source": {"blank": {"pool": "fast", "size": "1Gi"}}}
    view.vms.upsert(obj("stored", "t", spec={"disks": [disk]}, status={"host": "h1"}))
    unplaced = [("t", "waiting"), ("u", "other")]
    limited = obj("fast", spec={"diskIotune": {"totalIopsSec": 100}})
    assert fan_out(view, "StoragePool", event("MODIFIED", limited, obj("fast")))["vms"] == [("t", "stored"), *unplaced]
    assert fan_out(view, "StoragePool", event("MODIFIED", limited, limited, own=True))["vms"] == unplaced


def test_a_host_reserving_less_lets_the_unplaced_vms_look_again(view: ClusterView) -> None:
    before = obj("h1", status={"reserved": {"cpu": "2", "memory": "1Gi"}})
    more = obj("h1", status={"reserved": {"cpu": "2500m", "memory": "1Gi"}})
    assert "vms" not in fan_out(view, "Host", event("MODIFIED", more, before))
    less = obj("h1", status={"reserved": {"cpu": "1500m", "memory": "1Gi"}})
    assert fan_out(view, "Host", event("MODIFIED", less, before))["vms"] == [("t", "waiting"), ("u", "other")]


def test_a_compute_cluster_change_requeues_the_unplaced_vms(view: ClusterView) -> None:
    unplaced = [("t", "waiting"), ("u", "other")]
    prod = obj("prod", spec={"ha": {"enabled": True}})
    assert fan_out(view, "ComputeCluster", event("MODIFIED", prod, prod)) == {"vms": unplaced}  # admission control
    assert fan_out(view, "ComputeCluster", event("DELETED", prod, prod)) == {"vms": unplaced}
    assert fan_out(view, "ComputeCluster", event("MODIFIED", prod, prod, own=True)) == {}  # its status write


def test_a_host_status_write_of_its_bookkeeping_only_requeues_no_unplaced_vm(view: ClusterView) -> None:
    """A rollout rewrites a Host's counts and allocation as its domains come: none of that makes room."""
    status = {"allocated": {"cpus": 2, "memory": "1Gi"}, "domains": {"total": 2}, "lastSeen": "t1"}
    before = obj("h1", status={**status, "conditions": [{"type": "Ready", "status": "True"}]})
    busier = obj("h1", status={**before["status"], "allocated": {"cpus": 3, "memory": "2Gi"},
                               "domains": {"total": 3}, "lastSeen": "t2"})  # fmt: skip
    assert "vms" not in fan_out(view, "Host", event("MODIFIED", busier, before))
    # less allocated (a VM left, a placement undone): room, the unplaced VMs look again
    freer = obj("h1", status={**before["status"], "allocated": {"cpus": 1, "memory": "1Gi"}})
    assert fan_out(view, "Host", event("MODIFIED", freer, before))["vms"] == [("t", "waiting"), ("u", "other")]
    less_memory = obj("h1", status={**before["status"], "allocated": {"cpus": 3, "memory": "512Mi"}})
    assert fan_out(view, "Host", event("MODIFIED", less_memory, before))["vms"] == [("t", "waiting"), ("u", "other")]
    # anything placement reads: Ready, allocatable, labels, spec
    for changed in (
        obj("h1", status={**before["status"], "conditions": [{"type": "Ready", "status": "False"}]}),
        obj("h1", status={**before["status"], "allocatable": {"cpus": 8}}),
        obj("h1", meta={"labels": {"zone": "a"}}, status=before["status"]),
        obj("h1", spec={"maintenance": True}, status=before["status"]),
    ):
        requeued = fan_out(view, "Host", event("MODIFIED", changed, before))["vms"]
        assert {("t", "waiting"), ("u", "other")} <= set(requeued)
