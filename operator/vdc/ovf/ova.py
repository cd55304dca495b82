"""Reading OVF packages safely: an OVA (a tar) or a directory holding a descriptor and its files.

An OVA comes from anywhere, so every member is checked before anything is written: only regular
files (and directory entries) with relative names that stay inside the target — no ``..``, no
absolute paths, no links, devices or FIFOs, no duplicate names, no member larger than the limit, no
more members than ``MAX_MEMBERS`` — and every file the descriptor references must be there with the
size its ``<File ovf:size>`` declares. This is ``tarfile``'s ``filter='data'`` and more, written out
so that it holds on every Python 3.11 patch release.

DSP0243 says the descriptor is the first member, then the manifest and certificate, then the files
in References order. Only "exactly one ``.ovf``" is required here: exporters exist that put it
elsewhere, so ``OvfPackage.descriptor_first`` reports it and the caller may decide.

Extraction streams member by member (1 MiB reads), reports bytes to a progress callback, computes
the manifest's digests on the way (no second read), and decompresses ``ovf:compression="gzip"``
files with a size cap (a gzip bomb stops at the limit).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, NamedTuple

from vdc.ovf.envelope import MAX_DESCRIPTOR_BYTES, Envelope, parse_envelope
from vdc.ovf.errors import InvalidDescriptor, OvfError, UnsafeArchive, UnsupportedFeature
from vdc.ovf.manifest import (
    CHUNK,
    MAX_MANIFEST_BYTES,
    Algorithm,
    CertificateFile,
    Hasher,
    Manifest,
    Progress,
    parse_certificate_file,
    parse_manifest,
)

DEFAULT_MAX_MEMBER_BYTES = 64 << 30
MAX_MEMBERS = 1024


class _Companion(NamedTuple):
    """A manifest or certificate file read from the package."""

    name: str
    data: bytes


def safe_member_name(name: str) -> str:
    """``name`` normalised (``./a`` → ``a``) if it is a relative path that stays inside; else ``UnsafeArchive``."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"member {name!r}: empty name, NUL or backslash")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"member {name!r}: absolute path")
    parts = [p for p in path.parts if p != "."]
    if not parts:
        raise UnsafeArchive(f"member {name!r}: names no file")
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r}: '..' would leave the package")
    return "/".join(parts)


@dataclass(frozen=True)
class PackageFile:
    name: str
    size: int


@dataclass(frozen=True)
class OvfPackage:
    """What a package holds, checked and parsed; nothing extracted yet."""

    kind: Literal["ova", "directory"]
    source: Path
    descriptor_name: str
    descriptor: bytes
    envelope: Envelope
    files: tuple[PackageFile, ...]
    manifest_name: str | None = None
    manifest: Manifest | None = None
    certificate_name: str | None = None
    certificate: CertificateFile | None = None
    descriptor_first: bool = True

    def file(self, name: str) -> PackageFile | None:
        return next((f for f in self.files if f.name == name), None)

    def payload_names(self) -> tuple[str, ...]:
        """Every file but the manifest and certificate: what the manifest should list."""
        skip = {self.manifest_name, self.certificate_name}
        return tuple(f.name for f in self.files if f.name not in skip)


def check_references(envelope: Envelope, sizes: Mapping[str, int]) -> None:
    """Every package file the References list is present with the declared size (chunked files refused)."""
    for reference in envelope.references:
        if reference.is_external:
            continue
        what = f"<File id={reference.id!r} href={reference.href!r}>"
        if reference.chunk_size is not None:
            raise UnsupportedFeature(f"{what}: chunked files (ovf:chunkSize) are not supported")
        name = safe_member_name(reference.href)
        if name not in sizes:
            raise InvalidDescriptor(f"{what}: the file is not in the package")
        if reference.size is not None and reference.size != sizes[name]:
            raise UnsafeArchive(f"{what}: declared size {reference.size} but the package holds {sizes[name]} bytes")


def _check_member(member: tarfile.TarInfo, max_member_bytes: int) -> str | None:
    """The member's safe name if it is a regular file, None for a directory entry; else UnsafeArchive."""
    name = safe_member_name(member.name)
    if member.isdir():
        return None
    if member.issym() or member.islnk():
        raise UnsafeArchive(f"member {member.name!r}: links are not allowed (to {member.linkname!r})")
    if not member.isreg() or member.issparse():
        raise UnsafeArchive(f"member {member.name!r}: only regular files are allowed, not {member.type!r}")
    if member.size > max_member_bytes:
        raise UnsafeArchive(f"member {member.name!r}: {member.size} bytes is more than the {max_member_bytes} allowed")
    return name


@contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed below)  an OVA is a plain (uncompressed) tar
    except (tarfile.ReadError, EOFError) as e:
        raise UnsafeArchive(f"{path.name} is not a tar archive: {e}") from None
    with tar:
        yield tar


def _members(tar: tarfile.TarFile, max_member_bytes: int) -> Iterator[tuple[str, tarfile.TarInfo]]:
    seen: set[str] = set()
    try:
        for count, member in enumerate(tar, start=1):
            if count > MAX_MEMBERS:
                raise UnsafeArchive(f"more than {MAX_MEMBERS} members")
            name = _check_member(member, max_member_bytes)
            if name is None:
                continue
            if name in seen:
                raise UnsafeArchive(f"member {name!r} appears twice")
            seen.add(name)
            yield name, member
    except tarfile.TarError as e:
        raise UnsafeArchive(f"corrupt tar: {e}") from None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, what: str) -> bytes:
    if member.size > limit:
        raise UnsafeArchive(f"{what} {member.name!r} is {member.size} bytes, more than the {limit} accepted")
    stream = tar.extractfile(member)
    if stream is None:
        raise UnsafeArchive(f"member {member.name!r} cannot be read")
    with stream:
        return stream.read(limit + 1)


def _companion_name(names: list[str], descriptor: str, suffix: str) -> str | None:
    """``<descriptor stem><suffix>`` if present, else the only file with that suffix, else None."""
    preferred = descriptor.rsplit(".", 1)[0] + suffix
    if preferred in names:
        return preferred
    found = [n for n in names if n.lower().endswith(suffix)]
    if len(found) > 1:
        raise InvalidDescriptor(f"the package holds {len(found)} {suffix} files and none is named {preferred!r}")
    return found[0] if found else None


def _one_descriptor(names: list[str], where: str) -> str:
    descriptors = [n for n in names if n.lower().endswith(".ovf")]
    if len(descriptors) != 1:
        raise InvalidDescriptor(f"{where} must hold exactly one .ovf descriptor, not {len(descriptors)}")
    return descriptors[0]


def open_ova(
    path: Path,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_descriptor_bytes: int = MAX_DESCRIPTOR_BYTES,
) -> OvfPackage:
    """Check every member of the OVA at ``path``, read and parse its descriptor, manifest and certificate."""
    with _open_tar(path) as tar:
        members = dict(_members(tar, max_member_bytes))
        names = list(members)
        descriptor_name = _one_descriptor(names, path.name)
        descriptor = _read_member(tar, members[descriptor_name], max_descriptor_bytes, "descriptor")

        def companion(suffix: str, what: str) -> _Companion | None:
            name = _companion_name(names, descriptor_name, suffix)
            return _Companion(name, _read_member(tar, members[name], MAX_MANIFEST_BYTES, what)) if name else None

        manifest = companion(".mf", "manifest")
        certificate = companion(".cert", "certificate")
    return _package(
        "ova",
        path,
        descriptor_name,
        descriptor,
        {name: m.size for name, m in members.items()},
        manifest,
        certificate,
        descriptor_first=names[0] == descriptor_name,
        max_descriptor_bytes=max_descriptor_bytes,
    )


def _package(
    kind: Literal["ova", "directory"],
    source: Path,
    descriptor_name: str,
    descriptor: bytes,
    sizes: dict[str, int],
    manifest_file: _Companion | None,
    certificate_file: _Companion | None,
    *,
    descriptor_first: bool,
    max_descriptor_bytes: int,
) -> OvfPackage:
    envelope = parse_envelope(descriptor, max_bytes=max_descriptor_bytes)
    check_references(envelope, sizes)
    manifest = parse_manifest(manifest_file.data, manifest_file.name) if manifest_file else None
    certificate = None
    if certificate_file:
        if manifest_file is None:
            raise InvalidDescriptor(f"{certificate_file.name}: a certificate without a manifest")
        certificate = parse_certificate_file(certificate_file.data, manifest_file.name, certificate_file.name)
    return OvfPackage(
        kind=kind,
        source=source,
        descriptor_name=descriptor_name,
        descriptor=descriptor,
        envelope=envelope,
        files=tuple(PackageFile(name, size) for name, size in sizes.items()),
        manifest_name=manifest_file.name if manifest_file else None,
        manifest=manifest,
        certificate_name=certificate_file.name if certificate_file else None,
        certificate=certificate,
        descriptor_first=descriptor_first,
    )


def open_ovf_directory(
    descriptor_path: Path,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_descriptor_bytes: int = MAX_DESCRIPTOR_BYTES,
) -> OvfPackage:
    """An unpacked package: ``descriptor_path`` with its manifest, certificate and referenced files beside it.

    Referenced files must be regular files inside the descriptor's directory (no symlinks on the way).
    """
    directory = descriptor_path.parent
    if descriptor_path.stat().st_size > max_descriptor_bytes:
        raise InvalidDescriptor(f"{descriptor_path.name} is larger than {max_descriptor_bytes} bytes")
    descriptor = descriptor_path.read_bytes()
    envelope = parse_envelope(descriptor, max_bytes=max_descriptor_bytes)
    sizes = {descriptor_path.name: len(descriptor)}
    for reference in envelope.references:
        if reference.is_external:
            continue
        name = safe_member_name(reference.href)
        local = _inside(directory, name)
        if local is not None:
            sizes[name] = local.stat().st_size
            if sizes[name] > max_member_bytes:
                raise UnsafeArchive(f"{name}: {sizes[name]} bytes is more than the {max_member_bytes} allowed")

    def companion(suffix: str) -> _Companion | None:
        local = _inside(directory, descriptor_path.stem + suffix)
        if local is None:
            return None
        sizes[local.name] = local.stat().st_size
        if sizes[local.name] > MAX_MANIFEST_BYTES:
            raise InvalidDescriptor(f"{local.name} is larger than {MAX_MANIFEST_BYTES} bytes")
        return _Companion(local.name, local.read_bytes())

    manifest = companion(".mf")
    certificate = companion(".cert")
    return _package(
        "directory",
        directory,
        descriptor_path.name,
        descriptor,
        sizes,
        manifest,
        certificate,
        descriptor_first=True,
        max_descriptor_bytes=max_descriptor_bytes,
    )


def _inside(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it is a regular file reached without symlinks, None if absent; else UnsafeArchive."""
    path = directory
    for part in name.split("/"):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            raise UnsafeArchive(f"{name}: {path} is a symbolic link")
    if not stat.S_ISREG(mode):
        raise UnsafeArchive(f"{name}: not a regular file")
    return path


def package_paths(package: OvfPackage) -> dict[str, Path]:
    """For a directory package: every payload file's local path (to hand to ``manifest.verify``)."""
    if package.kind != "directory":
        raise ValueError("package_paths is for directory packages; extract an OVA first")
    return {name: package.source / name for name in package.payload_names()}


# --- extraction ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedFile:
    name: str
    path: Path
    stored_bytes: int  # as in the package (what the manifest digests)
    written_bytes: int  # on disk (after gzip decompression)
    digests: dict[Algorithm, str] = field(default_factory=dict)


def _create(target: Path, name: str) -> int:
    """Open ``target/name`` for writing: new file only, parents created, no symlink followed."""
    parent = target
    for part in name.split("/")[:-1]:
        parent = parent / part
        try:
            parent.mkdir(mode=0o750)
        except FileExistsError:
            if parent.is_symlink() or not parent.is_dir():
                raise UnsafeArchive(f"{name}: {parent} exists and is not a directory") from None
    path = parent / name.split("/")[-1]
    if not path.resolve().is_relative_to(target.resolve()):
        raise UnsafeArchive(f"{name}: would be written outside {target}")
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    except FileExistsError:
        raise OvfError(f"{name}: {path} already exists") from None


def extract_ova(
    package: OvfPackage,
    target: Path,
    *,
    names: tuple[str, ...] | None = None,
    progress: Progress | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    decompress: bool = True,
) -> dict[str, ExtractedFile]:
    """Stream members of ``package`` (from ``open_ova``) into the existing directory ``target``.

    ``names`` defaults to every payload file. Members are re-checked as they are read (the file could
    have changed since ``open_ova``). Digests for the manifest's algorithm are computed on the stored
    bytes. gzip files (per References) are decompressed, refused beyond ``max_member_bytes``.
    """
    if package.kind != "ova":
        raise ValueError("extract_ova needs a package from open_ova")
    wanted = set(names if names is not None else package.payload_names())
    gzipped = {r.href for r in package.envelope.references if r.compression == "gzip"} if decompress else set()
    extracted: dict[str, ExtractedFile] = {}
    with _open_tar(package.source) as tar:
        for name, member in _members(tar, max_member_bytes):
            if name not in wanted:
                continue
            declared = package.file(name)
            if declared is None or declared.size != member.size:
                raise UnsafeArchive(f"member {name!r} changed since the package was opened")
            algorithms: list[Algorithm] = []
            entry = package.manifest.entry(name) if package.manifest else None
            if entry is not None:
                algorithms.append(entry.algorithm)
            extracted[name] = _extract_member(
                tar, member, name, target, algorithms, name in gzipped, max_member_bytes, progress
            )
    missing = wanted - set(extracted)
    if missing:
        raise UnsafeArchive(f"members {sorted(missing)} are no longer in {package.source.name}")
    return extracted


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    name: str,
    target: Path,
    algorithms: list[Algorithm],
    gunzip: bool,
    limit: int,
    progress: Progress | None,
) -> ExtractedFile:
    stream = tar.extractfile(member)
    if stream is None:
        raise UnsafeArchive(f"member {name!r} cannot be read")
    hasher = Hasher(algorithms)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gunzip else None
    stored = written = 0
    fd = _create(target, name)
    with stream, os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK):
            stored += len(chunk)
            hasher.update(chunk)
            if inflater is not None:
                # Inflate at most limit+1 bytes per call so a bomb cannot blow up memory.
                data = inflater.decompress(chunk, limit - written + 1)
                while True:
                    written += len(data)
                    if written > limit:
                        raise UnsafeArchive(f"{name}: decompresses to more than {limit} bytes")
                    out.write(data)
                    if not inflater.unconsumed_tail:
                        break
                    data = inflater.decompress(inflater.unconsumed_tail, limit - written + 1)
            else:
                out.write(chunk)
                written += len(chunk)
            if progress:
                progress(len(chunk))
        if inflater is not None and not inflater.eof:
            raise UnsafeArchive(f"{name}: truncated gzip stream")
    if stored != member.size:
        raise UnsafeArchive(f"member {name!r}: read {stored} bytes, the tar header says {member.size}")
    return ExtractedFile(name, target / name, stored, written, hasher.hexdigests())
