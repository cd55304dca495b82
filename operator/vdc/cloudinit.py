"""cloud-init NoCloud seed ISOs, built and read in memory with pycdlib.

cloud-init's NoCloud datasource looks for a filesystem labelled ``cidata`` holding ``user-data``,
``meta-data`` and optionally ``network-config``. We build that filesystem as an ISO 9660 image with
Joliet and Rock Ridge (what ``genisoimage -V cidata -J -r`` makes) without shelling out, so hosts
need neither genisoimage nor xorriso.

Deterministic output: pycdlib has no way to set the timestamps it writes. It stamps the volume
descriptors, every directory record and every Rock Ridge ``TF`` entry with ``time.time()`` in the
process's local timezone, and the volume modification date is taken again while the image is
written. So after pycdlib has written the image, :func:`_normalize_timestamps` walks it (volume
descriptors, directory trees, System Use areas including continuation areas) and overwrites every
timestamp with :data:`SEED_TIMESTAMP` in UTC. The same inputs then give the same bytes, whatever
the clock or the ``TZ`` of the process, so the image's digest can tell whether a seed changed.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Mapping
from datetime import UTC, datetime

import pycdlib
import yaml

__all__ = [
    "DEFAULT_USER_DATA",
    "SEED_TIMESTAMP",
    "VOLUME_ID",
    "CloudInitError",
    "build_seed_iso",
    "read_seed_iso",
    "read_volume_id",
    "seed_meta_data",
]

VOLUME_ID = "cidata"
"""The volume label NoCloud looks for."""

DEFAULT_USER_DATA = "#cloud-config\n{}\n"
"""user-data written when the VM has none: cloud-init wants the file present and valid."""

SEED_TIMESTAMP = datetime(1980, 1, 1, tzinfo=UTC)
"""Every timestamp in a seed ISO (fixed, so that the image is reproducible)."""

USER_DATA = "user-data"
META_DATA = "meta-data"
NETWORK_CONFIG = "network-config"

# Rock Ridge / Joliet name -> ISO 9660 level 1 name (8.3, upper case) of each file we write.
_ISO_NAMES = {USER_DATA: "/USERDATA.;1", META_DATA: "/METADATA.;1", NETWORK_CONFIG: "/NETWORKC.;1"}
_REQUIRED_META = ("instance-id", "local-hostname")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_FILE_MODE = 0o100444  # regular file, read-only for everyone


class CloudInitError(ValueError):
    """The cloud-init data cannot make a seed (a spec problem, not a transient one)."""


def seed_meta_data(namespace: str, name: str, uid: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The NoCloud meta-data of a VM: ``instance-id`` is the VM's uid, ``local-hostname`` its name.

    ``extra`` (``spec.cloudInit.metaData``) is merged in and may set other keys, including
    ``local-hostname``, but not a different ``instance-id``: cloud-init runs its once-per-instance
    modules again whenever the instance id changes, so the id must stay the object's uid.
    The namespace is not part of the meta-data (as with pods, a VM's hostname is its name); it
    only makes error messages name the object.
    """
    if not uid:
        raise CloudInitError(f"VirtualMachine {namespace}/{name}: no uid for instance-id")
    if not _DNS_LABEL.match(name):
        raise CloudInitError(f"VirtualMachine {namespace}/{name}: name {name!r} is not a DNS label for local-hostname")
    if extra.get("instance-id", uid) != uid:
        raise CloudInitError(
            f"VirtualMachine {namespace}/{name}: spec.cloudInit.metaData cannot set instance-id "
            "(it is always the object's uid)"
        )
    meta = {"instance-id": uid, "local-hostname": name}
    meta.update(extra)
    meta["instance-id"] = uid
    return meta


def build_seed_iso(user_data: str | None, meta_data: Mapping[str, str], network_data: str | None) -> bytes:
    """A NoCloud seed ISO (label ``cidata``, ISO 9660 + Joliet + Rock Ridge) as bytes.

    Files: ``user-data`` (:data:`DEFAULT_USER_DATA` when ``user_data`` is None), ``meta-data``
    (``meta_data`` as YAML, keys sorted; it must hold ``instance-id`` and ``local-hostname``, see
    :func:`seed_meta_data`) and ``network-config`` only when ``network_data`` is not None.
    Text is written as UTF-8. The same arguments always give the same bytes.
    """
    missing = [key for key in _REQUIRED_META if not meta_data.get(key)]
    if missing:
        raise CloudInitError(f"meta-data needs {', '.join(missing)}")
    files: dict[str, bytes] = {
        USER_DATA: (DEFAULT_USER_DATA if user_data is None else user_data).encode("utf-8"),
        META_DATA: _meta_data_yaml(meta_data).encode("utf-8"),
    }
    if network_data is not None:
        files[NETWORK_CONFIG] = network_data.encode("utf-8")

    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        vol_ident=VOLUME_ID,
        app_ident_str="vdc-operator",
        joliet=3,
        rock_ridge="1.09",
    )
    try:
        for rr_name, content in files.items():
            iso.add_fp(
                io.BytesIO(content),
                len(content),
                iso_path=_ISO_NAMES[rr_name],
                rr_name=rr_name,
                joliet_path=f"/{rr_name}",
                file_mode=_FILE_MODE,
            )
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    image = bytearray(out.getvalue())
    _normalize_timestamps(image)
    return bytes(image)


def read_seed_iso(data: bytes) -> dict[str, bytes]:
    """The files in the root directory of an ISO image, by name.

    Names are the Rock Ridge names when the image has Rock Ridge, else the Joliet names, else the
    ISO 9660 names without their ``;1`` version and trailing dot. Raises :class:`CloudInitError`
    when ``data`` is not an ISO 9660 image.
    """
    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
    except pycdlib.pycdlibexception.PyCdlibException as e:
        raise CloudInitError(f"not an ISO 9660 image: {e}") from e
    try:
        if iso.has_rock_ridge():
            kind = "rr_path"
        elif iso.has_joliet():
            kind = "joliet_path"
        else:
            kind = "iso_path"
        names: list[str] = []
        for _path, _dirs, filenames in iso.walk(**{kind: "/"}):
            names = list(filenames)
            break
        files: dict[str, bytes] = {}
        for fname in names:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, **{kind: f"/{fname}"})
            key = fname.split(";", 1)[0].rstrip(".") if kind == "iso_path" else fname
            files[key] = buf.getvalue()
        return files
    finally:
        iso.close()


def read_volume_id(data: bytes) -> str:
    """The volume identifier of the primary volume descriptor of an ISO 9660 image."""
    pvd = data[16 * _SECTOR : 17 * _SECTOR]
    if len(pvd) < _SECTOR or pvd[0] != 1 or pvd[1:6] != b"CD001":
        raise CloudInitError("not an ISO 9660 image: no primary volume descriptor at sector 16")
    return pvd[40:72].decode("ascii", errors="replace").rstrip(" ")


def _meta_data_yaml(meta_data: Mapping[str, str]) -> str:
    # allow_unicode=False: non-ASCII is written as escapes, which PyYAML (cloud-init's parser) reads
    # back exactly; written raw, some characters (NEL, LS, PS ...) do not survive the round trip.
    text: str = yaml.safe_dump(dict(meta_data), sort_keys=True, default_flow_style=False, allow_unicode=False)
    return text


# ---------------------------------------------------------------------------------------------
# Timestamp normalisation (ECMA-119 = ISO 9660, IEEE P1281 = SUSP, IEEE P1282 = Rock Ridge).

_SECTOR = 2048
_VD_PRIMARY, _VD_SUPPLEMENTARY, _VD_TERMINATOR = 1, 2, 255
_VD_DATES = (813, 830, 864)  # creation, modification, effective (expiration stays "not set")
_VD_ROOT_RECORD = 156
_DR_DATE = 18
_DR_FLAG_DIR = 0x02
_TF_LONG_FORM = 0x80


def _short_date(ts: datetime) -> bytes:
    """ECMA-119 9.1.5: 7 bytes, years since 1900 .. second, GMT offset in 15 min units."""
    return struct.pack("=BBBBBBb", ts.year - 1900, ts.month, ts.day, ts.hour, ts.minute, ts.second, 0)


def _long_date(ts: datetime) -> bytes:
    """ECMA-119 8.4.26.1: 17 bytes, 16 digits YYYYMMDDHHMMSScc and the GMT offset."""
    return ts.strftime("%Y%m%d%H%M%S").encode("ascii") + b"00" + b"\x00"


_SHORT = _short_date(SEED_TIMESTAMP)
_LONG = _long_date(SEED_TIMESTAMP)


def _normalize_timestamps(image: bytearray) -> None:
    """Overwrite every timestamp of an ISO 9660 image (as pycdlib writes them) with SEED_TIMESTAMP."""
    block_size = _SECTOR
    seen: set[int] = set()
    sector = 16
    while (sector + 1) * _SECTOR <= len(image):
        vd = sector * _SECTOR
        vd_type = image[vd]
        if image[vd + 1 : vd + 6] != b"CD001":
            raise CloudInitError(f"bad volume descriptor at sector {sector}")
        if vd_type == _VD_TERMINATOR:
            return
        if vd_type in (_VD_PRIMARY, _VD_SUPPLEMENTARY):
            block_size = struct.unpack_from("<H", image, vd + 128)[0]
            for off in _VD_DATES:
                image[vd + off : vd + off + 17] = _LONG
            root = vd + _VD_ROOT_RECORD
            image[root + _DR_DATE : root + _DR_DATE + 7] = _SHORT
            extent, size = struct.unpack_from("<I4xI", image, root + 2)
            _normalize_directory(image, extent, size, block_size, seen)
        sector += 1
    raise CloudInitError("no volume descriptor set terminator")


def _normalize_directory(image: bytearray, extent: int, size: int, block_size: int, seen: set[int]) -> None:
    if extent in seen:
        return
    seen.add(extent)
    start = extent * block_size
    end = min(start + size, len(image))
    pos = start
    subdirs: list[tuple[int, int]] = []
    while pos < end:
        length = image[pos]
        if length == 0:  # records never cross a sector boundary: the rest of this one is padding
            pos = start + ((pos - start) // block_size + 1) * block_size
            continue
        if length < 34 or pos + length > end:
            raise CloudInitError(f"bad directory record at byte {pos}")
        image[pos + _DR_DATE : pos + _DR_DATE + 7] = _SHORT
        name_len = image[pos + 32]
        name = bytes(image[pos + 33 : pos + 33 + name_len])
        su_start = pos + 33 + name_len + (1 - name_len % 2)  # the name is padded to an even offset
        _normalize_system_use(image, su_start, pos + length, block_size, depth=0)
        if image[pos + 25] & _DR_FLAG_DIR and name not in (b"\x00", b"\x01"):
            subdirs.append(struct.unpack_from("<I4xI", image, pos + 2))
        pos += length
    for sub_extent, sub_size in subdirs:
        _normalize_directory(image, sub_extent, sub_size, block_size, seen)


def _normalize_system_use(image: bytearray, pos: int, end: int, block_size: int, depth: int) -> None:
    """Rock Ridge TF timestamps in a System Use area, following CE continuation areas."""
    if depth > 16:
        raise CloudInitError("too many Rock Ridge continuation areas")
    while pos + 4 <= end:
        sig = bytes(image[pos : pos + 2])
        length = image[pos + 2]
        if length < 4 or pos + length > end:
            return  # padding or not SUSP
        if sig == b"TF":
            flags = image[pos + 4]
            width = 17 if flags & _TF_LONG_FORM else 7
            stamp = _LONG if width == 17 else _SHORT
            off = pos + 5
            for bit in range(7):
                if flags & (1 << bit):
                    if off + width > pos + length:
                        raise CloudInitError(f"bad Rock Ridge TF entry at byte {pos}")
                    image[off : off + width] = stamp
                    off += width
        elif sig == b"CE" and length >= 28:
            block, offset, ce_len = struct.unpack_from("<I4xI4xI", image, pos + 4)
            ce_start = block * block_size + offset
            _normalize_system_use(image, ce_start, min(ce_start + ce_len, len(image)), block_size, depth + 1)
        elif sig == b"ST":
            return
        pos += length
