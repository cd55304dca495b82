"""OVF manifests (``.mf``) and certificate files (``.cert``), DSP0243 section 5.

A manifest line is ``SHA256(disk1.vmdk)= 3f…``; exporters vary the spacing (``SHA256 (disk1.vmdk) = …``)
and the case of the hex, both accepted. Digests are computed streaming, in 1 MiB reads, so a 100 GiB
disk costs no memory; ``Hasher`` lets an extractor hash while it writes instead of reading twice.

The ``.cert`` file is parsed here for structure: one signature line naming the manifest and at
least one well-formed PEM certificate. ``vdc.ovf.signature`` verifies it: the signature over the
manifest's exact bytes with the signer's key, and the certificate chain against a trust bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from vdc.ovf.errors import DigestMismatch, ManifestError

Algorithm = Literal["SHA1", "SHA256", "SHA512"]
ALGORITHMS: tuple[Algorithm, ...] = ("SHA1", "SHA256", "SHA512")
_HEX_LENGTH = {"SHA1": 40, "SHA256": 64, "SHA512": 128}
_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$")
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ManifestEntry:
    algorithm: Algorithm
    file: str
    digest: str  # lower-case hex

    def line(self) -> str:
        return f"{self.algorithm}({self.file})= {self.digest}"


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]

    def entry(self, file: str) -> ManifestEntry | None:
        return next((e for e in self.entries if e.file == file), None)

    def files(self) -> tuple[str, ...]:
        return tuple(e.file for e in self.entries)

    def to_text(self) -> str:
        return "".join(e.line() + "\n" for e in self.entries)


def _algorithm(name: str) -> Algorithm:
    for algorithm in ALGORITHMS:
        if algorithm == name:
            return algorithm
    raise ManifestError(f"unknown digest algorithm {name!r}")


def _decoded(text: str | bytes, encoding: str, name: str) -> str:
    if isinstance(text, str):
        return text
    try:
        return text.decode(encoding)
    except UnicodeDecodeError:
        raise ManifestError(f"{name} is not {encoding.upper()} text") from None


def parse_manifest(text: str | bytes, name: str = "manifest") -> Manifest:
    """Parse a ``.mf``; errors name ``name`` and the line number."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{name} is larger than {MAX_MANIFEST_BYTES} bytes")
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for number, raw in enumerate(_decoded(text, "utf-8", name).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise ManifestError(f"{name} line {number}: {line[:80]!r} is not 'SHA256(file)= hex'")
        algorithm, file, digest = _algorithm(match.group(1)), match.group(2).strip(), match.group(3).lower()
        if len(digest) != _HEX_LENGTH[algorithm]:
            raise ManifestError(f"{name} line {number}: a {algorithm} digest has {_HEX_LENGTH[algorithm]} hex digits")
        if file in seen:
            raise ManifestError(f"{name} line {number}: {file!r} is listed twice")
        seen.add(file)
        entries.append(ManifestEntry(algorithm, file, digest))
    return Manifest(tuple(entries))


class Hasher:
    """Digests of one stream for several algorithms at once, fed chunk by chunk."""

    def __init__(self, algorithms: Iterable[Algorithm]) -> None:
        self._hashes = {a: hashlib.new(a.lower()) for a in set(algorithms)}

    def update(self, chunk: bytes) -> None:
        for h in self._hashes.values():
            h.update(chunk)

    def hexdigests(self) -> dict[Algorithm, str]:
        return {a: h.hexdigest() for a, h in self._hashes.items()}


def stream_digest(stream: BinaryIO, algorithm: Algorithm, progress: Progress | None = None) -> str:
    """Hex digest of what remains in ``stream``; ``progress`` gets the byte count of each chunk."""
    h = hashlib.new(algorithm.lower())
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        if progress:
            progress(len(chunk))
    return h.hexdigest()


def file_digest(path: Path, algorithm: Algorithm, progress: Progress | None = None) -> str:
    with path.open("rb") as stream:
        return stream_digest(stream, algorithm, progress)


MismatchReason = Literal["digest", "missing", "unlisted"]


@dataclass(frozen=True)
class Mismatch:
    """A file whose digest is wrong, a listed file that is missing, or a package file not listed."""

    file: str
    reason: MismatchReason
    algorithm: Algorithm | None = None
    expected: str | None = None
    actual: str | None = None

    @property
    def message(self) -> str:
        if self.reason == "digest":
            return f"{self.file}: {self.algorithm} is {self.actual}, the manifest says {self.expected}"
        if self.reason == "missing":
            return f"{self.file}: listed in the manifest but not in the package"
        return f"{self.file}: in the package but not listed in the manifest"


def compare_digests(manifest: Manifest, computed: Mapping[str, Mapping[Algorithm, str]]) -> list[Mismatch]:
    """Check digests computed elsewhere (e.g. while extracting) against the manifest.

    ``computed`` maps each package file (descriptor and disks, not the manifest or certificate) to its
    digests by algorithm; files in it that the manifest does not list are reported as ``unlisted``.
    """
    mismatches: list[Mismatch] = []
    for entry in manifest.entries:
        digests = computed.get(entry.file)
        if digests is None:
            mismatches.append(Mismatch(entry.file, "missing", entry.algorithm, entry.digest))
            continue
        actual = digests.get(entry.algorithm)
        if actual is None:
            raise ValueError(f"no {entry.algorithm} digest was computed for {entry.file}")
        if actual.lower() != entry.digest:
            mismatches.append(Mismatch(entry.file, "digest", entry.algorithm, entry.digest, actual.lower()))
    listed = set(manifest.files())
    mismatches += [Mismatch(file, "unlisted") for file in computed if file not in listed]
    return mismatches


def verify(manifest: Manifest, files: Mapping[str, Path], progress: Progress | None = None) -> list[Mismatch]:
    """Hash ``files`` (package name → local path) and compare them with ``manifest``."""
    computed: dict[str, dict[Algorithm, str]] = {}
    for name, path in files.items():
        entry = manifest.entry(name)
        if entry is None:
            computed[name] = {}
        elif path.is_file():
            computed[name] = {entry.algorithm: file_digest(path, entry.algorithm, progress)}
    return compare_digests(manifest, computed)


def require_verified(mismatches: Iterable[Mismatch]) -> None:
    """Raise ``DigestMismatch`` naming every file that failed."""
    problems = [m.message for m in mismatches]
    if problems:
        raise DigestMismatch("manifest check failed: " + "; ".join(problems))


def build_manifest(files: Mapping[str, Path], algorithm: Algorithm = "SHA256") -> Manifest:
    return Manifest(tuple(ManifestEntry(algorithm, name, file_digest(path, algorithm)) for name, path in files.items()))


# --- certificate file ------------------------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class CertificateFile:
    """A ``.cert``: the manifest's signature and the signer's certificate chain (DER), as written; see
    ``vdc.ovf.signature.check_signature`` for the verification."""

    algorithm: Algorithm
    signed_file: str
    signature: bytes
    certificates: tuple[bytes, ...]


def parse_certificate_file(text: str | bytes, manifest_name: str, name: str = "certificate") -> CertificateFile:
    """Check a ``.cert`` for structure: the signature line must name ``manifest_name``, the signature
    must be hex, and every PEM block must be base64 of a DER SEQUENCE. The signature is verified by
    ``vdc.ovf.signature.check_signature``."""
    text = _decoded(text, "ascii", name)
    signatures = [m for line in text.splitlines() if (m := _LINE.match(line.strip()))]
    if len(signatures) != 1:
        raise ManifestError(
            f"{name}: expected one signature line 'SHA256({manifest_name})= hex', found {len(signatures)}"
        )
    algorithm, signed_file, signature_hex = signatures[0].groups()
    if signed_file.strip() != manifest_name:
        raise ManifestError(f"{name}: the signature is of {signed_file!r}, not of the manifest {manifest_name!r}")
    if len(signature_hex) % 2:
        raise ManifestError(f"{name}: the signature has an odd number of hex digits")
    certificates: list[bytes] = []
    for number, block in enumerate(_PEM.findall(text), start=1):
        try:
            der = base64.b64decode("".join(block.split()), validate=True)
        except binascii.Error:
            raise ManifestError(f"{name}: certificate {number} is not base64") from None
        if len(der) < 64 or der[0] != 0x30:
            raise ManifestError(f"{name}: certificate {number} is not a DER certificate")
        certificates.append(der)
    if not certificates:
        raise ManifestError(f"{name}: no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return CertificateFile(
        _algorithm(algorithm), signed_file.strip(), bytes.fromhex(signature_hex), tuple(certificates)
    )
