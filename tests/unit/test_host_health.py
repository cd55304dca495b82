"""HA's judgement of a host (vdc.controllers.host_health): a second signal before Failed, fencing before a
restart elsewhere, restart priority and order."""

from __future__ import annotations

import dataclasses

from vdc.controllers.host_health import (
    HealthSignals,
    RestartCandidate,
    judge,
    refusal,
    waiting_for,
)
from vdc.workqueue import TokenBucket

LOST = HealthSignals(connected=False, power_managed=True, power="On", power_error=None, previous="Healthy",
                     suspect_for=0.0)  # fmt: skip


def signals(**changes: object) -> HealthSignals:
    return dataclasses.replace(LOST, **changes)  # type: ignore[arg-type]


def test_a_connected_host_is_healthy() -> None:
    assert judge(signals(connected=True)).state == "Healthy"


def test_a_lost_connection_alone_makes_a_host_suspect_not_failed() -> None:
    assert judge(signals(power="On", suspect_for=3600)).state == "Suspect"  # a partition: power says it lives
    assert "partition" in judge(signals(power="On")).message


def test_power_off_confirmed_by_redfish_fences_the_host() -> None:
    judged = judge(signals(power="Off"))
    assert judged.state == "Fenced" and "restart on other hosts" in judged.message


def test_without_power_management_the_timeout_fails_the_host_but_does_not_fence_it() -> None:
    unmanaged = signals(power_managed=False, power=None)
    assert judge(dataclasses.replace(unmanaged, suspect_for=10)).state == "Suspect"
    failed = judge(dataclasses.replace(unmanaged, suspect_for=61))
    assert failed.state == "Failed" and "no spec.powerManagement" in failed.message


def test_an_unanswering_redfish_service_is_not_taken_for_power_off() -> None:
    unknown = signals(power=None, power_error="connection refused")
    assert judge(unknown).state == "Suspect"
    failed = judge(dataclasses.replace(unknown, suspect_for=120))
    assert failed.state == "Failed" and "cannot confirm" in failed.message


def test_a_fenced_host_powering_on_stays_fenced_until_libvirt_answers() -> None:
    assert judge(signals(previous="Fenced", power="PoweringOn")).state == "Fenced"
    assert judge(signals(previous="Fenced", power="On")).state == "Fenced"


def test_a_failed_or_fenced_host_that_answers_again_is_recovering() -> None:
    for previous in ("Failed", "Fenced", "Recovering"):
        assert judge(signals(connected=True, previous=previous)).state == "Recovering"
    assert judge(signals(connected=True, previous="Suspect")).state == "Healthy"


VM = RestartCandidate(namespace="a", name="web", priority="Medium", wants_running=True, pinned=False, local_pools=())


def test_restart_refusals_name_what_keeps_the_vm_on_its_host() -> None:
    assert refusal(VM, "hv1") is None
    assert "Disabled" in (refusal(dataclasses.replace(VM, priority="Disabled"), "hv1") or "")
    assert "pinned" in (refusal(dataclasses.replace(VM, pinned=True), "hv1") or "")
    local = refusal(dataclasses.replace(VM, local_pools=("fast-local",)), "hv1") or ""
    assert "fast-local" in local and "cannot restart elsewhere" in local


def test_higher_priorities_restart_first_then_the_restart_order() -> None:
    db = dataclasses.replace(VM, name="db", priority="Highest")
    low = dataclasses.replace(VM, name="batch", priority="Low")
    assert waiting_for(VM, [db, low], set()) == "VMs of a higher restart priority first: a/db"
    assert waiting_for(db, [VM, low], set()) is None
    after = dataclasses.replace(VM, restart_after=("db",))
    assert waiting_for(after, [], set()) == "restart order: waiting for db to be Running"
    assert waiting_for(after, [], {("a", "db")}) is None


def test_a_live_datastore_heartbeat_keeps_a_host_suspect_whatever_the_rest_says() -> None:
    for power in ("On", None):
        judged = judge(signals(power=power, heartbeat="alive", suspect_for=3600, power_managed=power is not None))
        assert judged.state == "Suspect" and not judged.fence
        assert "heartbeat goes on" in judged.message


def test_a_stopped_heartbeat_with_power_on_is_a_hung_host_that_is_fenced_by_power_off() -> None:
    judged = judge(signals(power="On", heartbeat="stale"))
    assert judged.state == "Failed" and judged.fence and "hung" in judged.message


def test_a_stopped_heartbeat_without_power_management_fails_the_host_unfenced_at_once() -> None:
    judged = judge(signals(power_managed=False, power=None, heartbeat="stale"))
    assert judged.state == "Failed" and not judged.fence
    assert "no spec.powerManagement" in judged.message


def test_power_off_fences_whatever_the_heartbeat() -> None:
    assert judge(signals(power="Off", heartbeat="alive")).state == "Fenced"


def test_the_restart_rate_limit_lets_a_burst_through_then_the_rate() -> None:
    bucket = TokenBucket(rate=0.001, burst=3)  # as good as no refill during the test
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_failed_host_stays_failed_until_it_answers_whatever_its_heartbeat_says_then() -> None:
    # Its VMs may have been restarted elsewhere (disk leases): only Recovering removes its stale copies.
    again = judge(signals(previous="Failed", power=None, power_managed=False, heartbeat="alive"))
    assert again.state == "Failed" and not again.fence
    assert judge(signals(previous="Failed", power="On", heartbeat="stale")).fence  # still hung: ForceOff again
    assert not judge(signals(previous="Failed", power="On", heartbeat="alive")).fence  # coming back: left alone
    assert not judge(signals(previous="Failed", power="On", heartbeat=None)).fence
    assert judge(signals(previous="Failed", power="Off")).state == "Fenced"
    assert judge(signals(previous="Failed", connected=True)).state == "Recovering"
