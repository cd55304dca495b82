"""Each disk source (``controllers.disk_sources``): plan, room for placement, preparation, ensure on a host
(libvirt's in-process test driver, a private state per test), the libvirt ``<disk>`` and delete.

The test driver refuses volume uploads: an ISO source is checked up to the upload (its content is built
only when the volume is missing); the real upload is in tests/e2e/test_storage.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vdc.api.appliance import ApplianceStatus
from vdc.api.common import IoBurst, IoTune
from vdc.api.virtualmachine import Disk as DiskSpec
from vdc.api.virtualmachine import DiskSource as DiskSourceSpec
from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.disk_sources import (
    SEED_BYTES,
    SOURCES,
    ApplianceImagesMissing,
    AttachedVolume,
    Blank,
    Clone,
    CloudInit,
    DiskSpecError,
    Existing,
    IoTuneConflict,
    OvfEnv,
    PoolMissing,
    lowered_iotune,
    source_of,
)
from vdc.controllers.storagepool import libvirt_pool_name
from vdc.libvirt import storage
from vdc.libvirt.errors import LibvirtFailure
from vdc.libvirt.storage_xml import PoolConfig, VolumeConfig

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

POOL = "fast"
GiB = 1 << 30


def vm(disks: list[dict[str, Any]], **spec: Any) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"memory": {"size": "64Mi"}, "disks": disks, **spec},
        }
    )


def one(source: dict[str, Any], **disk: Any) -> tuple[VirtualMachine, Any]:
    machine = vm([{"name": "d", "source": source, **disk}])
    return machine, machine.spec.disks[0]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Any]:
    node = tmp_path / "node.xml"
    node.write_text("<node>\n</node>\n")
    c = libvirt.open(f"test://{node}")
    storage.ensure_pool(c, PoolConfig(name=libvirt_pool_name(POOL), type="dir", target_path="/vdc/fast"))
    try:
        yield c
    finally:
        c.close()


@dataclass
class Context:
    appliances: Mapping[str, ApplianceStatus] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return self.secrets[(namespace, name)]


def test_every_api_source_has_exactly_one_class() -> None:
    api_fields = set(DiskSourceSpec.model_fields)
    assert {s.field for s in SOURCES.values()} == api_fields
    assert len(SOURCES) == len(api_fields)
    for source in SOURCES.values():
        assert SOURCES[source.kind] is source
    _, disk = one({"cloudInit": {"pool": POOL}})
    assert isinstance(source_of(disk), CloudInit)


def test_blank(conn: Any) -> None:
    machine, disk = one({"blank": {"pool": POOL, "size": "1Gi"}})
    source = source_of(disk)
    assert isinstance(source, Blank) and source.grows and not source.cdrom
    plan = source.plan(machine, disk, {})
    assert (plan.kind, plan.volume, plan.format, plan.capacity, plan.delete_with_vm) == (
        "blank", "shop_web_d.qcow2", "qcow2", GiB, True,
    )  # fmt: skip
    assert source.reserve(plan) == GiB
    assert asyncio.run(source.prepare(machine, Context())) is None
    made = source.ensure(conn, plan, None)
    assert made.capacity_bytes == GiB and made.format == "qcow2"
    assert source.ensure(conn, plan, None).path == made.path  # there already: kept
    xml = source.disk_config(disk, "vda", AttachedVolume(made.path, "qcow2"))
    assert (xml.device, xml.bus, xml.driver_type, xml.readonly, xml.source_file) == (
        "disk", "virtio", "qcow2", False, made.path,
    )  # fmt: skip
    assert source.delete(conn, plan) is True
    assert storage.observe_volume(conn, plan.libvirt_pool, plan.volume) is None
    retained = source.plan(*one({"blank": {"pool": POOL, "size": "1Gi"}}, deletionPolicy="Retain"), {})
    assert not retained.delete_with_vm
    source.ensure(conn, retained, None)
    assert source.delete(conn, retained) is False


def test_clone(conn: Any) -> None:
    base = storage.create_volume(conn, libvirt_pool_name(POOL), VolumeConfig("base.qcow2", 2 * GiB, format="qcow2"))
    machine, disk = one({"clone": {"pool": POOL, "baseVolume": "base.qcow2"}})
    source = source_of(disk)
    assert isinstance(source, Clone) and source.appliance(disk) is None
    plan = source.plan(machine, disk, {})
    assert (plan.base_volume, plan.capacity, source.reserve(plan)) == ("base.qcow2", None, 0)
    made = source.ensure(conn, plan, None)
    assert made.capacity_bytes == 2 * GiB  # at least the base's size
    assert (made.backing_path, made.backing_format) == (base.path, "qcow2")
    missing = dataclasses.replace(
        source.plan(*one({"clone": {"pool": POOL, "baseVolume": "nope.qcow2"}}), {}), volume="other.qcow2"
    )
    with pytest.raises(DiskSpecError, match=r"base\ volume\ nope\.qcow2\ not\ found"):
        source.ensure(conn, missing, None)


def test_clone_of_an_appliance_image() -> None:
    machine, disk = one({"clone": {"pool": POOL, "appliance": {"name": "tiny"}, "size": "4Gi"}})
    source = source_of(disk)
    assert source.appliance(disk) == (None, "tiny")
    with pytest.raises(ApplianceImagesMissing, match="appliance tiny is not Ready"):
        source.plan(machine, disk, {})
    with pytest.raises(DiskSpecError, match="has no disk None with an image"):
        source.plan(machine, disk, {"tiny": {"disk2": "x.qcow2"}})
    plan = source.plan(machine, disk, {"tiny": {None: "tiny-root.qcow2"}})
    assert (plan.base_volume, plan.capacity) == ("tiny-root.qcow2", 4 * GiB)


def test_an_existing_volume(conn: Any) -> None:
    storage.create_volume(conn, libvirt_pool_name(POOL), VolumeConfig("data.raw", GiB, format="raw"))
    machine, disk = one({"volume": {"pool": POOL, "name": "data.raw"}})
    source = source_of(disk)
    assert isinstance(source, Existing) and not source.grows
    plan = source.plan(machine, disk, {})
    assert (plan.volume, plan.delete_with_vm, source.reserve(plan)) == ("data.raw", False, 0)  # Retain by default
    assert source.ensure(conn, plan, None).capacity_bytes == GiB
    assert source.delete(conn, plan) is False  # not ours to delete
    assert source.plan(*one({"volume": {"pool": POOL, "name": "data.raw"}}, deletionPolicy="Delete"), {}).delete_with_vm
    gone = source.plan(*one({"volume": {"pool": POOL, "name": "gone.raw"}}), {})
    with pytest.raises(DiskSpecError, match=r"volume\ gone\.raw\ not\ found\ in\ pool\ fast"):
        source.ensure(conn, gone, None)
    elsewhere = source.plan(*one({"volume": {"pool": "slow", "name": "data.raw"}}), {})
    with pytest.raises(PoolMissing, match="pool slow is not running"):
        source.ensure(conn, elsewhere, None)


def test_cloud_init(conn: Any) -> None:
    user_data = "#cloud-config\nhostname: web\n"
    ref = {"userDataSecretRef": {"name": "ci", "key": "user-data"}}
    machine = vm([{"name": "d", "source": {"cloudInit": {"pool": POOL}}}], cloudInit=ref)
    disk = machine.spec.disks[0]
    source = source_of(disk)
    assert isinstance(source, CloudInit) and source.cdrom
    plan = source.plan(machine, disk, {})
    assert (plan.volume, plan.format, plan.device, source.reserve(plan)) == (
        "shop_web_d.iso",
        "iso",
        "cdrom",
        SEED_BYTES,
    )
    context = Context(secrets={("shop", "ci"): {"user-data": base64.b64encode(user_data.encode()).decode()}})
    content = asyncio.run(source.prepare(machine, context))
    assert content is not None and b"CD001" in content()  # an ISO 9660 image
    with pytest.raises(DiskSpecError, match="has no key user-data"):
        asyncio.run(source.prepare(machine, Context(secrets={("shop", "ci"): {}})))
    with pytest.raises(DiskSpecError, match=r"spec\.cloudInit\ is\ missing"):
        asyncio.run(source.prepare(vm([{"name": "d", "source": {"cloudInit": {"pool": POOL}}}]), Context()))
    built: list[int] = []

    def counted() -> bytes:
        built.append(1)
        return b"iso"

    with pytest.raises(LibvirtFailure):  # the test driver refuses uploads: the content was built for one
        source.ensure(conn, plan, counted)
    assert built == [1]
    storage.create_volume(conn, plan.libvirt_pool, VolumeConfig(plan.volume, SEED_BYTES, format="raw"))
    source.ensure(conn, plan, counted)  # there already: not built again
    assert built == [1]
    xml = source.disk_config(disk, "sda", AttachedVolume("/vdc/fast/shop_web_d.iso", "raw"))
    assert (xml.device, xml.bus, xml.driver_type, xml.readonly) == ("cdrom", "sata", "raw", True)


def test_ovf_environment(conn: Any) -> None:
    machine, disk = one({"ovfEnv": {"pool": POOL}})
    source = source_of(disk)
    assert isinstance(source, OvfEnv) and source.cdrom
    plan = source.plan(machine, disk, {})
    assert (plan.kind, plan.volume, plan.device) == ("ovfEnv", "shop_web_d.iso", "cdrom")
    assert asyncio.run(source.prepare(machine, Context())) is None  # no fromAppliance: nothing to build
    with pytest.raises(DiskSpecError, match=r"an\ ovfEnv\ disk\ needs\ spec\.fromAppliance"):
        source.ensure(conn, plan, None)


# --- a pool's default disk limits -------------------------------------------------------------------


def test_a_pools_disk_limits_are_a_ceiling_a_disk_may_only_lower() -> None:
    pool = IoTune(total_iops_sec=500, read_bytes_sec=100, burst=IoBurst(total_iops_sec=1000, seconds=10))
    assert lowered_iotune(None, pool) == pool
    assert lowered_iotune(IoTune(total_iops_sec=50), None) == IoTune(total_iops_sec=50)
    own = IoTune(total_iops_sec=2000, write_bytes_sec=7, burst=IoBurst(total_iops_sec=800, seconds=30))
    assert lowered_iotune(own, pool) == IoTune(
        total_iops_sec=500, read_bytes_sec=100, write_bytes_sec=7, burst=IoBurst(total_iops_sec=800, seconds=10)
    )
    # 0 is no limit: it never lifts the pool's.
    assert lowered_iotune(IoTune(total_iops_sec=0), pool).total_iops_sec == 500  # type: ignore[union-attr]


def test_a_pools_total_and_a_disks_read_write_limit_of_one_kind_conflict_naming_both() -> None:
    with pytest.raises(IoTuneConflict, match=r"disk data: the pool limits total iops/s .* pool fast"):
        lowered_iotune(IoTune(read_iops_sec=10), IoTune(total_iops_sec=100), disk="data", pool_name="fast")
    with pytest.raises(IoTuneConflict, match="disk data limits total bytes/s"):
        lowered_iotune(IoTune(total_bytes_sec=10), IoTune(write_bytes_sec=100), disk="data", pool_name="fast")
    # Another kind is no conflict.
    both = lowered_iotune(IoTune(read_iops_sec=10), IoTune(total_bytes_sec=100))
    assert both == IoTune(read_iops_sec=10, total_bytes_sec=100)


def test_a_burst_a_lower_limit_leaves_below_it_becomes_the_limit_in_the_domain() -> None:
    disk = DiskSpec.model_validate(
        {"name": "d", "source": {"blank": {"pool": "p", "size": "1Gi"}}, "iotune": {"totalIopsSec": 900,
         "burst": {"totalIopsSec": 1000}}}
    )  # fmt: skip
    volume = AttachedVolume("/v/d.qcow2", "qcow2", "p", IoTune(total_iops_sec=100, burst=IoBurst(total_iops_sec=50)))
    tune = source_of(disk).disk_config(disk, "vda", volume).iotune
    assert tune is not None and (tune.total_iops_sec, tune.total_iops_sec_max) == (100, 100)
