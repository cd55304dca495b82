"""Chunked files (DSP0243 ``ovf:chunkSize``): found, checked, verified chunk by chunk, joined into one file.

Packages are built here (the writer does not chunk): ``chunked_package`` splits a payload into chunks of
``chunk`` bytes named ``disk.vmdk.000000000`` … with a manifest listing each chunk.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from pathlib import Path
from typing import Any

import pytest
from ovf_testlib import TarBuilder, minimal_descriptor

from httpserve import FileServer
from vdc.controllers.appliance import ApplianceController, ImportFailed, _verify
from vdc.ovf.envelope import FileReference
from vdc.ovf.errors import DigestMismatch, InvalidDescriptor, UnsafeArchive
from vdc.ovf.manifest import compare_digests, require_verified, verify
from vdc.ovf.ova import (
    MAX_MEMBERS,
    ExtractedFile,
    OvfPackage,
    chunk_name,
    extract_directory,
    extract_ova,
    open_ova,
    open_ovf_directory,
    package_paths,
    stored_digests,
    stored_names,
)

PAYLOAD = bytes(range(256)) * 10  # 2560 bytes: chunks of 1000, 1000, 560
CHUNK = 1000
Members = list[tuple[str, bytes]]


def split(data: bytes, size: int, name: str = "disk.vmdk") -> Members:
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [(chunk_name(name, index), piece) for index, piece in enumerate(pieces)]


def manifest(members: Members) -> bytes:
    return "".join(f"SHA256({name})= {hashlib.sha256(data).hexdigest()}\n" for name, data in members).encode()


def chunked_package(
    payload: bytes = PAYLOAD, *, chunk: int = CHUNK, size: int | None = None, attrs: str = "", name: str = "disk.vmdk"
) -> Members:
    """Descriptor, manifest (of the descriptor and every chunk) and the chunks, in DSP0243's order."""
    declared = len(payload) if size is None else size
    ovf = minimal_descriptor({name: declared}, file_attrs=f'ovf:chunkSize="{chunk}" {attrs}')
    chunks = split(payload, chunk, name)
    return [("app.ovf", ovf), ("app.mf", manifest([("app.ovf", ovf), *chunks])), *chunks]


def write_directory(directory: Path, members: Members) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in members:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory / "app.ovf"


def replaced(members: Members, name: str, data: bytes | None) -> Members:
    """``members`` with ``name``'s bytes replaced (None: left out); the manifest is not updated."""
    return [(n, data if n == name else d) for n, d in members if n != name or data is not None]


def verified(package: OvfPackage, extracted: dict[str, ExtractedFile]) -> None:
    assert package.manifest is not None
    require_verified(compare_digests(package.manifest, stored_digests(extracted)))


# --- OVA ---------------------------------------------------------------------------------------------


def test_a_chunked_ova_is_joined_and_each_chunk_verified(make_tar: TarBuilder, tmp_path: Path) -> None:
    package = open_ova(make_tar(chunked_package()))
    chunks = ("disk.vmdk.000000000", "disk.vmdk.000000001", "disk.vmdk.000000002")
    assert package.payload_names() == ("app.ovf", *chunks)  # what the manifest lists
    assert [(c.name, c.chunk_size, c.size, c.chunks) for c in package.chunked] == [
        ("disk.vmdk", CHUNK, len(PAYLOAD), chunks)
    ]
    progress: list[int] = []
    extracted = extract_ova(package, tmp_path, progress=progress.append)
    assert set(extracted) == {"app.ovf", "disk.vmdk"}
    disk = extracted["disk.vmdk"]
    assert disk.path.read_bytes() == PAYLOAD and (disk.stored_bytes, disk.written_bytes) == (2560, 2560)
    assert [(c.name, c.stored_bytes) for c in disk.chunks] == [(chunks[0], 1000), (chunks[1], 1000), (chunks[2], 560)]
    assert not any((tmp_path / c).exists() for c in chunks)  # only the joined file is written
    assert sum(progress) == len(PAYLOAD) + len(package.descriptor)
    verified(package, extracted)


def test_one_chunk_alone_and_chunks_out_of_order(make_tar: TarBuilder, tmp_path: Path) -> None:
    one = chunked_package(b"small", chunk=CHUNK)
    package = open_ova(make_tar(one))
    assert package.chunked[0].chunks == ("disk.vmdk.000000000",)
    (tmp_path / "a").mkdir()
    assert extract_ova(package, tmp_path / "a")["disk.vmdk"].path.read_bytes() == b"small"
    members = chunked_package()
    shuffled = [members[0], members[1], members[4], members[2], members[3]]
    (tmp_path / "b").mkdir()
    package = open_ova(make_tar(shuffled))
    assert extract_ova(package, tmp_path / "b")["disk.vmdk"].path.read_bytes() == PAYLOAD


def test_a_chunk_name_brings_its_whole_file(make_tar: TarBuilder, tmp_path: Path) -> None:
    package = open_ova(make_tar(chunked_package()))
    extracted = extract_ova(package, tmp_path, names=("disk.vmdk.000000001",))
    assert list(extracted) == ["disk.vmdk"] and extracted["disk.vmdk"].path.read_bytes() == PAYLOAD


def test_a_missing_chunk_is_named(make_tar: TarBuilder) -> None:
    members = replaced(chunked_package(), "disk.vmdk.000000001", None)
    with pytest.raises(InvalidDescriptor, match=r"chunk 'disk\.vmdk\.000000001' is not in the package"):
        open_ova(make_tar(members))
    last_gone = replaced(chunked_package(), "disk.vmdk.000000002", None)  # the declared size says 3 chunks
    with pytest.raises(InvalidDescriptor, match=r"chunk 'disk\.vmdk\.000000002' is not in the package"):
        open_ova(make_tar(last_gone))
    with pytest.raises(InvalidDescriptor, match=r"chunk 'disk\.vmdk\.000000000' is not in the package"):
        open_ova(make_tar(chunked_package()[:2]))


def test_a_missing_chunk_is_found_without_a_declared_size(make_tar: TarBuilder) -> None:
    members = chunked_package()
    members[0] = ("app.ovf", members[0][1].replace(b'ovf:size="2560" ', b""))
    open_ova(make_tar(members))  # all there: accepted
    with pytest.raises(InvalidDescriptor, match=r"chunk 'disk\.vmdk\.000000001' is not in the package"):
        open_ova(make_tar(replaced(members, "disk.vmdk.000000001", None)))


def test_a_short_chunk_is_named(make_tar: TarBuilder) -> None:
    members = replaced(chunked_package(), "disk.vmdk.000000000", PAYLOAD[:999])
    with pytest.raises(UnsafeArchive, match=r"chunk 'disk\.vmdk\.000000000' holds 999 bytes, not ovf:chunkSize 1000"):
        open_ova(make_tar(members))


def test_a_last_chunk_larger_than_chunk_size_is_refused(make_tar: TarBuilder) -> None:
    members = chunked_package(PAYLOAD[:2000], size=2000)
    members = replaced(members, "disk.vmdk.000000001", PAYLOAD[:1001])
    with pytest.raises(UnsafeArchive, match=r"last chunk 'disk\.vmdk\.000000001' holds 1001 bytes"):
        open_ova(make_tar(members))


def test_the_total_must_be_the_declared_size(make_tar: TarBuilder) -> None:
    with pytest.raises(UnsafeArchive, match=r"declared size 2500 but its chunks hold 2560 bytes"):
        open_ova(make_tar(chunked_package(size=2500)))
    extra = [*chunked_package(), ("disk.vmdk.000000003", b"x")]  # one chunk more than the size says
    with pytest.raises(UnsafeArchive, match=r"chunk 'disk\.vmdk\.000000003' is beyond the declared size 2560"):
        open_ova(make_tar(extra))


def test_a_bad_chunk_digest_is_named(make_tar: TarBuilder, tmp_path: Path) -> None:
    members = replaced(chunked_package(), "disk.vmdk.000000001", b"\xff" * CHUNK)  # same size, other bytes
    package = open_ova(make_tar(members))
    extracted = extract_ova(package, tmp_path)
    with pytest.raises(DigestMismatch, match=r"disk\.vmdk\.000000001: SHA256 is [0-9a-f]+, the manifest says"):
        verified(package, extracted)
    assert package.manifest is not None
    mismatches = compare_digests(package.manifest, stored_digests(extracted))
    assert [(m.file, m.reason) for m in mismatches] == [("disk.vmdk.000000001", "digest")]


def test_a_chunk_the_manifest_does_not_list_is_reported(make_tar: TarBuilder, tmp_path: Path) -> None:
    members = chunked_package()
    members[1] = ("app.mf", manifest([members[0], members[2], members[3]]))  # the last chunk left out
    package = open_ova(make_tar(members))
    assert package.manifest is not None
    mismatches = compare_digests(package.manifest, stored_digests(extract_ova(package, tmp_path)))
    assert [(m.file, m.reason) for m in mismatches] == [("disk.vmdk.000000002", "unlisted")]


def test_both_the_file_and_its_chunks_is_refused(make_tar: TarBuilder) -> None:
    with pytest.raises(UnsafeArchive, match=r"holds both 'disk\.vmdk' and chunks of it"):
        open_ova(make_tar([*chunked_package(), ("disk.vmdk", PAYLOAD)]))


def test_the_joined_file_is_held_to_the_member_limit(make_tar: TarBuilder) -> None:
    with pytest.raises(UnsafeArchive, match=r"its chunks hold 2560 bytes, more than the 2000 allowed"):
        open_ova(make_tar(chunked_package()), max_member_bytes=2000)


def test_too_many_chunks_are_refused(make_tar: TarBuilder) -> None:
    with pytest.raises(UnsafeArchive, match=f"more than the {MAX_MEMBERS} allowed"):
        open_ova(make_tar(chunked_package(b"x" * (MAX_MEMBERS + 1), chunk=1)[:3]))


def test_gzip_then_chunked_is_one_gzip_stream(make_tar: TarBuilder, tmp_path: Path) -> None:
    """DSP0243: with compression the whole file is compressed, then the compressed bytes are chunked."""
    payload = bytes(range(256)) * 400  # 100 KiB
    packed = gzip.compress(payload)
    members = chunked_package(packed, chunk=512, attrs='ovf:compression="gzip"', name="disk.vmdk.gz")
    package = open_ova(make_tar(members))
    (tmp_path / "a").mkdir()
    extracted = extract_ova(package, tmp_path / "a")
    disk = extracted["disk.vmdk.gz"]
    assert disk.path.read_bytes() == payload
    assert (disk.stored_bytes, disk.written_bytes, len(disk.chunks)) == (
        len(packed),
        len(payload),
        -(-len(packed) // 512),
    )
    verified(package, extracted)
    (tmp_path / "b").mkdir()
    with pytest.raises(UnsafeArchive, match="decompresses to more than 50000 bytes"):
        extract_ova(open_ova(make_tar(members)), tmp_path / "b", max_member_bytes=50_000)


# --- directory -------------------------------------------------------------------------------------


def test_a_chunked_directory_is_joined_into_the_target(tmp_path: Path) -> None:
    members = chunked_package()
    package = open_ovf_directory(write_directory(tmp_path / "pkg", members))
    assert package.payload_names() == ("app.ovf", "disk.vmdk.000000000", "disk.vmdk.000000001", "disk.vmdk.000000002")
    assert package.manifest is not None and verify(package.manifest, package_paths(package)) == []
    extracted = extract_directory(package, tmp_path / "out")
    assert extracted["disk.vmdk"].path == tmp_path / "out" / "disk.vmdk"
    assert extracted["disk.vmdk"].path.read_bytes() == PAYLOAD
    assert extracted["app.ovf"].path == tmp_path / "pkg" / "app.ovf"  # not chunked: read in place
    verified(package, extracted)


def test_an_unchunked_directory_is_read_in_place(tmp_path: Path) -> None:
    ovf = minimal_descriptor({"disk.vmdk": len(PAYLOAD)})
    members = [
        ("app.ovf", ovf),
        ("app.mf", manifest([("app.ovf", ovf), ("disk.vmdk", PAYLOAD)])),
        ("disk.vmdk", PAYLOAD),
    ]
    package = open_ovf_directory(write_directory(tmp_path / "pkg", members))
    extracted = extract_directory(package, tmp_path / "out")
    assert extracted["disk.vmdk"].path == tmp_path / "pkg" / "disk.vmdk" and not (tmp_path / "out").exists()
    verified(package, extracted)


def test_a_chunked_directory_in_a_subdirectory(tmp_path: Path) -> None:
    members = chunked_package(name="disks/disk.vmdk")
    package = open_ovf_directory(write_directory(tmp_path / "pkg", members))
    extracted = extract_directory(package, tmp_path / "out")
    assert (tmp_path / "out" / "disks" / "disk.vmdk").read_bytes() == PAYLOAD
    verified(package, extracted)


@pytest.mark.parametrize("gone", ["disk.vmdk.000000000", "disk.vmdk.000000001", "disk.vmdk.000000002"])
def test_a_missing_chunk_in_a_directory_is_named(tmp_path: Path, gone: str) -> None:
    descriptor = write_directory(tmp_path, replaced(chunked_package(), gone, None))
    with pytest.raises(InvalidDescriptor, match=f"chunk '{gone}' is not in the package"):
        open_ovf_directory(descriptor)


def test_a_chunk_after_a_gap_is_found_in_a_directory_without_a_size(tmp_path: Path) -> None:
    members = chunked_package()
    members[0] = ("app.ovf", members[0][1].replace(b'ovf:size="2560" ', b""))
    descriptor = write_directory(tmp_path, replaced(members, "disk.vmdk.000000001", None))
    with pytest.raises(InvalidDescriptor, match=r"chunk 'disk\.vmdk\.000000001' is not in the package"):
        open_ovf_directory(descriptor)


def test_short_chunk_and_wrong_total_in_a_directory(tmp_path: Path) -> None:
    short = write_directory(tmp_path / "a", replaced(chunked_package(), "disk.vmdk.000000001", b"x" * 10))
    with pytest.raises(UnsafeArchive, match=r"chunk 'disk\.vmdk\.000000001' holds 10 bytes"):
        open_ovf_directory(short)
    wrong = write_directory(tmp_path / "b", chunked_package(size=3000))
    with pytest.raises(UnsafeArchive, match=r"declared size 3000 but its chunks hold 2560 bytes"):
        open_ovf_directory(wrong)


def test_a_bad_chunk_digest_in_a_directory_is_named(tmp_path: Path) -> None:
    members = replaced(chunked_package(), "disk.vmdk.000000002", b"\x00" * 560)
    package = open_ovf_directory(write_directory(tmp_path / "pkg", members))
    with pytest.raises(DigestMismatch, match=r"disk\.vmdk\.000000002: SHA256"):
        verified(package, extract_directory(package, tmp_path / "out"))


def test_a_chunk_that_changed_after_opening_is_refused(tmp_path: Path) -> None:
    descriptor = write_directory(tmp_path / "pkg", chunked_package())
    package = open_ovf_directory(descriptor)
    (tmp_path / "pkg" / "disk.vmdk.000000001").write_bytes(b"x" * 5)
    with pytest.raises(UnsafeArchive, match=r"disk\.vmdk\.000000001 changed since the package was opened"):
        extract_directory(package, tmp_path / "out")


def test_a_symlinked_chunk_is_refused(tmp_path: Path) -> None:
    descriptor = write_directory(tmp_path / "pkg", chunked_package())
    chunk = tmp_path / "pkg" / "disk.vmdk.000000001"
    (tmp_path / "elsewhere").write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        open_ovf_directory(descriptor)


def test_gzip_then_chunked_in_a_directory(tmp_path: Path) -> None:
    payload = b"\x00" * 300_000
    packed = gzip.compress(payload)
    members = chunked_package(packed, chunk=100, attrs='ovf:compression="gzip"')
    package = open_ovf_directory(write_directory(tmp_path / "pkg", members))
    extracted = extract_directory(package, tmp_path / "out")
    assert extracted["disk.vmdk"].path.read_bytes() == payload
    verified(package, extracted)


# --- what an .ovf URL fetches ------------------------------------------------------------------------


def test_stored_names_of_a_reference() -> None:
    assert stored_names(FileReference("f", "disk.vmdk", 10)) == ("disk.vmdk",)
    assert stored_names(FileReference("f", "d/disk.vmdk", 2560, chunk_size=1000)) == (
        "d/disk.vmdk.000000000",
        "d/disk.vmdk.000000001",
        "d/disk.vmdk.000000002",
    )
    assert stored_names(FileReference("f", "disk.vmdk", 0, chunk_size=1000)) == ("disk.vmdk.000000000",)
    with pytest.raises(InvalidDescriptor, match="needs ovf:size"):
        stored_names(FileReference("f", "disk.vmdk", None, chunk_size=1000))
    with pytest.raises(UnsafeArchive, match=r"'\.\.' would leave the package"):
        stored_names(FileReference("f", "../disk.vmdk", 10, chunk_size=1))
    with pytest.raises(UnsafeArchive, match="chunks, more than"):
        stored_names(FileReference("f", "disk.vmdk", 10_000, chunk_size=1))


# --- the Appliance import: _verify and an .ovf URL's files -------------------------------------------


class _Report:
    """What ``_verify`` and ``_fetch_ovf`` call on the import's reporter."""

    def counter(self, total: int | None) -> Any:
        return lambda n: None

    def progress_sync(self, done: int, total: int | None) -> None:
        pass


def test_the_import_verifies_and_joins_a_chunked_ova_and_directory(make_tar: TarBuilder, tmp_path: Path) -> None:
    package, files, checksums = _verify(make_tar(chunked_package()), tmp_path / "x1", 1 << 20, None, _Report())  # type: ignore[arg-type]
    assert files["disk.vmdk"].read_bytes() == PAYLOAD and package.chunked
    assert [c.file for c in checksums] == [
        "app.ovf",
        "disk.vmdk.000000000",
        "disk.vmdk.000000001",
        "disk.vmdk.000000002",
    ]
    descriptor = write_directory(tmp_path / "pkg", chunked_package())
    _, files, _ = _verify(descriptor, tmp_path / "x2", 1 << 20, None, _Report())  # type: ignore[arg-type]
    assert files["disk.vmdk"] == tmp_path / "x2" / "disk.vmdk" and files["disk.vmdk"].read_bytes() == PAYLOAD
    bad = write_directory(tmp_path / "bad", replaced(chunked_package(), "disk.vmdk.000000000", b"\x00" * CHUNK))
    with pytest.raises(ImportFailed, match=r"disk\.vmdk\.000000000: SHA256"):
        _verify(bad, tmp_path / "x3", 1 << 20, None, _Report())  # type: ignore[arg-type]


def test_an_ovf_url_fetches_the_chunks_beside_it(tmp_path: Path) -> None:
    write_directory(tmp_path / "www", chunked_package())
    with FileServer(tmp_path / "www") as server:
        fetch = ApplianceController._fetch_ovf(None, server.url("app.ovf"), tmp_path / "got", 1 << 20, _Report())  # type: ignore[arg-type]
        descriptor = asyncio.run(fetch)
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == [
        "app.mf", "app.ovf", "disk.vmdk.000000000", "disk.vmdk.000000001", "disk.vmdk.000000002"
    ]  # fmt: skip
    _, files, _ = _verify(descriptor, tmp_path / "x", 1 << 20, None, _Report())  # type: ignore[arg-type]
    assert files["disk.vmdk"].read_bytes() == PAYLOAD
