"""``qemu-img`` wrappers: read an image's facts, convert between formats.

Images come from OVAs of unknown origin, so the format is always given (``-f``; probing a raw
image can make it look like anything) and ``require_standalone`` refuses images that would make
qemu-img read other files: backing files, and VMDK descriptors whose extents are not the file
itself. Every call has a timeout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vdc.ovf.errors import ConversionError

QEMU_IMG = "/usr/bin/qemu-img"
INFO_TIMEOUT = 60.0
CONVERT_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class ImageInfo:
    """What ``qemu-img info --output=json`` says about an image."""

    format: str
    virtual_size: int
    actual_size: int | None = None
    backing_file: str | None = None
    subformat: str | None = None  # vmdk create-type: streamOptimized, monolithicSparse …
    extents: tuple[str, ...] = ()  # vmdk extent file names
    encrypted: bool = False
    dirty: bool = False
    format_specific: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, object], what: str) -> ImageInfo:
        try:
            specific = data.get("format-specific") or {}
            details = specific.get("data", {}) if isinstance(specific, dict) else {}
            extents = details.get("extents", []) if isinstance(details, dict) else []
            return cls(
                format=str(data["format"]),
                virtual_size=int(str(data["virtual-size"])),
                actual_size=int(str(data["actual-size"])) if "actual-size" in data else None,
                backing_file=str(data["backing-filename"]) if data.get("backing-filename") else None,
                subformat=str(details["create-type"])
                if isinstance(details, dict) and "create-type" in details
                else None,
                extents=tuple(str(e["filename"]) for e in extents if isinstance(e, dict) and "filename" in e),
                encrypted=bool(data.get("encrypted", False)),
                dirty=bool(data.get("dirty-flag", False)),
                format_specific=dict(specific) if isinstance(specific, dict) else {},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{what}: unexpected qemu-img info output ({e})") from None


def _run(args: Sequence[str], timeout: float, what: str) -> str:
    binary = QEMU_IMG if Path(QEMU_IMG).exists() else shutil.which("qemu-img")
    if binary is None:
        raise ConversionError("qemu-img is not installed")
    try:
        done = subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what}: qemu-img took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        raise ConversionError(f"{what}: {message}")
    return done.stdout


def image_info(path: Path, image_format: str, *, timeout: float = INFO_TIMEOUT) -> ImageInfo:
    """Facts of the image at ``path``, read as ``image_format`` (never probed)."""
    out = _run(["info", "--output=json", "-f", image_format, str(path)], timeout, f"qemu-img info {path.name}")
    try:
        data = json.loads(out)
    except json.JSONDecodeError as e:
        raise ConversionError(f"qemu-img info {path.name}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"qemu-img info {path.name}: not a JSON object")
    return ImageInfo.from_json(data, f"qemu-img info {path.name}")


def require_standalone(info: ImageInfo, path: Path) -> None:
    """Refuse an image that refers to other files (backing file, VMDK extents elsewhere) or is encrypted."""
    if info.backing_file:
        raise ConversionError(
            f"{path.name}: has a backing file {info.backing_file!r}; a package image must stand alone"
        )
    if info.encrypted:
        raise ConversionError(f"{path.name}: is encrypted")
    if info.format == "vmdk":
        if info.subformat not in ("streamOptimized", "monolithicSparse"):
            raise ConversionError(f"{path.name}: vmdk {info.subformat!r} is not a single-file vmdk")
        for extent in info.extents:
            if Path(extent).resolve() != path.resolve():
                raise ConversionError(f"{path.name}: vmdk extent {extent!r} is another file")


def convert(
    source: Path,
    source_format: str,
    target: Path,
    target_format: str,
    *,
    options: Sequence[str] = (),
    timeout: float = CONVERT_TIMEOUT,
) -> None:
    """``qemu-img convert -f source_format -O target_format [-o options] source target``."""
    args = ["convert", "-f", source_format, "-O", target_format]
    if options:
        args += ["-o", ",".join(options)]
    _run([*args, str(source), str(target)], timeout, f"converting {source.name} to {target_format}")


def to_qcow2(source: Path, source_format: str, target: Path, *, timeout: float = CONVERT_TIMEOUT) -> None:
    convert(source, source_format, target, "qcow2", timeout=timeout)


def to_stream_optimized_vmdk(
    source: Path, source_format: str, target: Path, *, timeout: float = CONVERT_TIMEOUT
) -> None:
    """The VMDK flavour OVAs carry (compressed, single file)."""
    convert(source, source_format, target, "vmdk", options=["subformat=streamOptimized"], timeout=timeout)
