"""The DRS/DPM planner (``vdc.scheduler.drs.plan``) on hand-made clusters: balance moves per threshold,
rule fixes, what may never move or be a target, and DPM's power actions."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import pytest

from vdc.scheduler.drs import (
    MIN_GAIN,
    TARGET_IMBALANCE,
    HostState,
    Move,
    Plan,
    Policy,
    VmState,
    evacuation_fits,
    plan,
)
from vdc.scheduler.rules import Rule, VmKey, violations

pytestmark = pytest.mark.unit

GiB = 1 << 30
HOST_CPUS = 8
HOST_MEMORY = 64 * GiB


def vm(name: str, host: str, demand: float = 0.0, *, cpus: int = 1, memory: int = GiB, **kw: object) -> VmState:
    """A VM whose load is its CPU demand only (memory demand 0; ``memory`` is its allocation)."""
    kw.setdefault("memory_demand", 0)
    return VmState(key=("ns", name), host=host, cpus=cpus, memory=memory, cpu_demand=demand, **kw)  # type: ignore[arg-type]


def key(name: str) -> VmKey:
    return ("ns", name)


def hosts_for(
    vms: Sequence[VmState], *names: str, cpus: int = HOST_CPUS, memory: int = HOST_MEMORY, **each: Mapping[str, object]
) -> list[HostState]:
    """Hosts ``names`` with the allocation of ``vms`` on them; ``each[name]`` overrides fields of one host."""
    out = []
    for name in names:
        fields: dict[str, object] = {"cpus": cpus, "memory": memory}
        fields.update(each.get(name, {}))
        out.append(
            HostState(
                name=name,
                allocated_cpus=sum(v.cpus for v in vms if v.host == name),
                allocated_memory=sum(v.memory for v in vms if v.host == name),
                **fields,  # type: ignore[arg-type]
            )
        )
    return out


def anti(*names: str, must: bool = True, name: str = "anti") -> Rule:
    return Rule(name, "VmAntiAffinity", must, frozenset(key(n) for n in names))


def affinity(*names: str, must: bool = True, name: str = "aff") -> Rule:
    return Rule(name, "VmAffinity", must, frozenset(key(n) for n in names))


def vmhost(*names: str, hosts: Iterable[str], run_on: bool = True, must: bool = True, name: str = "vh") -> Rule:
    return Rule(name, "VmHost", must, frozenset(key(n) for n in names), frozenset(hosts), run_on)


def placement(vms: Sequence[VmState], result: Plan) -> dict[VmKey, str]:
    """Where the VMs are after the plan's moves."""
    where = {v.key: v.host for v in vms}
    for move in result.moves:
        assert where[move.vm] == move.source
        where[move.vm] = move.target
    return where


def balance_moves(result: Plan) -> list[Move]:
    return [m for m in result.moves if m.reason == "Balance"]


def loaded(n: int, demand: float, host: str = "h1", prefix: str = "v", **kw: object) -> list[VmState]:
    return [vm(f"{prefix}{i}", host, demand, **kw) for i in range(n)]


# --- balance ---------------------------------------------------------------------------------------------
def test_unbalanced_cpu_demand_is_balanced_within_the_target() -> None:
    vms = loaded(4, 2.0)  # h1 at 100%, h2 idle: imbalance 0.5
    hosts = hosts_for(vms, "h1", "h2")
    result = plan(hosts, vms, [], Policy(threshold=3))
    assert result.imbalance == pytest.approx(0.5)
    assert result.target == TARGET_IMBALANCE[3]
    assert [(m.source, m.target, m.reason, m.rule) for m in result.moves] == [("h1", "h2", "Balance", None)] * 2
    assert result.imbalance_after == pytest.approx(0.0)
    assert result.imbalance_after <= result.target
    # each move's figures chain: before of one is after of the previous
    assert result.moves[0].imbalance_before == pytest.approx(0.5)
    assert result.moves[0].imbalance_after == pytest.approx(0.25)
    assert result.moves[1].imbalance_before == pytest.approx(0.25)
    assert result.moves[1].imbalance_after == pytest.approx(0.0)
    assert "2 moves" in result.message
    assert "balance: h1 at 100% load, h2 at 0%" in result.moves[0].message


def test_balance_over_three_hosts_stops_once_within_the_target() -> None:
    vms = loaded(6, 1.0)  # h1 at 75%
    hosts = hosts_for(vms, "h1", "h2", "h3")
    for threshold in (2, 3, 4, 5):
        result = plan(hosts, vms, [], Policy(threshold=threshold))
        assert result.imbalance_after <= TARGET_IMBALANCE[threshold]
        # each move is worth its VM: the summed squared deviation drops by MIN_GAIN x the VM's load (0.125)
        for move in result.moves:
            drop = 3 * (move.imbalance_before**2 - move.imbalance_after**2)
            assert drop >= MIN_GAIN[threshold] * 0.125
    result = plan(hosts, vms, [], Policy(threshold=5))
    after = placement(vms, result)
    assert sorted(sum(1 for h in after.values() if h == name) for name in ("h1", "h2", "h3")) == [2, 2, 2]


def test_balanced_cluster_makes_no_move() -> None:
    vms = [vm("a", "h1", 2.0), vm("b", "h2", 2.0)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()
    assert result.imbalance == 0.0
    assert result.message.startswith("balanced: imbalance 0.000 within the target")


def test_threshold_1_makes_no_balance_move() -> None:
    vms = loaded(4, 2.0)
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=1))
    assert result.target == math.inf
    assert result.moves == ()
    assert result.imbalance == pytest.approx(0.5)
    assert result.message == "balanced: imbalance 0.500"


def test_threshold_1_still_fixes_a_rule_violation() -> None:
    vms = [*loaded(4, 2.0), vm("a", "h1", 0.5), vm("b", "h1", 0.5)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [anti("a", "b")], Policy(threshold=1))
    assert len(result.moves) == 1
    move = result.moves[0]
    assert move.reason == "RuleViolation" and move.rule == "anti"
    assert move.vm == key("b") and move.target == "h2"
    assert violations([anti("a", "b")], placement(vms, result)) == []


@pytest.mark.parametrize(("threshold", "moves"), [(2, 0), (3, 0), (4, 0), (5, 1)])
def test_a_small_imbalance_is_moved_only_at_an_aggressive_threshold(threshold: int, moves: int) -> None:
    vms = [vm("a", "h1", 0.4), vm("b", "h1", 0.4)]  # loads 0.10 and 0: imbalance 0.05
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=threshold))
    assert result.imbalance == pytest.approx(0.05)
    assert len(result.moves) == moves


@pytest.mark.parametrize(("threshold", "moves"), [(2, 0), (3, 0), (4, 1), (5, 1)])
def test_a_medium_imbalance_is_moved_from_threshold_4(threshold: int, moves: int) -> None:
    vms = [vm("a", "h1", 0.6), vm("b", "h1", 0.6)]  # loads 0.15 and 0: imbalance 0.075
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=threshold))
    assert len(result.moves) == moves


@pytest.mark.parametrize(("threshold", "moved"), [(2, []), (3, ["a"]), (4, ["a"]), (5, ["a"])])
def test_a_move_not_worth_its_vm_is_not_made(threshold: int, moved: list[str]) -> None:
    # h1 at 64% (a and b 32% each), h2 at 20%: moving either gains 2 x 0.32 x (0.44 - 0.32), 0.24 per unit of
    # its load: threshold 2 asks 0.3, threshold 3 asks 0.2
    vms = [vm("a", "h1", 2.56), vm("b", "h1", 2.56), vm("c", "h2", 1.6)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=threshold))
    assert result.imbalance > TARGET_IMBALANCE[threshold]
    assert [m.vm for m in result.moves] == [key(n) for n in moved]
    if not moved:
        assert "no move is worth its VM" in result.message


def test_many_hosts_with_small_vms_balance_as_a_small_cluster_does() -> None:
    # 16 VMs of a quarter core on one of 16 hosts of 8 CPUs: each VM is 3% of a host, each move lowers the
    # imbalance by little, yet every one is worth its VM
    vms = loaded(16, 0.25)
    hosts = hosts_for(vms, *(f"h{i}" for i in range(1, 17)))
    result = plan(hosts, vms, [], Policy(threshold=3))
    assert result.imbalance > TARGET_IMBALANCE[3]
    assert result.moves and result.imbalance_after <= TARGET_IMBALANCE[3]


def test_a_move_that_does_not_lower_the_imbalance_is_not_made() -> None:
    vms = [vm("big", "h1", 8.0)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()
    assert result.imbalance_after == result.imbalance


def test_idle_vms_are_not_moved_for_balance() -> None:
    vms = [vm("busy", "h1", 8.0), *loaded(3, 0.0, prefix="idle")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()


# --- automation levels ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("automation", "automated"), [("FullyAutomated", True), ("PartiallyAutomated", False), ("Manual", False)]
)
def test_a_moves_automated_flag_follows_the_vms_automation(automation: str, automated: bool) -> None:
    vms = loaded(2, 4.0, automation=automation)
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy())
    assert len(result.moves) == 1
    assert result.moves[0].automated is automated


def test_manual_and_automated_vms_mixed_each_keep_their_flag() -> None:
    vms = [
        vm("m1", "h1", 2.0, automation="Manual"),
        vm("m2", "h1", 2.0, automation="Manual"),
        vm("f1", "h1", 2.0),
        vm("f2", "h1", 2.0),
    ]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy())
    assert len(result.moves) == 2
    for move in result.moves:
        assert move.automated is (move.vm[1].startswith("f"))


def test_drs_disabled_vms_are_never_moved_for_balance() -> None:
    vms = loaded(4, 2.0, automation="Disabled")
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()


def test_drs_disabled_vms_are_moved_around_not_over() -> None:
    vms = [*loaded(3, 2.0, automation="Disabled", prefix="d"), vm("f", "h1", 2.0)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert [m.vm for m in result.moves] == [key("f")]


def test_drs_disabled_vm_is_not_moved_for_a_rule_and_is_listed_unfixable() -> None:
    vms = [vm("a", "h1", automation="Disabled")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [vmhost("a", hosts={"h2"})], Policy(threshold=1))
    assert result.moves == ()
    assert result.violations and result.violations[0][0] == "vh"
    assert result.unfixable == ("vh: ns/a cannot move (DRS Disabled)",)
    assert result.message == "1 rule broken, no move can fix it now"


def test_manual_vm_rule_fix_is_recommended_not_automated() -> None:
    vms = [vm("a", "h1", automation="Manual")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [vmhost("a", hosts={"h2"})], Policy(threshold=1))
    assert [(m.vm, m.target, m.automated) for m in result.moves] == [(key("a"), "h2", False)]


# --- cooldown ---------------------------------------------------------------------------------------------
def test_a_vm_moved_within_the_cooldown_is_not_moved_for_balance() -> None:
    vms = [vm("recent", "h1", 4.0, moved_at=950.0), vm("other", "h1", 4.0, moved_at=950.0)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(now=1000.0, cooldown=600.0))
    assert result.moves == ()


def test_a_vm_moved_before_the_cooldown_may_move_again() -> None:
    vms = [vm("a", "h1", 4.0, moved_at=300.0), vm("b", "h1", 4.0, moved_at=950.0)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(now=1000.0, cooldown=600.0))
    assert [m.vm for m in result.moves] == [key("a")]


def test_a_vm_within_the_cooldown_is_still_moved_to_fix_a_rule() -> None:
    vms = [vm("a", "h1", 1.0, moved_at=999.0)]
    rules = [vmhost("a", hosts={"h2"})]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(now=1000.0, cooldown=600.0))
    assert [(m.vm, m.target, m.reason) for m in result.moves] == [(key("a"), "h2", "RuleViolation")]


# --- stuck, allowed hosts, capacity ---------------------------------------------------------------------
def test_stuck_vms_are_never_moved_for_balance() -> None:
    vms = loaded(4, 2.0, stuck="a local disk")
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()


def test_stuck_vms_are_never_moved_for_a_rule() -> None:
    vms = [vm("a", "h1", stuck="pinned CPUs")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [vmhost("a", hosts={"h2"})], Policy())
    assert result.moves == ()
    assert result.unfixable == ("vh: ns/a cannot move (pinned CPUs)",)


def test_a_vms_allowed_hosts_are_respected() -> None:
    vms = loaded(6, 1.0, allowed=frozenset({"h1", "h3"}))
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, [], Policy(threshold=5))
    assert result.moves
    assert {m.target for m in result.moves} == {"h3"}


def test_a_rule_fix_respects_allowed_hosts() -> None:
    vms = [vm("a", "h1", allowed=frozenset({"h1", "h2"}))]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, [vmhost("a", hosts={"h3"})], Policy())
    assert result.moves == ()
    assert result.unfixable == ("vh: no host takes ns/a without breaking another rule",)


def test_a_full_host_by_cpu_allocation_is_no_target() -> None:
    vms = [*loaded(4, 2.0), vm("idle", "h2", 0.0, cpus=HOST_CPUS)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()


def test_a_full_host_by_memory_allocation_is_no_target() -> None:
    vms = [*loaded(4, 2.0), vm("idle", "h2", 0.0, memory=HOST_MEMORY)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=5))
    assert result.moves == ()


def test_allocation_capacity_is_never_exceeded() -> None:
    # h2 has room for two more 2-CPU VMs: balance would like three there
    vms = [*loaded(6, 1.3, cpus=1), vm("h2a", "h2", 0.0, cpus=4), *loaded(3, 0.1, host="h3", prefix="w", cpus=2)]
    hosts = hosts_for(vms, "h1", "h2", "h3")
    hosts = [replace(h, cpus=6) if h.name == "h2" else h for h in hosts]
    result = plan(hosts, vms, [], Policy(threshold=5))
    assert result.moves
    after = placement(vms, result)
    by_key = {v.key: v for v in vms}
    for host in hosts:
        cpus = sum(by_key[k].cpus for k, h in after.items() if h == host.name)
        memory = sum(by_key[k].memory for k, h in after.items() if h == host.name)
        assert cpus <= host.cpus and memory <= host.memory, host.name


def test_a_vm_is_moved_at_most_once_per_plan() -> None:
    vms = loaded(8, 1.0)
    result = plan(hosts_for(vms, "h1", "h2", "h3", "h4"), vms, [], Policy(threshold=5))
    assert len({m.vm for m in result.moves}) == len(result.moves)


# --- rules against balance ------------------------------------------------------------------------------
def test_a_must_rule_is_never_broken_by_a_balance_move() -> None:
    # a and b may not share a host; b is on h2, so a stays on h1 however loaded
    vms = [vm("a", "h1", 6.0), vm("x", "h1", 2.0), vm("b", "h2", 0.1)]
    rules = [anti("a", "b")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(threshold=5))
    assert key("a") not in {m.vm for m in result.moves}
    assert violations(rules, placement(vms, result)) == []


def test_a_must_run_on_rule_keeps_its_vms_in_the_host_group_under_balance() -> None:
    vms = loaded(4, 2.0)
    rules = [vmhost(*(f"v{i}" for i in range(4)), hosts={"h1", "h2"})]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=5))
    assert result.moves
    assert {m.target for m in result.moves} == {"h2"}


def test_a_kept_should_rule_is_never_broken_by_a_balance_move() -> None:
    vms = [vm("a", "h1", 6.0), vm("x", "h1", 2.0), vm("b", "h2", 0.1)]
    rules = [anti("a", "b", must=False)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(threshold=5))
    assert key("a") not in {m.vm for m in result.moves}
    assert violations(rules, placement(vms, result)) == []


def test_a_kept_should_not_run_on_rule_is_never_broken_by_a_balance_move() -> None:
    vms = loaded(4, 2.0)
    rules = [vmhost(*(f"v{i}" for i in range(4)), hosts={"h2"}, run_on=False, must=False)]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=5))
    assert result.moves
    assert "h2" not in {m.target for m in result.moves}


def test_affinity_group_members_are_not_moved_for_balance() -> None:
    vms = [vm("a", "h1", 4.0), vm("b", "h1", 4.0)]
    for must in (True, False):
        result = plan(hosts_for(vms, "h1", "h2"), vms, [affinity("a", "b", must=must)], Policy(threshold=5))
        assert result.moves == ()


# --- rule fixes -----------------------------------------------------------------------------------------
def test_an_anti_affinity_violation_is_fixed_by_moving_one_vm() -> None:
    vms = [vm("a", "h1", 1.0), vm("b", "h1", 1.0)]
    rules = [anti("a", "b")]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=1))
    assert result.violations == (("anti", "ns/a, ns/b share h1"),)
    assert len(result.moves) == 1
    move = result.moves[0]
    assert (move.vm, move.source, move.reason, move.rule) == (key("b"), "h1", "RuleViolation", "anti")
    assert move.target in ("h2", "h3")
    assert move.message.startswith("must rule anti: ")
    assert violations(rules, placement(vms, result)) == []


def test_a_should_anti_affinity_violation_is_fixed_too() -> None:
    vms = [vm("a", "h1"), vm("b", "h1")]
    rules = [anti("a", "b", must=False)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("b"), "h2")]
    assert result.moves[0].message.startswith("should rule anti: ")


def test_an_anti_affinity_fix_goes_to_the_host_that_balances_best() -> None:
    vms = [vm("a", "h1", 1.0), vm("b", "h1", 1.0), vm("busy", "h2", 4.0)]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, [anti("a", "b")], Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("b"), "h3")]


def test_an_anti_affinity_fix_moves_the_movable_vm_of_the_pair() -> None:
    # b (the one the violation names first) has DRS Disabled; moving a keeps the rule as well
    vms = [vm("a", "h1", 1.0), vm("b", "h1", 1.0, automation="Disabled")]
    rules = [anti("a", "b")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.target, m.reason) for m in result.moves] == [(key("a"), "h2", "RuleViolation")]
    assert violations(rules, placement(vms, result)) == []
    assert result.unfixable == ()


def test_anti_affinity_with_two_unmovable_vms_on_one_host_is_unfixable() -> None:
    vms = [
        vm("a", "h1", 1.0, stuck="a local disk"),
        vm("b", "h1", 1.0, stuck="a local disk"),
    ]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [anti("a", "b")], Policy(threshold=1))
    assert result.moves == ()
    assert result.unfixable == ("anti: ns/b cannot move (a local disk)",)


def test_anti_affinity_with_more_members_than_hosts_fixes_what_it_can() -> None:
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h1")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [anti("a", "b", "c")], Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("b"), "h2")]
    assert result.unfixable == ("anti: no host takes ns/c without breaking another rule",)


def test_a_must_run_on_violation_is_fixed() -> None:
    vms = [vm("a", "h1", 1.0), vm("b", "h3", 1.0)]
    rules = [vmhost("a", "b", hosts={"h2", "h3"})]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.source, m.target, m.rule) for m in result.moves] == [(key("a"), "h1", "h2", "vh")]
    assert violations(rules, placement(vms, result)) == []


def test_a_not_run_on_violation_is_fixed() -> None:
    vms = [vm("a", "h1", 1.0)]
    rules = [vmhost("a", hosts={"h1", "h2"}, run_on=False)]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("a"), "h3")]


def test_an_affinity_violation_is_fixed_by_joining_the_group() -> None:
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h2")]
    rules = [affinity("a", "b", "c")]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("c"), "h1")]


def test_an_affinity_group_split_over_three_hosts_is_joined_on_one() -> None:
    # the group's majority is on h1, which is busy; the strays on h2 and h3 must both join h1 (joining
    # each other instead would leave the group split)
    vms = [
        vm("a1", "h1", 0.5),
        vm("a2", "h1", 0.5),
        vm("busy", "h1", 5.0),
        vm("b", "h2", 0.5),
        vm("load", "h2", 2.0),
        vm("c", "h3", 0.5),
    ]
    rules = [affinity("a1", "a2", "b", "c")]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=1))
    assert violations(rules, placement(vms, result)) == []
    assert {(m.vm, m.target) for m in result.moves} == {(key("b"), "h1"), (key("c"), "h1")}


def test_a_rule_fix_never_breaks_a_must_rule() -> None:
    # a must leave h1 (RunOn h2/h3) but may not share with b (on h2): only h3
    vms = [vm("a", "h1"), vm("b", "h2"), vm("busy", "h3", 6.0)]
    rules = [vmhost("a", hosts={"h2", "h3"}, name="vh"), anti("a", "b")]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("a"), "h3")]


def test_a_rule_fix_never_breaks_a_kept_should_rule() -> None:
    vms = [vm("a", "h1"), vm("b", "h2"), vm("busy", "h3", 6.0)]
    rules = [vmhost("a", hosts={"h2", "h3"}, name="vh"), anti("a", "b", must=False)]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, rules, Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("a"), "h3")]


def test_a_violation_no_host_can_fix_is_listed_unfixable() -> None:
    vms = [vm("a", "h1")]
    rules = [vmhost("a", hosts={"h9"})]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy())
    assert result.moves == ()
    assert result.violations == (("vh", "ns/a runs on hosts outside the host group"),)
    assert result.unfixable == ("vh: no host takes ns/a without breaking another rule",)


def test_rule_fixes_come_before_balance_moves() -> None:
    vms = [*loaded(4, 2.0), vm("a", "h1", 0.5), vm("b", "h1", 0.5)]
    result = plan(hosts_for(vms, "h1", "h2", "h3"), vms, [anti("a", "b")], Policy(threshold=5))
    assert result.moves[0].reason == "RuleViolation"
    assert all(m.reason == "Balance" for m in result.moves[1:])
    assert len(result.moves) > 1
    # the rule fix's VM is not moved again for balance
    assert [m.vm for m in result.moves].count(result.moves[0].vm) == 1


# --- max moves, hosts that are no target ----------------------------------------------------------------
def test_max_moves_is_respected() -> None:
    vms = loaded(16, 1.0)
    hosts = hosts_for(vms, "h1", "h2", "h3", "h4", cpus=16)
    assert len(plan(hosts, vms, [], Policy(threshold=5)).moves) > 3
    result = plan(hosts, vms, [], Policy(threshold=5, max_moves=3))
    assert len(result.moves) == 3


def test_max_moves_counts_rule_fixes() -> None:
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h1")]
    rules = [vmhost("a", "b", "c", hosts={"h2"})]
    result = plan(hosts_for(vms, "h1", "h2"), vms, rules, Policy(threshold=5, max_moves=2))
    assert [m.vm for m in result.moves] == [key("a"), key("b")]


@pytest.mark.parametrize(
    "unusable",
    [{"power": "Standby"}, {"power": "EnteringStandby"}, {"power": "Waking"}, {"available": False}],
    ids=["standby", "entering-standby", "waking", "unavailable"],
)
def test_hosts_not_on_and_available_are_never_targets(unusable: Mapping[str, object]) -> None:
    vms = [*loaded(4, 2.0), vm("a", "h1")]
    hosts = hosts_for(vms, "h1", "h2", h2=unusable)
    result = plan(hosts, vms, [vmhost("a", hosts={"h2"})], Policy(threshold=5))
    assert result.moves == ()
    assert result.unfixable == ("vh: no host takes ns/a without breaking another rule",)
    # one active host: nothing to balance
    assert result.imbalance == 0.0


def test_only_active_hosts_count_in_the_imbalance_and_take_moves() -> None:
    vms = loaded(4, 2.0)
    hosts = hosts_for(vms, "h1", "h2", "h3", "h4", h3={"power": "Standby"}, h4={"available": False})
    result = plan(hosts, vms, [], Policy(threshold=5))
    assert result.imbalance == pytest.approx(0.5)
    assert {m.target for m in result.moves} == {"h2"}


def test_a_vm_on_an_unavailable_host_is_moved_to_fix_a_rule() -> None:
    vms = [vm("a", "h1", 1.0)]
    hosts = hosts_for(vms, "h1", "h2", h1={"available": False})
    result = plan(hosts, vms, [vmhost("a", hosts={"h2"})], Policy(threshold=1))
    assert [(m.vm, m.target) for m in result.moves] == [(key("a"), "h2")]


def test_a_vm_on_a_host_not_given_is_moved_to_fix_a_rule_without_error() -> None:
    vms = [vm("a", "gone", 1.0), vm("b", "h1", 1.0)]
    hosts = hosts_for(vms, "h1", "h2")
    result = plan(hosts, vms, [vmhost("a", hosts={"h2"})], Policy(threshold=1))
    assert [(m.vm, m.source, m.target) for m in result.moves] == [(key("a"), "gone", "h2")]
    assert [(f.host, f.vms) for f in result.loads] == [("h1", 1), ("h2", 0)]


# --- loads, determinism ---------------------------------------------------------------------------------
def test_loads_report_every_host_now_sorted() -> None:
    vms = [vm("a", "h2", 2.0, memory_demand=8 * GiB), vm("b", "h2", 1.0), vm("c", "h1", 0.5)]
    hosts = hosts_for(vms, "h2", "h1", "h3", h3={"power": "Standby"})
    result = plan(hosts, vms, [], Policy(threshold=1))
    assert [(f.host, f.power, f.vms) for f in result.loads] == [("h1", "On", 1), ("h2", "On", 2), ("h3", "Standby", 0)]
    h2 = result.loads[1]
    assert h2.cpu_demand == 3.0 and h2.memory_demand == 8 * GiB
    assert h2.load == pytest.approx(3.0 / 8)


def test_memory_demand_counts_in_the_load() -> None:
    vms = [vm("a", "h1", 0.0, memory_demand=48 * GiB)]
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(threshold=1))
    assert result.loads[0].load == pytest.approx(0.75)
    assert result.imbalance == pytest.approx(0.375)


def test_unmeasured_memory_counts_as_configured() -> None:
    v = VmState(key=key("a"), host="h1", cpus=1, memory=32 * GiB)
    assert v.demand_memory == 32 * GiB
    result = plan(hosts_for([v], "h1"), [v], [], Policy(threshold=1))
    assert result.loads[0].load == pytest.approx(0.5)


def _summary(result: Plan) -> tuple[object, ...]:
    return (
        round(result.imbalance, 9),
        round(result.imbalance_after, 9),
        tuple((m.vm, m.source, m.target, m.reason, m.rule, m.automated) for m in result.moves),
        result.violations,
        result.unfixable,
        result.loads,
        result.power,
        result.dpm_message,
    )


def test_input_order_does_not_change_the_plan() -> None:
    vms = [
        *loaded(5, 1.0),
        *loaded(3, 0.5, host="h2", prefix="w"),
        vm("a", "h1", 0.5),
        vm("b", "h1", 0.5),
        vm("c", "h3", 0.25, automation="Manual"),
        vm("d", "h1", 0.5),
    ]
    hosts = hosts_for(vms, "h1", "h2", "h3", "h4")
    rules = [anti("a", "b"), vmhost("d", hosts={"h3", "h4"}, name="vh"), anti("c", "w0", must=False, name="soft")]
    policy = Policy(threshold=5, dpm="Manual")
    expected = _summary(plan(hosts, vms, rules, policy))
    assert expected[2]  # it moves something
    rng = random.Random(7)
    for _ in range(20):
        shuffled_vms = vms[:]
        shuffled_hosts = hosts[:]
        rng.shuffle(shuffled_vms)
        rng.shuffle(shuffled_hosts)
        assert _summary(plan(shuffled_hosts, shuffled_vms, rules, policy)) == expected
    # the rules' order (the spec's) may order the fixes, but every order keeps every rule
    for ordered in itertools.permutations(rules):
        result = plan(hosts, vms, list(ordered), policy)
        assert violations(rules, placement(vms, result)) == []
        assert result.unfixable == ()


# --- DPM ------------------------------------------------------------------------------------------------
def quiet_cluster(**each: Mapping[str, object]) -> tuple[list[HostState], list[VmState]]:
    """Three hosts far under the low mark: h1 with two VMs, h2 with one small, h3 with one bigger."""
    vms = [vm("a", "h1", 0.5), vm("b", "h1", 0.5), vm("c", "h2", 0.25), vm("d", "h3", 1.0)]
    return hosts_for(vms, "h1", "h2", "h3", **each), vms


def test_dpm_off_does_nothing() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [], Policy(dpm="Off"))
    assert result.power == ()
    assert result.dpm_message == ""
    assert result.utilization == pytest.approx(2.25 / 24)


def test_dpm_utilization_is_cpu_demand_or_allocated_memory_of_hosts_on() -> None:
    vms = [vm("a", "h1", 4.0, memory=8 * GiB), vm("b", "h2", 2.0, memory=56 * GiB), vm("s", "h3", 8.0)]
    hosts = hosts_for(vms, "h1", "h2", "h3", h3={"power": "Standby"})
    # CPU 6/16 = 0.375; memory 64/128 = 0.5
    assert plan(hosts, vms, [], Policy(dpm="Manual")).utilization == pytest.approx(0.5)
    vms = [vm("a", "h1", 7.0), vm("b", "h2", 5.0)]
    assert plan(hosts_for(vms, "h1", "h2"), vms, [], Policy()).utilization == pytest.approx(0.75)


def test_dpm_under_the_low_mark_puts_the_least_loaded_host_in_standby() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert [(p.host, p.action, p.automated) for p in result.power] == [("h2", "Standby", True)]
    assert "under the band" in result.power[0].message
    assert result.dpm_message == result.power[0].message


def test_dpm_manual_only_recommends() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [], Policy(dpm="Manual"))
    assert [(p.host, p.action, p.automated) for p in result.power] == [("h2", "Standby", False)]


@pytest.mark.parametrize(
    ("cluster", "override", "automated"),
    [
        ("Automated", "Manual", False),
        ("Manual", "Automated", True),
        ("Automated", "Default", True),
        ("Manual", "Default", False),
    ],
)
def test_dpm_host_override_sets_the_automated_flag(cluster: str, override: str, automated: bool) -> None:
    hosts, vms = quiet_cluster(h2={"dpm": override})
    result = plan(hosts, vms, [], Policy(dpm=cluster))  # type: ignore[arg-type]
    assert [(p.host, p.automated) for p in result.power] == [("h2", automated)]


def test_dpm_disabled_host_is_never_put_in_standby() -> None:
    hosts, vms = quiet_cluster(h2={"dpm": "Disabled"})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert [p.host for p in result.power] == ["h3"]
    hosts, vms = quiet_cluster(**{h: {"dpm": "Disabled"} for h in ("h1", "h2", "h3")})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert result.power == ()
    assert "no host may go" in result.dpm_message


def test_dpm_never_puts_a_host_without_power_management_in_standby() -> None:
    hosts, vms = quiet_cluster(h2={"power_managed": False})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert [p.host for p in result.power] == ["h3"]
    hosts, vms = quiet_cluster(**{h: {"power_managed": False} for h in ("h1", "h2", "h3")})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert result.power == ()
    assert "no power management" in result.dpm_message


def test_dpm_keeps_min_hosts_on() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [], Policy(dpm="Automated", min_hosts_on=3))
    assert result.power == ()
    assert "minHostsOn is 3" in result.dpm_message
    # one host already in standby: 2 on, min 2
    hosts = [replace(h, power="Standby") if h.name == "h2" else h for h in hosts]
    vms = [v for v in vms if v.host != "h2"]
    result = plan(hosts, vms, [], Policy(dpm="Automated", min_hosts_on=2))
    assert result.power == ()
    assert "minHostsOn is 2" in result.dpm_message


def test_dpm_never_puts_a_host_ha_needs_in_standby() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [], Policy(dpm="Automated", ha_needed=frozenset({"h2"})))
    assert [p.host for p in result.power] == ["h3"]
    result = plan(hosts, vms, [], Policy(dpm="Automated", ha_needed=frozenset({"h1", "h2", "h3"})))
    assert result.power == ()
    assert "h2: HA admission control needs it" in result.dpm_message


@pytest.mark.parametrize(
    ("c_fields", "why"),
    [
        ({"stuck": "a local disk"}, "h2: ns/c cannot move (a local disk)"),
        ({"automation": "Disabled"}, "h2: ns/c has DRS Disabled"),
        ({"allowed": frozenset()}, "h2: ns/c fits on no other host that is on"),
    ],
    ids=["stuck", "disabled", "fits-nowhere"],
)
def test_dpm_skips_a_host_whose_vm_cannot_leave(c_fields: Mapping[str, object], why: str) -> None:
    hosts, vms = quiet_cluster()
    vms = [replace(v, **c_fields) if v.key == key("c") else v for v in vms]  # type: ignore[arg-type]
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert [p.host for p in result.power] == ["h3"]
    # every host blocked: the message says why
    blocked = [replace(v, **c_fields) for v in vms]  # type: ignore[arg-type]
    result = plan(hosts, blocked, [], Policy(dpm="Automated"))
    assert result.power == ()
    assert why in result.dpm_message
    assert "under the band, but" in result.dpm_message


def test_dpm_skips_a_host_whose_vm_fits_on_no_other_by_allocation() -> None:
    # h1 (tried first) holds a 6-CPU VM that h2 (4 CPUs) cannot take; h2's 1-CPU VM fits on h1
    vms = [vm("big", "h1", 0.1, cpus=6), vm("x", "h2", 0.1, cpus=1)]
    hosts = hosts_for(vms, "h1", "h2", h2={"cpus": 4})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert [p.host for p in result.power] == ["h2"]
    vms = [vm("big", "h1", 0.1, cpus=6), vm("x", "h2", 0.1, cpus=3)]
    hosts = hosts_for(vms, "h1", "h2", h2={"cpus": 4})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert result.power == ()
    assert "h1: ns/big fits on no other host that is on" in result.dpm_message
    assert "h2: ns/x fits on no other host that is on" in result.dpm_message


def test_dpm_skips_a_host_whose_vm_a_must_rule_keeps() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [vmhost("c", hosts={"h2"})], Policy(dpm="Automated"))
    assert [p.host for p in result.power] == ["h3"]


def test_dpm_does_not_standby_when_the_others_would_go_over_the_high_mark() -> None:
    vms = [vm("a", "h1", 3.5), vm("b", "h2", 3.5)]  # 7/16 = 44%: under 45%, but 7/8 on one host
    result = plan(hosts_for(vms, "h1", "h2"), vms, [], Policy(dpm="Automated"))
    assert result.power == ()
    assert "the others would be at 88%" in result.dpm_message


def test_dpm_in_the_band_does_nothing() -> None:
    vms = [vm("a", "h1", 4.0), vm("b", "h2", 4.0)]
    hosts = hosts_for(vms, "h1", "h2", "h3", h3={"power": "Standby"})
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert result.power == ()
    assert "in the band" in result.dpm_message


def test_dpm_over_the_high_mark_powers_on_the_largest_standby_host() -> None:
    vms = [vm("a", "h1", 7.0), vm("b", "h2", 7.0)]
    hosts = hosts_for(
        vms,
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        h3={"power": "Standby", "memory": 128 * GiB},
        h4={"power": "Standby", "memory": 256 * GiB, "dpm": "Disabled"},
        h5={"power": "Standby", "memory": 64 * GiB},
    )
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert [(p.host, p.action, p.automated) for p in result.power] == [("h3", "PowerOn", True)]
    assert "over the band" in result.power[0].message
    result = plan(hosts, vms, [], Policy(dpm="Manual"))
    assert [(p.host, p.automated) for p in result.power] == [("h3", False)]


def test_dpm_power_on_ties_on_memory_break_on_cpus_then_name() -> None:
    vms = [vm("a", "h1", 7.5)]
    hosts = hosts_for(
        vms,
        "h1",
        "s2",
        "s1",
        "s3",
        s1={"power": "Standby"},
        s2={"power": "Standby"},
        s3={"power": "Standby", "cpus": 16},
    )
    assert [p.host for p in plan(hosts, vms, [], Policy(dpm="Automated")).power] == ["s3"]
    hosts = [h for h in hosts if h.name != "s3"]
    assert [p.host for p in plan(hosts, vms, [], Policy(dpm="Automated")).power] == ["s1"]


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        (Policy(dpm="Automated", waiting_vms=2), "2 VM(s) fit nowhere"),
        (Policy(dpm="Automated", ha_short=True), "HA admission control lacks capacity"),
    ],
    ids=["waiting-vms", "ha-short"],
)
def test_dpm_powers_on_a_standby_host_for_waiting_vms_or_ha(policy: Policy, why: str) -> None:
    hosts, vms = quiet_cluster(h3={"power": "Standby"})
    vms = [v for v in vms if v.host != "h3"]
    result = plan(hosts, vms, [], policy)
    assert [(p.host, p.action, p.message) for p in result.power] == [("h3", "PowerOn", why)]


def test_dpm_wants_a_host_but_none_is_in_standby() -> None:
    hosts, vms = quiet_cluster()
    result = plan(hosts, vms, [], Policy(dpm="Automated", waiting_vms=1))
    assert result.power == ()
    assert result.dpm_message == "1 VM(s) fit nowhere, no host in Standby to power on"


@pytest.mark.parametrize("busy", ["EnteringStandby", "Waking"])
def test_dpm_waits_while_a_host_changes_power(busy: str) -> None:
    hosts, vms = quiet_cluster(h3={"power": busy}, h2={"power": "Standby"})
    vms = [v for v in vms if v.host == "h1"]
    for policy in (
        Policy(dpm="Automated"),
        Policy(dpm="Automated", waiting_vms=3),
        Policy(dpm="Automated", ha_short=True),
    ):
        result = plan(hosts, vms, [], policy)
        assert result.power == ()
        assert result.dpm_message == f"waiting: h3 {busy}"


def test_dpm_makes_one_power_action_at_a_time() -> None:
    vms = [vm("a", "h1", 0.1)]
    hosts = hosts_for(vms, "h1", "h2", "h3", "h4", "h5")
    result = plan(hosts, vms, [], Policy(dpm="Automated"))
    assert len(result.power) == 1 and result.power[0].action == "Standby"
    assert result.power[0].host != "h1"


def test_evacuation_fits_places_every_vm_or_says_why() -> None:
    vms = [vm("a", "h1", cpus=4), vm("b", "h1", cpus=4), vm("x", "h2", cpus=4), vm("y", "h3", cpus=4)]
    hosts = hosts_for(vms, "h1", "h2", "h3")
    assert evacuation_fits("h1", hosts, vms, []) is None
    # both may not land on the same host: with anti-affinity to x and y neither fits
    assert evacuation_fits("h1", hosts, vms, [anti("a", "x", name="r1"), anti("a", "y", name="r2")]) == (
        "ns/a fits on no other host that is on"
    )
    # a third 4-CPU VM does not fit in what h2 and h3 have left
    more = [*vms, vm("c", "h1", cpus=4)]
    hosts = hosts_for(more, "h1", "h2", "h3", cpus=12)
    hosts = [replace(h, cpus=8) if h.name != "h1" else h for h in hosts]
    assert evacuation_fits("h1", hosts, more, []) == "ns/c fits on no other host that is on"
