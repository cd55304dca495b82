from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest

from vdc.ovf.errors import DigestMismatch, ManifestError
from vdc.ovf.manifest import (
    Hasher,
    Manifest,
    ManifestEntry,
    Mismatch,
    build_manifest,
    compare_digests,
    parse_certificate_file,
    parse_manifest,
    require_verified,
    stream_digest,
    verify,
)

SHA1_A = hashlib.sha1(b"a").hexdigest()
SHA256_B = hashlib.sha256(b"b").hexdigest()
SHA512_C = hashlib.sha512(b"c").hexdigest()


def test_parse_all_algorithms_and_spacing_variants() -> None:
    text = f"SHA1(a.ovf)= {SHA1_A}\nSHA256 (disk 1.vmdk) = {SHA256_B.upper()}\r\n\n  SHA512(c(1).iso)={SHA512_C}  \n"
    manifest = parse_manifest(text)
    assert manifest.entries == (
        ManifestEntry("SHA1", "a.ovf", SHA1_A),
        ManifestEntry("SHA256", "disk 1.vmdk", SHA256_B),
        ManifestEntry("SHA512", "c(1).iso", SHA512_C),
    )
    assert parse_manifest(manifest.to_text()) == manifest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MD5(a)= 0cc175b9c0f1b6a831c399e269772661\n", "line 1"),
        (f"SHA256(a)= {SHA1_A}\n", "line 1: a SHA256 digest has 64 hex digits"),
        (f"SHA1(a)= {SHA1_A}\nSHA1(a)= {SHA1_A}\n", "line 2: 'a' is listed twice"),
        (f"SHA1(a) {SHA1_A}\n", "is not 'SHA256(file)= hex'"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_manifests_name_the_line(text: str | bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        parse_manifest(text, "x.mf")


def test_streaming_digest_and_hasher_agree_with_hashlib() -> None:
    data = bytes(range(256)) * 9000  # more than one chunk
    seen: list[int] = []
    assert stream_digest(io.BytesIO(data), "SHA256", seen.append) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data) and len(seen) == 3
    hasher = Hasher(["SHA1", "SHA512", "SHA1"])
    for i in range(0, len(data), 1000):
        hasher.update(data[i : i + 1000])
    assert hasher.hexdigests() == {"SHA1": hashlib.sha1(data).hexdigest(), "SHA512": hashlib.sha512(data).hexdigest()}


def test_verify_names_the_file_whose_digest_failed(tmp_path: Path) -> None:
    good, bad, extra = tmp_path / "good.vmdk", tmp_path / "bad.vmdk", tmp_path / "extra.iso"
    good.write_bytes(b"good")
    bad.write_bytes(b"original")
    extra.write_bytes(b"x")
    manifest = build_manifest({"good.vmdk": good, "bad.vmdk": bad})
    manifest = Manifest((*manifest.entries, ManifestEntry("SHA1", "gone.vmdk", SHA1_A)))
    bad.write_bytes(b"tampered")
    mismatches = verify(manifest, {"good.vmdk": good, "bad.vmdk": bad, "extra.iso": extra})
    assert [(m.file, m.reason) for m in mismatches] == [
        ("bad.vmdk", "digest"),
        ("gone.vmdk", "missing"),
        ("extra.iso", "unlisted"),
    ]
    assert mismatches[0].actual == hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(DigestMismatch, match=r"bad\.vmdk: SHA256 is [0-9a-f]{64}, the manifest says") as raised:
        require_verified(mismatches)
    assert "good.vmdk" not in str(raised.value)
    assert verify(build_manifest({"good.vmdk": good}), {"good.vmdk": good}) == []
    require_verified([])


def test_compare_digests_of_extracted_files() -> None:
    manifest = Manifest((ManifestEntry("SHA256", "d.vmdk", SHA256_B),))
    assert compare_digests(manifest, {"d.vmdk": {"SHA256": SHA256_B.upper()}}) == []
    assert compare_digests(manifest, {"d.vmdk": {"SHA256": "0" * 64}}) == [
        Mismatch("d.vmdk", "digest", "SHA256", SHA256_B, "0" * 64)
    ]


def cert_file(samples: Path, line: str) -> str:
    return line + "\n" + (samples / "signer-cert.pem").read_text()


def test_certificate_file_structure(samples: Path) -> None:
    cert = parse_certificate_file(cert_file(samples, f"SHA256(app.mf)= {'ab' * 256}"), "app.mf")
    assert (cert.algorithm, cert.signed_file, len(cert.signature)) == ("SHA256", "app.mf", 256)
    assert len(cert.certificates) == 1 and cert.certificates[0][:1] == b"\x30"


@pytest.mark.parametrize(
    ("line", "pem", "message"),
    [
        (f"SHA256(other.mf)= {'ab' * 8}", True, "not of the manifest 'app.mf'"),
        ("", True, "expected one signature line"),
        (f"SHA256(app.mf)= {'ab' * 8}", False, "no PEM certificate"),
        ("SHA256(app.mf)= abc", True, "odd number"),
    ],
)
def test_bad_certificate_files(samples: Path, line: str, pem: bool, message: str) -> None:
    text = cert_file(samples, line) if pem else line + "\n"
    with pytest.raises(ManifestError, match=message):
        parse_certificate_file(text, "app.mf", "app.cert")


def test_certificate_that_is_not_der(samples: Path) -> None:
    text = "SHA256(app.mf)= abab\n-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    with pytest.raises(ManifestError, match="certificate 1 is not a DER certificate"):
        parse_certificate_file(text, "app.mf")
