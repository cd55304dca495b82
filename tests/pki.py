"""A test PKI made at test time with ``cryptography``: CAs, intermediates and code-signing certificates
for signing OVAs (``vdc.ovf.signature.Signer``). Nothing is cached; RSA 2048 keys take milliseconds."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vdc.ovf.manifest import Algorithm
from vdc.ovf.signature import Signer, sign_manifest

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _key(kind: str) -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Identity:
    """A certificate, its key, and the certificates between it and its root (issuer first)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def signer(self, algorithm: Algorithm = "SHA256", *, with_chain: bool = True) -> Signer:
        """Sign with this identity; the ``.cert`` carries the intermediates too unless ``with_chain`` is false."""
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chain = [self.cert, *(self.chain if with_chain else [])]
        return Signer(key_pem, b"".join(_pem(c) for c in chain), algorithm)


def _build(
    subject: str,
    key: PrivateKey,
    issuer: Identity | None,
    *,
    ca: bool,
    path_length: int | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vdc tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])  # fmt: skip
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_ca(name: str, *, key: str = "rsa", **validity: datetime) -> Identity:
    """A self-signed root CA."""
    private = _key(key)
    return Identity(_build(name, private, None, ca=True, **validity), private)


def make_intermediate(name: str, issuer: Identity, *, key: str = "rsa", **validity: datetime) -> Identity:
    private = _key(key)
    return Identity(_build(name, private, issuer, ca=True, path_length=0, **validity), private, _chain(issuer))


def make_signer(name: str, issuer: Identity, *, key: str = "rsa", **validity: datetime) -> Identity:
    """A code-signing (end-entity) certificate issued by ``issuer``; its chain holds the intermediates
    between it and the root (not the root)."""
    private = _key(key)
    return Identity(_build(name, private, issuer, ca=False, **validity), private, _chain(issuer))


def _chain(issuer: Identity) -> list[x509.Certificate]:
    """What sits between a certificate ``issuer`` issued and the root: nothing under a root."""
    return [issuer.cert, *issuer.chain] if issuer.cert.issuer != issuer.cert.subject else []


def bundle(*cas: Identity) -> str:
    """A PEM trust bundle of the CAs' certificates."""
    return b"".join(ca.cert_pem for ca in cas).decode()


def signed_copy(ova: Path, out: Path, signer: Signer, *, edit_manifest: Callable[[bytes], bytes] | None = None) -> Path:
    """``ova`` re-packed as ``out`` with a ``.cert`` signing its manifest, placed after the manifest
    (DSP0243's order). ``edit_manifest`` changes the manifest after it was signed (a tampered package)."""
    with tarfile.open(ova) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as target:
        for member in source.getmembers():
            data = source.extractfile(member)
            assert data is not None, member.name
            if not member.name.endswith(".mf"):
                target.addfile(member, data)
                continue
            manifest = data.read()
            cert = sign_manifest(manifest, member.name, signer)
            if edit_manifest is not None:
                manifest = edit_manifest(manifest)
            for name, content in ((member.name, manifest), (member.name[: -len(".mf")] + ".cert", cert)):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(content), 0o644
                target.addfile(info, io.BytesIO(content))
    return out
