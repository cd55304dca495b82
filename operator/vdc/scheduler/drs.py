"""DRS and DPM planning: (hosts, VMs, measured demand, rules, policy) -> moves and power actions. Pure.

Load of a host: the higher of its VMs' CPU demand over its CPUs and their memory demand over its memory.
Imbalance: the standard deviation of the loads of the hosts that are on and available. DRS first fixes
rule violations (every threshold), then, from threshold 2, makes the single move that lowers the
imbalance most, again and again, while the imbalance is above the threshold's target; a move counts only
when it is worth its VM: it lowers the hosts' summed squared deviation from the mean load by at least the
threshold's minimum gain times the VM's own load (so a cluster of many hosts and small VMs balances as a
small one does: the criterion is that the source is enough more loaded than the target). A move never
breaks a must rule, never makes a should rule
broken that was kept, never overfills a host's allocatable CPUs or memory, and leaves VMs that DRS moved
within the cooldown (balance moves only), VMs with DRS Disabled, and VMs that cannot move alone.

DPM: over the hosts that are on, utilization is the higher of CPU demand over CPUs and allocated memory
over memory. Under the low mark, one host goes to Standby when every VM on it fits on the others (by
allocation and the must rules), the others stay under the high mark, at least ``min_hosts_on`` stay on
and HA does not need it. Over the high mark, or when VMs wait for capacity or HA lacks capacity, one
Standby host is powered on. One power action at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vdc.scheduler.rules import Rule, VmKey, first_refusal, violations

VmAutomation = Literal["Disabled", "Manual", "PartiallyAutomated", "FullyAutomated"]
HostPower = Literal["On", "Standby", "EnteringStandby", "Waking"]
HostDpm = Literal["Default", "Disabled", "Manual", "Automated"]

TARGET_IMBALANCE: Mapping[int, float] = {1: math.inf, 2: 0.20, 3: 0.10, 4: 0.05, 5: 0.02}
"""migrationThreshold -> the imbalance tolerated (1: balance is never a reason to move)."""
MIN_GAIN: Mapping[int, float] = {1: math.inf, 2: 0.3, 3: 0.2, 4: 0.1, 5: 0.04}
"""migrationThreshold -> how much a balance move must gain per unit of the moved VM's load: the drop of the
summed squared deviation (hosts x imbalance squared) over the VM's load on the target. Moving load x from a
host at load a to one at b gains 2x(a - b - x): the source must be loaded more than the target by about
half this figure plus the VM's own load."""
SCAN_HOSTS = 4
"""Balance moves are looked for from this many of the most loaded hosts to this many of the least loaded."""
MAX_MOVES = 100
"""Moves planned (and listed) at one look."""


@dataclass(frozen=True, kw_only=True)
class HostState:
    """One member. ``cpus``/``memory``: allocatable; ``allocated_*``: what placed VMs ask (the ledger)."""

    name: str
    cpus: int
    memory: int
    allocated_cpus: int = 0
    allocated_memory: int = 0
    power: HostPower = "On"
    available: bool = True
    """Ready and out of maintenance: VMs may be moved to it."""
    dpm: HostDpm = "Default"
    power_managed: bool = True
    """It has power management (Redfish): without it DPM never puts it in Standby (it could not be
    powered off, nor on again)."""
    physical_cpus: int | None = None
    """The CPUs measured demand (in cores) is weighed against: the host's physical CPUs, not its allocatable
    vCPUs (overcommit); None: ``cpus``."""

    @property
    def demand_cpus(self) -> int:
        return self.cpus if self.physical_cpus is None else self.physical_cpus


@dataclass(frozen=True, kw_only=True)
class VmState:
    """One VM placed on a member. ``cpu_demand`` in cores; ``memory_demand`` and ``memory`` in bytes."""

    key: VmKey
    host: str
    cpus: int
    memory: int
    cpu_demand: float = 0.0
    memory_demand: int | None = None
    """Measured (balloon); None: the configured ``memory`` counts."""
    automation: VmAutomation = "FullyAutomated"
    """The VM's own override, else the cluster's."""
    stuck: str | None = None
    """Why it cannot be live-migrated now (pinned, a local disk, not running, migrating), or None."""
    allowed: frozenset[str] | None = None
    """The hosts its own constraints allow (selector, pools, switches); None: every host."""
    moved_at: float | None = None
    """When DRS last moved it (monotonic seconds, as ``Policy.now``)."""

    @property
    def demand_memory(self) -> int:
        return self.memory if self.memory_demand is None else self.memory_demand


@dataclass(frozen=True, kw_only=True)
class Policy:
    threshold: int = 3
    max_moves: int = MAX_MOVES
    cooldown: float = 600.0
    now: float = 0.0
    dpm: Literal["Off", "Manual", "Automated"] = "Off"
    low: float = 0.45
    high: float = 0.81
    min_hosts_on: int = 1
    waiting_vms: int = 0
    """VMs of the cluster that fit nowhere now (DPM wakes a host for them)."""
    ha_short: bool = False
    """HA admission control lacks capacity (DPM wakes a host)."""
    ha_needed: frozenset[str] = frozenset()
    """Hosts HA admission control cannot do without (never put in Standby)."""


@dataclass(frozen=True)
class Move:
    vm: VmKey
    source: str
    target: str
    reason: Literal["RuleViolation", "Balance"]
    rule: str | None
    message: str
    imbalance_before: float
    imbalance_after: float
    automated: bool
    """The VM's automation is FullyAutomated: DRS makes it; else it is only recommended."""


@dataclass(frozen=True)
class PowerAction:
    host: str
    action: Literal["Standby", "PowerOn"]
    message: str
    automated: bool


@dataclass(frozen=True)
class HostLoadFigures:
    host: str
    power: HostPower
    cpu_demand: float
    cpus: int
    memory_demand: int
    memory: int
    vms: int

    @property
    def load(self) -> float:
        return load_of(self.cpu_demand, self.memory_demand, self.cpus, self.memory)


@dataclass(frozen=True)
class Plan:
    imbalance: float
    """Now, before any move."""
    imbalance_after: float
    """After every planned move."""
    target: float
    moves: tuple[Move, ...]
    violations: tuple[tuple[str, str], ...]
    """(rule, what breaks it) now."""
    loads: tuple[HostLoadFigures, ...]
    power: tuple[PowerAction, ...] = ()
    utilization: float = 0.0
    dpm_message: str = ""
    message: str = ""
    unfixable: tuple[str, ...] = field(default_factory=tuple)
    """Violations no move can fix now, with why."""


def entitlement(demand: float, reservation: float = 0.0, limit: float | None = None) -> float:
    """What a VM is entitled to and so what DRS balances (vSphere's entitlement, without shares): its
    demand, but at least its reservation (guaranteed, whether used or not) and at most its limit (it can
    never get more). CPU in cores, memory in bytes."""
    wanted = max(demand, reservation)
    return wanted if limit is None else min(wanted, max(limit, reservation))


def load_of(cpu: float, memory: int, cpus: int, capacity: int) -> float:
    """A host's load: the higher of ``cpu`` cores of demand over ``cpus`` and ``memory`` over ``capacity``."""
    return max(cpu / cpus if cpus > 0 else 0.0, memory / capacity if capacity > 0 else 0.0)


class _Ledger:
    """The simulated cluster: where each VM is, each host's demand and allocation, and the imbalance's sums
    kept up to date per move (O(1) to try a move)."""

    def __init__(self, hosts: Sequence[HostState], vms: Sequence[VmState]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.active = sorted(h.name for h in hosts if h.power == "On" and h.available)
        self.where: dict[VmKey, str] = {v.key: v.host for v in vms}
        self.cpu = {h.name: 0.0 for h in hosts}
        self.mem = {h.name: 0 for h in hosts}
        self.alloc_cpus = {h.name: h.allocated_cpus for h in hosts}
        self.alloc_mem = {h.name: h.allocated_memory for h in hosts}
        for vm in vms:
            if vm.host in self.cpu:
                self.cpu[vm.host] += vm.cpu_demand
                self.mem[vm.host] += vm.demand_memory
        self.loads = {n: self.load(n) for n in self.hosts}
        self.total = sum(self.loads[n] for n in self.active)
        self.squares = sum(self.loads[n] ** 2 for n in self.active)

    def load(self, name: str) -> float:
        host = self.hosts[name]
        return load_of(self.cpu[name], self.mem[name], host.demand_cpus, host.memory)

    def imbalance(self, total: float | None = None, squares: float | None = None) -> float:
        n = len(self.active)
        if n < 2:
            return 0.0
        total = self.total if total is None else total
        squares = self.squares if squares is None else squares
        return math.sqrt(max(squares / n - (total / n) ** 2, 0.0))

    def fits(self, vm: VmState, target: str) -> bool:
        host = self.hosts[target]
        return self.alloc_cpus[target] + vm.cpus <= host.cpus and self.alloc_mem[target] + vm.memory <= host.memory

    def share(self, vm: VmState, target: str) -> float:
        """The VM's own load on ``target`` (its demand over the host's capacity)."""
        host = self.hosts[target]
        return load_of(vm.cpu_demand, vm.demand_memory, host.demand_cpus, host.memory)

    def imbalance_if(self, vm: VmState, target: str) -> float:
        source = self.where[vm.key]
        total, squares = self.total, self.squares
        for name, cpu, mem in ((source, -vm.cpu_demand, -vm.demand_memory), (target, vm.cpu_demand, vm.demand_memory)):
            if name not in self.active:
                continue
            old = self.loads[name]
            host = self.hosts[name]
            new = load_of(self.cpu[name] + cpu, self.mem[name] + mem, host.demand_cpus, host.memory)
            total += new - old
            squares += new * new - old * old
        return self.imbalance(total, squares)

    def move(self, vm: VmState, target: str) -> None:
        source = self.where[vm.key]
        for name, sign in ((source, -1), (target, 1)):
            if name not in self.hosts:  # a VM on a host not given (not a member): nothing to take off
                continue
            self.cpu[name] += sign * vm.cpu_demand
            self.mem[name] += sign * vm.demand_memory
            self.alloc_cpus[name] += sign * vm.cpus
            self.alloc_mem[name] += sign * vm.memory
            old, new = self.loads[name], self.load(name)
            self.loads[name] = new
            if name in self.active:
                self.total += new - old
                self.squares += new * new - old * old
        self.where[vm.key] = target


def _allowed(vm: VmState, target: str, ledger: _Ledger, rules: Sequence[Rule], kept: set[str]) -> bool:
    if target == ledger.where[vm.key] or target not in ledger.active:
        return False
    if vm.allowed is not None and target not in vm.allowed:
        return False
    if not ledger.fits(vm, target):
        return False
    if first_refusal(rules, vm.key, target, ledger.where) is not None:
        return False
    # a should rule that holds must still hold
    for rule in rules:
        if (
            not rule.must
            and rule.name in kept
            and first_refusal((rule,), vm.key, target, ledger.where, must_only=False) is not None
        ):
            return False
    return True


def _movable(vm: VmState) -> bool:
    return vm.stuck is None and vm.automation != "Disabled"


def _strays(rule: Rule, listed: tuple[VmKey, ...], ledger: _Ledger, by_key: Mapping[VmKey, VmState]) -> list[VmKey]:
    """The VMs to move to fix ``rule``'s violation (``listed``: what the violation names). Anti-affinity:
    on each crowded host one member stays, one that cannot move when there is one, so that a movable
    member moves in place of one that cannot."""
    if rule.type != "VmAntiAffinity":
        return list(listed)
    by_host: dict[str, list[VmKey]] = {}
    for k in sorted(k for k in rule.vms if k in ledger.where):
        by_host.setdefault(ledger.where[k], []).append(k)
    out: list[VmKey] = []
    for host in sorted(by_host):
        members = by_host[host]
        if len(members) < 2:
            continue
        stays = next((k for k in members if k in by_key and not _movable(by_key[k])), members[0])
        out.extend(k for k in members if k != stays)
    return out


def plan(hosts: Sequence[HostState], vms: Sequence[VmState], rules: Sequence[Rule], policy: Policy) -> Plan:
    """The moves and power actions for one look at a cluster (see the module's docstring)."""
    ledger = _Ledger(hosts, vms)
    by_key = {vm.key: vm for vm in vms}
    before = ledger.imbalance()
    broken = violations(rules, ledger.where)
    moves: list[Move] = []
    unfixable: list[str] = []

    def record(
        vm: VmState, target: str, reason: Literal["RuleViolation", "Balance"], rule: str | None, why: str
    ) -> None:
        was = ledger.imbalance()
        source = ledger.where[vm.key]
        ledger.move(vm, target)
        moves.append(Move(vm.key, source, target, reason, rule, why, was, ledger.imbalance(),
                          vm.automation == "FullyAutomated"))  # fmt: skip

    # 1. rule violations (mandatory at every threshold)
    for found in broken:
        kept = {r.name for r in rules} - {v.rule for v in broken}
        rule = next(r for r in rules if r.name == found.rule)
        strays = _strays(rule, found.vms, ledger, by_key)
        # affinity: the strays join the host where the rest of the group is (not each other)
        home = {h for k, h in ledger.where.items() if k in rule.vms and k not in strays}
        for key in strays:
            stray = by_key.get(key)
            if stray is None or len(moves) >= policy.max_moves:
                continue
            if not _movable(stray):
                unfixable.append(f"{found.rule}: {key[0]}/{key[1]} cannot move ({stray.stuck or 'DRS Disabled'})")
                continue
            targets = [
                t
                for t in ledger.active
                if _allowed(stray, t, ledger, rules, kept)
                and first_refusal((rule,), key, t, ledger.where, must_only=False) is None
                and (rule.type != "VmAffinity" or not home or t in home)
            ]
            if not targets:
                unfixable.append(f"{found.rule}: no host takes {key[0]}/{key[1]} without breaking another rule")
                continue
            chosen = min(targets, key=lambda t: (ledger.imbalance_if(stray, t), t))
            record(stray, chosen, "RuleViolation", found.rule, f"{rule.kind}: {found.message}")

    # 2. balance
    target = TARGET_IMBALANCE[policy.threshold]
    gain = MIN_GAIN[policy.threshold]
    kept_now = {r.name for r in rules} - {v.rule for v in violations(rules, ledger.where)}
    in_affinity = {k for r in rules if r.type == "VmAffinity" for k in r.vms}
    moved = {m.vm for m in moves}
    while len(moves) < policy.max_moves and ledger.imbalance() > target:
        now = ledger.imbalance()
        mean = ledger.total / len(ledger.active) if ledger.active else 0.0
        by_load = sorted(ledger.active, key=lambda n: (ledger.loads[n], n))
        # The best move takes load from the most loaded hosts to the least loaded: only the SCAN_HOSTS at each
        # end are looked at (a move costs O(VMs there x SCAN_HOSTS), not O(VMs x hosts), on 64 hosts).
        sources = {n for n in by_load[::-1][:SCAN_HOSTS] if ledger.loads[n] > mean}
        sinks = [n for n in by_load[:SCAN_HOSTS] if ledger.loads[n] < mean]
        best: tuple[float, str, VmKey] | None = None
        for vm in vms:
            if ledger.where[vm.key] not in sources or vm.key in moved or vm.key in in_affinity or not _movable(vm):
                continue
            if vm.moved_at is not None and policy.now - vm.moved_at < policy.cooldown:
                continue
            if vm.cpu_demand <= 0 and vm.demand_memory <= 0:
                continue
            for sink in sinks:
                if not _allowed(vm, sink, ledger, rules, kept_now):
                    continue
                after = ledger.imbalance_if(vm, sink)
                share = ledger.share(vm, sink)
                if share <= 0 or len(ledger.active) * (now * now - after * after) < gain * share:
                    continue  # not worth moving this VM for
                candidate = (after, sink, vm.key)
                if best is None or candidate < best:
                    best = candidate
        if best is None:
            break
        after, sink, key = best
        vm = by_key[key]
        source = ledger.where[key]
        why = (
            f"balance: {source} at {ledger.loads[source]:.0%} load, {sink} at {ledger.loads[sink]:.0%}; "
            f"{key[0]}/{key[1]} demands {vm.cpu_demand:.2f} cores"
        )
        record(vm, sink, "Balance", None, why)
        moved.add(key)

    here = _per_host(vms)
    loads = tuple(
        HostLoadFigures(
            h.name, h.power, here[h.name].cpu, h.demand_cpus, here[h.name].memory, h.memory, here[h.name].count
        )
        for h in sorted(hosts, key=lambda h: h.name)
    )
    power, utilization, dpm_message = _dpm(hosts, vms, rules, policy)
    if moves:
        message = (
            f"{len(moves)} move{'s' if len(moves) != 1 else ''}: imbalance {before:.3f} -> {ledger.imbalance():.3f}"
        )
    elif broken:
        message = f"{len(broken)} rule{'s' if len(broken) != 1 else ''} broken, no move can fix it now"
    elif before > target:
        message = f"imbalance {before:.3f} above the target {target:.3f}, but no move is worth its VM (gain {gain:g})"
    else:
        message = f"balanced: imbalance {before:.3f}" + (
            f" within the target {target:.3f}" if target < math.inf else ""
        )
    return Plan(
        imbalance=before,
        imbalance_after=ledger.imbalance(),
        target=target,
        moves=tuple(moves),
        violations=tuple((v.rule, v.message) for v in broken),
        loads=loads,
        power=power,
        utilization=utilization,
        dpm_message=dpm_message,
        message=message,
        unfixable=tuple(unfixable),
    )


@dataclass
class _Here:
    """What the VMs on one host add up to (before any move)."""

    cpu: float = 0.0
    memory: int = 0
    count: int = 0


def _per_host(vms: Sequence[VmState]) -> defaultdict[str, _Here]:
    out: defaultdict[str, _Here] = defaultdict(_Here)
    for vm in vms:
        here = out[vm.host]
        here.cpu += vm.cpu_demand
        here.memory += vm.demand_memory
        here.count += 1
    return out


# --- DPM ----------------------------------------------------------------------------------------------
def _utilization(hosts: Sequence[HostState], vms: Sequence[VmState]) -> float:
    on = {h.name for h in hosts if h.power == "On"}
    cpus = sum(h.demand_cpus for h in hosts if h.name in on)
    memory = sum(h.memory for h in hosts if h.name in on)
    demand = sum(v.cpu_demand for v in vms if v.host in on)
    allocated = sum(h.allocated_memory for h in hosts if h.name in on)
    return load_of(demand, allocated, cpus, memory)


def evacuation_fits(host: str, hosts: Sequence[HostState], vms: Sequence[VmState], rules: Sequence[Rule]) -> str | None:
    """Why the VMs on ``host`` cannot all move to the other available hosts that are on (first fit,
    largest first, by allocation and the must rules), or None when they can."""
    others = [h for h in hosts if h.name != host and h.power == "On" and h.available]
    ledger = _Ledger([*others, *(h for h in hosts if h.name == host)], vms)
    leaving = sorted((v for v in vms if v.host == host), key=lambda v: (-v.memory, -v.cpus, v.key))
    for vm in leaving:
        if vm.stuck is not None:
            return f"{vm.key[0]}/{vm.key[1]} cannot move ({vm.stuck})"
        if vm.automation == "Disabled":
            return f"{vm.key[0]}/{vm.key[1]} has DRS Disabled"
        targets = [h.name for h in others if _allowed(vm, h.name, ledger, rules, set())]
        if not targets:
            return f"{vm.key[0]}/{vm.key[1]} fits on no other host that is on"
        ledger.move(vm, min(targets, key=lambda t: (ledger.load(t), t)))
    return None


def _dpm(
    hosts: Sequence[HostState], vms: Sequence[VmState], rules: Sequence[Rule], policy: Policy
) -> tuple[tuple[PowerAction, ...], float, str]:
    utilization = _utilization(hosts, vms)
    if policy.dpm == "Off":
        return (), utilization, ""
    automated_cluster = policy.dpm == "Automated"

    def automated(host: HostState) -> bool:
        return host.dpm == "Automated" or (host.dpm == "Default" and automated_cluster)

    busy = [h for h in hosts if h.power in ("EnteringStandby", "Waking")]
    if busy:
        names = ", ".join(f"{h.name} {h.power}" for h in busy)
        return (), utilization, f"waiting: {names}"
    on = [h for h in hosts if h.power == "On"]
    standby = sorted((h for h in hosts if h.power == "Standby"), key=lambda h: (-h.memory, -h.cpus, h.name))
    figures = f"utilization {utilization:.0%} (band {policy.low:.0%}-{policy.high:.0%}), {len(on)} on"
    wake_why = (
        f"{figures}: over the band" if utilization > policy.high
        else f"{policy.waiting_vms} VM(s) fit nowhere" if policy.waiting_vms
        else "HA admission control lacks capacity" if policy.ha_short
        else None
    )  # fmt: skip
    if wake_why is not None:
        wakeable = [h for h in standby if h.dpm != "Disabled"]
        if not wakeable:
            return (), utilization, f"{wake_why}, no host in Standby to power on"
        host = wakeable[0]
        return (PowerAction(host.name, "PowerOn", wake_why, automated(host)),), utilization, wake_why
    if utilization >= policy.low:
        return (), utilization, f"{figures}: in the band"
    if len(on) <= policy.min_hosts_on:
        return (), utilization, f"{figures}: under the band, but minHostsOn is {policy.min_hosts_on}"
    reasons: list[str] = []
    here = _per_host(vms)
    candidates = sorted(
        (h for h in on if h.dpm != "Disabled"), key=lambda h: (here[h.name].count, here[h.name].cpu, h.name)
    )
    for host in candidates:
        if not host.power_managed:
            reasons.append(f"{host.name}: no power management")
            continue
        if host.name in policy.ha_needed:
            reasons.append(f"{host.name}: HA admission control needs it")
            continue
        rest_on = [h for h in on if h.name != host.name]
        after = load_of(  # everything that runs on the hosts that are on, carried by the others
            sum(v.cpu_demand for v in vms if v.host in {h.name for h in on}),
            sum(h.allocated_memory for h in on),
            sum(h.demand_cpus for h in rest_on),
            sum(h.memory for h in rest_on),
        )
        if after > policy.high:
            reasons.append(f"{host.name}: the others would be at {after:.0%}")
            continue
        why = evacuation_fits(host.name, hosts, vms, rules)
        if why is not None:
            reasons.append(f"{host.name}: {why}")
            continue
        message = f"{figures}: under the band; the others carry its load at {after:.0%}"
        return (PowerAction(host.name, "Standby", message, automated(host)),), utilization, message
    said = "; ".join(reasons[:3]) if reasons else "no host may go"
    return (), utilization, f"{figures}: under the band, but {said}"
