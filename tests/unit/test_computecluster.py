"""ComputeCluster: membership, conflicts, HA admission control and headroom (vdc.controllers.computecluster)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from pydantic import ValidationError

from vdc.api.common import LabelSelector
from vdc.api.computecluster import ComputeCluster, ComputeClusterSpec, ComputeClusterStatus
from vdc.api.conditions import get_condition
from vdc.cluster.watches import ObjectEvent
from vdc.controllers.computecluster import (
    ComputeClusterController,
    HostSummary,
    Resources,
    cluster_specs,
    cluster_status,
    host_may_change_clusters,
    host_summary,
    state_changes,
    watches,
)
from vdc.kube.cache import ObjectCache
from vdc.kube.patch import merge_patch

GI = 1 << 30
NOW = "2026-01-02T03:04:05Z"


def host(
    name: str,
    cpus: int = 16,
    memory_gi: int = 64,
    used_cpus: int = 0,
    used_gi: int = 0,
    *,
    ready: bool = True,
    maintenance: bool = False,
    **labels: str,
) -> HostSummary:
    return HostSummary(
        name,
        {"rack": "a", **labels},
        ready=ready,
        maintenance=maintenance,
        allocatable=Resources(cpus, memory_gi * GI),
        allocated=Resources(used_cpus, used_gi * GI),
    )


def spec(policy: str = "None", enabled: bool = True, **control: Any) -> ComputeClusterSpec:
    return ComputeClusterSpec.model_validate(
        {
            "hostSelector": {"matchLabels": {"rack": "a"}},
            "ha": {"enabled": enabled, "admissionControl": {"policy": policy, **control}},
        }
    )


def status(
    s: ComputeClusterSpec, hosts: list[HostSummary], others: dict[str, Any] | None = None
) -> ComputeClusterStatus:
    selectors = {k: LabelSelector.model_validate(v) for k, v in (others or {}).items()}
    return cluster_status("prod", s, hosts, selectors, generation=2, now=NOW)


def ready(st: ComputeClusterStatus) -> tuple[str, str]:
    cond = get_condition(st.conditions, "Ready")
    assert cond is not None
    return cond.status, cond.reason


# --- the API --------------------------------------------------------------------------------------------------
def test_defaults_and_wire_names() -> None:
    cluster = ComputeCluster.model_validate({"metadata": {"name": "c"}, "spec": {}})
    assert cluster.spec.ha.enabled is False
    control = cluster.spec.ha.admission_control
    assert (control.policy, control.host_failures_tolerated) == ("None", 1)
    assert (control.cpu_percent_reserved, control.memory_percent_reserved) == (25, 25)
    wire = cluster.to_wire()["spec"]
    assert wire["ha"]["admissionControl"]["hostFailuresTolerated"] == 1
    assert wire["hostSelector"] == {"matchLabels": {}, "matchExpressions": []}


@pytest.mark.parametrize(
    "control",
    [
        {"policy": "Sometimes"},
        {"hostFailuresTolerated": 33},
        {"hostFailuresTolerated": -1},
        {"cpuPercentReserved": 101},
        {"memoryPercentReserved": -5},
    ],
)
def test_bad_admission_control_is_refused(control: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ComputeClusterSpec.model_validate({"ha": {"admissionControl": control}})


# --- membership -----------------------------------------------------------------------------------------------
def test_members_are_the_selected_hosts_sorted_with_their_sums() -> None:
    hosts = [
        host("hv2", 8, 32, used_cpus=2, used_gi=4),
        host("hv1", 16, 64, used_cpus=4, used_gi=8, ready=False),
        HostSummary("other", {"rack": "b"}, ready=True, allocatable=Resources(99, 99 * GI)),
    ]
    st = status(spec(enabled=False), hosts)
    assert st.hosts == ["hv1", "hv2"]
    assert (st.host_count, st.ready_hosts) == (2, 1)
    assert st.capacity is not None and (st.capacity.cpus, st.capacity.memory) == (24, "98304Mi")
    assert st.usage is not None and (st.usage.cpus, st.usage.memory) == (6, "12288Mi")
    assert st.conflicts == []
    assert st.observed_generation == 2
    assert ready(st) == ("True", "Counted")


def test_no_member_is_not_ready_but_not_stalled() -> None:
    st = status(spec(enabled=False), [HostSummary("x", {"rack": "b"})])
    assert ready(st) == ("False", "NoHosts")
    stalled = get_condition(st.conditions, "Stalled")
    assert stalled is not None and stalled.status == "False"
    assert st.host_count == 0 and st.capacity is not None and st.capacity.cpus == 0


def test_an_empty_selector_takes_every_host() -> None:
    st = cluster_status("all", ComputeClusterSpec(), [host("a"), HostSummary("b", {})], {})
    assert st.hosts == ["a", "b"]


def test_host_summary_reads_a_host_object() -> None:
    body = {
        "metadata": {"name": "hv1", "labels": {"rack": "a"}},
        "spec": {"uri": "qemu:///system", "maintenance": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"cpus": 8, "memory": "16Gi"},
            "allocated": {"cpus": 2, "memory": "1536Mi"},
        },
    }
    summary = host_summary(body)
    assert summary == HostSummary("hv1", {"rack": "a"}, True, True, Resources(8, 16 * GI), Resources(2, 1536 << 20))
    assert not summary.available
    fresh = host_summary({"metadata": {"name": "new"}, "spec": {}})  # not yet seen by the host controller
    assert fresh == HostSummary("new", {}) and not fresh.ready


# --- conflicts ------------------------------------------------------------------------------------------------
def test_a_host_in_two_clusters_is_a_member_of_neither_and_stalls_both() -> None:
    hosts = [host("hv1"), host("hv2", gpu="yes"), host("hv3", gpu="yes")]
    others = {
        "gpu": {"matchLabels": {"gpu": "yes"}},
        "zz": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
    }
    st = status(spec(enabled=False), hosts, others)
    assert st.hosts == ["hv1"] and st.host_count == 1
    assert [(c.host, c.other_clusters) for c in st.conflicts] == [("hv2", ["gpu", "zz"]), ("hv3", ["gpu", "zz"])]
    assert st.capacity is not None and st.capacity.cpus == 16  # conflicting hosts are not counted
    assert ready(st) == ("False", "HostInTwoClusters")
    stalled = get_condition(st.conditions, "Stalled")
    assert stalled is not None and stalled.status == "True"
    assert "hv2 (also in gpu, zz)" in stalled.message and "hv3" in stalled.message
    # the other side sees the same host, naming this cluster
    gpu = cluster_status(
        "gpu",
        ComputeClusterSpec.model_validate({"hostSelector": {"matchLabels": {"gpu": "yes"}}}),
        hosts,
        {"prod": LabelSelector.model_validate({"matchLabels": {"rack": "a"}})},
    )
    assert [(c.host, c.other_clusters) for c in gpu.conflicts] == [("hv2", ["prod"]), ("hv3", ["prod"])]
    assert gpu.host_count == 0 and ready(gpu) == ("False", "HostInTwoClusters")


def test_its_own_name_among_the_others_is_no_conflict() -> None:
    st = status(spec(enabled=False), [host("hv1")], {"prod": {"matchLabels": {"rack": "a"}}})
    assert st.conflicts == [] and st.hosts == ["hv1"]


# --- HA admission control -------------------------------------------------------------------------------------
def test_ha_disabled_reports_the_capacity_left() -> None:
    st = status(spec(enabled=False), [host("hv1", 16, 64, 4, 16), host("hv2", 8, 32, 2, 8)])
    assert st.ha is not None and st.ha.state == "Disabled"
    assert st.ha.headroom is not None and (st.ha.headroom.cpus, st.ha.headroom.memory) == (18, "73728Mi")


def test_policy_none_headroom_is_the_capacity_left() -> None:
    st = status(spec("None"), [host("hv1", 16, 64, 4, 16), host("hv2", 8, 32, 2, 8)])
    assert st.ha is not None and st.ha.state == "Protected"
    assert st.ha.headroom is not None and (st.ha.headroom.cpus, st.ha.headroom.memory) == (18, "73728Mi")
    assert ready(st) == ("True", "Counted")


def test_host_failures_tolerated_removes_the_largest_hosts_by_memory() -> None:
    hosts = [host("big", 8, 128, 4, 20), host("mid", 32, 64, 4, 20), host("small", 16, 32, 4, 20)]
    st = status(spec("HostFailuresTolerated", hostFailuresTolerated=1), hosts)
    assert st.ha is not None and st.ha.state == "Protected", st.ha
    # left after "big" fails: 48 CPUs, 96Gi; usage 12 CPUs, 60Gi
    assert st.ha.headroom is not None and (st.ha.headroom.cpus, st.ha.headroom.memory) == (36, "36864Mi")
    assert "1 host failure tolerated" in st.ha.message


def test_host_failures_tolerated_short_of_capacity_is_not_protected() -> None:
    hosts = [host("big", 8, 128, 4, 58), host("mid", 32, 64, 4, 20), host("small", 16, 32, 4, 20)]
    st = status(spec("HostFailuresTolerated", hostFailuresTolerated=1), hosts)
    assert st.ha is not None and st.ha.state == "NotProtected"
    # left after "big" fails: 48 CPUs, 96Gi; usage 12 CPUs, 98Gi
    assert st.ha.message.startswith("1 host failure tolerated: short of 2048Mi memory: what runs (12 CPUs, ")
    assert st.ha.headroom is not None and (st.ha.headroom.cpus, st.ha.headroom.memory) == (36, "0Mi")
    assert ready(st) == ("False", "NotProtected")
    stalled = get_condition(st.conditions, "Stalled")
    assert stalled is not None and stalled.status == "False"  # not the spec's fault: Progressing, not Degraded


def test_host_failures_tolerated_needs_n_plus_one_available_hosts() -> None:
    hosts = [host("a"), host("b", ready=False), host("c", maintenance=True)]
    st = status(spec("HostFailuresTolerated", hostFailuresTolerated=1), hosts)
    assert st.ha is not None and st.ha.state == "NotProtected"
    assert "needs at least 2 hosts Ready and out of maintenance, 1 are" in st.ha.message
    assert st.ready_hosts == 2  # the one in maintenance is Ready, but offers nothing to restart on
    two = status(spec("HostFailuresTolerated", hostFailuresTolerated=2), [host("a"), host("b"), host("c")])
    assert two.ha is not None and two.ha.state == "Protected"
    three = status(spec("HostFailuresTolerated", hostFailuresTolerated=3), [host("a"), host("b"), host("c")])
    assert three.ha is not None and three.ha.state == "NotProtected"


def test_hosts_that_cannot_take_restarts_offer_no_capacity_but_their_usage_counts() -> None:
    hosts = [host("a", 16, 64, 8, 40), host("b", 16, 64, 8, 30, ready=False), host("c", 16, 64)]
    st = status(spec("None"), hosts)
    # capacity of a and c: 32 CPUs, 128Gi; usage of all three: 16 CPUs, 70Gi
    assert st.ha is not None and st.ha.headroom is not None
    assert (st.ha.headroom.cpus, st.ha.headroom.memory) == (16, "59392Mi")
    assert st.capacity is not None and st.capacity.cpus == 48  # status.capacity: every member


def test_percentage_reserved() -> None:
    hosts = [host("a", 10, 40, 5, 20), host("b", 10, 40, 5, 20)]
    st = status(spec("PercentageReserved", cpuPercentReserved=25, memoryPercentReserved=50), hosts)
    # 20 CPUs x 75% = 15, 80Gi x 50% = 40Gi; usage 10 CPUs, 40Gi
    assert st.ha is not None and st.ha.state == "Protected"
    assert st.ha.headroom is not None and (st.ha.headroom.cpus, st.ha.headroom.memory) == (5, "0Mi")
    over = status(spec("PercentageReserved", cpuPercentReserved=60, memoryPercentReserved=0), hosts)
    assert over.ha is not None and over.ha.state == "NotProtected"
    assert "reserved: short of 2 CPUs: what runs (10 CPUs, 40960Mi memory) exceeds" in over.ha.message
    assert over.ha.headroom is not None and (over.ha.headroom.cpus, over.ha.headroom.memory) == (0, "40960Mi")


def test_percentage_reserved_and_none_need_two_hosts() -> None:
    for policy in ("PercentageReserved", "None"):
        st = status(spec(policy), [host("only")])
        assert st.ha is not None and st.ha.state == "NotProtected", policy
        assert ready(st) == ("False", "NotProtected")


def test_conflicts_win_over_ha() -> None:
    st = status(
        spec("HostFailuresTolerated"), [host("a"), host("b", gpu="yes")], {"gpu": {"matchLabels": {"gpu": "yes"}}}
    )
    assert ready(st) == ("False", "HostInTwoClusters")
    assert st.ha is not None and st.ha.state == "NotProtected"  # one member left


# --- events, watches, the controller --------------------------------------------------------------------------
def test_events_only_on_state_changes() -> None:
    hosts = [host("a"), host("b")]
    first = status(spec("HostFailuresTolerated"), hosts)
    assert state_changes(ComputeClusterStatus(), first) == [("HAProtected", first.ha.message, False)]  # type: ignore[union-attr]
    busier = status(spec("HostFailuresTolerated"), [host("a", used_cpus=3), host("b")])
    assert state_changes(first, busier) == []  # counts moved, no state changed
    lost = status(spec("HostFailuresTolerated"), [host("a"), host("b", ready=False)])
    said = state_changes(busier, lost)
    assert [(r, w) for r, _, w in said] == [("HANotProtected", True)]
    clash = status(spec(enabled=False), hosts, {"x": {}})
    assert [r for r, _, _ in state_changes(first, clash)] == ["HostInTwoClusters", "HADisabled"]
    assert state_changes(ComputeClusterStatus(), status(spec(enabled=False), hosts)) == []


def event(
    body: dict[str, Any], old: dict[str, Any] | None, *, own: bool = True, type_: str = "MODIFIED"
) -> ObjectEvent:
    return ObjectEvent(type_, ("", body["metadata"]["name"]), body, old, own)  # type: ignore[arg-type]


HOST: dict[str, Any] = {
    "metadata": {"name": "hv1", "labels": {"rack": "a"}},
    "spec": {},
    "status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "allocatable": {"cpus": 8, "memory": "16Gi"},
        "allocated": {"cpus": 1, "memory": "1Gi"},
        "lastSeen": "t1",
    },
}


def test_which_host_events_concern_clusters() -> None:
    def changed(**status: Any) -> dict[str, Any]:
        new = copy.deepcopy(HOST)
        new["status"].update(status)
        return new

    assert not host_may_change_clusters(event(changed(lastSeen="t2"), HOST))  # its own status write, nothing counted
    assert host_may_change_clusters(event(changed(allocated={"cpus": 2, "memory": "1Gi"}), HOST))
    assert host_may_change_clusters(event(changed(conditions=[{"type": "Ready", "status": "False"}]), HOST))
    relabelled = copy.deepcopy(HOST)
    relabelled["metadata"]["labels"] = {"rack": "b"}
    assert host_may_change_clusters(event(relabelled, HOST))
    assert host_may_change_clusters(event(HOST, None))  # first seen
    assert host_may_change_clusters(event(HOST, HOST, own=False))  # spec changed (maintenance)
    assert host_may_change_clusters(event(HOST, HOST, type_="DELETED"))


def test_watches_requeue_every_cluster_on_a_host_and_the_others_on_a_cluster() -> None:
    clusters = ObjectCache()
    for name in ("hv1", "prod", "gpu"):  # a cluster may share a Host's name
        clusters.upsert({"metadata": {"name": name}, "spec": {}})
    by_kind = {w.kind: w for w in watches(clusters)}
    moved = copy.deepcopy(HOST)
    moved["status"]["allocated"] = {"cpus": 3, "memory": "1Gi"}
    assert sorted(by_kind["Host"].map(None, event(moved, HOST))) == [("", "gpu"), ("", "hv1"), ("", "prod")]  # type: ignore[arg-type]
    prod = {"metadata": {"name": "prod"}, "spec": {"hostSelector": {}}}
    assert sorted(by_kind["ComputeCluster"].map(None, event(prod, prod, own=False))) == [("", "gpu"), ("", "hv1")]  # type: ignore[arg-type]
    assert list(by_kind["ComputeCluster"].map(None, event(prod, prod))) == []  # type: ignore[arg-type]


class Writer:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, bool]] = []

    async def patch_status(self, kind: Any, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        return merge_patch(body.get("status") or {}, status)  # type: ignore[no-any-return]  # as KubeWriter

    async def event(self, kind: Any, body: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((reason, message, warning))


def test_controller_writes_status_once_and_events_on_changes() -> None:
    hosts, clusters, writer = ObjectCache(), ObjectCache(), Writer()
    for name in ("hv1", "hv2"):
        h = copy.deepcopy(HOST)
        h["metadata"]["name"] = name
        hosts.upsert(h)
    cluster = {
        "metadata": {"name": "prod", "generation": 1},
        "spec": {"hostSelector": {"matchLabels": {"rack": "a"}}, "ha": {"enabled": True}},
    }
    key = clusters.upsert(cluster)
    controller = ComputeClusterController(clusters, hosts, writer)  # type: ignore[arg-type]
    assert asyncio.run(controller.reconcile(key)) is None
    assert len(writer.statuses) == 1
    written = clusters.get(key)
    assert written is not None
    st = written["status"]
    assert st["hosts"] == ["hv1", "hv2"] and st["hostCount"] == 2 and st["readyHosts"] == 2
    assert st["capacity"] == {"cpus": 16, "memory": "32768Mi"} and st["ha"]["state"] == "Protected"
    assert [r for r, _, _ in writer.events] == ["HAProtected"]
    asyncio.run(controller.reconcile(key))
    assert len(writer.statuses) == 1 and len(writer.events) == 1  # nothing changed: nothing written
    # another cluster claims hv2: a conflict, in this cluster's status too
    clusters.upsert({"metadata": {"name": "other"}, "spec": {"hostSelector": {}}})
    asyncio.run(controller.reconcile(key))
    st = clusters.get(key)["status"]  # type: ignore[index]
    assert [c["host"] for c in st["conflicts"]] == ["hv1", "hv2"]
    assert [r for r, _, _ in writer.events][1:] == ["HostInTwoClusters", "HANotProtected"]


def test_controller_reports_an_unreadable_spec_as_stalled() -> None:
    clusters, writer = ObjectCache(), Writer()
    key = clusters.upsert({"metadata": {"name": "bad", "generation": 4}, "spec": {"ha": {"enabled": "often"}}})
    asyncio.run(ComputeClusterController(clusters, ObjectCache(), writer).reconcile(key))  # type: ignore[arg-type]
    st = ComputeClusterStatus.model_validate(writer.statuses[0])
    assert ready(st) == ("False", "InvalidSpec") and st.observed_generation == 4
    assert writer.events[0][0] == "InvalidSpec"


def test_a_clusters_spec_is_read_once_per_generation() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "prod", "uid": "u-prod", "generation": 1},
        "spec": {"drs": {"enabled": True, "migrationThreshold": 2}},
    }
    first = cluster_specs([body])["prod"]
    assert cluster_specs([body])["prod"] is first  # every placement asks: not parsed again
    body["spec"]["drs"]["migrationThreshold"] = 4
    body["metadata"]["generation"] = 2
    assert cluster_specs([body])["prod"].drs.migration_threshold == 4
    unreadable = {"metadata": {"name": "bad", "uid": "u-bad", "generation": 1}, "spec": {"drs": {"x": 1}}}
    assert "bad" not in cluster_specs([unreadable]) and "bad" not in cluster_specs([unreadable])
