"""A VM made from an Appliance: the spec it gets, the property values, the vApp start order (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.appliance import ApplianceStatus
from vdc.controllers.vm_appliance import (
    ApplianceMismatch,
    ApplianceWait,
    Sibling,
    appliance_status,
    base_volumes,
    property_values,
    spec_defaults,
    startup_wait,
)
from vdc.ovf.environment import environment_iso, environment_xml, read_environment, read_environment_iso

STATUS = ApplianceStatus.model_validate({
    "phase": "Ready",
    "virtualSystems": [
        {"id": "db", "cpus": 2, "memory": "256Mi", "firmware": "UEFI",
         "disks": [{"id": "vmdisk1", "volume": "appliance_ns_app_1_vmdisk1.qcow2", "bus": "ide"},
                   {"id": "scratch", "capacity": "1Gi", "bus": "scsi"}],
         "nics": [{"network": "VM Network", "model": "e1000"}]},
        {"id": "web", "cpus": 1, "memory": "128Mi",
         "disks": [{"id": "vmdisk2", "volume": "appliance_ns_app_1_vmdisk2.qcow2"}]},
    ],
    "properties": [
        {"key": "hostname", "default": "tiny", "userConfigurable": True},
        {"key": "port", "type": "uint16", "default": "5432", "userConfigurable": True},
        {"key": "debug", "type": "boolean", "userConfigurable": True},
        {"key": "build", "default": "42"},
    ],
    "startup": [{"id": "db", "order": 1, "startDelay": 10}, {"id": "web", "order": 2}],
    "hosts": ["hv1"],
})  # fmt: skip


def spec(**extra: Any) -> dict[str, Any]:
    return {"fromAppliance": {"name": "app", "networkMapping": {"VM Network": "lan"}}, **extra}


def test_what_the_spec_leaves_out_comes_from_the_appliance() -> None:
    patch = spec_defaults(spec(), STATUS, "pool")
    assert patch["cpu"] == {"count": 2} and patch["memory"] == {"size": "256Mi"} and patch["firmware"] == "UEFI"
    root, scratch, env = patch["disks"]
    assert root == {"name": "disk-vmdisk1", "bus": "sata", "bootOrder": 1,  # IDE: SATA on q35
                    "source": {"clone": {"pool": "pool", "appliance": {"name": "app", "disk": "vmdisk1"}}}}  # fmt: skip
    assert scratch == {"name": "disk-scratch", "bus": "scsi", "source": {"blank": {"pool": "pool", "size": "1Gi"}}}
    assert env == {"name": "ovf-env", "source": {"ovfEnv": {"pool": "pool"}}, "bus": "sata"}
    assert patch["interfaces"] == [{"name": "nic0", "switch": "lan", "model": "e1000"}]


def test_disks_of_a_shared_appliance_name_its_namespace() -> None:
    shared = spec(fromAppliance={"name": "app", "namespace": "catalog", "networkMapping": {"VM Network": "lan"}})
    root = spec_defaults(shared, STATUS, "pool")["disks"][0]
    assert root["source"]["clone"]["appliance"] == {"name": "app", "disk": "vmdisk1", "namespace": "catalog"}


def test_what_the_spec_says_wins_and_a_filled_in_spec_needs_nothing_more() -> None:
    given = spec(cpu={"count": 4}, memory={"size": "1Gi"}, firmware="BIOS", interfaces=[{"name": "x", "switch": "s"}])
    patch = spec_defaults(given, STATUS, "pool")
    assert set(patch) == {"disks"}
    assert spec_defaults({**given, **patch}, STATUS, "pool") == {}


def test_another_virtual_system_and_what_cannot_be_mapped() -> None:
    web = spec_defaults(spec(fromAppliance={"name": "app", "virtualSystem": "web"}), STATUS, "p")
    assert web["cpu"] == {"count": 1} and web["disks"][0]["source"]["clone"]["appliance"]["disk"] == "vmdisk2"
    with pytest.raises(ApplianceMismatch, match="'nope' is not in the appliance"):
        spec_defaults(spec(fromAppliance={"name": "app", "virtualSystem": "nope"}), STATUS, "p")
    with pytest.raises(ApplianceMismatch, match="map OVF network 'VM Network'"):
        spec_defaults({"fromAppliance": {"name": "app"}}, STATUS, "p")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"nope": "1"}, "no property 'nope'"),
        ({"build": "1"}, "'build' is not user-configurable"),
        ({"port": "http"}, "'port' is an integer"),
        ({"port": "-1"}, "unsigned"),
        ({"debug": "maybe"}, "'debug' is a boolean"),
    ],
)
def test_property_values_are_checked(given: dict[str, str], message: str) -> None:
    with pytest.raises(ApplianceMismatch, match=message):
        property_values(STATUS, given)


def test_property_values_are_the_defaults_with_the_vms_on_top_and_reach_the_iso() -> None:
    values = property_values(STATUS, {"hostname": "web-1", "debug": "true"})
    assert values == {"hostname": "web-1", "port": "5432", "debug": "true", "build": "42"}
    iso = environment_iso(environment_xml("db", values, {"Kind": "vdc-operator"}))
    assert read_environment(read_environment_iso(iso)) == values


def test_an_appliance_not_ready_is_waited_for_and_a_failed_one_is_not() -> None:
    with pytest.raises(ApplianceWait, match="does not exist"):
        appliance_status(None, "app")
    with pytest.raises(ApplianceWait, match="is Downloading"):
        appliance_status({"status": {"phase": "Downloading"}}, "app")
    with pytest.raises(ApplianceMismatch, match="failed to import: bad digest"):
        appliance_status({"status": {"phase": "Failed", "message": "bad digest"}}, "app")
    assert base_volumes(appliance_status({"status": STATUS.to_wire()}, "app")) == {
        None: "appliance_ns_app_1_vmdisk1.qcow2",
        "vmdisk1": "appliance_ns_app_1_vmdisk1.qcow2",
        "vmdisk2": "appliance_ns_app_1_vmdisk2.qcow2",
    }


def test_a_vapp_member_starts_after_the_ones_before_it_have_run_for_their_delay() -> None:
    boot = "2026-11-22T05:00:00Z"
    assert startup_wait(STATUS.startup, "db", [], {}) is None  # first in order
    assert "waiting for db" in (startup_wait(STATUS.startup, "web", [Sibling("db", "Starting", None)], {}) or "")
    assert "more after db started" in (
        startup_wait(STATUS.startup, "web", [Sibling("db", "Running", boot)], {boot: 4.0}) or ""
    )
    assert startup_wait(STATUS.startup, "web", [Sibling("db", "Running", boot)], {boot: 11.0}) is None
    assert startup_wait(STATUS.startup, "db", [Sibling("web", "Stopped", None)], {}) is None  # later ones don't matter
