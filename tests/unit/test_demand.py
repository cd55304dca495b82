"""Measured demand (``vdc.metrics.demand``): the CPU rate of each VM from its ``cpu.time`` deltas,
smoothed with a half-life, kept across a migration's new counter, summed per host; and its metrics."""

from __future__ import annotations

import math
import threading

import pytest

from vdc.metrics.collectors import DEMAND_SPECS, SPECS, DatacenterCollector, families
from vdc.metrics.demand import DemandTracker, VmDemand
from vdc.metrics.vmstats import VmStats

pytestmark = pytest.mark.unit

A, B = "uid-a", "uid-b"


def vm(
    uid: str = A, cpu: float | None = 0.0, *, host: str = "h1", state: str = "running", memory: int | None = 1 << 30
) -> VmStats:
    return VmStats("ns", f"vm-{uid}", host, uid, state, vcpus=2, memory_bytes=memory, cpu_seconds=cpu)


def feed(tracker: DemandTracker, rate: float, start: float, cpu: float, steps: int, dt: float = 10.0) -> float:
    """``steps`` readings of VM A on h1 burning ``rate`` cores, after (start, cpu); the last counter."""
    for i in range(1, steps + 1):
        cpu += rate * dt
        tracker.observe("h1", [vm(A, cpu)], start + i * dt)
    return cpu


def test_first_reading_is_zero_with_no_samples() -> None:
    tracker = DemandTracker()
    assert tracker.vm(A) is None and tracker.snapshot() == {}
    tracker.observe("h1", [vm(A, 100.0)], 0.0)
    assert tracker.vm(A) == VmDemand(A, "ns", f"vm-{A}", "h1", 0.0, 1 << 30, 0)
    assert tracker.host_cpu_cores("h1") == 0.0


def test_first_delta_sets_the_value_directly() -> None:
    tracker = DemandTracker(half_life_seconds=600.0)
    tracker.observe("h1", [vm(A, 100.0)], 0.0)
    tracker.observe("h1", [vm(A, 115.0)], 10.0)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.5) and got.samples == 1


def test_steady_rate_stays_put() -> None:
    tracker = DemandTracker(half_life_seconds=30.0)
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    feed(tracker, 0.75, 0.0, 0.0, 20)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(0.75) and got.samples == 20


@pytest.mark.parametrize("dt", [5.0, 10.0, 60.0])
def test_a_step_closes_half_the_gap_per_half_life(dt: float) -> None:
    half_life = 60.0
    tracker = DemandTracker(half_life_seconds=half_life)
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    cpu = feed(tracker, 1.0, 0.0, 0.0, 3, dt)  # settled at 1 core
    start = 3 * dt
    for half_lives in (1, 2, 3):
        steps = int(half_life / dt)
        cpu = feed(tracker, 3.0, start, cpu, steps, dt)  # demand steps up to 3 cores
        start += steps * dt
        got = tracker.vm(A)
        assert got is not None
        assert got.cpu_cores == pytest.approx(3.0 - 2.0 * 0.5**half_lives)


def test_alpha_follows_the_elapsed_time() -> None:
    tracker = DemandTracker(half_life_seconds=20.0)
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    tracker.observe("h1", [vm(A, 10.0)], 10.0)  # 1 core
    tracker.observe("h1", [vm(A, 10.0 + 3.0 * 5.0)], 15.0)  # 3 cores over 5 s
    alpha = 1 - 0.5 ** (5.0 / 20.0)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.0 + alpha * 2.0) and got.samples == 2


def test_a_migration_takes_a_new_baseline_and_keeps_the_value() -> None:
    tracker = DemandTracker(half_life_seconds=60.0)
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    cpu = feed(tracker, 2.0, 0.0, 0.0, 5)
    # The target's QEMU: cpu.time from ~0 (a delta against the source's counter would be negative).
    tracker.observe("h2", [vm(A, 0.2, host="h2")], 60.0)
    got = tracker.vm(A)
    assert got is not None and (got.host, got.cpu_cores, got.samples) == ("h2", pytest.approx(2.0), 5)
    assert tracker.host_cpu_cores("h2") == pytest.approx(2.0)
    # The source, read afterwards, no longer has it: nothing changes and it is not counted there.
    tracker.observe("h1", [], 61.0)
    assert tracker.host_cpu_cores("h1") == 0.0
    tracker.observe("h2", [vm(A, 0.2 + 20.0, host="h2")], 70.0)  # 2 cores, measured from the new baseline
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(2.0) and got.samples == 6
    assert cpu > 0


def test_the_source_read_first_does_not_lose_the_value() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    tracker.observe("h1", [vm(A, 10.0)], 10.0)
    tracker.observe("h1", [], 20.0)  # migrated: gone from the source before the target is read
    assert tracker.vm(A) is None and tracker.snapshot() == {}
    tracker.observe("h2", [vm(A, 0.1, host="h2")], 20.5)
    got = tracker.vm(A)
    assert got is not None and (got.host, got.cpu_cores, got.samples) == ("h2", pytest.approx(1.0), 1)


def test_a_counter_going_backwards_takes_a_new_baseline() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 500.0)], 0.0)
    tracker.observe("h1", [vm(A, 510.0)], 10.0)
    tracker.observe("h1", [vm(A, 3.0)], 20.0)  # QEMU restarted in place
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.0) and got.samples == 1
    tracker.observe("h1", [vm(A, 13.0)], 30.0)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.0) and got.samples == 2


def test_only_running_vms_with_cpu_time_count() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 1.0, state="paused"), vm(B, None), vm("c", 1.0, state="shutoff")], 0.0)
    assert tracker.snapshot() == {}


def test_a_vm_not_running_any_more_stops_counting_and_restarts_from_a_new_baseline() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 0.0), vm(B, 0.0)], 0.0)
    tracker.observe("h1", [vm(A, 10.0), vm(B, 5.0)], 10.0)
    assert tracker.host_cpu_cores("h1") == pytest.approx(1.5)
    tracker.observe("h1", [vm(A, 10.0, state="paused"), vm(B, 10.0)], 20.0)
    assert set(tracker.snapshot()) == {B} and tracker.host_cpu_cores("h1") == pytest.approx(0.5)
    # resumed 100 s later: the pause is not averaged in, the next delta is measured from here
    tracker.observe("h1", [vm(A, 10.0), vm(B, 65.0)], 120.0)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.0) and got.samples == 1
    tracker.observe("h1", [vm(A, 20.0), vm(B, 70.0)], 130.0)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.0) and got.samples == 2


def test_a_vm_not_seen_is_forgotten() -> None:
    tracker = DemandTracker(forget_after_seconds=100.0)
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    tracker.observe("h1", [vm(A, 10.0)], 10.0)
    tracker.observe("h1", [], 50.0)
    tracker.observe("h2", [], 110.0)  # still remembered (not counted): 100 s since it was seen
    tracker.observe("h2", [vm(A, 1.0, host="h2")], 110.0)
    got = tracker.vm(A)
    assert got is not None and got.samples == 1
    tracker.observe("h2", [], 150.0)
    tracker.observe("h3", [], 210.5)  # any host's reading forgets it
    tracker.observe("h2", [vm(A, 5.0, host="h2")], 211.0)
    got = tracker.vm(A)
    assert got is not None and got.samples == 0 and got.cpu_cores == 0.0


def test_host_sums_and_memory() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 0.0, memory=100), vm(B, 0.0, memory=None)], 0.0)
    tracker.observe("h2", [vm("c", 0.0, host="h2", memory=7)], 0.0)
    tracker.observe("h1", [vm(A, 5.0, memory=200), vm(B, 20.0, memory=None)], 10.0)
    tracker.observe("h2", [vm("c", 1.0, host="h2", memory=7)], 10.0)
    assert tracker.host_cpu_cores("h1") == pytest.approx(2.5)
    assert tracker.host_cpu_cores("h2") == pytest.approx(0.1)
    assert tracker.host_cpu_cores("h3") == 0.0
    snap = tracker.snapshot()
    assert (snap[A].memory_bytes, snap[B].memory_bytes) == (200, None)


def test_the_snapshot_is_an_immutable_copy() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 0.0)], 0.0)
    snap = tracker.snapshot()
    tracker.observe("h1", [vm(A, 10.0)], 10.0)
    assert snap[A].samples == 0 and tracker.snapshot()[A].samples == 1
    with pytest.raises(TypeError):
        snap[B] = snap[A]  # type: ignore[index]


def test_same_moment_twice_measures_nothing() -> None:
    tracker = DemandTracker()
    tracker.observe("h1", [vm(A, 0.0)], 5.0)
    tracker.observe("h1", [vm(A, 3.0)], 5.0)
    tracker.observe("h1", [vm(A, 10.0)], 15.0)
    got = tracker.vm(A)
    assert got is not None and got.cpu_cores == pytest.approx(1.0) and got.samples == 1


def test_observe_from_threads_at_once() -> None:
    tracker = DemandTracker()
    hosts = [f"h{i}" for i in range(8)]

    def run(host: str) -> None:
        for step in range(50):
            tracker.observe(host, [vm(f"{host}-{j}", step * 10.0, host=host) for j in range(5)], step * 10.0)

    threads = [threading.Thread(target=run, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tracker.snapshot()) == 40
    assert math.fsum(tracker.host_cpu_cores(h) for h in hosts) == pytest.approx(40.0)


@pytest.mark.parametrize(("half_life", "forget"), [(0.0, 600.0), (-1.0, 600.0), (60.0, 0.0)])
def test_bad_settings_are_refused(half_life: float, forget: float) -> None:
    with pytest.raises(ValueError):
        DemandTracker(half_life, forget_after_seconds=forget)


def test_demand_metric_families() -> None:
    hosts = [{"metadata": {"name": "h1"}}, {"metadata": {"name": "h2"}}]
    demand = [
        VmDemand(A, "ns", "web", "h1", 1.5, 100, 3),
        VmDemand(B, "ns", "db", "h1", 0.25, None, 3),
    ]
    out = {m.name: m for m in families(hosts, [], [], [], [], demand=demand)}
    samples = {(m.name, tuple(sorted(s.labels.items()))): s.value for m in out.values() for s in m.samples}
    vm_web = (("host", "h1"), ("name", "web"), ("namespace", "ns"))
    assert samples[("vdc_vm_cpu_demand_cores", vm_web)] == 1.5
    assert samples[("vdc_vm_memory_demand_bytes", vm_web)] == 100
    assert ("vdc_vm_memory_demand_bytes", (("host", "h1"), ("name", "db"), ("namespace", "ns"))) not in samples
    assert samples[("vdc_host_cpu_demand_cores", (("host", "h1"),))] == 1.75
    assert samples[("vdc_host_memory_demand_bytes", (("host", "h1"),))] == 100
    assert samples[("vdc_host_cpu_demand_cores", (("host", "h2"),))] == 0.0
    # without a tracker: no demand families at all
    assert not {s.name for s in DEMAND_SPECS} & {m.name for m in families(hosts, [], [], [], [])}


def test_the_collector_describes_the_demand_families_only_when_given_them() -> None:
    plain = {m.name for m in DatacenterCollector([], [], [], [], list).describe()}
    with_demand = {m.name for m in DatacenterCollector([], [], [], [], list, demand=list).describe()}
    assert len(plain) == len(SPECS)
    assert with_demand - plain == {s.name for s in DEMAND_SPECS}
