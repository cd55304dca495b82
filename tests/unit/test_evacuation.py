"""Host maintenance: the evacuation plan (pure) and which VMs the VM controller keeps stopped."""

from __future__ import annotations

from typing import Any

from vdc.cluster.view import ClusterView
from vdc.controllers.evacuation import (
    RETRY_SECONDS,
    VmOnHost,
    maintenance_stop,
    migration_name,
    plan_evacuation,
)
from vdc.controllers.vm_vapp import parse_time
from vdc.kube.cache import ObjectCache

NOW = parse_time("2026-12-06T08:00:00Z")


def migration(phase: str | None, ended: str | None = None, message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "message": message} if phase else {}
    if ended:
        status["completionTime"] = ended
    return {"metadata": {"name": "evacuate-hv1-vm"}, "status": status}


def vm(name: str, strategy: str = "LiveMigrate", running: bool = True, mig: Any = None) -> VmOnHost:
    return VmOnHost(("ns", name), strategy, running, mig)


def test_every_live_migrate_vm_gets_a_migration_and_the_host_is_evacuating() -> None:
    plan = plan_evacuation([vm("a"), vm("b", "LiveMigrateIfPossible")], NOW)
    assert plan.create == [("ns", "a"), ("ns", "b")]
    assert plan.status.phase == "Evacuating"
    assert (plan.status.total, plan.status.migrating, plan.status.remaining) == (2, 2, 2)


def test_a_running_migration_is_not_made_twice() -> None:
    plan = plan_evacuation([vm("a", mig=migration("Migrating"))], NOW)
    assert plan.create == [] and plan.status.migrating == 1


def test_none_vms_stay_and_are_listed_but_do_not_keep_the_host_from_being_evacuated() -> None:
    plan = plan_evacuation([vm("a", "None"), vm("b", running=False)], NOW, migrated=3)
    assert plan.status.phase == "Evacuated"
    assert [(b.name, b.reason) for b in plan.status.blocking] == [("a", "evictionStrategy None: left running")]
    assert plan.status.migrated == 3 and plan.status.remaining == 1


def test_shutdown_vms_are_waited_for_and_counted_once_stopped() -> None:
    running = plan_evacuation([vm("a", "Shutdown")], NOW)
    assert running.status.phase == "Evacuating" and running.create == [] and running.status.remaining == 1
    stopped = plan_evacuation([vm("a", "Shutdown", running=False)], NOW)
    assert stopped.status.phase == "Evacuated" and stopped.status.shut_down == 1


def test_a_failed_migration_of_a_live_migrate_vm_blocks_and_is_retried_after_a_while() -> None:
    recent = migration("Failed", "2026-12-06T07:59:50Z", "no host can take the VM: too big")
    plan = plan_evacuation([vm("a", mig=recent)], NOW)
    assert plan.status.phase == "Blocked"
    assert plan.status.blocking[0].reason == "live migration Failed: no host can take the VM: too big"
    assert plan.retry == []
    old = migration("Failed", "2026-12-06T07:59:00Z")
    assert NOW - parse_time("2026-12-06T07:59:00Z") >= RETRY_SECONDS
    assert plan_evacuation([vm("a", mig=old)], NOW).retry == [("ns", "evacuate-hv1-vm")]


def test_a_failed_migration_of_an_if_possible_vm_means_shut_down_instead() -> None:
    plan = plan_evacuation([vm("a", "LiveMigrateIfPossible", mig=migration("Failed"))], NOW)
    assert plan.create == [] and plan.retry == [] and plan.status.blocking == []
    assert plan.status.phase == "Evacuating" and plan.status.remaining == 1
    stopped = plan_evacuation([vm("a", "LiveMigrateIfPossible", running=False, mig=migration("Failed"))], NOW)
    assert stopped.status.phase == "Evacuated" and stopped.status.shut_down == 1


def test_a_vm_back_on_the_host_after_its_migration_succeeded_is_moved_again() -> None:
    plan = plan_evacuation([vm("a", mig=migration("Succeeded"))], NOW)
    assert plan.create == [("ns", "a")]


def test_migration_names_are_stable_and_fit() -> None:
    assert migration_name("hv1", "web") == "evacuate-hv1-web"
    long = migration_name("h" * 63, "v" * 200)
    assert len(long) <= 253 and long == migration_name("h" * 63, "v" * 200)


def _cluster(maintenance: bool) -> ClusterView:
    hosts = ObjectCache()
    hosts.upsert({"metadata": {"name": "hv1"}, "spec": {"uri": "test:///default", "maintenance": maintenance}})
    return ClusterView(hosts=hosts)


def _vm(strategy: str | None) -> dict[str, Any]:
    spec = {"evictionStrategy": strategy} if strategy else {}
    return {"metadata": {"name": "web", "namespace": "ns"}, "spec": spec, "status": {"host": "hv1"}}


def test_only_vms_that_are_not_to_be_migrated_are_kept_stopped_in_maintenance() -> None:
    migrations = ObjectCache()
    assert maintenance_stop(_cluster(False), migrations, _vm("Shutdown")) is None
    assert "Shutdown" in str(maintenance_stop(_cluster(True), migrations, _vm("Shutdown")))
    assert maintenance_stop(_cluster(True), migrations, _vm(None)) is None  # LiveMigrate: it is moved
    assert maintenance_stop(_cluster(True), migrations, _vm("None")) is None
    assert maintenance_stop(_cluster(True), migrations, _vm("LiveMigrateIfPossible")) is None
    migrations.upsert({"metadata": {"name": "evacuate-hv1-web", "namespace": "ns"},
                       "status": {"phase": "Failed", "message": "no room"}})  # fmt: skip
    why = maintenance_stop(_cluster(True), migrations, _vm("LiveMigrateIfPossible"))
    assert why is not None and "could not be live-migrated (no room)" in why
