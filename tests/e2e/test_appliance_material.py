"""The appliance test material (tests/appliances.py) is what it claims, without the libvirt rig.

Boots two images under QEMU/TCG (SeaBIOS): a fresh raw boot disk, and the qcow2 converted back
from the streamOptimized VMDK inside a built OVA. The OVAs and the vApp are parsed with ``vdc.ovf``
to the hardware and properties they were built with; a tampered copy fails its manifest check.
"""

from __future__ import annotations

import secrets
import tarfile
from pathlib import Path

import pytest

from appliances import (
    DEFAULT_PROPERTIES,
    GUEST_READY,
    OS_ID,
    ApplianceSystem,
    BuiltOva,
    boot,
    build_boot_disk,
    build_ova_info,
    build_vapp,
    prop,
    syslinux_cfg,
    tampered_copy,
    unpack_ova,
)
from vdc.ovf.convert import image_info, require_standalone, to_qcow2
from vdc.ovf.envelope import DiskFormat, StartupItem, VirtualSystem, VirtualSystemCollection
from vdc.ovf.errors import DigestMismatch
from vdc.ovf.hardware import NetworkAdapter, summarize
from vdc.ovf.manifest import compare_digests, require_verified, verify
from vdc.ovf.ova import OvfPackage, extract_ova, open_ova, open_ovf_directory, package_paths

BOOT_TIMEOUT = 120.0

SYSTEM = ApplianceSystem("tiny", cpus=2, memory_mib=320, cmdline_extra="vdc.hostname=appliance-tiny")
PROPERTIES = (*DEFAULT_PROPERTIES, prop("dns.servers", "10.0.0.53", label="DNS"))


@pytest.fixture(scope="module")
def ova(tmp_path_factory: pytest.TempPathFactory) -> BuiltOva:
    return build_ova_info(tmp_path_factory.mktemp("ova") / "tiny.ova", systems=(SYSTEM,), properties=PROPERTIES)


def _extract(package: OvfPackage, out: Path) -> dict[str, Path]:
    out.mkdir()
    extracted = extract_ova(package, out)
    assert package.manifest is not None
    assert compare_digests(package.manifest, {n: f.digests for n, f in extracted.items()}) == []
    return {name: f.path for name, f in extracted.items()}


def test_syslinux_cfg_boots_the_guest_with_the_marker_and_refuses_unsafe_args() -> None:
    cfg = syslinux_cfg("abc-1", "vdc.hostname=x")
    assert "APPEND console=ttyS0 vdc.marker=abc-1 vdc.hostname=x\n" in cfg
    assert "KERNEL vmlinuz" in cfg and "INITRD initrd.img" in cfg
    for bad in ("two words", "", "a\nb", "x" * 65):
        with pytest.raises(ValueError, match="marker"):
            syslinux_cfg(bad)
    with pytest.raises(ValueError, match="one line"):
        syslinux_cfg("ok", "a\nAPPEND evil")


def test_raw_boot_disk_boots_to_its_marker(tmp_path: Path) -> None:
    marker = f"raw-{secrets.token_hex(4)}"
    host = f"h{secrets.token_hex(3)}"
    disk = build_boot_disk(tmp_path / "boot.raw", marker, f"vdc.hostname={host}", cache=False)
    with disk.open("rb") as f:
        assert f.read(512)[510:] == b"\x55\xaa"
    result = boot(disk, "raw", tmp_path / "serial.log", timeout=BOOT_TIMEOUT)
    print(f"raw boot disk: {GUEST_READY} after {result.seconds:.1f} s")
    assert result.marker() == marker
    assert f"VDC-GUEST-HOSTNAME={host}" in result.serial
    assert result.serial.index(f"VDC-MARKER={marker}") < result.serial.index(GUEST_READY)


def test_ova_parses_to_what_was_built_and_its_disk_boots(ova: BuiltOva, tmp_path: Path) -> None:
    package = open_ova(ova.path)
    assert package.descriptor_first and package.descriptor_name == "vdc-tiny.ovf"
    assert package.manifest is not None and set(package.manifest.files()) == set(package.payload_names())
    (system,) = package.envelope.virtual_systems()
    assert isinstance(package.envelope.content, VirtualSystem) and system.id == "tiny"
    assert system.operating_system is not None and system.operating_system.id == OS_ID
    hw = summarize(package.envelope, system)
    assert (hw.cpus, hw.memory_bytes, hw.firmware) == (2, 320 << 20, "bios")
    (disk,) = hw.disks
    assert (disk.file, disk.format, disk.bus, disk.capacity_bytes) == (
        "tiny-disk1.vmdk",
        DiskFormat("vmdk", "streamOptimized"),
        "ide",
        48 << 20,
    )
    assert hw.nics == (NetworkAdapter("VM Network", "virtio"),)
    assert [n.name for n in package.envelope.networks] == ["VM Network"]
    props = {p.key: p for p in package.envelope.properties()}
    assert list(props) == [p.key for p in PROPERTIES]
    assert (props["hostname"].default, props["hostname"].user_configurable) == ("tiny", True)
    assert props["admin.password"].password and not props["build"].user_configurable
    assert props["dns.servers"].default == "10.0.0.53"

    files = _extract(package, tmp_path / "x")
    vmdk = files["tiny-disk1.vmdk"]
    info = image_info(vmdk, "vmdk")
    require_standalone(info, vmdk)
    assert (info.subformat, info.virtual_size) == ("streamOptimized", 48 << 20)
    qcow2 = tmp_path / "base.qcow2"
    to_qcow2(vmdk, "vmdk", qcow2)
    result = boot(qcow2, "qcow2", tmp_path / "serial.log", timeout=BOOT_TIMEOUT)
    print(f"qcow2 from the OVA's vmdk: {GUEST_READY} after {result.seconds:.1f} s")
    assert result.marker() == ova.markers["tiny"] == "vdc-tiny"
    assert "VDC-GUEST-HOSTNAME=appliance-tiny" in result.serial


def test_tampered_copy_fails_the_manifest_check_naming_the_disk(ova: BuiltOva, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ova"
    member = tampered_copy(ova.path, bad)
    assert member == ova.disk_files["tiny"]
    with tarfile.open(ova.path) as a, tarfile.open(bad) as b:
        assert [(m.name, m.size) for m in a] == [(m.name, m.size) for m in b]
    package = open_ova(bad)  # the tar and descriptor are still fine
    out = tmp_path / "x"
    out.mkdir()
    extracted = extract_ova(package, out)
    assert package.manifest is not None
    mismatches = compare_digests(package.manifest, {n: f.digests for n, f in extracted.items()})
    assert [(m.file, m.reason) for m in mismatches] == [(member, "digest")]
    with pytest.raises(DigestMismatch, match=member):
        require_verified(mismatches)


def test_tamper_flag_builds_an_ova_whose_disk_fails(tmp_path: Path) -> None:
    built = build_ova_info(tmp_path / "t.ova", tamper=True)
    descriptor = unpack_ova(built.path, tmp_path / "dir")
    package = open_ovf_directory(descriptor)
    assert package.manifest is not None
    assert [m.file for m in verify(package.manifest, package_paths(package))] == [built.disk_files["tiny"]]


@pytest.mark.parametrize(("disk_format", "expected"), [("raw", DiskFormat("raw")), ("qcow2", DiskFormat("qcow2"))])
def test_other_disk_formats(disk_format: str, expected: DiskFormat, tmp_path: Path) -> None:
    built = build_ova_info(tmp_path / "f.ova", disk_format=disk_format, network="lan")  # type: ignore[arg-type]
    package = open_ova(built.path)
    (system,) = package.envelope.virtual_systems()
    hw = summarize(package.envelope, system)
    assert hw.disks[0].format == expected and hw.nics == (NetworkAdapter("lan", "virtio"),)
    files = _extract(package, tmp_path / "x")
    disk = files[built.disk_files["tiny"]]
    assert image_info(disk, expected.qemu_format).virtual_size == hw.disks[0].capacity_bytes == 48 << 20


def test_vapp_is_a_collection_with_startup_order_and_properties(tmp_path: Path) -> None:
    built = build_vapp(tmp_path / "vapp.ova", start_delay=7)
    package = open_ova(built.path)
    content = package.envelope.content
    assert isinstance(content, VirtualSystemCollection) and content.id == "vapp"
    assert package.envelope.startup() == (
        StartupItem("db", order=1, start_delay=7, waiting_for_guest=True),
        StartupItem("web", order=2, stop_action="guestShutdown"),
    )
    db, web = package.envelope.virtual_systems()
    db_hw, web_hw = summarize(package.envelope, db), summarize(package.envelope, web)
    assert (db_hw.cpus, db_hw.memory_bytes, web_hw.cpus, web_hw.memory_bytes) == (1, 256 << 20, 2, 192 << 20)
    assert [d.file for d in (*db_hw.disks, *web_hw.disks)] == ["db-disk1.vmdk", "web-disk1.vmdk"]
    assert [d.disk_id for d in (*db_hw.disks, *web_hw.disks)] == ["vmdisk1", "vmdisk2"]
    assert built.markers == {"db": "vdc-db", "web": "vdc-web"}
    assert [p.key for p in content.products[0].properties] == [p.key for p in DEFAULT_PROPERTIES]
    assert [(p.key, p.default) for p in db.products[0].properties] == [("db.port", "5432")]
    files = _extract(package, tmp_path / "x")
    assert len(files) == 3  # descriptor + two disks, all matching the manifest
