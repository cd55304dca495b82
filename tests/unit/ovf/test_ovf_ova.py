from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from pathlib import Path

import pytest
from ovf_testlib import TarBuilder, minimal_descriptor

from vdc.ovf.errors import InvalidDescriptor, OvfError, UnsafeArchive
from vdc.ovf.manifest import ManifestEntry, compare_digests, verify
from vdc.ovf.ova import extract_ova, open_ova, open_ovf_directory, package_paths, safe_member_name

DISK = b"\x01" * 3000


def mf(*files: tuple[str, bytes]) -> bytes:
    return "".join(f"SHA256({name})= {hashlib.sha256(data).hexdigest()}\n" for name, data in files).encode()


def good_members() -> list[tuple[str, bytes]]:
    ovf = minimal_descriptor({"disk.vmdk": len(DISK)})
    return [("app.ovf", ovf), ("app.mf", mf(("app.ovf", ovf), ("disk.vmdk", DISK))), ("disk.vmdk", DISK)]


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_open_and_extract_a_good_ova(make_tar: TarBuilder, tmp_path: Path) -> None:
    package = open_ova(make_tar(good_members()))
    assert (package.descriptor_name, package.manifest_name, package.descriptor_first) == ("app.ovf", "app.mf", True)
    assert package.manifest is not None and package.manifest.files() == ("app.ovf", "disk.vmdk")
    assert package.payload_names() == ("app.ovf", "disk.vmdk")
    target = tmp_path / "out"
    target.mkdir()
    progress: list[int] = []
    extracted = extract_ova(package, target, progress=progress.append)
    assert (target / "disk.vmdk").read_bytes() == DISK
    assert sum(progress) == len(DISK) + len(package.descriptor)
    computed = {name: f.digests for name, f in extracted.items()}
    assert compare_digests(package.manifest, computed) == []


def test_a_tampered_disk_is_named(make_tar: TarBuilder, tmp_path: Path) -> None:
    members = good_members()
    members[2] = ("disk.vmdk", b"\x02" * len(DISK))  # same size, other bytes
    package = open_ova(make_tar(members))
    extracted = extract_ova(package, tmp_path)
    assert package.manifest is not None
    mismatches = compare_digests(package.manifest, {n: f.digests for n, f in extracted.items()})
    assert [(m.file, m.reason) for m in mismatches] == [("disk.vmdk", "digest")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("../x", b"evil"), "'..' would leave the package"),
        (("a/../../x", b"evil"), "'..' would leave the package"),
        (("/etc/cron.d/x", b"evil"), "absolute path"),
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "links are not allowed"),
        (special("hard", tarfile.LNKTYPE, "disk.vmdk"), "links are not allowed"),
        (special("fifo", tarfile.FIFOTYPE), "only regular files"),
        (special("dev", tarfile.CHRTYPE), "only regular files"),
        (special("blk", tarfile.BLKTYPE), "only regular files"),
        (("./disk.vmdk", DISK), "'disk.vmdk' appears twice"),
    ],
)
def test_hostile_members_are_refused(
    make_tar: TarBuilder, extra: tuple[str, bytes] | tarfile.TarInfo, message: str
) -> None:
    with pytest.raises(UnsafeArchive, match=message):
        open_ova(make_tar([*good_members(), extra]))


def test_member_size_limit(make_tar: TarBuilder) -> None:
    with pytest.raises(UnsafeArchive, match=r"member 'disk.vmdk': 3000 bytes is more than the 2999 allowed"):
        open_ova(make_tar(good_members()), max_member_bytes=2999)


def test_declared_size_must_match_the_tar(make_tar: TarBuilder) -> None:
    members = good_members()
    members[2] = ("disk.vmdk", DISK + b"more")
    with pytest.raises(UnsafeArchive, match=r"href='disk.vmdk'>: declared size 3000 but the package holds 3004"):
        open_ova(make_tar(members))


def test_referenced_file_must_be_present(make_tar: TarBuilder) -> None:
    with pytest.raises(InvalidDescriptor, match=r"'disk\.vmdk'>: the file is not in the package"):
        open_ova(make_tar(good_members()[:2]))


def test_a_chunked_file_needs_its_chunks(make_tar: TarBuilder) -> None:  # more in test_ovf_chunks.py
    ovf = minimal_descriptor({"disk.vmdk": len(DISK)}, file_attrs='ovf:chunkSize="1000"')
    with pytest.raises(InvalidDescriptor, match=r"chunk 'disk\.vmdk\.000000000' is not in the package"):
        open_ova(make_tar([("app.ovf", ovf), ("disk.vmdk", DISK)]))


def test_descriptor_not_first_is_accepted_and_reported(make_tar: TarBuilder) -> None:
    members = good_members()
    package = open_ova(make_tar([members[2], members[0], members[1]]))
    assert package.descriptor_first is False


@pytest.mark.parametrize("names", [["a.ovf", "b.ovf"], []])
def test_exactly_one_descriptor(make_tar: TarBuilder, names: list[str]) -> None:
    ovf = minimal_descriptor({})
    with pytest.raises(InvalidDescriptor, match=r"exactly one \.ovf descriptor"):
        open_ova(make_tar([(n, ovf) for n in names] + [("x.txt", b"x")]))


def test_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "junk.ova"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a tar" * 40)
    with pytest.raises(UnsafeArchive, match=r"junk\.ova is not a tar archive"):
        open_ova(path)


def test_gzip_members_are_decompressed_with_a_cap(make_tar: TarBuilder, tmp_path: Path) -> None:
    payload = b"\x00" * 200_000
    packed = gzip.compress(payload)
    ovf = minimal_descriptor({"disk.vmdk.gz": len(packed)}, file_attrs='ovf:compression="gzip"')
    package = open_ova(make_tar([("app.ovf", ovf), ("disk.vmdk.gz", packed)]))
    (tmp_path / "a").mkdir()
    extracted = extract_ova(package, tmp_path / "a")
    assert (tmp_path / "a" / "disk.vmdk.gz").read_bytes() == payload
    assert (extracted["disk.vmdk.gz"].stored_bytes, extracted["disk.vmdk.gz"].written_bytes) == (
        len(packed),
        len(payload),
    )
    (tmp_path / "b").mkdir()
    with pytest.raises(UnsafeArchive, match="decompresses to more than 100000 bytes"):
        extract_ova(package, tmp_path / "b", max_member_bytes=100_000)


def test_extraction_never_overwrites_or_follows_links(make_tar: TarBuilder, tmp_path: Path) -> None:
    package = open_ova(make_tar(good_members()))
    target = tmp_path / "out"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    os.symlink(outside, target / "disk.vmdk")
    with pytest.raises(OvfError, match="would be written outside"):
        extract_ova(package, target, names=("disk.vmdk",))
    assert outside.read_bytes() == b"keep"


def test_an_ova_changed_after_opening_is_refused(make_tar: TarBuilder, tmp_path: Path) -> None:
    path = make_tar(good_members())
    package = open_ova(path)
    members = good_members()
    members[2] = ("disk.vmdk", DISK * 2)
    make_tar(members).replace(path)
    with pytest.raises(UnsafeArchive, match="changed since the package was opened"):
        extract_ova(package, tmp_path)


@pytest.mark.parametrize("name", ["", "..", "a/../../b", "/abs", "C:/x", "a\\b", "./"])
def test_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafeArchive):
        safe_member_name(name)


def test_safe_names_are_normalised() -> None:
    assert safe_member_name("./a/./b.vmdk") == "a/b.vmdk"


def test_ovf_directory_layout(tmp_path: Path) -> None:
    for name, data in good_members():
        (tmp_path / name).write_bytes(data)
    package = open_ovf_directory(tmp_path / "app.ovf")
    assert package.kind == "directory" and package.manifest is not None
    paths = package_paths(package)
    assert set(paths) == {"app.ovf", "disk.vmdk"}
    assert verify(package.manifest, paths) == []
    (tmp_path / "disk.vmdk").write_bytes(b"\x03" * len(DISK))
    assert [m.file for m in verify(package.manifest, paths)] == ["disk.vmdk"]


def test_ovf_directory_refuses_symlinked_files(tmp_path: Path) -> None:
    (tmp_path / "real.vmdk").write_bytes(DISK)
    (tmp_path / "app.ovf").write_bytes(minimal_descriptor({"disk.vmdk": len(DISK)}))
    os.symlink(tmp_path / "real.vmdk", tmp_path / "disk.vmdk")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        open_ovf_directory(tmp_path / "app.ovf")


def test_manifest_entry_for_the_descriptor_is_checked(make_tar: TarBuilder, tmp_path: Path) -> None:
    members = good_members()
    members[1] = ("app.mf", mf(("app.ovf", b"another descriptor"), ("disk.vmdk", DISK)))
    package = open_ova(make_tar(members))
    extracted = extract_ova(package, tmp_path)
    assert package.manifest is not None
    assert package.manifest.entry("app.ovf") == ManifestEntry(
        "SHA256", "app.ovf", hashlib.sha256(b"another descriptor").hexdigest()
    )
    mismatches = compare_digests(package.manifest, {n: f.digests for n, f in extracted.items()})
    assert [m.file for m in mismatches] == ["app.ovf"]
