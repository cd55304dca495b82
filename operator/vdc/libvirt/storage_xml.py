"""libvirt storage pool and volume XML: one small frozen dataclass per element, to and from XML.

Like :mod:`vdc.libvirt.domain_xml`, the classes here only translate between Python objects and
libvirt's XML (``<pool>`` and ``<volume>``): no policy, no naming, no I/O, no libvirt calls. XML is
built with :mod:`xml.etree.ElementTree`'s element API, never by formatting strings, and every text or
attribute value is checked to be representable in XML 1.0.

libvirt pools and volumes have no ``<metadata>``: which pools and volumes are ours is decided by
their names, elsewhere.

Parsing reads back every field :meth:`to_xml` writes and ignores what we do not model, so the XML
libvirt returns (``virStoragePoolGetXMLDesc``: ``<capacity>``/``<allocation>``/``<available>``, an
empty ``<source>`` for dir pools, ``<permissions>``; ``virStorageVolGetXMLDesc``: ``type``, ``<key>``,
``<physical>``, ``<permissions>``, ``<timestamps>``, ``<compat>``, ``<clusterSize>``, ``<features>``)
parses. Sizes are read in any of libvirt's units (``unit='G'``, ``'GiB'``, ``'KB'`` …; bytes when
there is none).

What libvirt fills in or changes, so that a config read back equals the one written except for it:

* a pool or volume defined without ``uuid`` gets one (pools);
* a volume's ``target_path`` is ``<pool target>/<name>`` in a dir pool, whatever was written;
* a volume's ``allocation_bytes`` as read back from a real host is the space the file really takes
  (a sparse raw file reports 0, a fresh qcow2 a few hundred KiB); the test driver returns it as written;
* the QEMU driver probes the format of existing files when a pool is refreshed: a volume created as
  ``iso`` is reported ``raw`` until it holds an ISO 9660 image.

Values libvirt would silently drop or default are refused at construction instead (a source field the
pool type does not use, a netfs or logical pool without a source format, a target path on an rbd pool,
a backing store on a raw volume), so that a round trip through libvirt is exact.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal, Self, get_args

from vdc.libvirt.xml_common import XmlError, XmlHelpers

PoolType = Literal["dir", "netfs", "logical", "rbd", "iscsi"]
SourceFormat = Literal["auto", "nfs", "glusterfs", "cifs", "lvm2"]
"""``<source><format type=…/>``: netfs (auto, nfs, glusterfs, cifs) and logical (lvm2) pools."""
AuthType = Literal["ceph", "chap"]
"""``<auth type=…>``: ceph for rbd pools, chap for iscsi pools."""
VolumeFormat = Literal["raw", "qcow2", "iso"]
BackingFormat = Literal["raw", "qcow2"]

_POOL_TYPES: tuple[PoolType, ...] = get_args(PoolType)
_SOURCE_FORMATS: tuple[SourceFormat, ...] = get_args(SourceFormat)
_AUTH_TYPES: tuple[AuthType, ...] = get_args(AuthType)
_VOLUME_FORMATS: tuple[VolumeFormat, ...] = get_args(VolumeFormat)
_BACKING_FORMATS: tuple[BackingFormat, ...] = get_args(BackingFormat)

# libvirt's virScaleInteger: suffixes are case-insensitive; "k", "KiB" are powers of 1024, "KB" of 1000.
_SIZE_UNITS = {"b": 1, "bytes": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    _SIZE_UNITS[_letter] = _SIZE_UNITS[f"{_letter}ib"] = 1024**_power
    _SIZE_UNITS[f"{_letter}b"] = 1000**_power

# Which <source> fields each pool type uses (and libvirt writes back); the others must stay empty.
_SOURCE_FIELDS: dict[PoolType, frozenset[str]] = {
    "dir": frozenset(),
    "netfs": frozenset({"hosts", "dir", "format"}),
    "logical": frozenset({"name", "devices", "format"}),
    "rbd": frozenset({"hosts", "name", "auth"}),
    "iscsi": frozenset({"hosts", "devices", "auth"}),
}
_SOURCE_FORMATS_BY_TYPE: dict[PoolType, tuple[SourceFormat, ...]] = {
    "netfs": ("auto", "nfs", "glusterfs", "cifs"),
    "logical": ("lvm2",),
}
_AUTH_BY_TYPE: dict[PoolType, AuthType] = {"rbd": "ceph", "iscsi": "chap"}


class StorageXmlError(XmlError):
    """The XML is not a pool or volume we can read, or a config cannot be expressed in libvirt XML."""


# --- helpers -------------------------------------------------------------------------------------


_xml = XmlHelpers(StorageXmlError)


def _bytes(el: ET.Element) -> int:
    """A libvirt scaled integer (``<capacity unit='GiB'>10</capacity>``) in bytes."""
    unit = (el.get("unit") or "bytes").lower()
    if unit not in _SIZE_UNITS:
        raise StorageXmlError(f"<{el.tag}>: unknown unit {el.get('unit')!r}")
    return _xml.integer(el.text, f"<{el.tag}>") * _SIZE_UNITS[unit]


def _check_name(value: str, what: str) -> None:
    if not value or "/" in value:
        raise StorageXmlError(f"{what} {value!r} must be non-empty and contain no '/'")


# --- pools ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolHostConfig:
    """``<host name=… port=…/>``: an NFS server, a Ceph monitor or an iSCSI portal."""

    name: str
    port: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise StorageXmlError("source host name must be non-empty")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise StorageXmlError(f"source host port must be 1-65535, got {self.port}")

    def to_xml(self) -> ET.Element:
        return _xml.new("host", {"name": self.name, "port": self.port})

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "host")
        port = el.get("port")
        return cls(name=_xml.attr(el, "name"), port=None if port is None else _xml.integer(port, "source host port"))


@dataclass(frozen=True)
class PoolAuthConfig:
    """``<auth type=… username=…><secret usage=…/></auth>``: the libvirt secret holding the key
    (ceph) or CHAP password (chap), named by its usage or by its UUID (exactly one)."""

    type: AuthType
    username: str
    secret_usage: str | None = None
    secret_uuid: str | None = None

    def __post_init__(self) -> None:
        if (self.secret_usage is None) == (self.secret_uuid is None):
            raise StorageXmlError("auth needs exactly one of secret_usage and secret_uuid")
        _xml.check_uuid(self.secret_uuid, "auth secret uuid")

    def to_xml(self) -> ET.Element:
        el = _xml.new("auth", {"type": self.type, "username": self.username})
        _xml.sub(el, "secret", {"usage": self.secret_usage, "uuid": self.secret_uuid})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "auth")
        secret = _xml.child(el, "secret")
        return cls(
            type=_xml.pick(el.get("type"), _AUTH_TYPES, "auth type"),
            username=_xml.attr(el, "username"),
            secret_usage=secret.get("usage"),
            secret_uuid=secret.get("uuid"),
        )


@dataclass(frozen=True)
class PoolSourceConfig:
    """``<source>``: where a pool's storage comes from. Empty for dir pools.

    ``hosts``: the NFS server (netfs), Ceph monitors (rbd) or iSCSI portal (iscsi); ``dir``: the
    export (netfs); ``name``: the volume group (logical) or Ceph pool (rbd); ``devices``: physical
    volumes (logical) or the target IQN (iscsi); ``format``: netfs protocol or ``lvm2``.
    """

    hosts: tuple[PoolHostConfig, ...] = ()
    dir: str | None = None
    name: str | None = None
    devices: tuple[str, ...] = ()
    format: SourceFormat | None = None
    auth: PoolAuthConfig | None = None

    @property
    def is_empty(self) -> bool:
        return self == PoolSourceConfig()

    def used_fields(self) -> set[str]:
        """The fields given a value (not None, not empty)."""
        return {
            name
            for name, value in (
                ("hosts", self.hosts),
                ("dir", self.dir),
                ("name", self.name),
                ("devices", self.devices),
                ("format", self.format),
                ("auth", self.auth),
            )
            if value is not None and value != ()
        }

    def to_xml(self) -> ET.Element:
        el = _xml.new("source")
        for host in self.hosts:
            el.append(host.to_xml())
        if self.dir is not None:
            _xml.sub(el, "dir", {"path": self.dir})
        for device in self.devices:
            _xml.sub(el, "device", {"path": device})
        if self.name is not None:
            _xml.sub(el, "name", text=self.name)
        if self.format is not None:
            _xml.sub(el, "format", {"type": self.format})
        if self.auth is not None:
            el.append(self.auth.to_xml())
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "source")
        source_dir = el.find("dir")
        source_format = el.find("format")
        auth = el.find("auth")
        return cls(
            hosts=tuple(PoolHostConfig.from_xml(h) for h in el.findall("host")),
            dir=None if source_dir is None else _xml.attr(source_dir, "path"),
            name=_xml.text(el.find("name")),
            devices=tuple(_xml.attr(d, "path") for d in el.findall("device")),
            format=None
            if source_format is None
            else _xml.pick(source_format.get("type"), _SOURCE_FORMATS, "source format"),
            auth=None if auth is None else PoolAuthConfig.from_xml(auth),
        )


@dataclass(frozen=True)
class PoolConfig:
    """``<pool type=…>``: a whole storage pool definition.

    ``target_path`` is the directory (dir; the mount point of netfs) or the device directory
    (logical: ``/dev/<vg>``; iscsi: ``/dev/disk/by-path``); rbd pools have none. What each type needs:

    * dir: ``target_path``; no source;
    * netfs: ``target_path``, one source host, source ``dir`` and ``format``;
    * logical: ``target_path``, source ``name`` (the VG), ``format`` lvm2, optional ``devices`` (PVs);
    * rbd: source ``name`` (the Ceph pool), at least one host (monitor), optional ceph ``auth``;
    * iscsi: ``target_path``, one source host (portal), one device (the target IQN), optional chap ``auth``.
    """

    name: str
    type: PoolType
    uuid: str | None = None
    target_path: str | None = None
    source: PoolSourceConfig = PoolSourceConfig()

    def __post_init__(self) -> None:
        _check_name(self.name, "pool name")
        _xml.check_uuid(self.uuid, "pool uuid")
        if self.type not in _POOL_TYPES:
            raise StorageXmlError(f"pool type {self.type!r} is not one of {', '.join(_POOL_TYPES)}")
        if (self.type == "rbd") != (self.target_path is None):
            raise StorageXmlError(
                "an rbd pool has no target path" if self.type == "rbd" else f"a {self.type} pool needs a target path"
            )
        src = self.source
        unused = src.used_fields() - _SOURCE_FIELDS[self.type]
        if unused:
            raise StorageXmlError(f"a {self.type} pool does not use source {', '.join(sorted(unused))}")
        formats = _SOURCE_FORMATS_BY_TYPE.get(self.type)
        if formats is not None and src.format not in formats:
            raise StorageXmlError(
                f"a {self.type} pool needs a source format, one of {', '.join(formats)} (got {src.format!r})"
            )
        if src.auth is not None and src.auth.type != _AUTH_BY_TYPE[self.type]:
            raise StorageXmlError(f"a {self.type} pool takes auth type {_AUTH_BY_TYPE[self.type]}, not {src.auth.type}")
        if self.type in ("netfs", "iscsi") and len(src.hosts) != 1:
            raise StorageXmlError(f"a {self.type} pool needs exactly one source host, got {len(src.hosts)}")
        if self.type == "netfs" and src.dir is None:
            raise StorageXmlError("a netfs pool needs a source dir (the export)")
        if self.type in ("logical", "rbd") and not src.name:
            raise StorageXmlError(f"a {self.type} pool needs a source name")
        if self.type == "rbd" and not src.hosts:
            raise StorageXmlError("an rbd pool needs at least one source host (Ceph monitor)")
        if self.type == "iscsi" and len(src.devices) != 1:
            raise StorageXmlError(f"an iscsi pool needs exactly one source device (the target IQN), got {src.devices}")

    def to_xml(self) -> ET.Element:
        root = _xml.new("pool", {"type": self.type})
        _xml.sub(root, "name", text=self.name)
        if self.uuid is not None:
            _xml.sub(root, "uuid", text=self.uuid)
        if not self.source.is_empty:
            root.append(self.source.to_xml())
        if self.target_path is not None:
            _xml.sub(_xml.sub(root, "target"), "path", text=self.target_path)
        return root

    def to_string(self) -> str:
        """The pool XML, indented two spaces, without a trailing newline."""
        return _xml.to_string(self.to_xml())

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "pool")
        source = el.find("source")
        uuid = _xml.text(el.find("uuid"))
        return cls(
            name=_xml.text(_xml.child(el, "name")) or "",
            type=_xml.pick(el.get("type"), _POOL_TYPES, "pool type"),
            uuid=None if uuid is None else uuid.strip(),
            target_path=_xml.text(el.find("target/path")),
            source=PoolSourceConfig() if source is None else PoolSourceConfig.from_xml(source),
        )

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls.from_xml(_xml.parse(text))


# --- volumes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackingStoreConfig:
    """``<backingStore>``: the image a qcow2 overlay is based on (copy on write)."""

    path: str
    format: BackingFormat

    def __post_init__(self) -> None:
        if not self.path:
            raise StorageXmlError("backing store path must be non-empty")

    def to_xml(self) -> ET.Element:
        el = _xml.new("backingStore")
        _xml.sub(el, "path", text=self.path)
        _xml.sub(el, "format", {"type": self.format})
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "backingStore")
        return cls(
            path=_xml.text(_xml.child(el, "path")) or "",
            format=_xml.pick(_xml.child(el, "format").get("type"), _BACKING_FORMATS, "backing store format"),
        )


@dataclass(frozen=True)
class VolumeConfig:
    """``<volume>`` in a dir pool: a file of ``format`` with ``capacity_bytes`` of virtual size.

    ``allocation_bytes`` is what to allocate up front (0: sparse; equal to the capacity: preallocated
    raw). ``backing`` makes a qcow2 overlay on a base image. ``target_path`` is read back only: libvirt
    places a dir pool's volumes at ``<pool target>/<name>`` whatever is written.
    """

    name: str
    capacity_bytes: int
    format: VolumeFormat = "raw"
    allocation_bytes: int = 0
    backing: BackingStoreConfig | None = None
    target_path: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "volume name")
        if self.capacity_bytes < 0:
            raise StorageXmlError(f"volume capacity must not be negative, got {self.capacity_bytes}")
        if self.allocation_bytes < 0:
            raise StorageXmlError(f"volume allocation must not be negative, got {self.allocation_bytes}")
        if self.format not in _VOLUME_FORMATS:
            raise StorageXmlError(f"volume format {self.format!r} is not one of {', '.join(_VOLUME_FORMATS)}")
        if self.backing is not None and self.format != "qcow2":
            raise StorageXmlError(f"only a qcow2 volume can have a backing store, not {self.format}")

    def to_xml(self) -> ET.Element:
        root = _xml.new("volume")
        _xml.sub(root, "name", text=self.name)
        _xml.sub(root, "capacity", {"unit": "bytes"}, self.capacity_bytes)
        _xml.sub(root, "allocation", {"unit": "bytes"}, self.allocation_bytes)
        target = _xml.sub(root, "target")
        if self.target_path is not None:
            _xml.sub(target, "path", text=self.target_path)
        _xml.sub(target, "format", {"type": self.format})
        if self.backing is not None:
            root.append(self.backing.to_xml())
        return root

    def to_string(self) -> str:
        """The volume XML, indented two spaces, without a trailing newline."""
        return _xml.to_string(self.to_xml())

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        """Raises :class:`StorageXmlError` for formats we do not model (vmdk, dir …)."""
        _xml.expect_tag(el, "volume")
        capacity = _bytes(_xml.child(el, "capacity"))
        allocation = el.find("allocation")
        target = el.find("target")
        volume_format = None if target is None else target.find("format")
        backing = el.find("backingStore")
        return cls(
            name=_xml.text(_xml.child(el, "name")) or "",
            capacity_bytes=capacity,
            format="raw"
            if volume_format is None
            else _xml.pick(volume_format.get("type"), _VOLUME_FORMATS, "volume format"),
            # libvirt's default allocation is the capacity (fully allocated).
            allocation_bytes=capacity if allocation is None else _bytes(allocation),
            # libvirt writes an empty <backingStore/> for an image without one.
            backing=None if backing is None or backing.find("path") is None else BackingStoreConfig.from_xml(backing),
            target_path=None if target is None else _xml.text(target.find("path")),
        )

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls.from_xml(_xml.parse(text))


__all__ = [
    "AuthType",
    "BackingFormat",
    "BackingStoreConfig",
    "PoolAuthConfig",
    "PoolConfig",
    "PoolHostConfig",
    "PoolSourceConfig",
    "PoolType",
    "SourceFormat",
    "StorageXmlError",
    "VolumeConfig",
    "VolumeFormat",
]
