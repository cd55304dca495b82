"""A ComputeCluster's placement rules, resolved (``vdc.scheduler.rules``): what each rule type refuses and
what breaks it, must against should, and VMs a rule does not select."""

from __future__ import annotations

import pytest

from vdc.scheduler.rules import Rule, VmKey, first_refusal, refusal, violation, violations

pytestmark = pytest.mark.unit

A: VmKey = ("ns", "a")
B: VmKey = ("ns", "b")
C: VmKey = ("ns", "c")
D: VmKey = ("ns", "d")
OTHER: VmKey = ("other", "x")


def affinity(*vms: VmKey, must: bool = True, name: str = "aff") -> Rule:
    return Rule(name, "VmAffinity", must, frozenset(vms))


def anti(*vms: VmKey, must: bool = True, name: str = "anti") -> Rule:
    return Rule(name, "VmAntiAffinity", must, frozenset(vms))


def vmhost(*vms: VmKey, hosts: set[str], run_on: bool = True, must: bool = True, name: str = "vh") -> Rule:
    return Rule(name, "VmHost", must, frozenset(vms), frozenset(hosts), run_on)


# --- Rule.kind ------------------------------------------------------------------------------------------
def test_kind_names_enforcement_and_rule() -> None:
    assert affinity(A, B).kind == "must rule aff"
    assert affinity(A, B, must=False).kind == "should rule aff"


# --- VmAffinity -----------------------------------------------------------------------------------------
def test_affinity_refuses_a_host_away_from_the_group() -> None:
    why = refusal(affinity(A, B, C), A, "h2", {B: "h1", C: "h1"})
    assert why is not None
    assert "must rule aff" in why and "ns/a" in why and "h1" in why


def test_affinity_allows_the_groups_host() -> None:
    assert refusal(affinity(A, B, C), A, "h1", {B: "h1", C: "h1"}) is None


def test_affinity_allows_any_host_when_no_other_member_is_placed() -> None:
    assert refusal(affinity(A, B), A, "h9", {A: "h1"}) is None
    assert refusal(affinity(A, B), A, "h9", {}) is None


def test_affinity_ignores_the_vms_own_placement() -> None:
    # A itself on h1 says nothing: B on h2 is the group
    assert refusal(affinity(A, B), A, "h2", {A: "h1", B: "h2"}) is None
    assert refusal(affinity(A, B), A, "h1", {A: "h1", B: "h2"}) is not None


def test_affinity_with_a_split_group_allows_any_of_its_hosts() -> None:
    rule = affinity(A, B, C)
    placed = {B: "h1", C: "h2"}
    assert refusal(rule, A, "h1", placed) is None
    assert refusal(rule, A, "h2", placed) is None
    assert refusal(rule, A, "h3", placed) is not None


def test_affinity_violation_none_when_together() -> None:
    assert violation(affinity(A, B, C), {A: "h1", B: "h1", C: "h1"}) is None


def test_affinity_violation_none_with_one_member_placed() -> None:
    assert violation(affinity(A, B), {A: "h1"}) is None


def test_affinity_violation_names_the_strays_not_the_majority_host() -> None:
    found = violation(affinity(A, B, C), {A: "h2", B: "h1", C: "h2"})
    assert found is not None
    assert found.rule == "aff"
    assert found.vms == (B,)
    assert "h1, h2" in found.message and "should join h2" in found.message


def test_affinity_violation_tie_joins_the_first_host_by_name() -> None:
    found = violation(affinity(A, B), {A: "h2", B: "h1"})
    assert found is not None
    assert found.vms == (A,)


def test_affinity_violation_ignores_vms_it_does_not_select() -> None:
    assert violation(affinity(A, B), {A: "h1", B: "h1", C: "h2", OTHER: "h3"}) is None


# --- VmAntiAffinity -------------------------------------------------------------------------------------
def test_anti_affinity_refuses_a_host_with_another_member() -> None:
    why = refusal(anti(A, B, C), A, "h1", {B: "h1", C: "h2"})
    assert why is not None
    assert "ns/a" in why and "h1" in why and "ns/b" in why


def test_anti_affinity_allows_a_host_without_members() -> None:
    assert refusal(anti(A, B, C), A, "h3", {B: "h1", C: "h2"}) is None


def test_anti_affinity_ignores_the_vms_own_placement() -> None:
    assert refusal(anti(A, B), A, "h1", {A: "h1"}) is None


def test_anti_affinity_violation_none_when_spread() -> None:
    assert violation(anti(A, B, C), {A: "h1", B: "h2", C: "h3"}) is None


def test_anti_affinity_violation_lists_all_but_one_per_crowded_host() -> None:
    found = violation(anti(A, B, C, D), {A: "h1", B: "h1", C: "h1", D: "h2"})
    assert found is not None
    assert found.vms == (B, C)
    assert "share h1" in found.message


def test_anti_affinity_violation_over_two_crowded_hosts() -> None:
    found = violation(anti(A, B, C, D), {A: "h1", B: "h1", C: "h2", D: "h2"})
    assert found is not None
    assert found.vms == (B, D)
    assert "share h1" in found.message and "share h2" in found.message


def test_anti_affinity_violation_ignores_vms_it_does_not_select() -> None:
    assert violation(anti(A, B), {A: "h1", B: "h2", C: "h1"}) is None


# --- VmHost ---------------------------------------------------------------------------------------------
def test_vmhost_run_on_refuses_a_host_outside_the_group() -> None:
    why = refusal(vmhost(A, hosts={"h1", "h2"}), A, "h3", {})
    assert why is not None
    assert "outside" in why and "h3" in why


def test_vmhost_run_on_allows_a_host_in_the_group() -> None:
    assert refusal(vmhost(A, hosts={"h1", "h2"}), A, "h2", {}) is None


def test_vmhost_not_run_on_refuses_a_host_in_the_group() -> None:
    why = refusal(vmhost(A, hosts={"h1"}, run_on=False), A, "h1", {})
    assert why is not None
    assert " in its host group" in why


def test_vmhost_not_run_on_allows_a_host_outside_the_group() -> None:
    assert refusal(vmhost(A, hosts={"h1"}, run_on=False), A, "h2", {}) is None


def test_vmhost_run_on_with_an_empty_group_refuses_every_host() -> None:
    assert refusal(vmhost(A, hosts=set()), A, "h1", {}) is not None


def test_vmhost_run_on_violation_lists_the_vms_outside() -> None:
    found = violation(vmhost(A, B, C, hosts={"h1"}), {A: "h1", B: "h2", C: "h3"})
    assert found is not None
    assert found.vms == (B, C)
    assert "run on hosts outside" in found.message


def test_vmhost_not_run_on_violation_lists_the_vms_inside() -> None:
    found = violation(vmhost(A, B, hosts={"h1"}, run_on=False), {A: "h1", B: "h2"})
    assert found is not None
    assert found.vms == (A,)
    assert "runs on hosts in" in found.message


def test_vmhost_violation_none_when_kept() -> None:
    assert violation(vmhost(A, B, hosts={"h1", "h2"}), {A: "h1", B: "h2"}) is None
    assert violation(vmhost(A, hosts={"h1"}, run_on=False), {A: "h2"}) is None


def test_vmhost_violation_ignores_vms_it_does_not_select() -> None:
    assert violation(vmhost(A, hosts={"h1"}), {A: "h1", B: "h2"}) is None


# --- VMs not selected -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rule",
    [
        affinity(A, B),
        anti(A, B),
        vmhost(A, B, hosts={"h1"}),
        vmhost(A, B, hosts={"h2"}, run_on=False),
    ],
    ids=["affinity", "anti-affinity", "run-on", "not-run-on"],
)
def test_vms_not_selected_are_never_refused(rule: Rule) -> None:
    placed = {A: "h1", B: "h1"}
    for host in ("h1", "h2", "h3"):
        assert refusal(rule, C, host, placed) is None
        assert refusal(rule, OTHER, host, placed) is None
        assert first_refusal([rule], C, host, placed) is None
        assert first_refusal([rule], C, host, placed, must_only=False) is None


def test_violation_with_nothing_placed_is_none() -> None:
    for rule in (affinity(A, B), anti(A, B), vmhost(A, B, hosts={"h1"})):
        assert violation(rule, {}) is None


# --- must against should --------------------------------------------------------------------------------
def test_first_refusal_must_only_skips_should_rules() -> None:
    should = anti(A, B, must=False)
    assert first_refusal([should], A, "h1", {B: "h1"}) is None
    assert first_refusal([should], A, "h1", {B: "h1"}, must_only=True) is None
    why = first_refusal([should], A, "h1", {B: "h1"}, must_only=False)
    assert why is not None and why.startswith("should rule anti")


def test_first_refusal_must_rules_refuse_either_way() -> None:
    must = vmhost(A, hosts={"h1"})
    assert first_refusal([must], A, "h2", {}) is not None
    assert first_refusal([must], A, "h2", {}, must_only=False) is not None


def test_first_refusal_returns_the_first_refusing_rule_in_order() -> None:
    first = vmhost(A, hosts={"h1"}, name="first")
    second = anti(A, B, name="second")
    placed = {B: "h2"}
    why = first_refusal([first, second], A, "h2", placed)
    assert why is not None and "rule first" in why
    why = first_refusal([second, first], A, "h2", placed)
    assert why is not None and "rule second" in why


def test_first_refusal_skips_rules_that_allow_and_finds_a_later_one() -> None:
    ok = vmhost(A, hosts={"h2"}, name="ok")
    refusing = anti(A, B, name="refusing")
    why = first_refusal([ok, refusing], A, "h2", {B: "h2"})
    assert why is not None and "rule refusing" in why


def test_first_refusal_none_when_every_rule_allows() -> None:
    rules = [vmhost(A, hosts={"h1"}), anti(A, B), affinity(A, C)]
    assert first_refusal(rules, A, "h1", {B: "h2", C: "h1"}, must_only=False) is None


def test_first_refusal_should_skipped_then_must_found() -> None:
    rules = [anti(A, B, must=False, name="soft"), vmhost(A, hosts={"h9"}, name="hard")]
    why = first_refusal(rules, A, "h1", {B: "h1"})
    assert why is not None and "must rule hard" in why
    why = first_refusal(rules, A, "h1", {B: "h1"}, must_only=False)
    assert why is not None and "should rule soft" in why


# --- violations -----------------------------------------------------------------------------------------
def test_violations_lists_each_broken_rule_in_order() -> None:
    rules = [
        anti(A, B, name="r1"),
        affinity(C, D, name="r2"),
        vmhost(A, hosts={"h1"}, name="r3"),
        vmhost(C, hosts={"h9"}, name="r4"),
    ]
    placed = {A: "h1", B: "h1", C: "h1", D: "h1"}
    assert [v.rule for v in violations(rules, placed)] == ["r1", "r4"]


def test_violation_message_shortens_long_lists() -> None:
    many = [("ns", f"vm{i:02}") for i in range(8)]
    found = violation(vmhost(*many, hosts={"h1"}), {k: "h2" for k in many})
    assert found is not None
    assert len(found.vms) == 8
    assert "and 3 more" in found.message
