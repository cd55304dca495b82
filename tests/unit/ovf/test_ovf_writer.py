from __future__ import annotations

import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdc.ovf.convert import image_info, require_standalone, to_qcow2, to_stream_optimized_vmdk
from vdc.ovf.envelope import (
    DiskFormat,
    ProductSection,
    Property,
    StartupItem,
    VirtualSystemCollection,
    parse_envelope,
)
from vdc.ovf.errors import ConversionError, OvfError
from vdc.ovf.hardware import CdDrive, DiskDrive, HardwareSummary, NetworkAdapter, summarize
from vdc.ovf.manifest import compare_digests
from vdc.ovf.ova import extract_ova, open_ova
from vdc.ovf.writer import ExportCollection, ExportSystem, build_collection_descriptor, build_descriptor, write_ova

names = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)
formats = st.sampled_from([DiskFormat("vmdk", "streamOptimized"), DiskFormat("qcow2"), DiskFormat("raw")])
# Buses with the controller models that read back as the same bus.
controllers = st.sampled_from(
    [("ide", None), ("scsi", "lsilogic"), ("scsi", "VirtualSCSI"), ("sata", "AHCI"), ("virtio", "virtio"), (None, None)]
)


@st.composite
def disks(draw: st.DrawFn) -> DiskDrive:
    bus, model = draw(controllers)
    has_file = draw(st.booleans())
    return DiskDrive(
        disk_id=None,
        capacity_bytes=draw(st.integers(1, 1 << 44)),
        file=f"{draw(names)}.img" if has_file else None,
        format=draw(formats) if has_file else None,
        bus=bus,
        controller_model=model,
    )


@st.composite
def hardware(draw: st.DrawFn) -> HardwareSummary:
    drawn = draw(st.lists(disks(), max_size=5, unique_by=lambda d: d.file or object()))
    numbered = tuple(
        DiskDrive(f"vmdisk{i}", d.capacity_bytes, d.file, d.format, d.bus, d.controller_model)
        for i, d in enumerate(drawn, start=1)
    )
    cpus = draw(st.none() | st.integers(1, 256))
    return HardwareSummary(
        cpus=cpus,
        memory_bytes=draw(st.none() | st.integers(1, 1 << 42)),
        cores_per_socket=draw(st.none() | st.integers(1, 16)) if cpus else None,
        firmware=draw(st.sampled_from([None, "bios", "efi"])),
        disks=numbered,
        nics=tuple(
            draw(
                st.lists(
                    st.builds(
                        NetworkAdapter,
                        network=st.none() | names,
                        model=st.sampled_from([None, "e1000", "vmxnet3", "virtio"]),
                        mac=st.none() | st.just("52:54:00:aa:bb:cc"),
                    ),
                    max_size=4,
                )
            )
        ),
        cdroms=tuple(
            draw(st.lists(st.builds(CdDrive, bus=st.sampled_from(["ide", "sata"]), file=st.none()), max_size=2))
        ),
        floppies=draw(st.integers(0, 1)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hw=hardware())
def test_written_descriptor_reads_back_the_same_hardware(hw: HardwareSummary) -> None:
    sizes = {d.file: 1000 for d in hw.disks if d.file}
    descriptor = build_descriptor(ExportSystem(id="vm1", name="exported", hardware=hw), sizes)
    envelope = parse_envelope(descriptor)
    (system,) = envelope.virtual_systems()
    assert system.name == "exported"
    assert summarize(envelope, system) == hw


def test_cores_per_socket_needs_a_cpu_count() -> None:
    with pytest.raises(OvfError, match="without a CPU count"):
        build_descriptor(ExportSystem(id="vm", hardware=HardwareSummary(cores_per_socket=2)), {})


def test_ide_controllers_hold_two_devices_each() -> None:
    hw = HardwareSummary(
        cpus=1,
        disks=tuple(DiskDrive(f"d{i}", 1 << 30, bus="ide") for i in range(3)),
        cdroms=(CdDrive("ide", "tools.iso"),),
    )
    envelope = parse_envelope(build_descriptor(ExportSystem(id="vm", hardware=hw), {"tools.iso": 10}))
    items = envelope.virtual_systems()[0].hardware[0].items
    ide = [i.instance_id for i in items if i.kind == "ide"]
    parents = [i.parent for i in items if i.kind in ("disk", "cdrom")]
    assert len(ide) == 2 and parents == [ide[0], ide[0], ide[1], ide[1]]
    assert summarize(envelope, envelope.virtual_systems()[0]) == hw


@pytest.fixture(scope="module")
def tiny_raw_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("disk") / "tiny.raw"
    with path.open("wb") as f:
        f.write(b"VDC-TEST-DISK" * 100)
        f.truncate(4 << 20)
    return path


def test_real_ova_round_trip(tiny_raw_disk: Path, tmp_path: Path) -> None:
    vmdk = tmp_path / "tiny-disk1.vmdk"
    to_stream_optimized_vmdk(tiny_raw_disk, "raw", vmdk)
    info = image_info(vmdk, "vmdk")
    assert (info.format, info.subformat, info.virtual_size) == ("vmdk", "streamOptimized", 4 << 20)
    require_standalone(info, vmdk)

    hw = HardwareSummary(
        cpus=2,
        memory_bytes=512 << 20,
        disks=(
            DiskDrive(
                "vmdisk1", info.virtual_size, vmdk.name, DiskFormat("vmdk", "streamOptimized"), "scsi", "lsilogic"
            ),
        ),
        nics=(NetworkAdapter("lan", "virtio"),),
    )
    descriptor = build_descriptor(ExportSystem(id="tiny", hardware=hw), {vmdk.name: vmdk.stat().st_size})
    ova = tmp_path / "tiny.ova"
    progress: list[int] = []
    write_ova(ova, "tiny.ovf", descriptor, {vmdk.name: vmdk}, progress=progress.append)
    assert sum(progress) == vmdk.stat().st_size
    with tarfile.open(ova) as tar:
        assert tar.getnames() == ["tiny.ovf", "tiny.mf", vmdk.name]

    package = open_ova(ova)
    assert package.descriptor_first and package.manifest is not None
    assert summarize(package.envelope, package.envelope.virtual_systems()[0]) == hw
    out = tmp_path / "out"
    out.mkdir()
    extracted = extract_ova(package, out)
    assert compare_digests(package.manifest, {n: f.digests for n, f in extracted.items()}) == []
    qcow2 = tmp_path / "base.qcow2"
    to_qcow2(out / vmdk.name, "vmdk", qcow2)
    assert image_info(qcow2, "qcow2").virtual_size == 4 << 20


def test_qemu_img_errors_are_clear(tmp_path: Path) -> None:
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ConversionError, match=r"qemu-img info junk\.qcow2: .*"):
        image_info(junk, "qcow2")


def test_images_with_backing_files_are_refused(tiny_raw_disk: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(tiny_raw_disk), str(overlay)], check=True
    )
    with pytest.raises(ConversionError, match="has a backing file"):
        require_standalone(image_info(overlay, "qcow2"), overlay)


# --- ProductSection properties and vApps (collections with a StartupSection) ----------------------

properties = st.builds(
    Property,
    key=names,
    type=st.sampled_from(["string", "boolean", "uint16", "int"]),
    qualifiers=st.none() | st.just("MinLen(1)"),
    default=st.none() | names,
    user_configurable=st.booleans(),
    password=st.booleans(),
    label=st.none() | names,
    description=st.none() | names,
)


@st.composite
def products(draw: st.DrawFn) -> ProductSection:
    class_id = draw(st.none() | st.just("com.example"))
    instance = draw(st.none() | st.just("1"))
    props = draw(st.lists(properties, max_size=4, unique_by=lambda p: p.key))
    return ProductSection(
        class_id=class_id,
        instance=instance,
        info="Product",
        product=draw(st.none() | names),
        vendor=draw(st.none() | names),
        version=draw(st.none() | st.just("1.0")),
        properties=tuple(replace(p, class_id=class_id, instance=instance) for p in props),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hw=hardware(), product_sections=st.lists(products(), max_size=2))
def test_product_sections_read_back(hw: HardwareSummary, product_sections: list[ProductSection]) -> None:
    sizes = {d.file: 1000 for d in hw.disks if d.file}
    system = ExportSystem(id="vm1", hardware=hw, products=tuple(product_sections))
    envelope = parse_envelope(build_descriptor(system, sizes))
    assert envelope.products() == tuple(product_sections)
    assert envelope.properties() == tuple(p for s in product_sections for p in s.properties)


def test_a_property_takes_its_sections_class_and_refuses_another() -> None:
    section = ProductSection(class_id="vdc", properties=(Property("ip", default="10.0.0.1", user_configurable=True),))
    envelope = parse_envelope(
        build_descriptor(ExportSystem(id="vm", hardware=HardwareSummary(), products=(section,)), {})
    )
    (prop,) = envelope.properties()
    assert (prop.full_key, prop.default, prop.user_configurable) == ("vdc.ip", "10.0.0.1", True)
    other = ProductSection(class_id="vdc", properties=(Property("ip", class_id="other"),))
    with pytest.raises(OvfError, match=r"'other\.ip'"):
        build_descriptor(ExportSystem(id="vm", hardware=HardwareSummary(), products=(other,)), {})


def _tiny_system(system_id: str, file: str) -> ExportSystem:
    hw = HardwareSummary(
        cpus=1,
        memory_bytes=256 << 20,
        disks=(DiskDrive(None, 64 << 20, file, DiskFormat("vmdk", "streamOptimized"), "ide"),),
        nics=(NetworkAdapter("VM Network", "virtio"),),
    )
    return ExportSystem(id=system_id, name=system_id, hardware=hw)


def test_collection_reads_back_with_startup_products_and_package_wide_disk_ids() -> None:
    startup = (StartupItem("db", order=1), StartupItem("web", order=2, start_delay=5, waiting_for_guest=True))
    product = ProductSection(properties=(Property("domain", default="example.org", user_configurable=True),))
    collection = ExportCollection(
        id="vapp",
        name="Two tier",
        annotation="a vApp",
        systems=(_tiny_system("db", "db.vmdk"), _tiny_system("web", "web.vmdk")),
        startup=startup,
        products=(product,),
    )
    envelope = parse_envelope(build_collection_descriptor(collection, {"db.vmdk": 10, "web.vmdk": 20}))
    assert isinstance(envelope.content, VirtualSystemCollection)
    assert (envelope.content.id, envelope.content.name, envelope.content.annotation) == ("vapp", "Two tier", "a vApp")
    assert envelope.startup() == startup
    assert envelope.properties() == product.properties
    assert [n.name for n in envelope.networks] == ["VM Network"]
    assert [(f.href, f.size) for f in envelope.references] == [("db.vmdk", 10), ("web.vmdk", 20)]
    db, web = envelope.virtual_systems()
    assert (db.id, web.id) == ("db", "web")
    assert summarize(envelope, db).disks[0] == replace(collection.systems[0].hardware.disks[0], disk_id="vmdisk1")
    assert summarize(envelope, web).disks[0] == replace(collection.systems[1].hardware.disks[0], disk_id="vmdisk2")
    assert summarize(envelope, web).nics == collection.systems[1].hardware.nics


@pytest.mark.parametrize(
    ("collection", "message"),
    [
        (ExportCollection(id="vapp", systems=()), "holds no system"),
        (
            ExportCollection(id="vapp", systems=(_tiny_system("a", "a.vmdk"), _tiny_system("a", "b.vmdk"))),
            "'a' is used twice",
        ),
        (ExportCollection(id="a", systems=(_tiny_system("a", "a.vmdk"),)), "'a' is used twice"),
        (
            ExportCollection(id="vapp", systems=(_tiny_system("a", "a.vmdk"),), startup=(StartupItem("b", 1),)),
            "startup item 'b'",
        ),
    ],
)
def test_bad_collections_are_refused(collection: ExportCollection, message: str) -> None:
    with pytest.raises(OvfError, match=message):
        build_collection_descriptor(collection, {"a.vmdk": 1, "b.vmdk": 1})
