"""vdc.cluster: one requested(vm), the VM indexes kept incrementally from the cache (checked against a scan
after random changes), reservations, the rebuild at start-up, and the scheduler, Host status and metrics
reading the same ledger."""

from __future__ import annotations

import random
from typing import Any

import pytest

from vdc.api.common import LabelSelector
from vdc.api.host import HostSpec
from vdc.cluster import ClusterView, Requested, requested
from vdc.cluster.hosts import matching_hosts, pools_by_host, switches_by_host
from vdc.controllers.host import HostObservation, host_status
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.libvirt.host_facts import HostFacts
from vdc.metrics.collectors import families

pytestmark = pytest.mark.unit
MI = 2**20


def vm(
    name: str, *, ns: str = "t", host: str | None = None, cpus: int = 1, memory: str = "256Mi",
    switches: tuple[str, ...] = (), pool: str | None = None, appliance: str | None = None, uid: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"cpu": {"count": cpus}, "memory": {"size": memory}}
    spec["interfaces"] = [{"name": f"n{i}", "switch": s} for i, s in enumerate(switches)]
    if pool:
        spec["disks"] = [{"name": "root", "source": {"blank": {"pool": pool, "size": "1Gi"}}}]
    if appliance:
        spec["fromAppliance"] = {"name": appliance}
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{ns}-{name}"}, "spec": spec}
    if host:
        body["status"] = {"host": host}
    return body


def host(name: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"h-{name}", "labels": labels or {}},
        "spec": {"uri": "test:///default"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "allocatable": {"cpus": 16, "memory": "16Gi"},
        },
    }


def test_requested_is_spec_cpus_and_memory_and_status_disks() -> None:
    body = vm("a", cpus=3, memory="512Mi")
    body["status"] = {"disks": [{"name": "root", "capacity": "1Gi"}, {"name": "x"}, {"capacity": "bad"}]}
    assert requested(body) == Requested(3, 512 * MI, 2**30)
    assert requested({"metadata": {}, "spec": {}}) == Requested(1, 0, 0)  # count defaults to 1
    assert requested({"metadata": {}, "spec": {"memory": {"size": "lots"}}}).memory_bytes == 0


def test_requested_counts_the_qos_reservations() -> None:
    body = vm("a", cpus=2, memory="1Gi")
    body["spec"]["qos"] = {"cpu": {"reservation": "1.5", "shares": "High"}, "memory": {"reservation": "256Mi"}}
    assert requested(body) == Requested(2, 2**30, 0, 1500, 256 * MI)
    body["spec"]["qos"] = {"cpu": {"reservation": "bad"}, "memory": {}}
    assert (requested(body).cpu_reservation_millis, requested(body).memory_reservation_bytes) == (0, 0)
    assert requested(body) + requested(body) - requested(body) == requested(body)


def test_a_host_reserving_more_than_it_can_guarantee_is_overdrawn() -> None:
    vms, hosts = ObjectCache(), ObjectCache()
    view = ClusterView(vms=vms, hosts=hosts)
    h1 = host("h1")
    h1["status"]["reservable"] = {"cpu": "2", "memory": "1Gi"}
    hosts.upsert(h1)
    hosts.upsert(host("h2"))  # has not said what it can reserve
    for name, where in (("a", "h1"), ("b", "h1"), ("c", "h2")):
        body = vm(name, host=where)
        body["spec"]["qos"] = {"cpu": {"reservation": "1"}, "memory": {"reservation": "512Mi"}}
        vms.upsert(body)
    assert view.reservations_overdrawn("h1") is None  # exactly full
    assert view.reservations_overdrawn("h2") is None
    raised = vm("b", host="h1")
    raised["spec"]["qos"] = {"cpu": {"reservation": "1500m"}}
    vms.upsert(raised)
    assert view.reservations_overdrawn("h1") == (
        "host h1 cannot guarantee its VMs' reservations (reserved: CPU 2500m of 2 it can guarantee)"
    )


def test_indexes_follow_the_cache() -> None:
    vms = ObjectCache()
    view = ClusterView(vms=vms)
    vms.upsert(vm("a", host="h1", switches=("lan",), pool="fast"))
    vms.upsert(vm("b", switches=("lan", "dmz"), appliance="appl"))
    vms.upsert(vm("c", ns="u", appliance="appl"))
    assert view.vms_on("h1") == [("t", "a")]
    assert view.unplaced_vms() == [("t", "b"), ("u", "c")]
    assert sorted(view.vms_using("VirtualSwitch", "lan")) == [("t", "a"), ("t", "b")]
    assert view.vms_using("StoragePool", "fast") == [("t", "a")]
    assert view.vms_using("Appliance", "appl", "t") == [("t", "b")]
    assert view.vms_using("Appliance", "appl", "u") == [("u", "c")]
    vms.note_status(("t", "b"), {"host": "h2"})  # our own status write, applied locally
    assert view.vms_on("h2") == [("t", "b")] and view.unplaced_vms() == [("u", "c")]
    vms.upsert(vm("a", host="h1"))  # NICs and disks gone from the spec
    assert view.vms_using("VirtualSwitch", "lan") == [("t", "b")]
    assert view.vms_using("StoragePool", "fast") == []
    vms.remove(vm("b"))
    assert view.vms_on("h2") == [] and view.vms_using("VirtualSwitch", "dmz") == []
    assert view.allocated("h2") == Requested()


def test_a_reservation_counts_until_the_vm_goes_even_past_an_older_event() -> None:
    vms = ObjectCache()
    view = ClusterView(vms=vms)
    body = vm("a", cpus=2)
    vms.upsert(body)
    view.reserve(body, "h1")
    assert view.host_of(body) == "h1" and view.vms_on("h1") == [("t", "a")] and view.unplaced_vms() == []
    assert view.allocated("h1") == Requested(2, 256 * MI, 0)
    vms.note_status(("t", "a"), {"host": "h1"})
    assert view.host_of(vms.get(("t", "a")) or {}) == "h1"
    # A watch event older than our status write (no status.host yet) arrives late: still counted on h1,
    # or the quota and the capacity would admit one VM too many.
    vms.upsert(body)
    assert view.host_of(vms.get(("t", "a")) or {}) == "h1" and view.unplaced_vms() == []
    assert view.allocated("h1") == Requested(2, 256 * MI, 0)
    view.release(body)  # a placement undone
    vms.note_status(("t", "a"), {"host": None})
    assert view.unplaced_vms() == [("t", "a")] and view.allocated("h1") == Requested()
    view.reserve(body, "h2")
    vms.remove(body)
    assert view.vms_on("h2") == [] and view.host_of(body) is None
    view.reserve(body, "h3")
    view.release(body)
    assert view.host_of(body) is None


def test_an_ha_restart_counts_the_vm_on_its_new_host_before_its_status_says_so() -> None:
    vms = ObjectCache()
    view = ClusterView(vms=vms)
    body = vm("a", host="dead", cpus=2)
    vms.upsert(body)
    view.move(body, "h2")  # status.host still names the failed host: the next restart must not pick h2 blind
    assert view.host_of(body) == "h2" and view.vms_on("h2") == [("t", "a")] and view.vms_on("dead") == []
    assert view.allocated("h2") == Requested(2, 256 * MI, 0) and view.allocated("dead") == Requested()
    vms.upsert(body)  # an event from before the restart's status write
    assert view.vms_on("h2") == [("t", "a")]
    vms.note_status(("t", "a"), {"host": "h2"})  # the write came back
    assert view.host_of(vms.get(("t", "a")) or {}) == "h2" and view.vms_on("h2") == [("t", "a")]
    other = vm("b", host="dead")
    vms.upsert(other)
    view.move(other, "h3")
    view.release(other)  # the restart's status write failed: undone, back on the failed host
    assert view.host_of(other) == "dead" and view.vms_on("h3") == []


def test_the_view_is_rebuilt_from_a_primed_cache() -> None:
    vms = ObjectCache()
    vms.prime([vm("a", host="h1", cpus=2), vm("b", host="h1"), vm("c")])
    view = ClusterView(vms=vms)
    assert sorted(view.vms_on("h1")) == [("t", "a"), ("t", "b")] and view.unplaced_vms() == [("t", "c")]
    assert view.allocated("h1") == Requested(3, 512 * MI, 0)


def _scan(vms: ObjectCache, reserved: dict[str, str]) -> tuple[dict[str, set[Key]], set[Key], dict[str, Requested]]:
    on: dict[str, set[Key]] = {}
    unplaced: set[Key] = set()
    ledger: dict[str, Requested] = {}
    for body in vms:
        where = (body.get("status") or {}).get("host") or reserved.get(body["metadata"]["uid"])
        if where is None:
            unplaced.add(key_of(body))
        else:
            on.setdefault(where, set()).add(key_of(body))
            ledger[where] = ledger.get(where, Requested()) + requested(body)
    return on, unplaced, ledger


def test_incremental_indexes_equal_a_scan_after_random_changes() -> None:
    rng = random.Random(14)
    vms = ObjectCache()
    view = ClusterView(vms=vms)
    reserved: dict[str, str] = {}
    names = [f"vm{i}" for i in range(30)]
    for _ in range(2000):
        name, target = rng.choice(names), rng.choice(["h1", "h2", "h3", None])
        key = ("t", name)
        action = rng.random()
        if action < 0.5:
            before = vms.get(key)
            body = vm(name, host=target, cpus=rng.randint(1, 4), switches=(rng.choice(["a", "b"]),))
            if before is not None and rng.random() < 0.5:
                body["spec"] = before["spec"]  # a status change only: the same spec, the same generation
            # As the API server counts: a new generation for each spec change.
            generation = 1 if before is None else before["metadata"]["generation"] + (body["spec"] != before["spec"])
            body["metadata"]["generation"] = generation
            vms.upsert(body)
        elif action < 0.65 and vms.get(key) is not None:
            body = vms.get(key) or {}
            vms.remove(body)
            reserved.pop(body["metadata"]["uid"], None)
        elif action < 0.85 and vms.get(key) is not None and target:
            body = vms.get(key) or {}
            view.reserve(body, target)
            reserved[body["metadata"]["uid"]] = target
        elif vms.get(key) is not None:
            vms.note_status(key, {"host": target})
        on, unplaced, ledger = _scan(vms, reserved)
        assert {h: set(view.vms_on(h)) for h in on} == on
        assert set(view.unplaced_vms()) == unplaced
        assert {h: r for h, r in view.ledger().items() if r != Requested()} == ledger
        assert set(view.vms_using("VirtualSwitch", "a")) == {
            key_of(b) for b in vms if any(n["switch"] == "a" for n in b["spec"]["interfaces"])
        }


def test_scheduler_host_status_and_metrics_read_the_same_ledger() -> None:
    hosts, vms = ObjectCache(), ObjectCache()
    view = ClusterView(hosts=hosts, vms=vms)
    for name in ("h1", "h2"):
        hosts.upsert(host(name))
    vms.upsert(vm("a", host="h1", cpus=2, memory="1Gi"))
    vms.upsert(vm("b", host="h1", memory="512Mi"))
    placing = vm("c", cpus=4, memory="2Gi")
    vms.upsert(placing)
    view.reserve(placing, "h1")  # placed, its status not written yet: counted everywhere alike
    vms.upsert(vm("d", ns="u", host="h2", memory="128Mi"))
    want = {"h1": Requested(7, 3584 * MI, 0), "h2": Requested(1, 128 * MI, 0)}

    scheduler = {c.name: (c.allocated_cpus, c.allocated_memory) for c in view.candidates(connected=lambda h: True)}
    facts = HostFacts(hostname="x", host_uuid="u", cpus=16, memory_bytes=16 * 2**30, libvirt_version="10.0.0",
                      hypervisor="QEMU", hypervisor_version="8.0.0", domain_types=frozenset({"qemu"}))  # fmt: skip
    status = {}
    for name in ("h1", "h2"):
        used = view.allocated(name)
        observed = HostObservation(
            connected=True, facts=facts, allocated_cpus=used.vcpus, allocated_memory=used.memory_bytes
        )
        allocated = host_status(HostSpec(uri="test:///default"), 1, observed, None).allocated
        assert allocated is not None
        status[name] = (allocated.cpus, int(str(allocated.memory).removesuffix("Mi")) * MI)
    metric = {}
    for family in families(hosts, [], [], vms, [], view.ledger()):
        for sample in family.samples:
            if family.name in ("vdc_host_allocated_cpus", "vdc_host_allocated_memory_bytes"):
                metric.setdefault(sample.labels["host"], {})[family.name] = int(sample.value)
    metrics = {h: (m["vdc_host_allocated_cpus"], m["vdc_host_allocated_memory_bytes"]) for h, m in metric.items()}
    expected = {h: (r.vcpus, r.memory_bytes) for h, r in want.items()}
    assert scheduler == status == metrics == expected
    # The VM being placed does not count against itself.
    mine = {c.name: c.allocated_cpus for c in view.candidates(("t", "c"), connected=lambda h: True)}
    assert mine == {"h1": 3, "h2": 1}


def test_hosts_pools_and_switches_per_host() -> None:
    hosts = [host("a", labels={"zone": "1"}), host("b", labels={"zone": "2"}), host("c", ready=False)]
    deleting = host("d", labels={"zone": "1"})
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert matching_hosts([*hosts, deleting], LabelSelector()) == ["a", "b"]
    assert matching_hosts(hosts, LabelSelector.model_validate({"matchLabels": {"zone": "1"}})) == ["a"]
    pools = [{"metadata": {"name": "p"}, "status": {"hosts": [
        {"host": "a", "state": "Running", "available": "1Gi"}, {"host": "b", "state": "Failed"}]}}]  # fmt: skip
    switches = [{"metadata": {"name": "s"}, "status": {"hosts": [{"host": "a", "state": "Active"}]}}]
    assert pools_by_host(pools) == {"a": {"p": 2**30}}  # b's is Failed
    assert switches_by_host(switches) == {"a": {"s"}}


def test_the_views_pools_and_switches_per_host_follow_their_caches() -> None:
    pools, switches = ObjectCache(), ObjectCache()
    view = ClusterView(pools=pools, switches=switches)
    assert view.pools_on("a") == {} and view.switches_on("a") == frozenset()
    pool = {"metadata": {"name": "p", "uid": "p"},
            "status": {"hosts": [{"host": "a", "state": "Running", "available": "1Gi"}]}}  # fmt: skip
    pools.upsert(pool)
    switches.upsert({"metadata": {"name": "s", "uid": "s"}, "status": {"hosts": [{"host": "a", "state": "Active"}]}})
    assert view.pools_on("a") == {"p": 2**30} and view.switches_on("a") == {"s"}
    pools.note_status(("", "p"), {"hosts": [{"host": "a", "state": "Running", "available": "2Gi"}]})
    assert view.pools_on("a") == {"p": 2**31}  # its status changed: read anew
    pools.remove(pool)
    switches.upsert({"metadata": {"name": "s", "uid": "s"}, "status": {"hosts": [{"host": "b", "state": "Active"}]}})
    assert view.pools_on("a") == {} and view.switches_on("a") == frozenset() and view.switches_on("b") == {"s"}


def test_a_hosts_candidate_is_made_anew_when_its_body_ledger_connection_or_pools_change() -> None:
    hosts, vms, pools = ObjectCache(), ObjectCache(), ObjectCache()
    for name in ("a", "b"):
        hosts.upsert(host(name))
    view = ClusterView(hosts=hosts, vms=vms, pools=pools)
    up = {"a", "b"}

    def candidate(name: str) -> Any:
        return next(c for c in view.candidates(connected=lambda h: h in up) if c.name == name)

    first_a, first_b = candidate("a"), candidate("b")
    assert candidate("a") is first_a  # nothing changed: the same candidate
    body = vm("v", cpus=3)
    vms.upsert(body)
    view.reserve(body, "a")
    assert candidate("a").allocated_cpus == 3 and candidate("b") is first_b  # one host's ledger changed
    up.discard("b")
    assert not candidate("b").ready
    pools.upsert({"metadata": {"name": "p", "uid": "p"},
                  "status": {"hosts": [{"host": "a", "state": "Running", "available": "1Gi"}]}})  # fmt: skip
    assert candidate("a").pools == {"p": 2**30}
    hosts.upsert({**host("a"), "status": {**host("a")["status"], "allocatable": {"cpus": 32, "memory": "16Gi"}}})
    assert candidate("a").allocatable_cpus == 32
    hosts.remove(host("b"))
    assert [c.name for c in view.candidates(connected=lambda h: True)] == ["a"]
