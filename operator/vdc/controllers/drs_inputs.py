"""The DRS/DPM planner's inputs, read from the caches and the measured demand (:func:`planner_inputs`), and the
scheduler's must-rule filter (:func:`rules_hook`): what a ComputeCluster's rules, members, VMs and their
migrations are, as the pure planner (:mod:`vdc.scheduler.drs`) and rules (:mod:`vdc.scheduler.rules`) take
them. No writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from vdc.api.common import LabelSelector
from vdc.api.computecluster import DRS_OWNER_LABEL, ClusterRule, ComputeClusterSpec
from vdc.api.host import DPM_STANDBY_ANNOTATION
from vdc.api.virtualmachine import Qos
from vdc.cluster.view import ClusterView
from vdc.controllers.computecluster import HostSummary, cluster_specs, ha_status
from vdc.kube.cache import ObjectCache
from vdc.metrics.demand import VmDemand
from vdc.scheduler.drs import HostDpm, HostPower, HostState, Policy, VmAutomation, VmState, entitlement
from vdc.scheduler.rules import Rule, VmKey, first_refusal
from vdc.scheduler.selectors import matches

TERMINAL = ("Succeeded", "Failed", "Cancelled")
PHASE_POWER: Mapping[str, HostPower] = {"Standby": "Standby", "EnteringStandby": "EnteringStandby", "Waking": "Waking"}


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class ClusterMigrations:
    """What the migrations say for DRS: the VMs being moved, DRS's own running count, when DRS last moved
    each VM (wall-clock seconds)."""

    busy: frozenset[VmKey]
    running: int
    moved_at: Mapping[VmKey, float]
    targets: Mapping[VmKey, str] = field(default_factory=dict)
    """Where the running migrations move their VMs (where known): DRS counts a VM there already, so a second
    look during a move does not move another VM for the same imbalance."""
    failed_at: Mapping[VmKey, float] = field(default_factory=dict)
    """When a DRS migration of the VM last ended Failed or Cancelled: the cooldown holds after it too, so a
    move that cannot work is not made again at every look."""

    def last_attempt(self, vm: VmKey) -> float | None:
        """When DRS last moved the VM or tried to (the cooldown runs from it)."""
        times = [t for t in (self.moved_at.get(vm), self.failed_at.get(vm)) if t is not None]
        return max(times) if times else None

    @classmethod
    def of(cls, migrations: Iterable[Mapping[str, Any]], cluster: str) -> ClusterMigrations:
        busy: set[VmKey] = set()
        running = 0
        moved: dict[VmKey, float] = {}
        failed: dict[VmKey, float] = {}
        targets: dict[VmKey, str] = {}
        for body in migrations:
            meta, status = body.get("metadata") or {}, body.get("status") or {}
            vm = (str(meta.get("namespace")), str((body.get("spec") or {}).get("vm")))
            ours = (meta.get("labels") or {}).get(DRS_OWNER_LABEL) == cluster
            if status.get("phase") not in TERMINAL:
                busy.add(vm)
                running += ours
                target = status.get("target") or (body.get("spec") or {}).get("targetHost")
                if target:
                    targets[vm] = str(target)
            elif ours:
                at = _parse_time(status.get("completionTime"))
                ended = moved if status.get("phase") == "Succeeded" else failed
                if at is not None and at > ended.get(vm, 0.0):
                    ended[vm] = at
        return cls(frozenset(busy), running, moved, targets, failed)


def resolve_rules(
    rules: Sequence[ClusterRule], vms: Iterable[Mapping[str, Any]], hosts: Iterable[Mapping[str, Any]]
) -> list[Rule]:
    """The cluster's rules with their VM groups (by VM labels, in the namespaces named) and host groups."""
    vm_list = list(vms)
    host_list = list(hosts)
    out = []
    for rule in rules:
        members = frozenset(
            (str(b["metadata"].get("namespace")), str(b["metadata"].get("name")))
            for b in vm_list
            if (not rule.namespaces or b["metadata"].get("namespace") in rule.namespaces)
            and matches(rule.vm_selector, b["metadata"].get("labels") or {})
        )
        group = frozenset(
            str(h["metadata"]["name"])
            for h in host_list
            if rule.host_selector is not None and matches(rule.host_selector, h["metadata"].get("labels") or {})
        )
        out.append(Rule(rule.name, rule.type, rule.enforcement == "Must", members, group, rule.placement == "RunOn"))
    return out


def rules_hook(
    clusters: ObjectCache, hosts: ObjectCache, vms: ObjectCache, view: ClusterView
) -> Callable[[Mapping[str, Any], Sequence[str]], dict[str, str]]:
    """The scheduler's rule filter: host -> why a must rule of some ComputeCluster forbids the VM there, given
    where the other VMs of the rule's group are placed (or reserved) now. Only the rules that select the VM
    are resolved (its labels and namespace first, then the group)."""

    def refusals(vm: Mapping[str, Any], host_names: Sequence[str]) -> dict[str, str]:
        meta = vm.get("metadata") or {}
        key: VmKey = (str(meta.get("namespace")), str(meta.get("name")))
        labels = meta.get("labels") or {}
        out: dict[str, str] = {}
        for name, spec in cluster_specs(clusters).items():
            mine = [
                r for r in spec.rules
                if r.enforcement == "Must" and (not r.namespaces or key[0] in r.namespaces)
                and matches(r.vm_selector, labels)
            ]  # fmt: skip
            if not mine:
                continue
            rules = resolve_rules(mine, vms, hosts)
            placed: dict[VmKey, str] = {}
            for rule in rules:
                for other in rule.vms:
                    other_body = vms.get(other)
                    where = view.host_of(other_body) if other_body is not None else None
                    if where is not None:
                        placed[other] = where
            for host in host_names:
                if host not in out and (why := first_refusal(rules, key, host, placed)) is not None:
                    out[host] = f"ComputeCluster {name}: {why}"
        return out

    return refusals


def _host_power(body: Mapping[str, Any]) -> HostPower:
    phase = str((body.get("status") or {}).get("phase"))
    if phase in PHASE_POWER:
        return PHASE_POWER[phase]
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    if (body.get("spec") or {}).get("powerState") == "Standby" or DPM_STANDBY_ANNOTATION in annotations:
        return "EnteringStandby"
    return "On"


def _host_dpm(spec: ComputeClusterSpec, body: Mapping[str, Any]) -> HostDpm:
    if (body.get("spec") or {}).get("powerState") == "Standby":
        return "Disabled"  # an admin's Standby: DPM neither wakes it nor counts on it
    name = body["metadata"]["name"]
    return next((o.automation for o in spec.dpm.host_overrides if o.host == name), "Default")


def _vm_automation(spec: ComputeClusterSpec, vm: Mapping[str, Any]) -> VmAutomation:
    own = (vm.get("spec") or {}).get("drs") or "Default"
    levels: tuple[VmAutomation, ...] = ("Disabled", "Manual", "PartiallyAutomated", "FullyAutomated")
    return next((level for level in levels if level == own), spec.drs.automation)


def _stuck(vm: Mapping[str, Any], busy: frozenset[VmKey], key: VmKey) -> str | None:
    spec, status = vm.get("spec") or {}, vm.get("status") or {}
    if spec.get("host"):
        return "pinned to its host (spec.host)"
    if key in busy:
        return "being migrated"
    if status.get("phase") != "Running":
        return f"not running ({status.get('phase') or 'no phase'})"
    return None


@dataclass(frozen=True)
class PlannerInputs:
    hosts: tuple[HostState, ...]
    vms: tuple[VmState, ...]
    rules: tuple[Rule, ...]
    policy: Policy
    uids: Mapping[VmKey, str]


def qos_limits(vm: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(CPU limit in thousandths of a host CPU, memory limit in bytes) of a VM body's spec.qos, None where it
    sets none (or it does not parse: admission lets only valid ones through)."""
    qos = (vm.get("spec") or {}).get("qos") or {}
    try:
        parsed = Qos.model_validate(qos)
    except ValidationError:
        return None, None
    return parsed.cpu_limit_millis(), parsed.memory_limit_bytes()


def planner_inputs(
    name: str,
    spec: ComputeClusterSpec,
    members: Sequence[str],
    summaries: Mapping[str, HostSummary],
    hosts: ObjectCache,
    vms: ObjectCache,
    migrations: ObjectCache,
    view: ClusterView,
    demand: Mapping[str, VmDemand],
    now: float,
) -> PlannerInputs:
    """The planner's view of cluster ``name`` (members by name) from the caches and the measured demand."""
    moving = ClusterMigrations.of(migrations, name)
    host_states = []
    vm_states = []
    uids: dict[VmKey, str] = {}
    member_set = set(members)
    for host in members:
        body = hosts.get(("", host))
        summary = summaries.get(host)
        if body is None or summary is None:
            continue
        used = view.allocated(host)
        host_states.append(
            HostState(
                name=host,
                cpus=summary.allocatable.cpus,
                memory=summary.allocatable.memory,
                allocated_cpus=used.vcpus,
                allocated_memory=used.memory_bytes,
                power=_host_power(body),
                available=summary.available,
                dpm=_host_dpm(spec, body),
                physical_cpus=physical_cpus(body),
                power_managed=bool((body.get("spec") or {}).get("powerManagement")),
            )
        )
        for key in view.vms_on(host):
            vm = vms.get(key)
            if vm is None or (vm.get("status") or {}).get("host") != host:
                continue
            uid = str(vm["metadata"].get("uid"))
            uids[key] = uid
            asked = view.requested(key)
            measured = demand.get(uid)
            cpu_limit, memory_limit = qos_limits(vm)
            selector = (vm.get("spec") or {}).get("hostSelector")
            allowed = None
            if selector:
                allowed = frozenset(h for h in member_set if matches(_selector(selector), _labels(hosts, h)))
            vm_states.append(
                VmState(
                    key=key,
                    host=moving.targets.get(key, host),
                    cpus=asked.vcpus,
                    memory=asked.memory_bytes,
                    cpu_demand=entitlement(
                        measured.cpu_cores if measured is not None else 0.0,
                        asked.cpu_reservation_millis / 1000,
                        None if cpu_limit is None else cpu_limit / 1000,
                    ),
                    memory_demand=None
                    if measured is None or measured.memory_bytes is None
                    else int(entitlement(measured.memory_bytes, asked.memory_reservation_bytes, memory_limit)),
                    automation=_vm_automation(spec, vm),
                    stuck=_stuck(vm, moving.busy, key),
                    allowed=allowed,
                    moved_at=moving.last_attempt(key),
                )
            )
    rules = resolve_rules(spec.rules, vms, hosts)
    summary_list = [summaries[h] for h in members if h in summaries]
    ha_needed: set[str] = set()
    ha_short = False
    if spec.ha.enabled:
        ha_short = ha_status(spec, summary_list).state == "NotProtected"
        if not ha_short and spec.ha.admission_control.policy != "None":
            for member in summary_list:
                without = [replace(h, maintenance=True) if h.name == member.name else h for h in summary_list]
                if ha_status(spec, without).state == "NotProtected":
                    ha_needed.add(member.name)
    standby_members = [h.name for h in host_states if h.power == "Standby"]
    waiting = 0
    if standby_members:
        for key in view.unplaced_vms():
            vm = vms.get(key)
            if vm is None or not _unschedulable(vm):
                continue
            selector = (vm.get("spec") or {}).get("hostSelector")
            if not selector or any(matches(_selector(selector), _labels(hosts, h)) for h in standby_members):
                waiting += 1
    policy = Policy(
        threshold=spec.drs.migration_threshold if spec.drs.enabled else 1,
        cooldown=float(spec.drs.cooldown_seconds),
        now=now,
        dpm=spec.dpm.automation,
        low=spec.dpm.target_utilization_low / 100,
        high=spec.dpm.target_utilization_high / 100,
        min_hosts_on=spec.dpm.min_hosts_on,
        waiting_vms=waiting,
        ha_short=ha_short,
        ha_needed=frozenset(ha_needed),
    )
    return PlannerInputs(tuple(host_states), tuple(vm_states), tuple(rules), policy, uids)


def physical_cpus(body: Mapping[str, Any]) -> int | None:
    try:
        cpus = int((((body.get("status") or {}).get("capacity") or {}).get("cpus")) or 0)
    except (TypeError, ValueError):
        return None
    return cpus if cpus > 0 else None


def _unschedulable(vm: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Scheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in (vm.get("status") or {}).get("conditions") or ()
    )


def _selector(raw: Mapping[str, Any]) -> LabelSelector:
    return LabelSelector.model_validate(raw)


def _labels(hosts: ObjectCache, name: str) -> Mapping[str, str]:
    body = hosts.get(("", name))
    return (body or {}).get("metadata", {}).get("labels") or {}
