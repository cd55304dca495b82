"""DRS and DPM of a ComputeCluster: the planner's inputs read from the caches (vdc.controllers.drs_inputs)
(:func:`planner_inputs`), run the pure planner (:func:`vdc.scheduler.drs.plan`), and act on its plan as
the automation levels say: VirtualMachineMigrations owned by the cluster for the moves DRS makes (or a
person applies by annotation), the DPM annotation on a Host for Standby (removed to power it on). What it
decided goes into the cluster's status.drs and status.dpm.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from kubernetes.client import ApiException

from vdc.api.computecluster import (
    DRS_APPLY_ANNOTATION,
    DRS_OWNER_LABEL,
    ComputeCluster,
    ComputeClusterSpec,
    DpmRecommendation,
    DpmStatus,
    DrsRecommendation,
    DrsStatus,
    HostLoad,
    RuleViolation,
)
from vdc.api.host import DPM_STANDBY_ANNOTATION, Host
from vdc.api.migration import VirtualMachineMigration
from vdc.api.quantity import format_bytes_mi, to_bytes
from vdc.cluster.view import ClusterView
from vdc.controllers.computecluster import HostSummary, cluster_specs
from vdc.controllers.drs_inputs import TERMINAL, ClusterMigrations, physical_cpus, planner_inputs
from vdc.controllers.host_standby import REASON as STANDBY_REASON
from vdc.controllers.host_standby import last_reset
from vdc.kube.cache import ObjectCache
from vdc.kube.client import KubeWriter
from vdc.metrics.demand import DemandTracker
from vdc.scheduler.drs import (
    Move,
    Plan,
    load_of,
    plan,
)
from vdc.scheduler.rules import VmKey
from vdc.scheduler.selectors import matches

log = logging.getLogger(__name__)

WAKE_HOLD_SECONDS = 600.0
"""After DPM powers a host on, it puts none in Standby for this long (no power flapping)."""


def recommendation_id(vm: VmKey, target: str) -> str:
    """Stable while the same VM is recommended to the same host."""
    return hashlib.sha256(f"{vm[0]}/{vm[1]}>{target}".encode()).hexdigest()[:8]


def migration_name(cluster: str, vm: str, target: str) -> str:
    digest = hashlib.sha256(f"{cluster}/{vm}>{target}".encode()).hexdigest()[:6]
    return f"drs-{vm[:44]}-{digest}"


def drs_status(spec: ComputeClusterSpec, result: Plan, made: Mapping[str, str], moving: int) -> DrsStatus:
    recommendations = []
    for move in result.moves:
        rid = recommendation_id(move.vm, move.target)
        recommendations.append(
            DrsRecommendation(
                id=rid,
                namespace=move.vm[0],
                vm=move.vm[1],
                source=move.source,
                target=move.target,
                reason=move.reason,
                rule=move.rule,
                message=move.message[:1000],
                imbalance_before=f"{move.imbalance_before:.3f}",
                imbalance_after=f"{move.imbalance_after:.3f}",
                migration=made.get(rid),
            )
        )
    loads = [
        HostLoad(
            host=h.host,
            power=h.power,
            cpu_demand_milli=round(h.cpu_demand * 1000),
            cpus=h.cpus,
            memory_demand=format_bytes_mi(h.memory_demand),
            memory=format_bytes_mi(h.memory),
            load_percent=round(h.load * 100),
            vms=h.vms,
        )
        for h in result.loads
    ]
    message = result.message
    if result.unfixable:
        message += "; " + "; ".join(result.unfixable[:3])
    return DrsStatus(
        automation=spec.drs.automation if spec.drs.enabled else "Disabled",
        imbalance=f"{result.imbalance:.3f}",
        target="none" if result.target == float("inf") else f"{result.target:.3f}",
        message=message[:1000],
        moving=moving,
        recommendations=recommendations[:100],
        violations=[RuleViolation(rule=r, message=m[:1000]) for r, m in result.violations][:100],
        hosts=loads,
    )


def dpm_status(spec: ComputeClusterSpec, result: Plan) -> DpmStatus:
    return DpmStatus(
        automation=spec.dpm.automation,
        utilization_percent=round(result.utilization * 100),
        hosts_on=sum(1 for h in result.loads if h.power == "On"),
        standby=[h.host for h in result.loads if h.power in ("Standby", "EnteringStandby")],
        message=result.dpm_message[:1000],
        recommendations=[
            DpmRecommendation(host=p.host, action=p.action, message=p.message[:1000]) for p in result.power
        ],
    )


class DrsController:
    """Runs DRS and DPM for the ComputeCluster controller (one look per cluster per spec.drs.intervalSeconds,
    sooner when asked to apply a recommendation)."""

    def __init__(
        self,
        hosts: ObjectCache,
        vms: ObjectCache,
        migrations: ObjectCache,
        view: ClusterView,
        writer: KubeWriter,
        demand: DemandTracker | None = None,
        *,
        clusters: ObjectCache | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.hosts = hosts
        self.vms = vms
        self.migrations = migrations
        self.view = view
        self.writer = writer
        self.demand = demand
        self.clusters = clusters
        self._clock = clock
        self._wall = wall
        self._last: dict[str, float] = {}

    def demand_loads(self, vm: Mapping[str, Any], host_names: Sequence[str]) -> dict[str, float]:
        """Host -> measured load, for the hosts among ``host_names`` that are members of a ComputeCluster whose
        DRS places new VMs by demand (enabled, PartiallyAutomated or FullyAutomated, the VM's spec.drs not
        saying otherwise): the scheduler's Demand policy. Empty when no such cluster holds any of them."""
        if self.clusters is None:
            return {}
        own = (vm.get("spec") or {}).get("drs") or "Default"
        if own in ("Disabled", "Manual"):
            return {}
        specs = cluster_specs(self.clusters)
        by_demand = {
            name for name, spec in specs.items()
            if spec.drs.enabled and (spec.drs.automation != "Manual" or own in ("PartiallyAutomated", "FullyAutomated"))
        }  # fmt: skip
        if not by_demand:
            return {}
        out: dict[str, float] = {}
        for host in host_names:
            host_body = self.hosts.get(("", host))
            if host_body is None:
                continue
            labels = host_body["metadata"].get("labels") or {}
            claimed = [name for name, spec in specs.items() if matches(spec.host_selector, labels)]
            if len(claimed) != 1 or claimed[0] not in by_demand:
                continue
            cpus = physical_cpus(host_body) or 0
            memory = to_bytes(str((((host_body.get("status") or {}).get("allocatable") or {}).get("memory")) or "0"))
            cores = self.demand.host_cpu_cores(host) if self.demand is not None else 0.0
            out[host] = load_of(cores, self.view.allocated(host).memory_bytes, cpus, memory)
        return out

    def due(self, name: str, spec: ComputeClusterSpec, body: Mapping[str, Any]) -> float:
        """Seconds until the next look (0: now)."""
        if DRS_APPLY_ANNOTATION in ((body.get("metadata") or {}).get("annotations") or {}):
            return 0.0
        last = self._last.get(name)
        if last is None:
            return 0.0
        return max(0.0, spec.drs.interval_seconds - (self._clock() - last))

    async def look(
        self,
        body: dict[str, Any],
        spec: ComputeClusterSpec,
        members: Sequence[str],
        summaries: Mapping[str, HostSummary],
    ) -> tuple[DrsStatus | None, DpmStatus | None]:
        name = body["metadata"]["name"]
        self._last[name] = self._clock()
        demand = self.demand.snapshot() if self.demand is not None else {}
        inputs = planner_inputs(
            name, spec, members, summaries, self.hosts, self.vms, self.migrations, self.view, demand, self._wall()
        )
        # Pure over immutable inputs: planned in a thread (a big cluster's look takes tens of milliseconds).
        result = await asyncio.to_thread(plan, inputs.hosts, inputs.vms, inputs.rules, inputs.policy)
        if self._woken_lately(members):  # no Standby right after a power-on
            held = tuple(replace(p, automated=False) if p.action == "Standby" else p for p in result.power)
            if held != result.power:
                result = replace(result, power=held, dpm_message=result.dpm_message + "; held: a host was just "
                                 f"powered on (no Standby for {WAKE_HOLD_SECONDS:.0f} s)")  # fmt: skip
        moving = ClusterMigrations.of(self.migrations, name).running
        made: dict[str, str] = {}
        if spec.drs.enabled:
            made, moving = await self._move(body, spec, result.moves, moving)
        if spec.dpm.automation != "Off":
            await self._power(body, result)
        drs = drs_status(spec, result, made, moving) if spec.drs.enabled else None
        dpm = dpm_status(spec, result) if spec.dpm.automation != "Off" else None
        return drs, dpm

    def _woken_lately(self, members: Sequence[str]) -> bool:
        """A member was powered on for leaving Standby within WAKE_HOLD_SECONDS: its status.power.lastAction
        says so (kept in the Host, so an operator restart does not forget it)."""
        for host in members:
            power = ((self.hosts.get(("", host)) or {}).get("status") or {}).get("power")
            last = last_reset(power)
            if (
                last is not None
                and (last.action, last.reason) == ("On", STANDBY_REASON)
                and last.age < WAKE_HOLD_SECONDS
            ):
                return True
        return False

    async def _move(
        self, body: dict[str, Any], spec: ComputeClusterSpec, moves: Sequence[Move], moving: int
    ) -> tuple[dict[str, str], int]:
        """Make the automated moves (within maxConcurrentMoves) and those the apply annotation names."""
        name = body["metadata"]["name"]
        token = ((body.get("metadata") or {}).get("annotations") or {}).get(DRS_APPLY_ANNOTATION)
        asked = {t.strip() for t in (token or "").split(",") if t.strip()}
        made: dict[str, str] = {}
        for move in moves:
            rid = recommendation_id(move.vm, move.target)
            applied = "all" in asked or rid in asked
            if not (move.automated or applied):
                continue
            if moving >= spec.drs.max_concurrent_moves:
                break
            made[rid] = await self._create(body, move)
            moving += 1
        if token is not None:
            await self.writer.remove_annotation(ComputeCluster.KIND, body, DRS_APPLY_ANNOTATION, token)
            await self.writer.event(
                ComputeCluster.KIND, body, "DrsApplied", f"applied {len(made)} recommendation(s) asked by {token!r}"
            )
        if made:
            log.info("cluster %s: DRS made %d migration(s)", name, len(made))
        return made, moving

    async def _create(self, body: dict[str, Any], move: Move) -> str:
        cluster = body["metadata"]["name"]
        namespace, vm = move.vm
        name = migration_name(cluster, vm, move.target)
        existing = self.migrations.get((namespace, name))
        if existing is not None and ((existing.get("status") or {}).get("phase")) in TERMINAL:
            await self.writer.delete(VirtualMachineMigration.KIND, namespace, name)
            self.migrations.remove(existing)
            existing = None
        if existing is not None:
            return name
        manifest = {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachineMigration",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {DRS_OWNER_LABEL: cluster},
                "ownerReferences": [
                    {
                        "apiVersion": "vdc.dev/v1alpha1",
                        "kind": "ComputeCluster",
                        "name": cluster,
                        "uid": body["metadata"]["uid"],
                    }
                ],
            },
            "spec": {"vm": vm, "targetHost": move.target},
        }
        try:
            made = await self.writer.create(VirtualMachineMigration.KIND, namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return name
        self.migrations.upsert(made)
        message = f"{namespace}/{vm}: {move.source} -> {move.target} ({move.message}) by migration {name}"
        await self.writer.event(ComputeCluster.KIND, body, "DrsMove", message[:1000])
        return name

    async def _power(self, body: dict[str, Any], result: Plan) -> None:
        cluster = body["metadata"]["name"]
        for action in result.power:
            if not action.automated:
                continue
            host = self.hosts.get(("", action.host))
            if host is None:
                continue
            annotations = host["metadata"].get("annotations") or {}
            if action.action == "Standby" and DPM_STANDBY_ANNOTATION not in annotations:
                await self.writer.set_annotation(Host.KIND, host, DPM_STANDBY_ANNOTATION, cluster)
                await self.writer.event(ComputeCluster.KIND, body, "DpmStandby", f"{action.host}: {action.message}")
            elif action.action == "PowerOn" and DPM_STANDBY_ANNOTATION in annotations:
                await self.writer.remove_annotation(
                    Host.KIND, host, DPM_STANDBY_ANNOTATION, str(annotations[DPM_STANDBY_ANNOTATION])
                )
                await self.writer.event(ComputeCluster.KIND, body, "DpmPowerOn", f"{action.host}: {action.message}")
