"""Host status (``controllers.host.host_status`` and ``allocatable``): pure (spec, observation) -> status.

Connected vs not, reservations and overcommit, the Ready/Stalled/Reconciling conditions with their
reasons, phase Maintenance, lastTransitionTime that moves only when a status changes, and a host
that went away keeping what it was last known to be.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc.api.conditions import READY, RECONCILING, STALLED, Condition, get_condition
from vdc.api.host import HostDomainCounts, HostReservation, HostResources, HostSpec, HostStatus
from vdc.api.quantity import to_bytes
from vdc.cluster.hosts import schedulable as host_is_schedulable
from vdc.controllers.host import HostObservation, allocatable, host_status, reservable
from vdc.libvirt.host_facts import HostFacts

GIB = 2**30
OLD_TIME = "2020-01-02T03:04:05Z"
SEEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)

FACTS = HostFacts(
    hostname="node-1",
    host_uuid="11111111-2222-3333-4444-555555555555",
    cpus=16,
    memory_bytes=32 * GIB,
    libvirt_version="9.0.0",
    hypervisor="QEMU",
    hypervisor_version="7.2.0",
    domain_types=frozenset({"qemu", "kvm"}),
)


def spec(**kw: Any) -> HostSpec:
    return HostSpec(uri="qemu+unix:///system?socket=/run/h1/libvirt-sock", **kw)


def connected(**kw: Any) -> HostObservation:
    values: dict[str, Any] = {
        "connected": True,
        "facts": FACTS,
        "domains_total": 5,
        "domains_managed": 3,
        "domains_running": 2,
        "allocated_cpus": 6,
        "allocated_memory": 12 * GIB,
        "last_seen": SEEN,
    }
    values.update(kw)
    return HostObservation(**values)


def condition(status: HostStatus, type_: str) -> Condition:
    found = get_condition(status.conditions, type_)
    assert found is not None, f"no {type_} condition in {status.conditions}"
    return found


def aged(status: HostStatus) -> HostStatus:
    """``status`` as if written long ago: every lastTransitionTime set to OLD_TIME."""
    return status.model_copy(
        update={"conditions": [c.model_copy(update={"last_transition_time": OLD_TIME}) for c in status.conditions]}
    )


# --- allocatable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, (16, 32 * GIB)),
        ({"reserved": HostReservation(cpus=2, memory="4Gi")}, (14, 28 * GIB)),
        ({"cpu_overcommit": 4.0}, (64, 32 * GIB)),
        ({"memory_overcommit": 1.5}, (16, 48 * GIB)),
        ({"cpu_overcommit": 0.5, "memory_overcommit": 0.5}, (8, 16 * GIB)),
        # Reservations come off before overcommit multiplies.
        (
            {"reserved": HostReservation(cpus=4, memory="8Gi"), "cpu_overcommit": 2.0, "memory_overcommit": 2.0},
            (24, 48 * GIB),
        ),
        # Reserving more than the host has offers nothing (never negative).
        ({"reserved": HostReservation(cpus=64, memory="64Gi")}, (0, 0)),
        ({"reserved": HostReservation(cpus=64, memory="64Gi"), "cpu_overcommit": 8.0}, (0, 0)),
        ({"reserved": HostReservation(memory="512M")}, (16, 32 * GIB - 512_000_000)),
        ({"cpu_overcommit": 1.5}, (24, 32 * GIB)),
        ({"cpu_overcommit": 0.1}, (1, 32 * GIB)),
    ],
)
def test_allocatable_is_capacity_less_reservations_times_overcommit(
    kw: dict[str, Any], expected: tuple[int, int]
) -> None:
    assert allocatable(spec(**kw), FACTS) == expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, (16_000, 32 * GIB)),
        ({"reserved": HostReservation(cpus=2, memory="4Gi")}, (14_000, 28 * GIB)),
        # A guarantee is never overcommitted.
        ({"cpu_overcommit": 4.0, "memory_overcommit": 1.5}, (16_000, 32 * GIB)),
        ({"reserved": HostReservation(cpus=64, memory="64Gi")}, (0, 0)),
    ],
)
def test_reservable_is_capacity_less_the_hosts_reservation_never_overcommitted(
    kw: dict[str, Any], expected: tuple[int, int]
) -> None:
    assert reservable(spec(**kw), FACTS) == expected


@given(
    cpus=st.integers(1, 512),
    memory=st.integers(2**20, 2**42),
    reserved_cpus=st.integers(0, 600),
    reserved_mib=st.integers(0, 2**22),
    cpu_over=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0]),
    mem_over=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
)
def test_allocatable_with_binary_fractions_is_exact(
    cpus: int, memory: int, reserved_cpus: int, reserved_mib: int, cpu_over: float, mem_over: float
) -> None:
    facts = HostFacts("h", "", cpus, memory, "9.0.0", "QEMU", "7.2.0", frozenset({"qemu"}))
    host = spec(
        reserved=HostReservation(cpus=reserved_cpus, memory=f"{reserved_mib}Mi"),
        cpu_overcommit=cpu_over,
        memory_overcommit=mem_over,
    )
    got_cpus, got_memory = allocatable(host, facts)
    assert got_cpus == math.floor(max(0, cpus - reserved_cpus) * Fraction(cpu_over))
    assert got_memory == math.floor(max(0, memory - reserved_mib * 2**20) * Fraction(mem_over))


@pytest.mark.parametrize(("cpus", "overcommit", "expected"), [(100, 1.15, 115), (100, 2.3, 230)])
def test_allocatable_does_not_lose_a_cpu_to_float_rounding(cpus: int, overcommit: float, expected: int) -> None:
    facts = HostFacts("h", "", cpus, GIB, "9.0.0", "QEMU", "7.2.0", frozenset({"qemu"}))
    assert allocatable(spec(cpu_overcommit=overcommit), facts)[0] == expected


# --- a connected host ----------------------------------------------------------------------------


def test_connected_host_reports_what_it_is_and_holds() -> None:
    status = host_status(spec(reserved=HostReservation(cpus=2, memory="4Gi")), 3, connected(), None)
    assert status.phase == "Ready"
    assert status.observed_generation == 3
    assert (status.hostname, status.host_uuid) == ("node-1", FACTS.host_uuid)
    assert (status.libvirt_version, status.hypervisor, status.hypervisor_version) == ("9.0.0", "QEMU", "7.2.0")
    assert status.capacity == HostResources(cpus=16, memory="32768Mi")
    assert status.allocatable == HostResources(cpus=14, memory="28672Mi")
    assert status.allocated == HostResources(cpus=6, memory="12288Mi")
    assert status.domains == HostDomainCounts(total=5, managed=3, running=2)
    assert status.last_seen == "2024-05-06T07:08:09Z"


def test_connected_host_conditions() -> None:
    status = host_status(spec(), 3, connected(), None)
    ready, stalled, reconciling = (condition(status, t) for t in (READY, STALLED, RECONCILING))
    assert (ready.status, ready.reason) == ("True", "Connected")
    assert "9.0.0" in ready.message
    assert "node-1" in ready.message
    assert (stalled.status, stalled.reason) == ("False", "Connected")
    assert (reconciling.status, reconciling.reason) == ("False", "Connected")
    assert {c.observed_generation for c in status.conditions} == {3}
    assert all(c.last_transition_time for c in status.conditions)
    assert len({c.type for c in status.conditions}) == len(status.conditions) == 3


def test_maintenance_host_is_reported_in_phase_maintenance() -> None:
    status = host_status(spec(maintenance=True), 1, connected(), None)
    assert status.phase == "Maintenance"
    assert status.capacity == HostResources(cpus=16, memory="32768Mi")
    assert condition(status, READY).status == "True"  # reachable; the scheduler reads spec.maintenance
    # Leaving maintenance brings the phase back to Ready.
    assert host_status(spec(), 2, connected(), status).phase == "Ready"


def test_allocated_and_counts_follow_the_observation() -> None:
    first = host_status(spec(), 1, connected(), None)
    second = host_status(
        spec(), 1, connected(allocated_cpus=0, allocated_memory=0, domains_managed=0, domains_running=0), first
    )
    assert second.allocated == HostResources(cpus=0, memory="0Mi")
    assert second.domains == HostDomainCounts(total=5, managed=0, running=0)


def test_last_seen_is_rfc3339_utc_whole_seconds() -> None:
    tz = timezone(timedelta(hours=2))
    status = host_status(spec(), 1, connected(last_seen=datetime(2024, 1, 1, 12, 0, 30, 999999, tzinfo=tz)), None)
    assert status.last_seen == "2024-01-01T10:00:30Z"


def test_status_on_the_wire_is_camel_case() -> None:
    wire = host_status(spec(), 4, connected(), None).to_wire()
    assert wire["observedGeneration"] == 4
    assert wire["capacity"] == {"cpus": 16, "memory": "32768Mi"}
    assert wire["hostUuid"] == FACTS.host_uuid
    assert wire["libvirtVersion"] == "9.0.0"
    assert wire["lastSeen"] == "2024-05-06T07:08:09Z"
    assert {c["type"] for c in wire["conditions"]} == {READY, STALLED, RECONCILING}
    assert all("lastTransitionTime" in c for c in wire["conditions"])


# --- a host that cannot be reached ---------------------------------------------------------------


def test_a_new_host_that_does_not_answer_is_connecting() -> None:
    status = host_status(spec(), 1, HostObservation(connected=False, error="Failed to connect socket"), None)
    assert status.phase == "Connecting"
    ready = condition(status, READY)
    assert (ready.status, ready.reason) == ("False", "Connecting")
    assert ready.message == "cannot reach libvirt: Failed to connect socket"
    assert (condition(status, STALLED).status, condition(status, RECONCILING).status) == ("False", "False")
    assert status.capacity is None
    assert status.allocatable is None
    assert status.hostname is None
    assert status.last_seen is None


def test_connecting_without_an_error_yet() -> None:
    status = host_status(spec(), 1, HostObservation(connected=False), None)
    assert condition(status, READY).message == "connecting to libvirt"


def test_still_connecting_stays_connecting() -> None:
    first = host_status(spec(), 1, HostObservation(connected=False, error="refused"), None)
    second = host_status(spec(), 1, HostObservation(connected=False, error="refused"), first)
    assert second.phase == "Connecting"
    assert condition(second, READY).reason == "Connecting"


def test_connected_without_facts_is_not_ready() -> None:
    status = host_status(spec(), 1, HostObservation(connected=True, facts=None), None)
    assert condition(status, READY).status == "False"
    assert status.capacity is None


@pytest.mark.parametrize("maintenance", [False, True])
def test_a_host_that_went_away_keeps_its_last_known_capacity(maintenance: bool) -> None:
    before = host_status(spec(maintenance=maintenance), 1, connected(), None)
    after = host_status(spec(maintenance=maintenance), 1, HostObservation(connected=False, error="EOF"), before)
    assert after.phase == "NotReady"
    ready = condition(after, READY)
    assert (ready.status, ready.reason, ready.message) == ("False", "Disconnected", "cannot reach libvirt: EOF")
    assert condition(after, STALLED).reason == "Disconnected"
    for name in (
        "hostname",
        "host_uuid",
        "libvirt_version",
        "hypervisor",
        "hypervisor_version",
        "capacity",
        "allocatable",
        "allocated",
        "domains",
        "last_seen",
    ):
        assert getattr(after, name) == getattr(before, name), name
    # And it keeps them while it stays away.
    later = host_status(spec(maintenance=maintenance), 2, HostObservation(connected=False, error="EOF"), after)
    assert later.phase == "NotReady"
    assert later.capacity == before.capacity
    assert later.observed_generation == 2


def test_a_host_that_comes_back_is_ready_again_with_fresh_facts() -> None:
    before = host_status(spec(), 1, connected(), None)
    away = host_status(spec(), 1, HostObservation(connected=False, error="EOF"), before)
    bigger = HostFacts(**{**FACTS.__dict__, "cpus": 32, "libvirt_version": "10.0.0"})
    back = host_status(spec(), 1, connected(facts=bigger), away)
    assert back.phase == "Ready"
    assert (condition(back, READY).status, condition(back, READY).reason) == ("True", "Connected")
    assert back.capacity == HostResources(cpus=32, memory="32768Mi")
    assert back.libvirt_version == "10.0.0"


def test_the_old_status_is_not_modified() -> None:
    before = host_status(spec(), 1, connected(), None)
    snapshot = before.model_dump()
    host_status(spec(), 2, HostObservation(connected=False, error="EOF"), before)
    assert before.model_dump() == snapshot


# --- lastTransitionTime --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "observation",
    [connected(), HostObservation(connected=False, error="EOF")],
    ids=["connected", "disconnected"],
)
def test_nothing_changed_means_no_transition(observation: HostObservation) -> None:
    old = aged(host_status(spec(), 1, observation, None))
    new = host_status(spec(), 1, observation, old)
    assert [c.last_transition_time for c in new.conditions] == [OLD_TIME] * 3
    assert new.to_wire() == old.to_wire()


def test_only_the_condition_whose_status_changed_moves() -> None:
    old = aged(host_status(spec(), 1, connected(), None))
    new = host_status(spec(), 2, HostObservation(connected=False, error="EOF"), old)
    assert condition(new, READY).last_transition_time != OLD_TIME
    assert condition(new, STALLED).last_transition_time == OLD_TIME  # False -> False, new reason
    assert condition(new, RECONCILING).last_transition_time == OLD_TIME


def test_a_new_generation_alone_does_not_move_transition_times() -> None:
    old = aged(host_status(spec(), 1, connected(), None))
    new = host_status(spec(cpu_overcommit=2.0), 2, connected(), old)
    assert [c.last_transition_time for c in new.conditions] == [OLD_TIME] * 3
    assert {c.observed_generation for c in new.conditions} == {2}
    assert new.allocatable == HostResources(cpus=32, memory="32768Mi")


# --- schedulable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, False),
        ({"status": None}, False),
        ({"status": {"conditions": []}}, False),
        ({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, False),
        ({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}, False),
        (
            {"status": {"conditions": [{"type": "Stalled", "status": "False"}, {"type": "Ready", "status": "True"}]}},
            True,
        ),
    ],
)
def test_host_is_schedulable_reads_ready(body: dict[str, Any], expected: bool) -> None:
    assert host_is_schedulable(body) is expected


def test_a_reported_status_is_schedulable_exactly_when_connected() -> None:
    up = host_status(spec(), 1, connected(), None)
    down = host_status(spec(), 1, HostObservation(connected=False), up)
    assert host_is_schedulable({"status": up.to_wire()})
    assert not host_is_schedulable({"status": down.to_wire()})


def test_reserved_memory_quantity_is_parsed_like_kubernetes() -> None:
    assert to_bytes(HostReservation(memory="1.5Gi").memory) == 1536 * 2**20
