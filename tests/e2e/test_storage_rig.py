"""Storage operations against a real libvirtd (one rig host, QEMU driver): files, qemu-img, streams.

The pools live under pytest's tmp directory, which the rig host sees at the same path (its private
mounts cover only libvirt's own directories), so the files libvirt makes are checked from here with
``qemu-img`` and plain file reads. Only the rig host this module starts is used; it is stopped after.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from vdc.libvirt import storage
from vdc.libvirt.storage import ShrinkRefused
from vdc.libvirt.storage_xml import BackingStoreConfig, PoolConfig, VolumeConfig

if os.geteuid() != 0 or not all(
    shutil.which(t) for t in ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img")
):
    pytest.skip("needs root and libvirt-daemon-system, libvirt-clients, qemu-system-x86, qemu-utils",
                allow_module_level=True)  # fmt: skip

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

GiB = 1024**3


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.LibvirtHost]:
    state = tmp_path_factory.mktemp("storage-rig")
    prefix = f"vdcs{secrets.token_hex(2)}"
    try:
        yield rig.start_libvirt_hosts(state, 1, prefix).hosts[0]
    finally:
        rig.stop_libvirt_hosts(state, prefix)


@pytest.fixture(scope="module")
def conn(host: rig.LibvirtHost) -> Iterator[typing.Any]:
    c = libvirt.open(host.qemu_uri)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def pool(conn: typing.Any, tmp_path: Path) -> Iterator[PoolConfig]:
    """A dir pool (not yet created) whose directory does not exist yet; removed afterwards."""
    name = f"vdc-e2e-{uuid.uuid4().hex[:8]}"
    config = PoolConfig(name=name, type="dir", target_path=str(tmp_path / "pools" / name))
    try:
        yield config
    finally:
        storage.remove_pool(conn, name)


def qemu_img_chain(path: str) -> list[dict[str, typing.Any]]:
    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", path],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    chain = json.loads(out)
    return chain if isinstance(chain, list) else [chain]


def iso_like(size: int) -> bytes:
    """``size`` bytes with an ISO 9660 primary volume descriptor where one belongs (sector 16)."""
    descriptor = b"\x01CD001\x01" + b"\x00" * (2048 - 7)
    data = bytearray(os.urandom(size))
    data[16 * 2048 : 17 * 2048] = descriptor
    return bytes(data)


def test_ensure_pool_builds_its_directory_and_runs_it(conn: typing.Any, pool: PoolConfig) -> None:
    assert pool.target_path is not None and not Path(pool.target_path).exists()
    obs = storage.ensure_pool(conn, pool)
    assert Path(pool.target_path).is_dir()
    assert obs.state == "running" and obs.autostart and obs.persistent
    assert obs.capacity_bytes > 0 and obs.available_bytes > 0
    assert obs.config == PoolConfig(name=pool.name, type="dir", uuid=obs.uuid, target_path=pool.target_path)
    assert storage.ensure_pool(conn, pool) == storage.observe_pool(conn, pool.name)


def test_raw_volume_and_qcow2_overlay_on_a_qcow2_base(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    raw = storage.create_volume(conn, pool.name, VolumeConfig(name="data.img", capacity_bytes=GiB))
    assert raw.path == f"{pool.target_path}/data.img"
    assert raw.format == "raw" and raw.capacity_bytes == GiB
    assert os.path.getsize(raw.path) == GiB
    assert os.stat(raw.path).st_blocks * 512 < GiB  # sparse

    base = storage.create_volume(conn, pool.name, VolumeConfig(name="base.qcow2", capacity_bytes=GiB, format="qcow2"))
    overlay = storage.create_volume(
        conn,
        pool.name,
        VolumeConfig(
            name="vm-root.qcow2",
            capacity_bytes=GiB,
            format="qcow2",
            backing=BackingStoreConfig(path=base.path, format="qcow2"),
        ),
    )
    assert overlay.backing_path == base.path and overlay.backing_format == "qcow2"
    chain = qemu_img_chain(overlay.path)
    assert [image["filename"] for image in chain] == [overlay.path, base.path]
    assert chain[0]["format"] == "qcow2"
    assert chain[0]["backing-filename"] == base.path
    assert chain[0].get("backing-filename-format", chain[0].get("full-backing-filename-format", "qcow2")) == "qcow2"
    assert chain[0]["virtual-size"] == GiB

    names = [v.name for v in storage.list_volumes(conn, pool.name)]
    assert names == ["base.qcow2", "data.img", "vm-root.qcow2"]
    # Idempotent: the same volume comes back, nothing is recreated.
    assert storage.create_volume(conn, pool.name, VolumeConfig(name="data.img", capacity_bytes=GiB)) == raw


def test_resize_grows_and_refuses_to_shrink(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    raw = storage.create_volume(conn, pool.name, VolumeConfig(name="grow.img", capacity_bytes=GiB))
    grown = storage.resize_volume(conn, pool.name, "grow.img", 2 * GiB)
    assert grown.capacity_bytes == 2 * GiB
    assert os.path.getsize(raw.path) == 2 * GiB
    qcow = storage.create_volume(conn, pool.name, VolumeConfig(name="grow.qcow2", capacity_bytes=GiB, format="qcow2"))
    assert storage.resize_volume(conn, pool.name, "grow.qcow2", 3 * GiB).capacity_bytes == 3 * GiB
    assert qemu_img_chain(qcow.path)[0]["virtual-size"] == 3 * GiB
    with pytest.raises(ShrinkRefused):
        storage.resize_volume(conn, pool.name, "grow.img", GiB)
    assert os.path.getsize(raw.path) == 2 * GiB


def test_upload_writes_the_bytes_and_replaces_on_a_new_size(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    data = iso_like(64 * 1024)
    seed = storage.upload_volume(conn, pool.name, "cidata.iso", data, format="iso")
    assert seed.capacity_bytes == len(data)
    assert Path(seed.path).read_bytes() == data
    assert storage.volume_path(conn, pool.name, "cidata.iso") == seed.path

    same_size = iso_like(64 * 1024)
    storage.upload_volume(conn, pool.name, "cidata.iso", same_size, format="iso")
    assert Path(seed.path).read_bytes() == same_size

    bigger = iso_like(1024 * 1024 + 2048)  # more than one stream chunk, not a chunk multiple
    again = storage.upload_volume(conn, pool.name, "cidata.iso", bigger, format="iso")
    assert again.capacity_bytes == len(bigger)
    assert Path(seed.path).read_bytes() == bigger
    # libvirt probes the format on refresh: an ISO 9660 image is reported as iso.
    (listed,) = storage.list_volumes(conn, pool.name, refresh=True)
    assert listed.name == "cidata.iso" and listed.format == "iso"


def test_upload_of_raw_data_of_any_size_is_exact(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    data = os.urandom(300_001)
    blob = storage.upload_volume(conn, pool.name, "blob.img", data)
    assert blob.format == "raw" and blob.capacity_bytes == len(data)
    assert Path(blob.path).read_bytes() == data


def test_a_pool_destroyed_behind_its_back_is_brought_back(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    storage.create_volume(conn, pool.name, VolumeConfig(name="keep.img", capacity_bytes=GiB))
    conn.storagePoolLookupByName(pool.name).destroy()
    assert storage.observe_pool(conn, pool.name).state == "inactive"  # type: ignore[union-attr]
    obs = storage.ensure_pool(conn, pool)
    assert obs.state == "running"
    assert [v.name for v in storage.list_volumes(conn, pool.name)] == ["keep.img"]


def test_a_pool_whose_directory_vanished_is_rebuilt(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    assert pool.target_path is not None
    shutil.rmtree(pool.target_path)
    obs = storage.ensure_pool(conn, pool)
    assert obs.state == "running"
    assert Path(pool.target_path).is_dir()


def test_a_changed_definition_is_applied_at_once(conn: typing.Any, pool: PoolConfig) -> None:
    first = storage.ensure_pool(conn, pool)
    moved = PoolConfig(name=pool.name, type="dir", target_path=f"{pool.target_path}-moved")
    obs = storage.ensure_pool(conn, moved)
    assert obs.state == "running" and obs.uuid == first.uuid
    assert obs.config == PoolConfig(name=pool.name, type="dir", uuid=first.uuid, target_path=moved.target_path)
    live = PoolConfig.from_string(conn.storagePoolLookupByName(pool.name).XMLDesc(0))
    assert live.target_path == moved.target_path
    created = storage.create_volume(conn, pool.name, VolumeConfig(name="here.img", capacity_bytes=1024))
    assert created.path == f"{moved.target_path}/here.img" and Path(created.path).exists()


def test_remove_pool_leaves_the_files(conn: typing.Any, pool: PoolConfig) -> None:
    storage.ensure_pool(conn, pool)
    vol = storage.create_volume(
        conn, pool.name, VolumeConfig(name="precious.qcow2", capacity_bytes=GiB, format="qcow2")
    )
    assert storage.remove_pool(conn, pool.name) is True
    assert storage.observe_pool(conn, pool.name) is None
    assert Path(vol.path).is_file()
    assert qemu_img_chain(vol.path)[0]["format"] == "qcow2"
    # Defined again, the pool finds its volume where it was.
    storage.ensure_pool(conn, pool)
    assert [v.name for v in storage.list_volumes(conn, pool.name)] == ["precious.qcow2"]
