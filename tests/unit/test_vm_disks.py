"""Which volume each disk is: names, kinds, deletion defaults, pool needs, guest device names."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.disk_sources import SEED_BYTES, ApplianceImagesMissing, DiskSpecError
from vdc.controllers.vm_disks import (
    plan_volumes,
    pool_bytes,
    target_devices,
)


def vm(disks: list[dict[str, Any]], **spec: Any) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"memory": {"size": "64Mi"}, "disks": disks, **spec},
        }
    )


def test_volumes_are_named_from_namespace_vm_and_disk_with_deletion_defaults_by_source() -> None:
    plans = plan_volumes(
        vm(
            [
                {"name": "root", "source": {"clone": {"pool": "p", "baseVolume": "base.qcow2", "size": "2Gi"}}},
                {"name": "data", "source": {"blank": {"pool": "q", "size": "1Gi"}}, "deletionPolicy": "Retain"},
                {"name": "old", "source": {"volume": {"pool": "p", "name": "legacy.img"}}},
                {"name": "keep", "source": {"volume": {"pool": "p", "name": "x.img"}}, "deletionPolicy": "Delete"},
                {"name": "seed", "source": {"cloudInit": {"pool": "p"}}},
            ],
            cloudInit={"userData": "#cloud-config"},
        )
    )
    by_disk = {p.disk: p for p in plans}
    assert by_disk["root"].volume == "shop_web_root.qcow2" and by_disk["root"].base_volume == "base.qcow2"
    assert by_disk["root"].delete_with_vm and by_disk["root"].capacity == 2 * 2**30
    assert not by_disk["data"].delete_with_vm  # Retain
    assert by_disk["old"].volume == "legacy.img" and not by_disk["old"].delete_with_vm  # adopted: kept by default
    assert by_disk["keep"].delete_with_vm  # adopted, but Delete asked for explicitly
    assert by_disk["seed"].device == "cdrom" and by_disk["seed"].format == "iso"
    assert by_disk["root"].libvirt_pool == "vdc-p"
    assert pool_bytes(plans) == {"p": 2 * 2**30 + SEED_BYTES, "q": 2**30}


def test_an_appliance_clone_is_an_overlay_on_the_appliance_base_image() -> None:
    spec = vm([
        {"name": "r", "source": {"clone": {"pool": "p", "appliance": {"name": "a"}}}},
        {"name": "d", "source": {"clone": {"pool": "p", "appliance": {"name": "a", "disk": "vmdisk2"}}}},
        {"name": "env", "source": {"ovfEnv": {"pool": "p"}}},
    ])  # fmt: skip
    images = {"a": {None: "appliance_a_1.qcow2", "vmdisk1": "appliance_a_1.qcow2", "vmdisk2": "appliance_a_2.qcow2"}}
    by_disk = {p.disk: p for p in plan_volumes(spec, images)}
    assert by_disk["r"].kind == "clone" and by_disk["r"].base_volume == "appliance_a_1.qcow2"
    assert by_disk["d"].base_volume == "appliance_a_2.qcow2" and by_disk["d"].volume == "shop_web_d.qcow2"
    assert (by_disk["env"].kind, by_disk["env"].device, by_disk["env"].format) == ("ovfEnv", "cdrom", "iso")
    with pytest.raises(ApplianceImagesMissing, match="appliance a is not Ready"):
        plan_volumes(spec)
    with pytest.raises(DiskSpecError, match="no disk 'vmdisk2'"):
        plan_volumes(spec, {"a": {None: "x.qcow2"}})


def test_device_names_count_per_bus_family_and_the_seed_goes_on_sata() -> None:
    spec = vm(
        [
            {"name": "a", "source": {"blank": {"pool": "p", "size": "1Gi"}}},
            {"name": "seed", "source": {"cloudInit": {"pool": "p"}}},
            {"name": "b", "source": {"blank": {"pool": "p", "size": "1Gi"}}},
            {"name": "c", "source": {"blank": {"pool": "p", "size": "1Gi"}}, "bus": "scsi"},
            {"name": "d", "source": {"blank": {"pool": "p", "size": "1Gi"}}, "bus": "ide"},
        ],
        cloudInit={"userData": "#cloud-config"},
    )
    assert target_devices(spec.spec.disks) == {"a": "vda", "seed": "sda", "b": "vdb", "c": "sdb", "d": "hda"}
