"""Storage pool and volume operations on a live connection (blocking: call them through HostConnection.call).

Pools are found by name (which names are ours is decided by the caller: libvirt pools and volumes
carry no metadata). Nothing here ever deletes a pool's data: :func:`remove_pool` stops and undefines
the pool and leaves its directory, device or export alone (``virStoragePoolDelete`` is never called).

Errors come out as :mod:`vdc.libvirt.errors` exceptions; a pool or volume that does not exist is
:class:`~vdc.libvirt.errors.NotFound`. libvirt reports failed storage I/O (a missing directory, a
permission denied, a full disk) as a "system error", which :func:`~vdc.libvirt.errors.translate`
takes for a lost connection; here it becomes a :class:`StorageFailure` when the connection is fine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import libvirt

from vdc.libvirt.errors import (
    ConfigRejected,
    InvalidState,
    LibvirtFailure,
    NotFound,
    translated_on,
)
from vdc.libvirt.storage_xml import (
    BackingFormat,
    PoolConfig,
    PoolType,
    StorageXmlError,
    VolumeConfig,
    VolumeFormat,
)

PoolState = Literal["running", "inactive", "building", "degraded", "inaccessible"]

UPLOAD_CHUNK = 256 * 1024
"""Bytes per stream message when uploading to a volume."""

Progress = Callable[[int], None]
"""Called with the length of each chunk moved."""

_POOL_STATES: dict[int, PoolState] = {
    libvirt.VIR_STORAGE_POOL_INACTIVE: "inactive",
    libvirt.VIR_STORAGE_POOL_BUILDING: "building",
    libvirt.VIR_STORAGE_POOL_RUNNING: "running",
    libvirt.VIR_STORAGE_POOL_DEGRADED: "degraded",
    libvirt.VIR_STORAGE_POOL_INACCESSIBLE: "inaccessible",
}
# Pool types whose build step only creates the target directory (harmless when it exists); a logical
# pool is built (its volume group created on the devices) only when it cannot start otherwise, and
# never over devices that already carry data; rbd and iscsi pools have nothing to build.
_BUILD_BEFORE_START: frozenset[PoolType] = frozenset({"dir", "netfs"})


class StorageFailure(LibvirtFailure):
    """A storage operation failed on a host that is otherwise fine (I/O error, missing directory …)."""


class ShrinkRefused(LibvirtFailure):
    """Shrinking a volume would cut off data: refused (volumes only grow)."""


@dataclass(frozen=True)
class PoolObservation:
    """A storage pool as libvirt reports it. Sizes are as of the pool's last refresh."""

    name: str
    uuid: str
    state: PoolState
    autostart: bool
    persistent: bool
    capacity_bytes: int
    allocation_bytes: int
    available_bytes: int
    config: PoolConfig | None = None
    """The persistent definition; None when it is not one we can read (a pool type we do not model)."""


@dataclass(frozen=True)
class VolumeObservation:
    """A volume as libvirt reports it. ``capacity_bytes`` is the virtual size the guest sees,
    ``allocation_bytes`` the space taken on the host. ``format`` is None for formats we do not model
    (vmdk, dir …)."""

    name: str
    path: str
    capacity_bytes: int
    allocation_bytes: int
    format: VolumeFormat | None
    backing_path: str | None = None
    backing_format: BackingFormat | None = None


# --- helpers -------------------------------------------------------------------------------------


def _translated(conn: libvirt.virConnect) -> AbstractContextManager[None]:
    """:func:`translated`, with libvirt's "system error" from storage I/O kept apart from a lost host."""
    return translated_on(conn, StorageFailure)


def _pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    with _translated(conn):
        return conn.storagePoolLookupByName(name)


def _pool_or_none(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    try:
        return _pool(conn, name)
    except NotFound:
        return None


def _volume_or_none(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        with _translated(conn):
            return pool.storageVolLookupByName(name)
    except NotFound:
        return None


def _volume(conn: libvirt.virConnect, pool: str, name: str) -> libvirt.virStorageVol:
    p = _pool(conn, pool)
    with _translated(conn):
        return p.storageVolLookupByName(name)


def _parse_pool(xml: str) -> PoolConfig | None:
    try:
        return PoolConfig.from_string(xml)
    except StorageXmlError:
        return None  # not something we can read back: treated as differing, so it is redefined


def _persistent_definition(pool: libvirt.virStoragePool) -> PoolConfig | None:
    """The definition the next start uses (the test driver has no separate inactive XML)."""
    try:
        xml = pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        xml = pool.XMLDesc(0)
    return _parse_pool(xml)


def _observe_pool(conn: libvirt.virConnect, pool: libvirt.virStoragePool) -> PoolObservation:
    with _translated(conn):
        state, capacity, allocation, available = pool.info()
        return PoolObservation(
            name=pool.name(),
            uuid=pool.UUIDString(),
            state=_POOL_STATES.get(state, "inaccessible"),
            autostart=bool(pool.autostart()),
            persistent=bool(pool.isPersistent()),
            capacity_bytes=capacity,
            allocation_bytes=allocation,
            available_bytes=available,
            config=_persistent_definition(pool),
        )


def _observe_volume(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> VolumeObservation:
    with _translated(conn):
        xml = vol.XMLDesc(0)
        try:
            config = VolumeConfig.from_string(xml)
        except StorageXmlError:
            _type, capacity, allocation = vol.info()
            return VolumeObservation(
                name=vol.name(), path=vol.path(), capacity_bytes=capacity, allocation_bytes=allocation, format=None
            )
        return VolumeObservation(
            name=config.name,
            path=config.target_path or vol.path(),
            capacity_bytes=config.capacity_bytes,
            allocation_bytes=config.allocation_bytes,
            format=config.format,
            backing_path=None if config.backing is None else config.backing.path,
            backing_format=None if config.backing is None else config.backing.format,
        )


def _start(conn: libvirt.virConnect, pool: libvirt.virStoragePool, pool_type: PoolType) -> None:
    """Build the pool if its type needs it, then start it (a pool started meanwhile is fine)."""
    with _translated(conn):
        try:
            if pool_type in _BUILD_BEFORE_START:
                pool.build(libvirt.VIR_STORAGE_POOL_BUILD_NEW)
            try:
                pool.create(0)
            except libvirt.libvirtError:
                if pool_type != "logical":
                    raise
                # The volume group does not exist yet: create it, refusing devices that hold data.
                pool.build(libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
                pool.create(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and pool.isActive():
                return
            raise


# --- pools ---------------------------------------------------------------------------------------


def observe_pool(conn: libvirt.virConnect, name: str) -> PoolObservation | None:
    """The pool with this name, or None when the host has none."""
    pool = _pool_or_none(conn, name)
    if pool is None:
        return None
    try:
        return _observe_pool(conn, pool)
    except NotFound:
        return None  # undefined meanwhile


def ensure_pool(conn: libvirt.virConnect, config: PoolConfig) -> PoolObservation:
    """Make the pool exist as ``config`` says, running, autostarted and refreshed; return it.

    A missing pool is defined. A pool whose definition differs is stopped when running, redefined
    (keeping its UUID when ``config`` has none) and started again, so the new definition applies at
    once: for a netfs pool the stop is an unmount, which fails while guests use its files. A transient
    pool is made persistent. Stopping a dir pool does not disturb guests using its volumes.
    dir and netfs pools are built (their directory created) before each start; a logical pool's volume
    group is created only when the pool cannot start without it and its devices hold no data. A pool
    whose refresh fails (libvirt then stops it: its directory was removed behind our back) is built
    and started once more.
    """
    pool = _pool_or_none(conn, config.name)
    if pool is None:
        with _translated(conn):
            pool = conn.storagePoolDefineXML(config.to_string(), 0)
    else:
        with _translated(conn):
            existing_uuid = pool.UUIDString()
        if config.uuid is not None and config.uuid != existing_uuid:
            # libvirt would refuse the definition; say so before stopping anything.
            raise ConfigRejected(f"pool {config.name} exists with uuid {existing_uuid}, not {config.uuid}")
        wanted = dataclasses.replace(config, uuid=existing_uuid)
        with _translated(conn):
            redefine = _persistent_definition(pool) != wanted or not pool.isPersistent()
            # Stopped first, so that the new definition is the one it starts with (rather than one
            # libvirt keeps aside until the pool next stops).
            if pool.isActive() and (_parse_pool(pool.XMLDesc(0)) != wanted or (redefine and pool.isPersistent())):
                pool.destroy()
            if redefine:
                pool = conn.storagePoolDefineXML(wanted.to_string(), 0)
    for attempt in range(2):
        with _translated(conn):
            active = bool(pool.isActive())
        if not active:
            _start(conn, pool, config.type)
        with _translated(conn):
            if not pool.autostart():
                pool.setAutostart(1)
        try:
            with _translated(conn):
                pool.refresh(0)
            break
        except LibvirtFailure:
            with _translated(conn):
                stopped = not pool.isActive()
            if attempt or not stopped:
                raise
    return _observe_pool(conn, pool)


def remove_pool(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine the pool, leaving its data; False when it was already gone."""
    pool = _pool_or_none(conn, name)
    if pool is None:
        return False
    try:
        with _translated(conn):
            if pool.isActive():
                pool.destroy()
            if pool.isPersistent():
                pool.undefine()
    except NotFound:
        return False
    except InvalidState:
        # Stopped meanwhile (a transient pool is gone once stopped).
        if _pool_or_none(conn, name) is not None:
            raise
    return True


# --- volumes -------------------------------------------------------------------------------------


def list_volumes(conn: libvirt.virConnect, pool: str, *, refresh: bool = False) -> list[VolumeObservation]:
    """The pool's volumes, by name (one bulk listing). ``refresh`` rescans the pool first, so files
    placed there behind libvirt's back show up. The pool must be running (else :class:`InvalidState`)."""
    p = _pool(conn, pool)
    with _translated(conn):
        if refresh:
            p.refresh(0)
        vols = p.listAllVolumes(0)
    found = []
    for vol in vols:
        try:
            found.append(_observe_volume(conn, vol))
        except NotFound:
            continue  # deleted meanwhile
    return sorted(found, key=lambda v: v.name)


def create_volume(conn: libvirt.virConnect, pool: str, config: VolumeConfig) -> VolumeObservation:
    """Create the volume; an existing volume of the same name is returned as it is (even if it differs)."""
    p = _pool(conn, pool)
    vol = _volume_or_none(conn, p, config.name)
    if vol is None:
        try:
            with _translated(conn):
                vol = p.createXML(config.to_string(), 0)
        except LibvirtFailure:
            # Created meanwhile, or the file is there but the pool has not been refreshed since.
            with _translated(conn):
                p.refresh(0)
            vol = _volume_or_none(conn, p, config.name)
            if vol is None:
                raise
    return _observe_volume(conn, vol)


def delete_volume(conn: libvirt.virConnect, pool: str, name: str) -> bool:
    """Delete the volume and its data; False when it was already gone (the pool must exist)."""
    p = _pool(conn, pool)
    vol = _volume_or_none(conn, p, name)
    if vol is None:
        return False
    try:
        with _translated(conn):
            vol.delete(0)
    except NotFound:
        return False
    return True


def resize_volume(conn: libvirt.virConnect, pool: str, name: str, capacity_bytes: int) -> VolumeObservation:
    """Grow the volume's capacity to ``capacity_bytes`` (no change when it is that size already).

    Shrinking is refused with :class:`ShrinkRefused` before libvirt is asked: it would cut off data.
    """
    vol = _volume(conn, pool, name)
    with _translated(conn):
        _type, capacity, _allocation = vol.info()
    if capacity_bytes < capacity:
        raise ShrinkRefused(
            f"volume {name} in pool {pool} has {capacity} bytes; shrinking it to {capacity_bytes} would lose data"
        )
    if capacity_bytes > capacity:
        with _translated(conn):
            vol.resize(capacity_bytes, 0)
    return _observe_volume(conn, vol)


def upload_volume(
    conn: libvirt.virConnect, pool: str, name: str, data: bytes, format: VolumeFormat = "raw"
) -> VolumeObservation:
    """Make the volume hold exactly ``data`` (e.g. a cloud-init seed ISO), through a libvirt stream.

    The volume is created with ``len(data)`` bytes of capacity; one of another size is replaced, one of
    the same size overwritten. When the upload fails the volume is deleted, so a volume of this name
    never holds a partial upload. libvirt makes ``iso`` volumes with ``qemu-img``, which rounds their
    size up to whole KiB (real ISO images are whole 2 KiB sectors); ``raw`` volumes are exact.
    """
    if not data:
        raise ValueError("nothing to upload: data is empty")
    return upload_stream(conn, pool, name, io.BytesIO(data), len(data), format)


def upload_stream(
    conn: libvirt.virConnect,
    pool: str,
    name: str,
    source: BinaryIO,
    size: int,
    format: VolumeFormat = "raw",
    progress: Progress | None = None,
) -> VolumeObservation:
    """:func:`upload_volume` from a file object (read in chunks: a large file never sits in memory).
    ``size`` bytes are read; ``progress`` is called with each chunk's length."""
    if size <= 0:
        raise ValueError("nothing to upload: size is 0")
    p = _pool(conn, pool)
    vol = _volume_or_none(conn, p, name)
    if vol is not None:
        with _translated(conn):
            if vol.info()[1] != size:
                vol.delete(0)
                vol = None
    if vol is None:
        config = VolumeConfig(name=name, capacity_bytes=size, format=format)
        with _translated(conn):
            vol = p.createXML(config.to_string(), 0)
    try:
        with _translated(conn):
            stream = conn.newStream(0)
            try:
                vol.upload(stream, 0, size, 0)
                offset = 0
                while offset < size:
                    chunk = source.read(min(UPLOAD_CHUNK, size - offset))
                    if not chunk:
                        raise StorageFailure(f"the source ended after {offset} of {size} bytes")
                    view = memoryview(chunk)
                    while view:
                        sent = stream.send(bytes(view))
                        if sent <= 0:
                            raise StorageFailure(
                                f"the stream to volume {name} in pool {pool} accepted no data ({sent})"
                            )
                        view = view[sent:]
                    offset += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                stream.finish()
            except BaseException:
                with suppress(libvirt.libvirtError):
                    stream.abort()
                raise
    except BaseException:
        with suppress(libvirt.libvirtError):
            vol.delete(0)
        raise
    return _observe_volume(conn, vol)


def upload_volume_file(
    conn: libvirt.virConnect, pool: str, name: str, path: Path, progress: Progress | None = None
) -> VolumeObservation:
    """:func:`upload_stream` of the file at ``path`` (e.g. a qcow2 base image), then a pool rescan so that
    libvirt reads the image's format from its header (a raw volume holding a qcow2 image is then
    reported as qcow2)."""
    with path.open("rb") as source:
        upload_stream(conn, pool, name, source, path.stat().st_size, "raw", progress)
    with _translated(conn):
        _pool(conn, pool).refresh(0)
    return _observe_volume(conn, _volume(conn, pool, name))


def download_pool_volume(
    conn: libvirt.virConnect, pool: str, name: str, dest: Path, progress: Progress | None = None
) -> VolumeObservation:
    """:func:`download_volume` of a pool's volume into the file ``dest``."""
    with dest.open("wb") as sink:
        return download_volume(conn, volume_path(conn, pool, name), sink, progress)


def download_volume(
    conn: libvirt.virConnect, path: str, sink: BinaryIO, progress: Progress | None = None
) -> VolumeObservation:
    """Copy the volume at ``path`` (as a domain's disk names it) into ``sink`` through a libvirt stream:
    its bytes as the host holds them (a qcow2 volume comes as qcow2). Returns what the volume is."""
    with _translated(conn):
        vol = conn.storageVolLookupByPath(path)
    observed = _observe_volume(conn, vol)
    with _translated(conn):
        stream = conn.newStream(0)
        try:
            vol.download(stream, 0, 0, 0)
            while True:
                data = stream.recv(UPLOAD_CHUNK)
                if not data:
                    break
                if not isinstance(data, bytes):
                    raise StorageFailure(f"the stream from volume {path} failed ({data})")
                sink.write(data)
                if progress is not None:
                    progress(len(data))
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            raise
    return observed


def download_host_file(
    conn: libvirt.virConnect, path: str, dest: Path, progress: Progress | None = None
) -> VolumeObservation:
    """Copy a file on the host into ``dest``: through a transient dir pool on its directory (libvirt
    reads files only as volumes), stopped again afterwards. NotFound when the file is not there."""
    directory, _, filename = path.rpartition("/")
    tag = hashlib.sha256(path.encode()).hexdigest()[:12]
    config = PoolConfig(name=f"vdc-tmp-{tag}", type="dir", target_path=directory or "/")
    with _translated(conn):
        pool = conn.storagePoolCreateXML(config.to_string(), 0)
    try:
        vol = _volume_or_none(conn, pool, filename)
        if vol is None:
            raise NotFound(f"no file {path} on the host")
        with _translated(conn):
            vol_path = str(vol.path())
        with dest.open("wb") as sink:
            return download_volume(conn, vol_path, sink, progress)
    finally:
        with suppress(libvirt.libvirtError):
            pool.destroy()


def observe_volume(
    conn: libvirt.virConnect, pool: str, name: str, *, refresh: bool = False
) -> VolumeObservation | None:
    """One volume by name, or None (``NotFound`` when the pool itself is missing). ``refresh``
    rescans the pool first, so a file placed there behind libvirt's back is found."""
    p = _pool(conn, pool)
    if refresh:
        with _translated(conn):
            p.refresh(0)
    vol = _volume_or_none(conn, p, name)
    if vol is None:
        return None
    try:
        return _observe_volume(conn, vol)
    except NotFound:
        return None  # deleted meanwhile


def volume_path(conn: libvirt.virConnect, pool: str, name: str) -> str:
    """Where the volume is on the host (what a domain's ``<disk><source file=…>`` names)."""
    vol = _volume(conn, pool, name)
    with _translated(conn):
        return str(vol.path())


__all__ = [
    "PoolObservation",
    "PoolState",
    "ShrinkRefused",
    "StorageFailure",
    "VolumeObservation",
    "create_volume",
    "delete_volume",
    "download_host_file",
    "download_pool_volume",
    "download_volume",
    "ensure_pool",
    "list_volumes",
    "observe_pool",
    "observe_volume",
    "remove_pool",
    "resize_volume",
    "upload_stream",
    "upload_volume",
    "upload_volume_file",
    "volume_path",
]


def file_mtime(conn: libvirt.virConnect, pool: str, name: str) -> str | None:
    """The modification time (libvirt's ``seconds.nanoseconds`` text) of the file ``name`` in ``pool``, read
    afresh (libvirt re-stats a volume for its XML); None when the pool or the file is not there. A file the
    pool does not list yet is looked for once more after a refresh of the pool."""
    p = _pool_or_none(conn, pool)
    if p is None:
        return None
    vol = _volume_or_none(conn, p, name)
    if vol is None:
        with _translated(conn):
            p.refresh(0)
        vol = _volume_or_none(conn, p, name)
    if vol is None:
        return None
    try:
        with _translated(conn):
            xml = vol.XMLDesc(0)
    except NotFound:
        return None
    mtime = ET.fromstring(xml).findtext("target/timestamps/mtime")
    return mtime.strip() if mtime else None
