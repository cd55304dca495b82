"""HA admission control refusing placements: ``admission_refusal(s)`` over ComputeCluster and Host bodies
(vdc.controllers.computecluster), the same math as the clusters' status.ha."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.computecluster import ComputeClusterSpec
from vdc.controllers.computecluster import (
    Resources,
    admission_refusal,
    admission_refusals,
    ha_status,
    host_summary,
)

pytestmark = pytest.mark.unit

GI, MI = 1 << 30, 1 << 20


def host(
    name: str,
    cpus: int = 8,
    memory_gi: int = 16,
    used_cpus: int = 0,
    used: str = "0",
    *,
    ready: bool = True,
    **labels: str,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"rack": "a", **labels}},
        "spec": {"uri": f"qemu+ssh://{name}/system"},
        "status": {
            "allocatable": {"cpus": cpus, "memory": f"{memory_gi}Gi"},
            "allocated": {"cpus": used_cpus, "memory": used},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def cluster(
    name: str = "prod",
    policy: str = "HostFailuresTolerated",
    *,
    enabled: bool = True,
    selector: Any = None,
    **control: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "hostSelector": {"matchLabels": {"rack": "a"}} if selector is None else selector,
            "ha": {"enabled": enabled, "admissionControl": {"policy": policy, **control}},
        },
    }


def three_hosts(used_cpus: int = 4, used: str = "10Gi") -> list[dict[str, Any]]:
    """Three 8-CPU 16Gi hosts, h1 using ``used_cpus`` and ``used``: one failure leaves 16 CPUs, 32Gi."""
    return [host("h1", used_cpus=used_cpus, used=used), host("h2"), host("h3")]


# --- each policy ----------------------------------------------------------------------------------------------
def test_host_failures_tolerated_keeps_the_largest_hosts_worth_free() -> None:
    hosts = [*three_hosts(used_cpus=14, used="30Gi")]  # 16 CPUs, 32Gi left after one failure: 2 CPUs, 2Gi free
    clusters = [cluster(hostFailuresTolerated=1)]
    assert admission_refusal(clusters, hosts, "h2", 2, 2 * GI) is None  # exactly what is left
    assert admission_refusal(clusters, hosts, "h2", 1, 1 * GI) is None
    assert admission_refusal(clusters, hosts, "h2", 4, 1 * GI) == (
        "ComputeCluster prod: admission control (1 host failure tolerated) leaves 2 vCPUs and 2Gi free; "
        "the VM asks 4 vCPUs and 1Gi (2 vCPUs short)"
    )
    assert admission_refusal(clusters, hosts, "h1", 2, 2 * GI + 512 * MI) == (
        "ComputeCluster prod: admission control (1 host failure tolerated) leaves 2 vCPUs and 2Gi free; "
        "the VM asks 2 vCPUs and 2.5Gi (512Mi short)"
    )


def test_two_failures_tolerated_and_hosts_of_different_sizes() -> None:
    hosts = [host("big", 32, 128), host("mid", 16, 64), host("small", 8, 32, used_cpus=2, used="8Gi")]
    clusters = [cluster(hostFailuresTolerated=2)]  # left: small only (8, 32Gi); 6 CPUs, 24Gi free
    assert admission_refusal(clusters, hosts, "big", 6, 24 * GI) is None
    refused = admission_refusal(clusters, hosts, "big", 7, 25 * GI)
    assert refused == (
        "ComputeCluster prod: admission control (2 host failures tolerated) leaves 6 vCPUs and 24Gi free; "
        "the VM asks 7 vCPUs and 25Gi (1 vCPU and 1Gi short)"
    )


def test_too_few_hosts_for_the_failures_tolerated_leaves_nothing() -> None:
    hosts = [host("h1"), host("h2", ready=False)]  # h2 offers nothing: one failure leaves no host
    refused = admission_refusal([cluster()], hosts, "h1", 1, 64 * MI)
    assert refused == (
        "ComputeCluster prod: admission control (1 host failure tolerated) leaves 0 vCPUs and 0Mi free; "
        "the VM asks 1 vCPU and 64Mi (1 vCPU and 64Mi short)"
    )


def test_percentage_reserved_keeps_each_resource_s_share_free() -> None:
    hosts = [host("h1", 10, 10, used_cpus=6, used="14Gi"), host("h2", 10, 10)]
    clusters = [cluster(policy="PercentageReserved", cpuPercentReserved=50, memoryPercentReserved=25)]
    # left: 10 CPUs, 15Gi; free: 4 CPUs, 1Gi
    assert admission_refusal(clusters, hosts, "h2", 4, 1 * GI) is None
    assert admission_refusal(clusters, hosts, "h2", 2, 1 * GI + 512 * MI) == (
        "ComputeCluster prod: admission control (50% of CPUs and 25% of memory reserved) leaves 4 vCPUs and 1Gi "
        "free; the VM asks 2 vCPUs and 1.5Gi (512Mi short)"
    )


def test_what_runs_beyond_the_policy_shows_nothing_free_never_less() -> None:
    hosts = three_hosts(used_cpus=20, used="40Gi")  # 4 CPUs and 8Gi over already
    refused = admission_refusal([cluster()], hosts, "h3", 1, 1 * GI)
    assert refused is not None and "leaves 0 vCPUs and 0Mi free" in refused and "(1 vCPU and 1Gi short)" in refused


# --- who is judged ---------------------------------------------------------------------------------------------
def test_a_host_in_no_cluster_is_never_refused() -> None:
    hosts = [*three_hosts(used_cpus=16, used="32Gi"), host("lone", rack="b")]
    assert admission_refusal([cluster()], hosts, "lone", 8, 16 * GI) is None
    assert admission_refusal([], hosts, "h1", 8, 16 * GI) is None
    assert admission_refusal([cluster()], hosts, "no-such-host", 8, 16 * GI) is None


def test_ha_disabled_or_policy_none_refuses_nothing() -> None:
    hosts = three_hosts(used_cpus=16, used="32Gi")  # nothing left after one failure
    assert admission_refusal([cluster(enabled=False)], hosts, "h1", 1, GI) is None
    assert admission_refusal([cluster(policy="None")], hosts, "h1", 1, GI) is None
    assert admission_refusal([cluster()], hosts, "h1", 1, GI) is not None


def test_a_host_in_two_clusters_belongs_to_none() -> None:
    hosts = [*three_hosts(used_cpus=16, used="32Gi"), host("shared", rack="a", zone="z")]
    clusters = [cluster(), cluster("zone", policy="None", selector={"matchLabels": {"zone": "z"}})]
    assert admission_refusal(clusters, hosts, "shared", 1, GI) is None  # a member of neither
    assert admission_refusal(clusters, hosts, "h1", 1, GI) is not None  # prod still judges its own members
    # ... and the shared host's capacity is not prod's: with it, prod would have room
    alone = [cluster()]
    assert admission_refusal(alone, hosts, "h1", 1, GI) is None


def test_a_cluster_being_deleted_or_unreadable_claims_no_host() -> None:
    hosts = three_hosts(used_cpus=16, used="32Gi")
    going = cluster()
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert admission_refusal([going], hosts, "h1", 1, GI) is None
    broken = cluster()
    broken["spec"]["ha"]["admissionControl"]["hostFailuresTolerated"] = -1
    assert admission_refusal([broken], hosts, "h1", 1, GI) is None


def test_a_move_within_the_cluster_is_not_refused_one_into_it_is() -> None:
    hosts = [*three_hosts(used_cpus=16, used="32Gi"), host("outside", rack="b")]
    assert admission_refusal([cluster()], hosts, "h2", 1, GI, source="h1") is None
    assert admission_refusal([cluster()], hosts, "h2", 1, GI, source="outside") is not None
    assert admission_refusal([cluster()], hosts, "h2", 1, GI, source="gone") is not None


def test_many_hosts_at_once_each_cluster_judged_for_its_members() -> None:
    hosts = [
        *three_hosts(used_cpus=16, used="32Gi"),
        host("t1", rack="t"),
        host("t2", rack="t"),
        host("lone", rack="z"),
    ]
    clusters = [cluster(), cluster("test", selector={"matchLabels": {"rack": "t"}})]
    refused = admission_refusals(clusters, hosts, ["h1", "h2", "h3", "t1", "t2", "lone"], 1, GI)
    assert set(refused) == {"h1", "h2", "h3"}
    assert len(set(refused.values())) == 1 and refused["h1"].startswith("ComputeCluster prod:")


def test_the_ledger_counts_instead_of_the_hosts_status() -> None:
    hosts = three_hosts(used_cpus=0, used="0")  # the status lags: the ledger has VMs placed a moment ago

    def ledger(name: str) -> Resources:
        return Resources(14, 30 * GI) if name == "h1" else Resources()

    assert admission_refusal([cluster()], hosts, "h2", 4, GI) is None
    refused = admission_refusal([cluster()], hosts, "h2", 4, GI, allocated=ledger)
    assert refused is not None and "leaves 2 vCPUs and 2Gi free" in refused


@pytest.mark.parametrize(
    ("policy", "control"),
    [("HostFailuresTolerated", {"hostFailuresTolerated": 1}), ("PercentageReserved", {"cpuPercentReserved": 30})],
)
def test_the_status_headroom_is_what_is_admitted(policy: str, control: dict[str, Any]) -> None:
    hosts = [host("h1", 12, 24, used_cpus=5, used="7Gi"), host("h2", 8, 16, used_cpus=1, used="1Gi"), host("h3")]
    clusters = [cluster(policy=policy, **control)]
    spec = ComputeClusterSpec.model_validate(clusters[0]["spec"])
    headroom = ha_status(spec, [host_summary(h) for h in hosts]).headroom
    assert headroom is not None
    cpus, memory = headroom.cpus, int(str(headroom.memory).removesuffix("Mi")) * MI
    assert admission_refusal(clusters, hosts, "h1", cpus, memory) is None
    assert admission_refusal(clusters, hosts, "h1", cpus + 1, memory) is not None
    assert admission_refusal(clusters, hosts, "h1", cpus, memory + MI) is not None
