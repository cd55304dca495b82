"""DRS and DPM of a ComputeCluster (vdc.controllers.drs), the pure parts: recommendation ids and migration
names, what the migrations say, the rules resolved, the planner's inputs read from real caches and a real
ClusterView, the status written from a plan, and the demand loads the scheduler's Demand policy asks for."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from vdc.api.common import DNS_LABEL
from vdc.api.computecluster import DRS_OWNER_LABEL, ComputeClusterSpec
from vdc.api.host import DPM_STANDBY_ANNOTATION
from vdc.cluster.view import ClusterView
from vdc.controllers.computecluster import HostSummary, Resources
from vdc.controllers.drs import DrsController, dpm_status, drs_status, migration_name, recommendation_id
from vdc.controllers.drs_inputs import ClusterMigrations, PlannerInputs, planner_inputs, resolve_rules
from vdc.kube.cache import ObjectCache
from vdc.kube.client import KubeWriter
from vdc.metrics.demand import DemandTracker, VmDemand
from vdc.metrics.vmstats import VmStats
from vdc.scheduler.drs import HostLoadFigures, HostState, Move, Plan, Policy, PowerAction, entitlement, plan
from vdc.scheduler.rules import Rule

pytestmark = pytest.mark.unit

GI = 1 << 30
MI = 1 << 20
NOW = 1_767_323_045.0  # 2026-01-02T03:04:05Z


# --- bodies -----------------------------------------------------------------------------------------------
def host(
    name: str,
    *,
    phase: str | None = "Ready",
    cpus: Any = 8,
    memory: str = "64Gi",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    power_state: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"uri": "test:///default"}
    if power_state is not None:
        spec["powerState"] = power_state
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "capacity": {"cpus": cpus, "memory": memory},
        "allocatable": {"cpus": 16, "memory": memory},
    }
    if phase is not None:
        status["phase"] = phase
    return {
        "metadata": {
            "name": name,
            "uid": f"h-{name}",
            "labels": dict(labels if labels is not None else {"rack": "a"}),
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
        "status": status,
    }


def vm(
    name: str,
    on: str | None = None,
    *,
    ns: str = "t",
    phase: str | None = "Running",
    cpus: int = 1,
    memory: str = "1Gi",
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if on is not None:
        status["host"] = on
    if phase is not None:
        status["phase"] = phase
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": dict(labels or {})},
        "spec": {"cpu": {"count": cpus}, "memory": {"size": memory}, **spec},
        "status": status,
    }


def migration(
    name: str, vm_name: str, phase: str | None, *, ns: str = "t", cluster: str | None = None, done: str | None = None
) -> dict[str, Any]:
    labels = {DRS_OWNER_LABEL: cluster} if cluster is not None else {}
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if done is not None:
        status["completionTime"] = done
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"m-{name}", "labels": labels},
        "spec": {"vm": vm_name},
        "status": status,
    }


def cluster_spec(**raw: Any) -> ComputeClusterSpec:
    return ComputeClusterSpec.model_validate({"hostSelector": {"matchLabels": {"rack": "a"}}, **raw})


def summary(name: str, *, cpus: int = 16, memory_gi: int = 64, used_cpus: int = 0, used_gi: int = 0) -> HostSummary:
    return HostSummary(
        name,
        {"rack": "a"},
        ready=True,
        allocatable=Resources(cpus, memory_gi * GI),
        allocated=Resources(used_cpus, used_gi * GI),
    )


class World:
    """The caches and the ClusterView the controller reads."""

    def __init__(self, hosts: Iterable[dict[str, Any]] = (), vms: Iterable[dict[str, Any]] = ()) -> None:
        self.hosts = ObjectCache()
        self.vms = ObjectCache()
        self.migrations = ObjectCache()
        self.clusters = ObjectCache()
        self.view = ClusterView(hosts=self.hosts, vms=self.vms)
        for body in hosts:
            self.hosts.upsert(body)
        for body in vms:
            self.vms.upsert(body)

    def inputs(
        self,
        spec: ComputeClusterSpec,
        members: list[str] | None = None,
        summaries: Mapping[str, HostSummary] | None = None,
        demand: Mapping[str, VmDemand] | None = None,
        name: str = "prod",
    ) -> PlannerInputs:
        names = members if members is not None else sorted(b["metadata"]["name"] for b in self.hosts)
        sums = summaries if summaries is not None else {h: summary(h) for h in names}
        return planner_inputs(
            name, spec, names, sums, self.hosts, self.vms, self.migrations, self.view, demand or {}, NOW
        )


def by_name(inputs: PlannerInputs) -> dict[str, Any]:
    return {v.key[1]: v for v in inputs.vms}


# --- recommendation ids and migration names ---------------------------------------------------------------
def test_recommendation_id_is_stable_and_differs_per_vm_and_target() -> None:
    rid = recommendation_id(("t", "web"), "hv2")
    assert rid == recommendation_id(("t", "web"), "hv2")
    assert re.fullmatch(r"[0-9a-f]{8}", rid)
    assert (
        len(
            {
                rid,
                recommendation_id(("t", "web"), "hv3"),
                recommendation_id(("u", "web"), "hv2"),
                recommendation_id(("t", "db"), "hv2"),
            }
        )
        == 4
    )


def test_migration_name_is_stable_and_names_the_vm() -> None:
    name = migration_name("prod", "web", "hv2")
    assert name == migration_name("prod", "web", "hv2")
    assert name.startswith("drs-web-") and re.fullmatch(DNS_LABEL, name)
    assert name != migration_name("prod", "web", "hv3")
    assert name != migration_name("test", "web", "hv2")


@pytest.mark.parametrize("vm_name", ["a" * 63, "x" * 43 + "-" + "y" * 19, "a-" * 31 + "b", "0" * 63])
def test_migration_name_of_a_long_vm_name_is_a_dns_label_of_at_most_63(vm_name: str) -> None:
    assert re.fullmatch(DNS_LABEL, vm_name)  # a VM name is a DNS label itself
    name = migration_name("a-cluster-with-a-long-name", vm_name, "hv-with-a-long-name-too")
    assert len(name) <= 63 and re.fullmatch(DNS_LABEL, name)


def test_long_vm_names_sharing_a_prefix_get_different_migration_names() -> None:
    first, second = "v" * 50 + "-one", "v" * 50 + "-two"
    assert migration_name("prod", first, "hv2") != migration_name("prod", second, "hv2")


# --- ClusterMigrations ------------------------------------------------------------------------------------
def test_busy_is_every_non_terminal_migration_of_any_owner() -> None:
    got = ClusterMigrations.of(
        [
            migration("m1", "a", "Running", cluster="prod"),
            migration("m2", "b", "Pending", cluster="other"),
            migration("m3", "c", None),  # no phase yet: not terminal
            migration("m4", "d", "Succeeded", cluster="prod", done="2026-01-02T03:00:00Z"),
            migration("m5", "e", "Failed", cluster="prod"),
            migration("m6", "f", "Cancelled"),
            migration("m7", "a", "Running", ns="u"),
        ],
        "prod",
    )
    assert got.busy == frozenset({("t", "a"), ("t", "b"), ("t", "c"), ("u", "a")})


def test_running_counts_only_the_clusters_own_non_terminal_migrations() -> None:
    got = ClusterMigrations.of(
        [
            migration("m1", "a", "Running", cluster="prod"),
            migration("m2", "b", None, cluster="prod"),
            migration("m3", "c", "Running", cluster="other"),
            migration("m4", "d", "Running"),
            migration("m5", "e", "Succeeded", cluster="prod", done="2026-01-02T03:00:00Z"),
        ],
        "prod",
    )
    assert got.running == 2
    assert ClusterMigrations.of([], "prod") == ClusterMigrations(frozenset(), 0, {})


def test_moved_at_is_the_latest_succeeded_completion_of_the_clusters_own() -> None:
    got = ClusterMigrations.of(
        [
            migration("m1", "a", "Succeeded", cluster="prod", done="2026-01-02T03:00:00Z"),
            migration("m2", "a", "Succeeded", cluster="prod", done="2026-01-02T03:04:05Z"),
            migration("m3", "a", "Succeeded", cluster="prod", done="2026-01-02T02:00:00Z"),
            migration("m4", "b", "Succeeded", cluster="other", done="2026-01-02T03:00:00Z"),
            migration("m5", "c", "Succeeded", done="2026-01-02T03:00:00Z"),
            migration("m6", "d", "Failed", cluster="prod", done="2026-01-02T03:00:00Z"),
            migration("m7", "e", "Succeeded", cluster="prod"),  # no completionTime
            migration("m8", "f", "Succeeded", cluster="prod", done="not a time"),
            migration("m9", "g", "Succeeded", cluster="prod", done="2026-01-02T05:04:05+02:00"),
        ],
        "prod",
    )
    assert dict(got.moved_at) == {("t", "a"): NOW, ("t", "g"): NOW}
    assert got.busy == frozenset() and got.running == 0


# --- resolve_rules ----------------------------------------------------------------------------------------
def rules_of(*raw: dict[str, Any]) -> list[Any]:
    return list(cluster_spec(rules=list(raw)).rules)


VMS = [
    vm("web1", labels={"app": "web"}),
    vm("web2", labels={"app": "web"}),
    vm("web3", ns="u", labels={"app": "web"}),
    vm("db1", labels={"app": "db"}),
]
HOSTS = [host("hv1", labels={"rack": "a", "gpu": "yes"}), host("hv2"), host("hv3", labels={"rack": "a", "gpu": "no"})]


def test_rules_select_vms_by_labels_in_every_namespace_by_default() -> None:
    (rule,) = resolve_rules(
        rules_of({"name": "spread", "type": "VmAntiAffinity", "vmSelector": {"matchLabels": {"app": "web"}}}),
        VMS,
        HOSTS,
    )
    assert rule == Rule("spread", "VmAntiAffinity", True, frozenset({("t", "web1"), ("t", "web2"), ("u", "web3")}))


def test_rules_namespaces_filter_the_vms() -> None:
    (rule,) = resolve_rules(
        rules_of(
            {
                "name": "spread",
                "type": "VmAntiAffinity",
                "namespaces": ["u"],
                "vmSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
            }
        ),
        VMS,
        HOSTS,
    )
    assert rule.vms == frozenset({("u", "web3")})


def test_vm_host_rules_resolve_the_host_group_should_and_placement() -> None:
    run_on, not_on = resolve_rules(
        rules_of(
            {
                "name": "gpu",
                "type": "VmHost",
                "vmSelector": {"matchLabels": {"app": "db"}},
                "hostSelector": {"matchLabels": {"gpu": "yes"}},
            },
            {
                "name": "no-gpu",
                "type": "VmHost",
                "enforcement": "Should",
                "placement": "NotRunOn",
                "vmSelector": {"matchLabels": {"app": "web"}},
                "hostSelector": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
            },
        ),
        VMS,
        HOSTS,
    )
    assert run_on == Rule("gpu", "VmHost", True, frozenset({("t", "db1")}), frozenset({"hv1"}), True)
    assert (not_on.must, not_on.run_on, not_on.hosts) == (False, False, frozenset({"hv1", "hv3"}))


def test_a_rule_without_host_selector_has_no_host_group_and_an_unmatched_selector_no_vms() -> None:
    (affinity, nothing) = resolve_rules(
        rules_of(
            {
                "name": "together",
                "type": "VmAffinity",
                "enforcement": "Should",
                "vmSelector": {"matchLabels": {"app": "db"}},
            },
            {"name": "nothing", "type": "VmAffinity", "vmSelector": {"matchLabels": {"app": "none"}}},
        ),
        VMS,
        HOSTS,
    )
    assert affinity == Rule("together", "VmAffinity", False, frozenset({("t", "db1")}), frozenset(), True)
    assert nothing.vms == frozenset()


# --- drs_status / dpm_status ------------------------------------------------------------------------------
def move(name: str, target: str, **kw: Any) -> Move:
    fields: dict[str, Any] = {
        "vm": ("t", name),
        "source": "hv1",
        "target": target,
        "reason": "Balance",
        "rule": None,
        "message": f"balance {name}",
        "imbalance_before": 0.25,
        "imbalance_after": 0.1234,
        "automated": False,
    }
    fields.update(kw)
    return Move(**fields)


LOADS = (
    HostLoadFigures("hv1", "On", 3.2346, 8, 10 * GI + 5, 64 * GI, 4),
    HostLoadFigures("hv2", "On", 0.5, 8, 48 * GI, 64 * GI, 2),
    HostLoadFigures("hv3", "Standby", 0.0, 8, 0, 64 * GI, 0),
    HostLoadFigures("hv4", "EnteringStandby", 0.0, 8, 0, 64 * GI, 0),
    HostLoadFigures("hv5", "Waking", 0.0, 8, 0, 64 * GI, 0),
)


def a_plan(**kw: Any) -> Plan:
    fields: dict[str, Any] = {
        "imbalance": 0.25,
        "imbalance_after": 0.1,
        "target": 0.1,
        "moves": (
            move("web", "hv2"),
            move(
                "db",
                "hv3",
                reason="RuleViolation",
                rule="gpu",
                message="must rule gpu: t/db off the group",
                automated=True,
            ),
        ),
        "violations": (("gpu", "t/db runs on hv1, not in the host group"),),
        "loads": LOADS,
        "message": "2 moves",
    }
    fields.update(kw)
    return Plan(**fields)


def test_drs_status_maps_the_plans_moves_and_fills_migration_from_made() -> None:
    spec = cluster_spec(drs={"enabled": True, "automation": "FullyAutomated"})
    made = {recommendation_id(("t", "db"), "hv3"): "drs-db-abcdef"}
    got = drs_status(spec, a_plan(), made, moving=1)
    assert (got.automation, got.imbalance, got.target, got.message, got.moving) == (
        "FullyAutomated",
        "0.250",
        "0.100",
        "2 moves",
        1,
    )
    web, db = got.recommendations
    assert (web.id, web.namespace, web.vm, web.source, web.target, web.reason, web.rule) == (
        recommendation_id(("t", "web"), "hv2"),
        "t",
        "web",
        "hv1",
        "hv2",
        "Balance",
        None,
    )
    assert (web.message, web.imbalance_before, web.imbalance_after, web.migration) == (
        "balance web",
        "0.250",
        "0.123",
        None,
    )
    assert (db.reason, db.rule, db.migration) == ("RuleViolation", "gpu", "drs-db-abcdef")
    assert db.message == "must rule gpu: t/db off the group"
    assert [(v.rule, v.message) for v in got.violations] == [("gpu", "t/db runs on hv1, not in the host group")]


def test_drs_status_host_loads() -> None:
    got = drs_status(cluster_spec(drs={"enabled": True}), a_plan(), {}, moving=0)
    first = got.hosts[0]
    assert (first.host, first.power, first.cpu_demand_milli, first.cpus, first.vms) == ("hv1", "On", 3235, 8, 4)
    assert (first.memory_demand, first.memory, first.load_percent) == ("10240Mi", "65536Mi", 40)  # 3.2346/8
    second = got.hosts[1]
    assert second.load_percent == 75 and second.memory_demand == "49152Mi"  # memory 48/64 beats cpu 0.5/8
    assert [h.power for h in got.hosts] == ["On", "On", "Standby", "EnteringStandby", "Waking"]


@pytest.mark.parametrize("target", [math.inf])
def test_drs_status_target_none_for_threshold_one(target: float) -> None:
    got = drs_status(cluster_spec(drs={"enabled": True, "migrationThreshold": 1}), a_plan(target=target), {}, 0)
    assert got.target == "none"


def test_drs_status_automation_disabled_when_drs_is_off() -> None:
    spec = cluster_spec(drs={"enabled": False, "automation": "FullyAutomated"})
    assert drs_status(spec, a_plan(), {}, 0).automation == "Disabled"
    assert drs_status(cluster_spec(drs={"enabled": True}), a_plan(), {}, 0).automation == "Manual"


def test_drs_status_message_names_the_first_three_unfixable() -> None:
    got = drs_status(cluster_spec(drs={"enabled": True}), a_plan(unfixable=("u1", "u2", "u3", "u4")), {}, 0)
    assert got.message == "2 moves; u1; u2; u3"


def test_drs_status_with_three_realistic_unfixable_violations_is_written() -> None:
    unfixable = tuple(
        f"spread-frontend: production/web-frontend-{i} cannot move (pinned to its host (spec.host))" for i in range(3)
    )
    result = a_plan(moves=(), message="3 rules broken, no move can fix it now", unfixable=unfixable)
    got = drs_status(cluster_spec(drs={"enabled": True}), result, {}, 0)
    assert got.message.startswith("3 rules broken")


@pytest.mark.parametrize("field", ["recommendation", "violation"])
def test_drs_status_cuts_long_move_and_violation_messages_to_what_the_api_takes(field: str) -> None:
    result = (
        a_plan(moves=(move("db", "hv3", message="x" * 300),))
        if field == "recommendation"
        else a_plan(violations=(("gpu", "y" * 300),))
    )
    drs_status(cluster_spec(drs={"enabled": True}), result, {}, 0)


def test_dpm_status_while_ten_hosts_enter_standby_is_written() -> None:
    hosts = [HostState(name=f"hv-rack-a-{i:02}", cpus=16, memory=64 * GI, power="EnteringStandby") for i in range(10)]
    hosts.append(HostState(name="hv-rack-b-01", cpus=16, memory=64 * GI))
    result = plan(hosts, [], [], Policy(dpm="Automated"))  # "waiting: hv-rack-a-00 EnteringStandby, ..."
    got = dpm_status(cluster_spec(dpm={"automation": "Automated"}), result)
    assert got.message.startswith("waiting: ")


def test_drs_status_lists_at_most_100_recommendations_and_violations() -> None:
    moves = tuple(move(f"vm{i}", "hv2") for i in range(150))
    violations = tuple((f"r{i}", "broken") for i in range(150))
    got = drs_status(cluster_spec(drs={"enabled": True}), a_plan(moves=moves, violations=violations), {}, 0)
    assert len(got.recommendations) == 100 and got.recommendations[-1].vm == "vm99"
    assert len(got.violations) == 100


def test_dpm_status_counts_hosts_on_and_lists_standby_and_recommendations() -> None:
    spec = cluster_spec(dpm={"automation": "Manual"})
    power = (
        PowerAction("hv2", "Standby", "utilization 20% under 45%", automated=False),
        PowerAction("hv3", "PowerOn", "over the band", automated=True),
    )
    got = dpm_status(spec, a_plan(power=power, utilization=0.456, dpm_message="low"))
    assert (got.automation, got.utilization_percent, got.hosts_on, got.message) == ("Manual", 46, 2, "low")
    assert got.standby == ["hv3", "hv4"]  # Waking is neither on nor in Standby
    assert [(r.host, r.action) for r in got.recommendations] == [("hv2", "Standby"), ("hv3", "PowerOn")]
    assert got.recommendations[0].message == "utilization 20% under 45%"


# --- planner_inputs: hosts --------------------------------------------------------------------------------
def test_host_states_take_allocatable_from_the_summary_and_allocated_from_the_view() -> None:
    world = World([host("hv1", cpus=12)], [vm("a", "hv1", cpus=2, memory="2Gi"), vm("b", "hv1", cpus=3)])
    (state,) = world.inputs(cluster_spec(), summaries={"hv1": summary("hv1", cpus=24, memory_gi=96)}).hosts
    assert (state.name, state.cpus, state.memory) == ("hv1", 24, 96 * GI)
    assert (state.allocated_cpus, state.allocated_memory) == (5, 3 * GI)
    assert (state.power, state.available, state.dpm, state.physical_cpus) == ("On", True, "Default", 12)


def test_a_host_is_power_managed_only_with_spec_power_management() -> None:
    managed = host("hv2")
    managed["spec"]["powerManagement"] = {"redfish": {"endpoint": "https://bmc", "systemId": "1"}}
    states = {h.name: h for h in World([host("hv1"), managed]).inputs(cluster_spec()).hosts}
    assert (states["hv1"].power_managed, states["hv2"].power_managed) == (False, True)


def test_members_without_a_body_or_a_summary_are_left_out() -> None:
    world = World([host("hv1"), host("hv2")])
    inputs = world.inputs(cluster_spec(), members=["hv1", "hv2", "gone"], summaries={"hv1": summary("hv1")})
    assert [h.name for h in inputs.hosts] == ["hv1"]


def test_an_unavailable_summary_makes_the_host_unavailable() -> None:
    world = World([host("hv1")])
    sums = {"hv1": HostSummary("hv1", {}, ready=True, maintenance=True, allocatable=Resources(8, 8 * GI))}
    assert world.inputs(cluster_spec(), summaries=sums).hosts[0].available is False


@pytest.mark.parametrize("cpus", [0, None, "lots", -4])
def test_physical_cpus_unknown_when_capacity_is_unreadable(cpus: Any) -> None:
    world = World([host("hv1", cpus=cpus)])
    assert world.inputs(cluster_spec()).hosts[0].physical_cpus is None


def test_physical_cpus_unknown_without_capacity() -> None:
    body = host("hv1")
    del body["status"]["capacity"]
    assert World([body]).inputs(cluster_spec()).hosts[0].physical_cpus is None


@pytest.mark.parametrize(
    ("body", "power"),
    [
        (host("a", phase="Standby"), "Standby"),
        (host("a", phase="EnteringStandby"), "EnteringStandby"),
        (host("a", phase="Waking"), "Waking"),
        (host("a", phase="Ready"), "On"),
        (host("a", phase=None), "On"),
        (host("a", phase="Ready", annotations={DPM_STANDBY_ANNOTATION: "prod"}), "EnteringStandby"),
        (host("a", phase="Ready", power_state="Standby"), "EnteringStandby"),
        (host("a", phase="Maintenance", power_state="Standby"), "EnteringStandby"),
        (host("a", phase="Ready", power_state="On"), "On"),
        (host("a", phase="Waking", power_state="Standby"), "Waking"),  # the phase wins
    ],
)
def test_host_power_from_its_phase_else_what_asks_for_standby(body: dict[str, Any], power: str) -> None:
    assert World([body]).inputs(cluster_spec()).hosts[0].power == power


def test_host_dpm_from_the_clusters_overrides_and_an_admins_standby_disables_it() -> None:
    world = World([host("hv1"), host("hv2"), host("hv3"), host("hv4", power_state="Standby"), host("hv5")])
    spec = cluster_spec(
        dpm={
            "automation": "Automated",
            "hostOverrides": [
                {"host": "hv1", "automation": "Disabled"},
                {"host": "hv2", "automation": "Manual"},
                {"host": "hv3", "automation": "Automated"},
                {"host": "hv4", "automation": "Automated"},
            ],
        }
    )
    dpm = {h.name: h.dpm for h in world.inputs(spec).hosts}
    assert dpm == {"hv1": "Disabled", "hv2": "Manual", "hv3": "Automated", "hv4": "Disabled", "hv5": "Default"}


def test_dpms_own_standby_annotation_keeps_the_dpm_setting() -> None:
    world = World([host("hv1", annotations={DPM_STANDBY_ANNOTATION: "prod"})])
    assert world.inputs(cluster_spec()).hosts[0].dpm == "Default"


# --- planner_inputs: VMs ----------------------------------------------------------------------------------
def test_vm_states_take_requests_placement_and_uids() -> None:
    world = World([host("hv1"), host("hv2")], [vm("a", "hv1", cpus=2, memory="3Gi"), vm("b", "hv2")])
    inputs = world.inputs(cluster_spec())
    vms = by_name(inputs)
    a = vms["a"]
    assert (a.key, a.host, a.cpus, a.memory, a.stuck, a.allowed, a.moved_at) == (
        ("t", "a"),
        "hv1",
        2,
        3 * GI,
        None,
        None,
        None,
    )
    assert vms["b"].host == "hv2"
    assert dict(inputs.uids) == {("t", "a"): "uid-t-a", ("t", "b"): "uid-t-b"}


def test_vms_of_non_members_and_unplaced_or_merely_reserved_vms_are_left_out() -> None:
    reserved = vm("reserved")
    world = World([host("hv1"), host("other")], [vm("a", "hv1"), vm("elsewhere", "other"), vm("nowhere"), reserved])
    world.view.reserve(reserved, "hv1")  # counted on hv1 by the ledger, but not running there yet
    inputs = world.inputs(cluster_spec(), members=["hv1"])
    assert [v.key[1] for v in inputs.vms] == ["a"]
    assert inputs.hosts[0].allocated_cpus == 2  # the reservation counts in the allocation all the same


def test_demand_comes_from_the_measured_mapping_by_uid() -> None:
    world = World([host("hv1")], [vm("a", "hv1"), vm("b", "hv1"), vm("c", "hv1")])
    demand = {
        "uid-t-a": VmDemand("uid-t-a", "t", "a", "hv1", 1.5, 512 * MI, 3),
        "uid-t-b": VmDemand("uid-t-b", "t", "b", "hv1", 0.25, None, 1),
        "uid-x-unrelated": VmDemand("uid-x-unrelated", "x", "z", "hv1", 9.0, GI, 5),
    }
    vms = by_name(world.inputs(cluster_spec(), demand=demand))
    assert (vms["a"].cpu_demand, vms["a"].memory_demand) == (1.5, 512 * MI)
    assert (vms["b"].cpu_demand, vms["b"].memory_demand) == (0.25, None)
    assert (vms["c"].cpu_demand, vms["c"].memory_demand) == (0.0, None)  # not measured


def test_drs_balances_entitlements_demand_at_least_the_reservation_at_most_the_limit() -> None:
    qos = {
        "idle-reserved": {"cpu": {"reservation": "1500m"}, "memory": {"reservation": "768Mi"}},
        "busy-capped": {"cpu": {"limit": "500m"}, "memory": {"limit": "2Gi"}},
        "old-limit": {"cpuLimit": 250},
    }
    world = World([host("hv1")], [vm(name, "hv1", qos=q) for name, q in qos.items()])
    demand = {
        f"uid-t-{name}": VmDemand(f"uid-t-{name}", "t", name, "hv1", cores, memory, 1)
        for name, cores, memory in (
            ("idle-reserved", 0.1, 256 * MI),
            ("busy-capped", 1.0, GI),
            ("old-limit", 1.0, None),
        )
    }
    vms = by_name(world.inputs(cluster_spec(), demand=demand))
    assert (vms["idle-reserved"].cpu_demand, vms["idle-reserved"].memory_demand) == (1.5, 768 * MI)
    assert (vms["busy-capped"].cpu_demand, vms["busy-capped"].memory_demand) == (0.5, GI)
    assert (vms["old-limit"].cpu_demand, vms["old-limit"].memory_demand) == (0.25, None)


@pytest.mark.parametrize(
    ("demand", "reservation", "limit", "expected"),
    [(0.2, 0.0, None, 0.2), (0.2, 1.0, None, 1.0), (3.0, 1.0, 2.0, 2.0), (3.0, 2.5, 2.0, 2.5), (0.0, 0.0, 0.5, 0.0)],
)
def test_entitlement(demand: float, reservation: float, limit: float | None, expected: float) -> None:
    assert entitlement(demand, reservation, limit) == expected


def test_a_pinned_vm_is_stuck() -> None:
    world = World([host("hv1")], [vm("a", "hv1", host="hv1")])
    assert by_name(world.inputs(cluster_spec()))["a"].stuck == "pinned to its host (spec.host)"


def test_a_vm_with_a_running_migration_of_any_owner_is_stuck() -> None:
    world = World([host("hv1")], [vm("a", "hv1"), vm("b", "hv1"), vm("c", "hv1")])
    world.migrations.upsert(migration("m1", "a", "Running"))
    world.migrations.upsert(migration("m2", "b", "Pending", cluster="other"))
    world.migrations.upsert(migration("m3", "c", "Failed", cluster="prod"))
    vms = by_name(world.inputs(cluster_spec()))
    assert vms["a"].stuck == vms["b"].stuck == "being migrated"
    assert vms["c"].stuck is None


@pytest.mark.parametrize(
    ("phase", "why"),
    [("Stopped", "not running (Stopped)"), (None, "not running (no phase)"), ("Migrating", "not running (Migrating)")],
)
def test_a_vm_that_is_not_running_is_stuck(phase: str | None, why: str) -> None:
    world = World([host("hv1")], [vm("a", "hv1", phase=phase)])
    assert by_name(world.inputs(cluster_spec()))["a"].stuck == why


def test_moved_at_comes_from_the_clusters_succeeded_migrations() -> None:
    world = World([host("hv1")], [vm("a", "hv1"), vm("b", "hv1")])
    world.migrations.upsert(migration("m1", "a", "Succeeded", cluster="prod", done="2026-01-02T03:04:05Z"))
    world.migrations.upsert(migration("m2", "b", "Succeeded", cluster="other", done="2026-01-02T03:04:05Z"))
    inputs = world.inputs(cluster_spec())
    vms = by_name(inputs)
    assert (vms["a"].moved_at, vms["b"].moved_at) == (NOW, None)
    assert inputs.policy.now == NOW


@pytest.mark.parametrize(
    ("own", "cluster", "automation"),
    [
        (None, "FullyAutomated", "FullyAutomated"),
        (None, "Manual", "Manual"),
        ("Default", "PartiallyAutomated", "PartiallyAutomated"),
        ("Disabled", "FullyAutomated", "Disabled"),
        ("Manual", "FullyAutomated", "Manual"),
        ("PartiallyAutomated", "Manual", "PartiallyAutomated"),
        ("FullyAutomated", "Manual", "FullyAutomated"),
        ("Sometimes", "PartiallyAutomated", "PartiallyAutomated"),  # unknown: the cluster's
    ],
)
def test_a_vms_drs_override_wins_over_the_clusters_automation(own: str | None, cluster: str, automation: str) -> None:
    extra: dict[str, Any] = {"drs": own} if own is not None else {}
    world = World([host("hv1")], [vm("a", "hv1", **extra)])
    spec = cluster_spec(drs={"enabled": True, "automation": cluster})
    assert by_name(world.inputs(spec))["a"].automation == automation


def test_a_vms_host_selector_allows_only_the_matching_members() -> None:
    world = World(
        [host("hv1", labels={"rack": "a", "ssd": "yes"}), host("hv2"), host("hv3", labels={"ssd": "yes"})],
        [vm("a", "hv1", hostSelector={"matchLabels": {"ssd": "yes"}}), vm("b", "hv2", hostSelector={})],
    )
    vms = by_name(world.inputs(cluster_spec(), members=["hv1", "hv2"]))
    assert vms["a"].allowed == frozenset({"hv1"})  # hv3 matches but is no member
    assert vms["b"].allowed is None  # an empty selector: no constraint


def test_rules_are_resolved_over_the_caches() -> None:
    world = World(
        [host("hv1", labels={"rack": "a", "gpu": "yes"}), host("hv2")],
        [vm("a", "hv1", labels={"app": "db"}), vm("b", "hv2", labels={"app": "db"})],
    )
    spec = cluster_spec(
        rules=[
            {
                "name": "gpu",
                "type": "VmHost",
                "vmSelector": {"matchLabels": {"app": "db"}},
                "hostSelector": {"matchLabels": {"gpu": "yes"}},
            }
        ]
    )
    (rule,) = world.inputs(spec).rules
    assert rule == Rule("gpu", "VmHost", True, frozenset({("t", "a"), ("t", "b")}), frozenset({"hv1"}), True)


# --- planner_inputs: the policy ---------------------------------------------------------------------------
def test_policy_takes_the_clusters_drs_and_dpm_settings() -> None:
    spec = cluster_spec(
        drs={"enabled": True, "migrationThreshold": 4, "cooldownSeconds": 90},
        dpm={"automation": "Automated", "targetUtilizationLow": 30, "targetUtilizationHigh": 70, "minHostsOn": 2},
    )
    policy = World([host("hv1")]).inputs(spec).policy
    assert (policy.threshold, policy.cooldown, policy.now, policy.dpm) == (4, 90.0, NOW, "Automated")
    assert (policy.low, policy.high, policy.min_hosts_on) == (0.30, 0.70, 2)
    assert (policy.waiting_vms, policy.ha_short, policy.ha_needed) == (0, False, frozenset())


def test_policy_threshold_is_one_when_drs_is_disabled() -> None:
    spec = cluster_spec(drs={"enabled": False, "migrationThreshold": 5})
    assert World([host("hv1")]).inputs(spec).policy.threshold == 1


def ha_spec(tolerated: int = 1) -> ComputeClusterSpec:
    return cluster_spec(
        ha={
            "enabled": True,
            "admissionControl": {"policy": "HostFailuresTolerated", "hostFailuresTolerated": tolerated},
        }
    )


def test_ha_needed_names_the_members_ha_cannot_do_without() -> None:
    names = ["hv1", "hv2", "hv3"]
    world = World([host(h) for h in names])
    # Three hosts of 16 CPUs, 20 used: one may fail (32 left) but with any one in Standby, one failure leaves 16.
    sums = {h: summary(h, used_cpus=10 if h == "hv1" else 5) for h in names}
    policy = world.inputs(ha_spec(), summaries=sums).policy
    assert (policy.ha_short, policy.ha_needed) == (False, frozenset(names))


def test_ha_needs_no_member_when_any_one_can_go() -> None:
    names = ["hv1", "hv2", "hv3", "hv4"]
    sums = {h: summary(h, used_cpus=5) for h in names}
    policy = World([host(h) for h in names]).inputs(ha_spec(), summaries=sums).policy
    assert (policy.ha_short, policy.ha_needed) == (False, frozenset())


def test_ha_short_when_admission_control_lacks_capacity_now() -> None:
    names = ["hv1", "hv2"]
    sums = {h: summary(h, used_cpus=10) for h in names}  # 20 used, 16 left after one failure
    policy = World([host(h) for h in names]).inputs(ha_spec(), summaries=sums).policy
    assert (policy.ha_short, policy.ha_needed) == (True, frozenset())


def test_ha_needed_is_empty_with_ha_disabled_or_policy_none() -> None:
    names = ["hv1", "hv2", "hv3"]
    sums = {h: summary(h, used_cpus=10) for h in names}
    world = World([host(h) for h in names])
    assert world.inputs(cluster_spec(), summaries=sums).policy.ha_needed == frozenset()
    none = cluster_spec(ha={"enabled": True, "admissionControl": {"policy": "None"}})
    policy = world.inputs(none, summaries=sums).policy
    assert (policy.ha_short, policy.ha_needed) == (False, frozenset())


def unschedulable(name: str, **spec: Any) -> dict[str, Any]:
    body = vm(name, phase="Pending", **spec)
    body["status"]["conditions"] = [{"type": "Scheduled", "status": "False", "reason": "Unschedulable"}]
    return body


def test_waiting_vms_count_unschedulable_unplaced_vms_when_a_member_is_in_standby() -> None:
    scheduled_false_other = vm("other-reason", phase="Pending")
    scheduled_false_other["status"]["conditions"] = [{"type": "Scheduled", "status": "False", "reason": "NoPool"}]
    world = World(
        [host("hv1"), host("hv2", phase="Standby", labels={"rack": "a", "big": "yes"})],
        [
            unschedulable("w1"),
            unschedulable("w2", hostSelector={"matchLabels": {"big": "yes"}}),
            unschedulable("w3", hostSelector={"matchLabels": {"big": "no"}}),  # no Standby member would do
            scheduled_false_other,
            vm("pending", phase="Pending"),
            vm("placed", "hv1"),
        ],
    )
    assert world.inputs(cluster_spec()).policy.waiting_vms == 2


def test_no_waiting_vms_without_a_standby_member() -> None:
    world = World([host("hv1"), host("hv2", phase="EnteringStandby")], [unschedulable("w1"), unschedulable("w2")])
    assert world.inputs(cluster_spec()).policy.waiting_vms == 0


# --- DrsController.demand_loads ---------------------------------------------------------------------------
def controller(world: World, demand: Any = None, *, clusters: bool = True) -> DrsController:
    return DrsController(
        world.hosts,
        world.vms,
        world.migrations,
        world.view,
        cast(KubeWriter, object()),  # not used by demand_loads
        demand,
        clusters=world.clusters if clusters else None,
    )


def add_cluster(world: World, name: str, selector: Mapping[str, str], **raw: Any) -> None:
    world.clusters.upsert(
        {
            "metadata": {"name": name, "uid": f"c-{name}"},
            "spec": {"hostSelector": {"matchLabels": dict(selector)}, **raw},
        }
    )


class Cores:
    def __init__(self, cores: Mapping[str, float]) -> None:
        self.cores = cores

    def host_cpu_cores(self, host: str) -> float:
        return self.cores.get(host, 0.0)


def demand_world(automation: str = "PartiallyAutomated", enabled: bool = True) -> World:
    world = World(
        [host("hv1", cpus=8, memory="16Gi"), host("hv2", cpus=4, memory="16Gi"), host("far", labels={"rack": "b"})],
        [vm("a", "hv1", memory="8Gi"), vm("b", "hv2", memory="2Gi")],
    )
    add_cluster(world, "prod", {"rack": "a"}, drs={"enabled": enabled, "automation": automation})
    return world


def test_no_demand_loads_without_clusters() -> None:
    world = demand_world()
    assert controller(world, Cores({"hv1": 4.0}), clusters=False).demand_loads(vm("new"), ["hv1", "hv2"]) == {}
    empty = World([host("hv1")])
    assert controller(empty, Cores({"hv1": 4.0})).demand_loads(vm("new"), ["hv1"]) == {}


@pytest.mark.parametrize("own", ["Disabled", "Manual"])
def test_no_demand_loads_for_a_vm_whose_drs_says_disabled_or_manual(own: str) -> None:
    world = demand_world("FullyAutomated")
    assert controller(world, Cores({"hv1": 4.0})).demand_loads(vm("new", drs=own), ["hv1", "hv2"]) == {}


def test_no_demand_loads_for_a_manual_or_disabled_cluster() -> None:
    manual = demand_world("Manual")
    assert controller(manual, Cores({"hv1": 4.0})).demand_loads(vm("new"), ["hv1", "hv2"]) == {}
    off = demand_world("FullyAutomated", enabled=False)
    assert controller(off, Cores({"hv1": 4.0})).demand_loads(vm("new"), ["hv1", "hv2"]) == {}


def test_a_vm_asking_for_automation_gets_loads_in_a_manual_cluster() -> None:
    world = demand_world("Manual")
    got = controller(world, Cores({"hv1": 6.0})).demand_loads(vm("new", drs="PartiallyAutomated"), ["hv1"])
    assert got == {"hv1": pytest.approx(0.75)}


def test_demand_loads_for_members_of_an_enabled_partially_automated_cluster() -> None:
    world = demand_world()
    got = controller(world, Cores({"hv1": 2.0, "hv2": 3.0})).demand_loads(vm("new"), ["hv1", "hv2", "far", "gone"])
    # hv1: cpu 2/8, memory 8Gi/16Gi -> 0.5; hv2: cpu 3/4 -> 0.75 beats memory 2/16. far: in no cluster.
    assert got == {"hv1": pytest.approx(0.5), "hv2": pytest.approx(0.75)}


def test_demand_loads_from_a_demand_tracker() -> None:
    world = demand_world("FullyAutomated")
    tracker = DemandTracker()
    tracker.observe("hv1", [VmStats("t", "a", "hv1", "uid-t-a", "running", cpu_seconds=100.0)], 0.0)
    tracker.observe("hv1", [VmStats("t", "a", "hv1", "uid-t-a", "running", cpu_seconds=160.0)], 10.0)  # 6 cores
    got = controller(world, tracker).demand_loads(vm("new"), ["hv1", "hv2"])
    assert got == {"hv1": pytest.approx(0.75), "hv2": pytest.approx(2 / 16)}


def test_demand_loads_without_a_tracker_count_memory_only() -> None:
    got = controller(demand_world(), None).demand_loads(vm("new"), ["hv1"])
    assert got == {"hv1": pytest.approx(0.5)}


def test_a_host_claimed_by_two_clusters_gets_no_demand_load() -> None:
    world = demand_world()
    add_cluster(world, "gpu", {"rack": "a", "gpu": "yes"}, drs={"enabled": True, "automation": "FullyAutomated"})
    world.hosts.upsert(host("hv1", cpus=8, memory="16Gi", labels={"rack": "a", "gpu": "yes"}))
    got = controller(world, Cores({"hv1": 2.0, "hv2": 3.0})).demand_loads(vm("new"), ["hv1", "hv2"])
    assert got == {"hv2": pytest.approx(0.75)}


def test_clusters_being_deleted_or_unreadable_claim_nothing() -> None:
    world = demand_world()
    world.clusters.upsert(
        {
            "metadata": {"name": "old", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hostSelector": {"matchLabels": {"rack": "a"}}},
        }
    )
    world.clusters.upsert({"metadata": {"name": "bad"}, "spec": {"drs": {"migrationThreshold": 99}}})
    got = controller(world, Cores({"hv1": 2.0})).demand_loads(vm("new"), ["hv1"])
    assert got == {"hv1": pytest.approx(0.5)}


def test_a_vm_being_moved_counts_on_its_target_already() -> None:
    # a second look while a DRS move runs must not move another VM for the same imbalance
    moving = migration("drs-hot-1-x", "hot-1", "Migrating", cluster="c")
    moving["status"]["target"] = "hv2"
    asked = migration("manual", "hot-2", "Pending")
    asked["spec"]["targetHost"] = "hv3"
    got = ClusterMigrations.of([moving, asked], "c")
    assert got.targets == {("t", "hot-1"): "hv2", ("t", "hot-2"): "hv3"}
    assert got.busy == {("t", "hot-1"), ("t", "hot-2")} and got.running == 1


# --- DPM's hold after a power-on, read from the Hosts (survives an operator restart) ----------------------
@pytest.mark.parametrize(
    ("action", "reason", "minutes_ago", "held"),
    [
        ("On", "Standby", 2, True),
        ("On", "Standby", 11, False),  # the hold is 10 minutes
        ("On", "Annotation", 2, False),  # an admin's power-on is not DPM's wake
        ("GracefulShutdown", "Standby", 2, False),
    ],
)
def test_dpm_holds_standby_after_a_host_was_woken(action: str, reason: str, minutes_ago: int, held: bool) -> None:
    woken = host("hv2")
    sent = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
    woken["status"]["power"] = {"state": "On", "lastAction": {"action": action, "reason": reason,
                                                              "result": "Succeeded", "time": sent}}  # fmt: skip
    world = World([host("hv1"), woken])
    assert controller(world)._woken_lately(["hv1", "hv2"]) is held


def test_a_failed_drs_move_holds_the_vm_for_the_cooldown_too() -> None:
    # a move that cannot work (the target refuses it) is not made again at every look
    world = World([host("hv1")], [vm("a", "hv1"), vm("b", "hv1")])
    world.migrations.upsert(migration("m1", "a", "Failed", cluster="prod", done="2026-01-02T03:04:05Z"))
    world.migrations.upsert(migration("m2", "b", "Cancelled", cluster="other", done="2026-01-02T03:04:05Z"))
    vms = by_name(world.inputs(cluster_spec()))
    assert (vms["a"].moved_at, vms["b"].moved_at) == (NOW, None)
