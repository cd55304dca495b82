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

Chunked files (DSP0243 "File references", ``ovf:chunkSize``): a ``<File ovf:href="disk.vmdk"
ovf:chunkSize="N">`` is stored as ``disk.vmdk.000000000``, ``disk.vmdk.000000001`` … (nine decimal
digits, from 0), each exactly N bytes but the last (which is 1..N bytes), together ``ovf:size``
bytes. The manifest lists each chunk by its own name. Opening a package finds the chunks and refuses
a missing one, one of the wrong size, a total other than ``ovf:size``, more than ``MAX_MEMBERS``
chunks or a whole larger than the member limit, naming the chunk; ``OvfPackage.files`` (and so
``payload_names``, what the manifest should list) holds the chunk files. Extraction (``extract_ova``,
``extract_directory``) reassembles them, streaming, into the one file the References name and hashes
each chunk on the way (``ExtractedFile.chunks``; ``stored_digests`` gives what ``compare_digests``
needs). With ``ovf:compression="gzip"`` too, the whole file was compressed and then chunked, so the
joined chunks are one gzip stream, decompressed with the same cap.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, NamedTuple

from vdc.ovf.envelope import MAX_DESCRIPTOR_BYTES, Envelope, FileReference, parse_envelope
from vdc.ovf.errors import InvalidDescriptor, OvfError, UnsafeArchive
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


CHUNK_DIGITS = 9


def chunk_name(name: str, index: int) -> str:
    """The name of chunk ``index`` of the chunked file ``name`` (``disk.vmdk.000000002``)."""
    return f"{name}.{index:0{CHUNK_DIGITS}d}"


def stored_names(reference: FileReference) -> tuple[str, ...]:
    """The package files that hold ``reference`` (not external): its ``href``, or its chunks; for a
    chunked file that needs ``ovf:size`` (to fetch them: a directory listing would say, a URL does not)."""
    name = safe_member_name(reference.href)
    if reference.chunk_size is None:
        return (name,)
    what = f"<File id={reference.id!r} href={reference.href!r}>"
    if reference.size is None:
        raise InvalidDescriptor(f"{what}: a chunked file needs ovf:size to say how many chunks to fetch")
    count = max(1, -(-reference.size // reference.chunk_size))
    if count > MAX_MEMBERS:
        raise UnsafeArchive(f"{what}: {count} chunks, more than the {MAX_MEMBERS} allowed")
    return tuple(chunk_name(name, index) for index in range(count))


@dataclass(frozen=True)
class ChunkedFile:
    """A file the References name, stored in chunks: ``chunks`` are package file names, in order."""

    name: str
    chunk_size: int
    size: int
    chunks: tuple[str, ...]


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
    chunked: tuple[ChunkedFile, ...] = ()
    """Files stored in chunks (``files`` holds their chunks, not them)."""

    def file(self, name: str) -> PackageFile | None:
        return next((f for f in self.files if f.name == name), None)

    def chunked_file(self, name: str) -> ChunkedFile | None:
        """The chunked file ``name`` (a References name, not a chunk's), None if it is not chunked."""
        return next((c for c in self.chunked if c.name == name), None)

    def payload_names(self) -> tuple[str, ...]:
        """Every file but the manifest and certificate: what the manifest should list."""
        skip = {self.manifest_name, self.certificate_name}
        return tuple(f.name for f in self.files if f.name not in skip)


def check_references(
    envelope: Envelope, sizes: Mapping[str, int], *, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> tuple[ChunkedFile, ...]:
    """Every package file the References list is present with the declared size; chunked files
    (``ovf:chunkSize``) have every chunk, each of the right size, together the declared size and no
    more than ``max_bytes``. Returns the chunked files."""
    chunked: list[ChunkedFile] = []
    for reference in envelope.references:
        if reference.is_external:
            continue
        what = f"<File id={reference.id!r} href={reference.href!r}>"
        name = safe_member_name(reference.href)
        if reference.chunk_size is not None:
            chunked.append(_check_chunks(what, name, reference.size, reference.chunk_size, sizes, max_bytes))
            continue
        if name not in sizes:
            raise InvalidDescriptor(f"{what}: the file is not in the package")
        if reference.size is not None and reference.size != sizes[name]:
            raise UnsafeArchive(f"{what}: declared size {reference.size} but the package holds {sizes[name]} bytes")
    return tuple(chunked)


def _check_chunks(
    what: str, name: str, size: int | None, chunk_size: int, sizes: Mapping[str, int], max_bytes: int
) -> ChunkedFile:
    expected = None if size is None else max(1, -(-size // chunk_size))
    if expected is not None and expected > MAX_MEMBERS:
        raise UnsafeArchive(f"{what}: {expected} chunks of {chunk_size} bytes, more than the {MAX_MEMBERS} allowed")
    chunks: list[str] = []
    while (chunk := chunk_name(name, len(chunks))) in sizes:
        chunks.append(chunk)
        if len(chunks) > MAX_MEMBERS:
            raise UnsafeArchive(f"{what}: more than {MAX_MEMBERS} chunks")
    pattern = re.compile(re.escape(name) + r"\.[0-9]{" + str(CHUNK_DIGITS) + "}")
    strays = sorted(n for n in sizes if pattern.fullmatch(n) and n not in chunks)
    if chunks and name in sizes:
        raise UnsafeArchive(f"{what}: the package holds both {name!r} and chunks of it (ovf:chunkSize)")
    if not chunks or strays or (expected is not None and len(chunks) < expected):
        raise InvalidDescriptor(f"{what}: chunk {chunk_name(name, len(chunks))!r} is not in the package")
    if expected is not None and len(chunks) > expected:
        raise UnsafeArchive(f"{what}: chunk {chunks[expected]!r} is beyond the declared size {size}")
    for chunk in chunks[:-1]:
        if sizes[chunk] != chunk_size:
            raise UnsafeArchive(f"{what}: chunk {chunk!r} holds {sizes[chunk]} bytes, not ovf:chunkSize {chunk_size}")
    last = chunks[-1]
    if sizes[last] > chunk_size or (sizes[last] == 0 and len(chunks) > 1):
        raise UnsafeArchive(f"{what}: the last chunk {last!r} holds {sizes[last]} bytes (1 to {chunk_size} expected)")
    total = sum(sizes[c] for c in chunks)
    if size is not None and total != size:
        raise UnsafeArchive(f"{what}: declared size {size} but its chunks hold {total} bytes")
    if total > max_bytes:
        raise UnsafeArchive(f"{what}: its chunks hold {total} bytes, more than the {max_bytes} allowed")
    return ChunkedFile(name, chunk_size, total, tuple(chunks))


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
        max_member_bytes=max_member_bytes,
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
    max_member_bytes: int,
) -> OvfPackage:
    envelope = parse_envelope(descriptor, max_bytes=max_descriptor_bytes)
    chunked = check_references(envelope, sizes, max_bytes=max_member_bytes)
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
        chunked=chunked,
    )


def open_ovf_directory(
    descriptor_path: Path,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_descriptor_bytes: int = MAX_DESCRIPTOR_BYTES,
) -> OvfPackage:
    """An unpacked package: ``descriptor_path`` with its manifest, certificate and referenced files beside it.

    Referenced files must be regular files inside the descriptor's directory (no symlinks on the way);
    a chunked file's chunks (``disk.vmdk.000000000`` …) are looked for beside it.
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
        if reference.chunk_size is None:
            _add_local(directory, name, sizes, max_member_bytes)
            continue
        # Chunks 0, 1, … as far as they go, and any after a gap (check_references names the missing one).
        for index in range(MAX_MEMBERS + 1):
            if not _add_local(directory, chunk_name(name, index), sizes, max_member_bytes):
                break
        for stray in _chunk_names(directory, name):
            _add_local(directory, stray, sizes, max_member_bytes)

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
        max_member_bytes=max_member_bytes,
    )


def _add_local(directory: Path, name: str, sizes: dict[str, int], max_member_bytes: int) -> bool:
    """Note the size of ``directory/name`` in ``sizes`` (refused over the limit); False if it is absent."""
    if name in sizes:
        return True
    local = _inside(directory, name)
    if local is None:
        return False
    sizes[name] = local.stat().st_size
    if sizes[name] > max_member_bytes:
        raise UnsafeArchive(f"{name}: {sizes[name]} bytes is more than the {max_member_bytes} allowed")
    return True


def _chunk_names(directory: Path, name: str) -> list[str]:
    """The chunk names of ``name`` present in its directory (at most ``MAX_MEMBERS`` + 1 of them)."""
    parent, _, base = name.rpartition("/")
    folder = directory / parent if parent else directory
    if folder.is_symlink() or not folder.is_dir():
        return []
    pattern = re.compile(re.escape(base) + r"\.[0-9]{" + str(CHUNK_DIGITS) + "}")
    found = sorted(entry for entry in os.listdir(folder) if pattern.fullmatch(entry))[: MAX_MEMBERS + 1]
    return [f"{parent}/{entry}" if parent else entry for entry in found]


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
    """For a directory package: every payload file's local path (to hand to ``manifest.verify``); a
    chunked file appears as its chunks (``extract_directory`` joins them, hashing on the way)."""
    if package.kind != "directory":
        raise ValueError("package_paths is for directory packages; extract an OVA first")
    return {name: package.source / name for name in package.payload_names()}


# --- extraction ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedChunk:
    """One chunk of a chunked file as read: its package name, size and digests (what the manifest lists)."""

    name: str
    stored_bytes: int
    digests: dict[Algorithm, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractedFile:
    name: str
    path: Path
    stored_bytes: int  # as in the package (what the manifest digests; all chunks together)
    written_bytes: int  # on disk (after gzip decompression)
    digests: dict[Algorithm, str] = field(default_factory=dict)  # none for a chunked file: see chunks
    chunks: tuple[ExtractedChunk, ...] = ()


def stored_digests(extracted: Mapping[str, ExtractedFile]) -> dict[str, dict[Algorithm, str]]:
    """Digests by package file name, a chunked file's chunks each under its own name: the ``computed``
    argument of ``manifest.compare_digests``."""
    out: dict[str, dict[Algorithm, str]] = {}
    for file in extracted.values():
        if file.chunks:
            out.update({chunk.name: chunk.digests for chunk in file.chunks})
        else:
            out[file.name] = file.digests
    return out


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


class _Part(NamedTuple):
    """A stored file to read: its package name, declared size and an opener of its bytes."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]


def _algorithms(package: OvfPackage, name: str) -> list[Algorithm]:
    entry = package.manifest.entry(name) if package.manifest else None
    return [entry.algorithm] if entry is not None else []


def _outputs(package: OvfPackage, wanted: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(file to write, the stored files it is made of) for ``wanted`` stored names, in package order;
    any chunk wanted brings its whole file."""
    by_chunk = {chunk: c for c in package.chunked for chunk in c.chunks}
    out: list[tuple[str, tuple[str, ...]]] = []
    done: set[str] = set()
    for file in package.files:
        if file.name not in wanted:
            continue
        chunked = by_chunk.get(file.name)
        if chunked is None:
            out.append((file.name, (file.name,)))
        elif chunked.name not in done:
            done.add(chunked.name)
            out.append((chunked.name, chunked.chunks))
    return out


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

    ``names`` (stored names; a chunk brings its whole file) defaults to every payload file. Members are
    re-checked as they are read (the file could have changed since ``open_ova``). Digests for the
    manifest's algorithm are computed on the stored bytes (per chunk for a chunked file, which is
    written joined under its References name: the result is keyed by that name). gzip files (per
    References) are decompressed, refused beyond ``max_member_bytes``.
    """
    if package.kind != "ova":
        raise ValueError("extract_ova needs a package from open_ova")
    wanted = set(names if names is not None else package.payload_names())
    wanted.update(chunk for c in package.chunked if wanted & set(c.chunks) for chunk in c.chunks)
    extracted: dict[str, ExtractedFile] = {}
    with _open_tar(package.source) as tar:
        members: dict[str, tarfile.TarInfo] = {}
        for name, member in _members(tar, max_member_bytes):
            if name not in wanted:
                continue
            declared = package.file(name)
            if declared is None or declared.size != member.size:
                raise UnsafeArchive(f"member {name!r} changed since the package was opened")
            members[name] = member
        missing = wanted - set(members)
        if missing:
            raise UnsafeArchive(f"members {sorted(missing)} are no longer in {package.source.name}")

        def opener(member: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
            def open_member() -> IO[bytes]:
                stream = tar.extractfile(member)
                if stream is None:
                    raise UnsafeArchive(f"member {member.name!r} cannot be read")
                return stream

            return open_member

        for name, stored in _outputs(package, wanted):
            parts = [_Part(n, members[n].size, opener(members[n])) for n in stored]
            extracted[name] = _write_file(package, name, parts, target, decompress, max_member_bytes, progress)
    return extracted


def extract_directory(
    package: OvfPackage,
    target: Path,
    *,
    progress: Progress | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    decompress: bool = True,
) -> dict[str, ExtractedFile]:
    """Every payload file of a directory package (from ``open_ovf_directory``), read once and hashed for
    the manifest: chunked files are joined, and gzip files (per References) decompressed, into
    ``target`` (created when needed); the rest are left where they are (``path`` in the package).
    Keyed like ``extract_ova``; re-checks every file as it is read (regular, no symlink, size as
    opened)."""
    if package.kind != "directory":
        raise ValueError("extract_directory needs a package from open_ovf_directory")
    gzipped = {r.href for r in package.envelope.references if r.compression == "gzip"} if decompress else set()

    def opener(name: str, size: int) -> Callable[[], IO[bytes]]:
        def open_file() -> IO[bytes]:
            local = _inside(package.source, name)
            if local is None:
                raise UnsafeArchive(f"{name} is no longer in {package.source}")
            stream = local.open("rb")
            if os.fstat(stream.fileno()).st_size != size:
                stream.close()
                raise UnsafeArchive(f"{name} changed since the package was opened")
            return stream

        return open_file

    extracted: dict[str, ExtractedFile] = {}
    sizes = {f.name: f.size for f in package.files}
    for name, stored in _outputs(package, set(package.payload_names())):
        parts = [_Part(n, sizes[n], opener(n, sizes[n])) for n in stored]
        if len(parts) == 1 and stored[0] == name and name not in gzipped:  # as it is: hash it in place
            hasher = Hasher(_algorithms(package, name))
            read = _copy(parts[0], hasher, None, progress)
            extracted[name] = ExtractedFile(name, package.source / name, read, read, hasher.hexdigests())
            continue
        target.mkdir(parents=True, exist_ok=True)
        extracted[name] = _write_file(package, name, parts, target, decompress, max_member_bytes, progress)
    return extracted


def _write_file(
    package: OvfPackage,
    name: str,
    parts: list[_Part],
    target: Path,
    decompress: bool,
    limit: int,
    progress: Progress | None,
) -> ExtractedFile:
    """Write ``target/name`` from its stored parts (one, or a chunked file's chunks in order): each part
    hashed for the manifest, the whole decompressed when References say gzip."""
    reference = next((r for r in package.envelope.references if not r.is_external and r.href == name), None)
    gunzip = decompress and reference is not None and reference.compression == "gzip"
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gunzip else None
    chunks: list[ExtractedChunk] = []
    digests: dict[Algorithm, str] = {}
    stored = 0
    sink = _Sink(os.fdopen(_create(target, name), "wb"), name, inflater, limit)
    with sink:
        for part in parts:
            hasher = Hasher(_algorithms(package, part.name))
            read = _copy(part, hasher, sink, progress)
            stored += read
            if len(parts) > 1 or part.name != name:
                chunks.append(ExtractedChunk(part.name, read, hasher.hexdigests()))
            else:
                digests = hasher.hexdigests()
        if inflater is not None and not inflater.eof:
            raise UnsafeArchive(f"{name}: truncated gzip stream")
    return ExtractedFile(name, target / name, stored, sink.written, digests, tuple(chunks))


class _Sink:
    """The output file: bytes in, inflated first when ``inflater`` is given, never more than ``limit`` out."""

    def __init__(self, out: IO[bytes], name: str, inflater: Any, limit: int) -> None:
        self.out, self.name, self.inflater, self.limit = out, name, inflater, limit
        self.written = 0

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *_: object) -> None:
        self.out.close()

    def write(self, chunk: bytes) -> None:
        if self.inflater is None:
            self._put(chunk)
            return
        # Inflate at most limit+1 bytes per call so a bomb cannot blow up memory.
        data = self.inflater.decompress(chunk, self.limit - self.written + 1)
        while True:
            self._put(data)
            if not self.inflater.unconsumed_tail:
                break
            data = self.inflater.decompress(self.inflater.unconsumed_tail, self.limit - self.written + 1)

    def _put(self, data: bytes) -> None:
        self.written += len(data)
        if self.written > self.limit:
            what = "decompresses to" if self.inflater is not None else "is"
            raise UnsafeArchive(f"{self.name}: {what} more than {self.limit} bytes")
        self.out.write(data)


def _copy(part: _Part, hasher: Hasher, sink: _Sink | None, progress: Progress | None) -> int:
    """Stream ``part`` through ``hasher`` into ``sink`` (None: only hash); bytes read, as declared."""
    read = 0
    with part.open() as stream:
        while chunk := stream.read(CHUNK):
            read += len(chunk)
            if read > part.size:
                raise UnsafeArchive(f"{part.name}: more than the {part.size} bytes declared")
            hasher.update(chunk)
            if sink is not None:
                sink.write(chunk)
            if progress:
                progress(len(chunk))
    if read != part.size:
        raise UnsafeArchive(f"{part.name}: read {read} bytes, {part.size} were declared")
    return read
