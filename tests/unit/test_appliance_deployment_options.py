"""Deployment options end to end, without I/O: the descriptor's options become the Appliance status,
and a VM's ``fromAppliance.deploymentOption`` chooses hardware, disks and property defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from vdc.api.appliance import ApplianceStatus
from vdc.controllers.appliance_plan import describe
from vdc.controllers.vm_appliance import ApplianceMismatch, base_volumes, property_values, spec_defaults
from vdc.ovf.envelope import parse_envelope

SAMPLE = Path(__file__).parent / "ovf" / "samples" / "deployment-options.ovf"
VOLUMES = {"system": "appliance_ns_mgr_1_system.qcow2", "data": "appliance_ns_mgr_1_data.qcow2"}


@pytest.fixture(scope="module")
def status() -> ApplianceStatus:
    d = describe(parse_envelope(SAMPLE.read_bytes()), VOLUMES)
    return ApplianceStatus.model_validate({
        "phase": "Ready",
        "virtualSystems": [s.model_dump(by_alias=True, exclude_none=True) for s in d.virtual_systems],
        "deploymentOptions": [o.model_dump(by_alias=True, exclude_none=True) for o in d.deployment_options],
        "properties": [p.model_dump(by_alias=True, exclude_none=True) for p in d.properties],
    })  # fmt: skip


def test_the_status_lists_each_option_with_its_label_description_and_hardware(status: ApplianceStatus) -> None:
    options = {o.id: o for o in status.deployment_options}
    assert list(options) == ["tiny", "small", "large"]
    assert [o.id for o in status.deployment_options if o.default] == ["small"]
    assert (options["large"].label, options["large"].description) == (
        "Large",
        "Up to 1000 hosts: 16 vCPUs, 64 GB memory, a 100 GB data disk",
    )
    shapes = {
        o.id: (o.virtual_systems[0].cpus, str(o.virtual_systems[0].memory), [d.id for d in o.virtual_systems[0].disks])
        for o in status.deployment_options
    }
    assert shapes == {
        "tiny": (2, "12288Mi", ["system"]),
        "small": (4, "12288Mi", ["system"]),
        "large": (16, "65536Mi", ["system", "data", "scratch"]),
    }
    default = status.virtual_systems[0]
    assert (default.cpus, [d.id for d in default.disks]) == (4, ["system"])  # the default option's hardware
    assert options["tiny"].property_defaults == {"manager.heap": "512"}
    assert options["small"].property_defaults == {}
    assert default.nics[0].model == "virtio"  # "VMXNET3 virtio": the first a VM here supports


def spec(option: str | None = None, **extra: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"name": "mgr", "networkMapping": {"Network 1": "lan"}}
    if option is not None:
        source["deploymentOption"] = option
    return {"fromAppliance": source, **extra}


def test_a_vm_gets_the_hardware_and_disks_of_its_option(status: ApplianceStatus) -> None:
    large = spec_defaults(spec("large"), status, "pool")
    assert (large["cpu"], large["memory"]) == ({"count": 16}, {"size": "65536Mi"})
    assert [d["name"] for d in large["disks"]] == ["disk-system", "disk-data", "disk-scratch", "ovf-env"]
    assert large["disks"][1]["source"]["clone"]["appliance"] == {"name": "mgr", "disk": "data"}
    assert large["disks"][2]["source"] == {"blank": {"pool": "pool", "size": "2048Mi"}}  # empty: no base image
    default = spec_defaults(spec(), status, "pool")
    assert (default["cpu"], [d["name"] for d in default["disks"]]) == ({"count": 4}, ["disk-system", "ovf-env"])
    assert spec_defaults(spec("tiny"), status, "pool")["cpu"] == {"count": 2}


def test_a_disk_of_one_option_only_still_has_its_base_volume(status: ApplianceStatus) -> None:
    assert base_volumes(status)["data"] == VOLUMES["data"]


def test_property_defaults_follow_the_option_and_the_vm_overrides_them(status: ApplianceStatus) -> None:
    assert property_values(status, {}, "tiny")["manager.heap"] == "512"
    assert property_values(status, {}, "large")["manager.heap"] == "16384"
    assert property_values(status, {}, None)["manager.heap"] == "2048"  # small, the default
    assert property_values(status, {"manager.heap": "4096"}, "large")["manager.heap"] == "4096"


def test_an_unknown_option_names_the_choices(status: ApplianceStatus) -> None:
    with pytest.raises(
        ApplianceMismatch, match=re.escape("'huge' is not in the appliance (it has: tiny (Tiny), small")
    ):
        spec_defaults(spec("huge"), status, "pool")


def test_an_option_on_an_appliance_without_options_is_refused() -> None:
    bare = ApplianceStatus.model_validate({"phase": "Ready", "virtualSystems": [{"id": "vm", "memory": "1Gi"}]})
    with pytest.raises(ApplianceMismatch, match="the appliance has no deployment options"):
        spec_defaults(spec("large"), bare, "pool")
