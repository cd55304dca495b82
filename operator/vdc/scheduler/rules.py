"""A ComputeCluster's placement rules, resolved to VMs and hosts, and what they allow. Pure.

:class:`Rule` is a rule with its VM group and host group already chosen (by the caller, from labels);
:func:`refusal` says why a rule forbids a VM on a host given where the other VMs of its group are;
:func:`violations` lists what is broken now. DRS (:mod:`vdc.scheduler.drs`) and the scheduler's rule
filter share these, so a move DRS plans is one the scheduler takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

VmKey = tuple[str, str]
"""(namespace, name)."""

RuleType = Literal["VmAffinity", "VmAntiAffinity", "VmHost"]


@dataclass(frozen=True)
class Rule:
    """One rule, resolved: ``vms`` the VMs it selects, ``hosts`` the host group (VmHost)."""

    name: str
    type: RuleType
    must: bool
    vms: frozenset[VmKey]
    hosts: frozenset[str] = frozenset()
    run_on: bool = True
    """VmHost: RunOn (True) or NotRunOn."""

    @property
    def kind(self) -> str:
        return f"{'must' if self.must else 'should'} rule {self.name}"


def _vm(key: VmKey) -> str:
    return f"{key[0]}/{key[1]}"


def refusal(rule: Rule, vm: VmKey, host: str, placed: Mapping[VmKey, str]) -> str | None:
    """Why ``rule`` forbids ``vm`` on ``host`` while the other VMs are where ``placed`` says (VM -> host;
    ``vm``'s own entry is ignored), or None. A rule that does not select ``vm`` forbids nothing."""
    if vm not in rule.vms:
        return None
    if rule.type == "VmHost":
        inside = host in rule.hosts
        if inside != rule.run_on:
            where = "outside" if rule.run_on else "in"
            return f"{rule.kind}: {_vm(vm)} may not run on a host {where} its host group ({host})"
        return None
    others = sorted((k, h) for k, h in placed.items() if k in rule.vms and k != vm)
    if rule.type == "VmAntiAffinity":
        there = [k for k, h in others if h == host]
        if there:
            return f"{rule.kind}: {_vm(vm)} may not run on {host} with {', '.join(_vm(k) for k in there[:3])}"
        return None
    hosts = sorted({h for _, h in others})
    if hosts and host not in hosts:
        return f"{rule.kind}: {_vm(vm)} must run with its group on {', '.join(hosts[:3])}"
    return None


def first_refusal(
    rules: Iterable[Rule], vm: VmKey, host: str, placed: Mapping[VmKey, str], *, must_only: bool = True
) -> str | None:
    """The first rule (must rules only, unless ``must_only`` is False) that forbids ``vm`` on ``host``."""
    for rule in rules:
        if must_only and not rule.must:
            continue
        why = refusal(rule, vm, host, placed)
        if why is not None:
            return why
    return None


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    vms: tuple[VmKey, ...]
    """The VMs that would have to move to keep it (best fix first)."""


def violation(rule: Rule, placed: Mapping[VmKey, str]) -> Violation | None:
    """What breaks ``rule`` where the VMs are now (``placed``: VM -> host; VMs not placed count for nothing)."""
    members = sorted((k, h) for k, h in placed.items() if k in rule.vms)
    if rule.type == "VmHost":
        wrong = [k for k, h in members if (h in rule.hosts) != rule.run_on]
        if not wrong:
            return None
        where = "outside" if rule.run_on else "in"
        return Violation(rule.name, f"{_names(wrong)} {_verb(wrong)} on hosts {where} the host group", tuple(wrong))
    by_host: dict[str, list[VmKey]] = {}
    for key, host in members:
        by_host.setdefault(host, []).append(key)
    if rule.type == "VmAntiAffinity":
        crowded = {h: ks for h, ks in by_host.items() if len(ks) > 1}
        if not crowded:
            return None
        extra = [k for h in sorted(crowded) for k in crowded[h][1:]]
        text = "; ".join(f"{_names(ks)} share {h}" for h, ks in sorted(crowded.items()))
        return Violation(rule.name, text, tuple(extra))
    if len(by_host) <= 1:
        return None
    home = max(sorted(by_host), key=lambda h: len(by_host[h]))
    strays = [k for h in sorted(by_host) if h != home for k in by_host[h]]
    text = f"the group is split over {', '.join(sorted(by_host))}; {_names(strays)} should join {home}"
    return Violation(rule.name, text, tuple(strays))


def violations(rules: Iterable[Rule], placed: Mapping[VmKey, str]) -> list[Violation]:
    return [v for rule in rules if (v := violation(rule, placed)) is not None]


def _names(keys: list[VmKey]) -> str:
    shown = ", ".join(_vm(k) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _verb(keys: list[VmKey]) -> str:
    return "runs" if len(keys) == 1 else "run"
