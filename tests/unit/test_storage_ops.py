"""Storage pool and volume operations against libvirt's in-process test driver (``test:///default``).

The test driver keeps pools and volumes in memory (it touches no files), fakes every pool type we
model, and refuses ``virStorageVolResize`` and ``virStorageVolUpload``: growing and uploading for
real are covered by ``tests/e2e/test_storage_rig.py`` against a real libvirtd; here they are checked
as far as the driver goes (refusals, and what is left behind when the driver says no).

``test:///default`` is shared by everything in this process: every pool gets a unique name and path.
"""

from __future__ import annotations

import dataclasses
import typing
import uuid
from collections.abc import Iterator

import pytest

from vdc.libvirt import storage
from vdc.libvirt.errors import ConfigRejected, InvalidState, LibvirtFailure, NotFound
from vdc.libvirt.storage import ShrinkRefused, StorageFailure
from vdc.libvirt.storage_xml import (
    BackingStoreConfig,
    PoolAuthConfig,
    PoolConfig,
    PoolHostConfig,
    PoolSourceConfig,
    VolumeConfig,
)

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

GiB = 1024**3


@pytest.fixture(scope="module")
def conn() -> Iterator[typing.Any]:
    c = libvirt.open("test:///default")
    try:
        yield c
    finally:
        c.close()


def unique(prefix: str = "vdc-t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def dir_pool(name: str | None = None) -> PoolConfig:
    name = name or unique()
    return PoolConfig(name=name, type="dir", target_path=f"/vdc-test/{name}")


def cleanup(conn: typing.Any, name: str) -> None:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    if pool.isActive():
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
    if pool.isPersistent():
        pool.undefine()


@pytest.fixture
def pool(conn: typing.Any) -> Iterator[PoolConfig]:
    """A running dir pool, removed with its volumes afterwards."""
    config = dir_pool()
    storage.ensure_pool(conn, config)
    try:
        yield config
    finally:
        cleanup(conn, config.name)


class Recorder:
    """A connection whose pools record the methods called on them."""

    def __init__(self, conn: typing.Any) -> None:
        self._conn = conn
        self.calls: list[str] = []

    def _wrap(self, pool: typing.Any) -> typing.Any:
        recorder = self

        class Pool:
            def __getattr__(self, name: str) -> typing.Any:
                attr = getattr(pool, name)
                if not callable(attr):
                    return attr

                def call(*args: typing.Any) -> typing.Any:
                    recorder.calls.append(name)
                    return attr(*args)

                return call

        return Pool()

    def storagePoolLookupByName(self, name: str) -> typing.Any:
        return self._wrap(self._conn.storagePoolLookupByName(name))

    def storagePoolDefineXML(self, xml: str, flags: int) -> typing.Any:
        self.calls.append("defineXML")
        return self._wrap(self._conn.storagePoolDefineXML(xml, flags))

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._conn, name)


# --- pools ---------------------------------------------------------------------------------------


def test_ensure_pool_defines_builds_starts_and_autostarts_a_missing_pool(conn: typing.Any) -> None:
    config = dir_pool()
    assert storage.observe_pool(conn, config.name) is None
    try:
        recorder = Recorder(conn)
        obs = storage.ensure_pool(recorder, config)
        assert recorder.calls[:4] == ["defineXML", "isActive", "build", "create"]
        assert "refresh" in recorder.calls
        assert obs.name == config.name
        assert obs.state == "running"
        assert obs.autostart and obs.persistent
        assert obs.capacity_bytes > 0
        assert obs.available_bytes > 0
        assert obs.allocation_bytes >= 0
        assert obs.config == dataclasses.replace(config, uuid=obs.uuid)
        assert storage.observe_pool(conn, config.name) == obs
    finally:
        cleanup(conn, config.name)


def test_ensure_pool_leaves_a_pool_that_is_as_wanted_alone(conn: typing.Any, pool: PoolConfig) -> None:
    first = storage.observe_pool(conn, pool.name)
    recorder = Recorder(conn)
    again = storage.ensure_pool(recorder, pool)
    assert again == first
    assert not {"defineXML", "destroy", "build", "create", "setAutostart"} & set(recorder.calls)


def test_ensure_pool_keeps_a_given_uuid(conn: typing.Any) -> None:
    config = dataclasses.replace(dir_pool(), uuid=str(uuid.uuid4()))
    try:
        obs = storage.ensure_pool(conn, config)
        assert obs.uuid == config.uuid
        assert obs.config == config
        assert storage.ensure_pool(conn, config) == obs
    finally:
        cleanup(conn, config.name)


def test_ensure_pool_refuses_another_uuid_without_stopping_the_pool(conn: typing.Any, pool: PoolConfig) -> None:
    before = storage.observe_pool(conn, pool.name)
    with pytest.raises(ConfigRejected, match="exists with uuid"):
        storage.ensure_pool(conn, dataclasses.replace(pool, uuid=str(uuid.uuid4())))
    assert storage.observe_pool(conn, pool.name) == before


def test_ensure_pool_restarts_a_pool_stopped_behind_its_back(conn: typing.Any, pool: PoolConfig) -> None:
    lv = conn.storagePoolLookupByName(pool.name)
    lv.destroy()
    lv.setAutostart(0)
    assert storage.observe_pool(conn, pool.name).state == "inactive"  # type: ignore[union-attr]
    obs = storage.ensure_pool(conn, pool)
    assert obs.state == "running"
    assert obs.autostart


def test_ensure_pool_redefines_and_restarts_a_pool_whose_definition_differs(conn: typing.Any, pool: PoolConfig) -> None:
    before = storage.observe_pool(conn, pool.name)
    assert before is not None
    moved = dataclasses.replace(pool, target_path=f"{pool.target_path}-moved")
    recorder = Recorder(conn)
    obs = storage.ensure_pool(recorder, moved)
    assert "defineXML" in recorder.calls and "destroy" in recorder.calls
    assert obs.state == "running"
    assert obs.uuid == before.uuid  # redefined in place, not replaced
    assert obs.config == dataclasses.replace(moved, uuid=before.uuid)
    assert PoolConfig.from_string(conn.storagePoolLookupByName(pool.name).XMLDesc(0)).target_path == moved.target_path


def test_ensure_pool_redefines_an_inactive_pool_without_starting_twice(conn: typing.Any, pool: PoolConfig) -> None:
    conn.storagePoolLookupByName(pool.name).destroy()
    moved = dataclasses.replace(pool, target_path=f"{pool.target_path}-elsewhere")
    recorder = Recorder(conn)
    obs = storage.ensure_pool(recorder, moved)
    assert recorder.calls.count("create") == 1
    assert "destroy" not in recorder.calls
    assert obs.state == "running" and obs.config is not None and obs.config.target_path == moved.target_path


def test_ensure_pool_makes_a_transient_pool_persistent(conn: typing.Any) -> None:
    config = dir_pool()
    conn.storagePoolCreateXML(config.to_string(), 0)
    try:
        assert storage.observe_pool(conn, config.name).persistent is False  # type: ignore[union-attr]
        obs = storage.ensure_pool(conn, config)
        assert obs.persistent and obs.autostart and obs.state == "running"
    finally:
        cleanup(conn, config.name)


@pytest.mark.parametrize(
    "config",
    [
        PoolConfig(
            name="netfs",
            type="netfs",
            target_path="/vdc-test/netfs",
            source=PoolSourceConfig(hosts=(PoolHostConfig("nfs.example.com"),), dir="/export/x", format="nfs"),
        ),
        PoolConfig(
            name="logical",
            type="logical",
            target_path="/dev/vdc-test",
            source=PoolSourceConfig(name="vdc-test", devices=("/dev/vdz",), format="lvm2"),
        ),
        PoolConfig(
            name="rbd",
            type="rbd",
            source=PoolSourceConfig(
                name="vdc",
                hosts=(PoolHostConfig("mon1", 6789),),
                auth=PoolAuthConfig("ceph", "libvirt", secret_usage="client.libvirt"),
            ),
        ),
        PoolConfig(
            name="iscsi",
            type="iscsi",
            target_path="/dev/disk/by-path",
            source=PoolSourceConfig(
                hosts=(PoolHostConfig("192.0.2.10", 3260),), devices=("iqn.2024-01.com.example:t",)
            ),
        ),
    ],
    ids=lambda c: c.type,
)
def test_ensure_pool_realises_every_pool_type_in_the_test_driver(conn: typing.Any, config: PoolConfig) -> None:
    config = dataclasses.replace(config, name=unique(f"vdc-t-{config.type}"))
    try:
        obs = storage.ensure_pool(conn, config)
        assert obs.state == "running"
        assert obs.config == dataclasses.replace(config, uuid=obs.uuid)
        assert storage.ensure_pool(conn, config) == obs
    finally:
        cleanup(conn, config.name)


def test_remove_pool_stops_and_undefines_and_says_when_it_was_gone(conn: typing.Any, pool: PoolConfig) -> None:
    assert storage.remove_pool(conn, pool.name) is True
    assert storage.observe_pool(conn, pool.name) is None
    assert storage.remove_pool(conn, pool.name) is False


def test_remove_pool_of_a_stopped_pool(conn: typing.Any, pool: PoolConfig) -> None:
    conn.storagePoolLookupByName(pool.name).destroy()
    assert storage.remove_pool(conn, pool.name) is True
    assert storage.observe_pool(conn, pool.name) is None


def test_remove_pool_never_deletes_the_pools_data(conn: typing.Any, pool: PoolConfig) -> None:
    recorder = Recorder(conn)
    storage.remove_pool(recorder, pool.name)
    assert "delete" not in recorder.calls
    assert recorder.calls == ["isActive", "destroy", "isPersistent", "undefine"]


def test_observe_pool_of_a_missing_pool_is_none(conn: typing.Any) -> None:
    assert storage.observe_pool(conn, unique("vdc-missing")) is None


# --- volumes -------------------------------------------------------------------------------------


def test_create_and_list_volumes(conn: typing.Any, pool: PoolConfig) -> None:
    path = pool.target_path
    base = storage.create_volume(conn, pool.name, VolumeConfig(name="base.qcow2", capacity_bytes=GiB, format="qcow2"))
    assert base == storage.VolumeObservation(
        name="base.qcow2", path=f"{path}/base.qcow2", capacity_bytes=GiB, allocation_bytes=0, format="qcow2"
    )
    overlay = storage.create_volume(
        conn,
        pool.name,
        VolumeConfig(
            name="vm-root.qcow2",
            capacity_bytes=2 * GiB,
            format="qcow2",
            backing=BackingStoreConfig(path=base.path, format="qcow2"),
        ),
    )
    assert overlay.backing_path == base.path and overlay.backing_format == "qcow2"
    raw = storage.create_volume(
        conn, pool.name, VolumeConfig(name="data.img", capacity_bytes=GiB, allocation_bytes=GiB)
    )
    assert raw.format == "raw" and raw.allocation_bytes == GiB
    seed = storage.create_volume(conn, pool.name, VolumeConfig(name="seed.iso", capacity_bytes=4096, format="iso"))
    assert seed.format == "iso"
    assert storage.list_volumes(conn, pool.name) == [base, raw, seed, overlay]  # by name
    assert storage.list_volumes(conn, pool.name, refresh=True) == [base, raw, seed, overlay]
    assert storage.volume_path(conn, pool.name, "data.img") == f"{path}/data.img"


def test_create_volume_returns_an_existing_volume_as_it_is(conn: typing.Any, pool: PoolConfig) -> None:
    first = storage.create_volume(conn, pool.name, VolumeConfig(name="disk.qcow2", capacity_bytes=GiB, format="qcow2"))
    recorder_pool = Recorder(conn)
    again = storage.create_volume(
        recorder_pool, pool.name, VolumeConfig(name="disk.qcow2", capacity_bytes=5 * GiB, format="qcow2")
    )
    assert again == first
    assert "createXML" not in recorder_pool.calls
    assert len(storage.list_volumes(conn, pool.name)) == 1


def test_volumes_of_formats_we_do_not_model_are_listed_without_a_format(conn: typing.Any, pool: PoolConfig) -> None:
    lv = conn.storagePoolLookupByName(pool.name)
    lv.createXML(
        "<volume><name>appliance.vmdk</name><capacity unit='bytes'>1048576</capacity>"
        "<allocation>0</allocation><target><format type='vmdk'/></target></volume>",
        0,
    )
    (vmdk,) = storage.list_volumes(conn, pool.name)
    assert vmdk == storage.VolumeObservation(
        name="appliance.vmdk",
        path=f"{pool.target_path}/appliance.vmdk",
        capacity_bytes=1048576,
        allocation_bytes=0,
        format=None,
    )


def test_delete_volume(conn: typing.Any, pool: PoolConfig) -> None:
    storage.create_volume(conn, pool.name, VolumeConfig(name="gone.img", capacity_bytes=GiB))
    assert storage.delete_volume(conn, pool.name, "gone.img") is True
    assert storage.list_volumes(conn, pool.name) == []
    assert storage.delete_volume(conn, pool.name, "gone.img") is False


def test_missing_pools_and_volumes_are_not_found(conn: typing.Any, pool: PoolConfig) -> None:
    missing = unique("vdc-missing")
    for call in (
        lambda: storage.list_volumes(conn, missing),
        lambda: storage.create_volume(conn, missing, VolumeConfig(name="v", capacity_bytes=1)),
        lambda: storage.delete_volume(conn, missing, "v"),
        lambda: storage.resize_volume(conn, missing, "v", GiB),
        lambda: storage.volume_path(conn, missing, "v"),
        lambda: storage.upload_volume(conn, missing, "v", b"x"),
        lambda: storage.volume_path(conn, pool.name, "no-such-volume"),
        lambda: storage.resize_volume(conn, pool.name, "no-such-volume", GiB),
    ):
        with pytest.raises(NotFound):
            call()


def test_volumes_of_a_stopped_pool_cannot_be_listed(conn: typing.Any, pool: PoolConfig) -> None:
    conn.storagePoolLookupByName(pool.name).destroy()
    with pytest.raises(InvalidState):
        storage.list_volumes(conn, pool.name)


def test_resize_refuses_to_shrink_and_leaves_an_equal_size_alone(conn: typing.Any, pool: PoolConfig) -> None:
    vol = storage.create_volume(conn, pool.name, VolumeConfig(name="d.qcow2", capacity_bytes=2 * GiB, format="qcow2"))
    with pytest.raises(ShrinkRefused, match="would lose data"):
        storage.resize_volume(conn, pool.name, "d.qcow2", GiB)
    assert storage.resize_volume(conn, pool.name, "d.qcow2", 2 * GiB) == vol


def test_resize_grows_as_far_as_the_test_driver_goes(conn: typing.Any, pool: PoolConfig) -> None:
    storage.create_volume(conn, pool.name, VolumeConfig(name="g.img", capacity_bytes=GiB))
    try:
        grown = storage.resize_volume(conn, pool.name, "g.img", 2 * GiB)
    except LibvirtFailure as failure:
        assert failure.code == libvirt.VIR_ERR_NO_SUPPORT, failure
        pytest.skip("the test driver cannot resize volumes: covered by tests/e2e/test_storage_rig.py")
    assert grown.capacity_bytes == 2 * GiB


def test_failed_upload_leaves_no_partial_volume(conn: typing.Any, pool: PoolConfig) -> None:
    data = b"CD001" * 100
    try:
        obs = storage.upload_volume(conn, pool.name, "seed.iso", data, format="iso")
    except LibvirtFailure as failure:
        # The test driver has no virStorageVolUpload: the volume made for the upload is gone again.
        assert failure.code == libvirt.VIR_ERR_NO_SUPPORT, failure
        assert storage.list_volumes(conn, pool.name) == []
        return
    assert obs.capacity_bytes == len(data)


def test_upload_of_nothing_is_refused(conn: typing.Any, pool: PoolConfig) -> None:
    with pytest.raises(ValueError, match="empty"):
        storage.upload_volume(conn, pool.name, "empty.iso", b"")


def test_storage_io_errors_on_a_live_connection_are_not_host_loss(conn: typing.Any) -> None:
    exc = libvirt.libvirtError("cannot open directory '/gone': No such file or directory")
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE, str(exc), 2, None, None, None, 0, 0)
    with pytest.raises(StorageFailure, match="cannot open directory") as raised, storage._translated(conn):
        raise exc
    assert raised.value.code == libvirt.VIR_ERR_SYSTEM_ERROR
