"""Metering (``vdc.metrics.metering``): readings of running VMs' allocations integrated over time with
the trapezoid rule, per namespace; gaps are not charged; splitting an interval changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc.metrics.metering import Allocation, Reading, Requested, Usage, integrate, reading
from vdc.metrics.vmstats import VmStats

GIB = 2**30
A = Allocation("tenant-a", vcpus=2, memory_bytes=GIB, disk_bytes=10 * GIB)
B = Allocation("tenant-b", vcpus=1, memory_bytes=512 * 2**20, disk_bytes=0)


def test_first_reading_charges_nothing() -> None:
    assert integrate(None, Reading(100.0, {"a": A}), max_gap=60) == {}


def test_running_throughout_is_charged_the_whole_interval() -> None:
    usage = integrate(Reading(100.0, {"a": A, "b": B}), Reading(115.0, {"a": A, "b": B}), max_gap=60)
    assert usage == {
        "tenant-a": Usage(vcpu_seconds=30.0, memory_byte_seconds=15.0 * GIB, disk_byte_seconds=150.0 * GIB),
        "tenant-b": Usage(vcpu_seconds=15.0, memory_byte_seconds=15.0 * 512 * 2**20, disk_byte_seconds=0.0),
    }


@pytest.mark.parametrize(("before", "after"), [({"a": A}, {}), ({}, {"a": A})])
def test_started_or_stopped_in_between_is_charged_half(
    before: dict[str, Allocation], after: dict[str, Allocation]
) -> None:
    usage = integrate(Reading(0.0, before), Reading(10.0, after), max_gap=60)
    assert usage == {"tenant-a": Usage(10.0, 5.0 * GIB, 50.0 * GIB)}


def test_vms_of_one_namespace_add_up() -> None:
    other = Allocation("tenant-a", vcpus=4, memory_bytes=0, disk_bytes=0)
    usage = integrate(Reading(0.0, {"a": A, "c": other}), Reading(1.0, {"a": A, "c": other}), max_gap=60)
    assert usage["tenant-a"].vcpu_seconds == 6.0


@pytest.mark.parametrize("later", [0.0, -5.0, 61.0])
def test_no_charge_for_gaps_or_clock_going_back(later: float) -> None:
    assert integrate(Reading(0.0, {"a": A}), Reading(later, {"a": A}), max_gap=60) == {}


def test_nothing_running_charges_nothing() -> None:
    assert integrate(Reading(0.0, {}), Reading(10.0, {}), max_gap=60) == {}


def _vm(uid: str, state: str, **figures: int) -> VmStats:
    return VmStats(namespace="tenant-a", name=uid, host="h", uid=uid, state=state, **figures)  # type: ignore[arg-type]


def test_reading_keeps_running_vms_with_domain_figures_first() -> None:
    stats = [
        _vm("run", "running", vcpus=2, memory_bytes=GIB, disk_capacity_bytes=3 * GIB),
        _vm("spec", "blocked"),  # a driver that reports no figures: the VM object's
        _vm("off", "shutoff", vcpus=8),
        _vm("paused", "paused", vcpus=8),
    ]
    asked = {"run": Requested(99, 99, 99), "spec": Requested(1, 256 * 2**20, 5 * GIB)}
    got = reading(7.0, stats, asked)
    assert got.at == 7.0
    assert got.running == {
        "run": Allocation("tenant-a", 2, GIB, 3 * GIB),
        "spec": Allocation("tenant-a", 1, 256 * 2**20, 5 * GIB),
    }


allocations = st.builds(
    Allocation,
    namespace=st.sampled_from(["a", "b", "c"]),
    vcpus=st.integers(0, 64),
    memory_bytes=st.integers(0, 2**40),
    disk_bytes=st.integers(0, 2**44),
)


@given(
    alloc=st.dictionaries(st.sampled_from(["u1", "u2", "u3", "u4"]), allocations),
    first=st.floats(0.1, 30),
    second=st.floats(0.1, 30),
)
def test_constant_allocation_splits_additively(alloc: dict[str, Allocation], first: float, second: float) -> None:
    """With nothing starting or stopping, two refreshes charge what one covering both would."""
    t0, t1, t2 = 0.0, first, first + second
    split: dict[str, Usage] = {}
    for usage in (
        integrate(Reading(t0, alloc), Reading(t1, alloc), max_gap=100),
        integrate(Reading(t1, alloc), Reading(t2, alloc), max_gap=100),
    ):
        for ns, u in usage.items():
            split[ns] = split.get(ns, Usage()) + u
    whole = integrate(Reading(t0, alloc), Reading(t2, alloc), max_gap=100)
    assert split.keys() == whole.keys()
    for ns, u in whole.items():
        assert split[ns].vcpu_seconds == pytest.approx(u.vcpu_seconds)
        assert split[ns].memory_byte_seconds == pytest.approx(u.memory_byte_seconds)
        assert split[ns].disk_byte_seconds == pytest.approx(u.disk_byte_seconds)
        expected = sum(a.vcpus for a in alloc.values() if a.namespace == ns) * t2
        assert u.vcpu_seconds == pytest.approx(expected)
