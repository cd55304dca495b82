"""OVF package signatures (DSP0243 section 5.2): verifying a ``.cert`` and writing one.

A signed package holds ``<name>.cert`` beside its manifest, in the form ovftool writes::

    SHA256(name.mf)= 5b0c…          (the signature of the manifest's exact bytes, hex)
    -----BEGIN CERTIFICATE-----     (the signer's certificate …)
    -----END CERTIFICATE-----
    -----BEGIN CERTIFICATE-----     (… then, optionally, intermediate CA certificates)

``check_signature`` verifies in two steps, with different outcomes:

1. The signature over the manifest, with the public key of the first (signer's) certificate: RSA
   PKCS#1 v1.5 as ovftool writes it, or ECDSA (DER signature). The hash is the one the line names
   (SHA1, SHA256, SHA512). A signature that does not verify means the manifest or the certificate was
   changed after signing: ``SignatureInvalid`` is raised and the package must be refused, whatever the
   trust policy. So is a certificate that claims an issuer in the chain whose signature on it fails.
2. Trust: a path from the signer's certificate through the ``.cert``'s other certificates to an
   anchor of the trust bundle (PEM CA certificates an admin provides). Each link's signature is
   checked, every certificate of the path must be valid at ``now``, and every issuer must be a CA
   (basicConstraints ``cA``, within its ``pathLenConstraint``; keyCertSign where keyUsage is given).
   A signer certificate that is itself in the bundle is trusted as it is (pinned). Extended key
   usage is not required (ovftool's and most vendors' code-signing certificates carry codeSigning or
   none). The outcome is a ``SignatureCheck``: Trusted, or Untrusted with the reason (expired, not
   yet valid, issuer not in the bundle, no bundle given); a package without ``.cert`` is Unsigned.

``sign_manifest`` writes such a ``.cert`` (used by ``writer.write_ova`` and the tests).

Pure: nothing is read or written here besides the bytes passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from vdc.ovf.errors import ManifestError, OvfError, SignatureInvalid, UnsupportedFeature
from vdc.ovf.manifest import Algorithm, CertificateFile, parse_certificate_file

SignatureState = Literal["Trusted", "Untrusted", "Unsigned"]
MAX_CHAIN = 8
"""Certificates in a path, signer and anchor included."""

_HASHES: dict[Algorithm, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA512": hashes.SHA512,
}


@dataclass(frozen=True)
class SignatureCheck:
    """What the ``.cert`` proves: who signed (``subject``, ``issuer``: RFC 4514 names of the signer's
    certificate, ``not_after`` its expiry) and whether the trust bundle vouches for them."""

    state: SignatureState
    subject: str | None = None
    issuer: str | None = None
    not_after: datetime | None = None
    reason: str = ""

    @property
    def trusted(self) -> bool:
        return self.state == "Trusted"

    @property
    def message(self) -> str:
        """One line for a status or condition message."""
        if self.state == "Unsigned":
            return self.reason or "the package is not signed"
        who = f"signed by {self.subject!r}" if self.subject else "signed"
        return f"{who}: {self.reason}" if self.reason else who


UNSIGNED = SignatureCheck("Unsigned", reason="the package is not signed (no .cert file)")


class TrustBundleError(ValueError):
    """The trust bundle is not PEM certificates (the message names the bundle)."""


def load_trust_bundle(pem: str | bytes, name: str = "trust bundle") -> tuple[x509.Certificate, ...]:
    """The CA certificates of a PEM bundle (other PEM blocks, e.g. comments, are skipped)."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TrustBundleError(f"{name}: no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise TrustBundleError(f"{name}: not PEM certificates ({exc})") from None


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _validity_problem(cert: x509.Certificate, now: datetime, what: str) -> str | None:
    if now > cert.not_valid_after_utc:
        return f"{what} {_name(cert)!r} expired at {_at(cert.not_valid_after_utc)}"
    if now < cert.not_valid_before_utc:
        return f"{what} {_name(cert)!r} is not valid before {_at(cert.not_valid_before_utc)}"
    return None


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _issuer_problem(issuer: x509.Certificate, below: int) -> str | None:
    """Why ``issuer`` may not issue a path with ``below`` CA certificates under it (None: it may)."""
    constraints = _extension(issuer, x509.BasicConstraints)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        return f"issuer {_name(issuer)!r} is not a CA (no basicConstraints cA)"
    if constraints.path_length is not None and below > constraints.path_length:
        return f"issuer {_name(issuer)!r} allows {constraints.path_length} CA(s) below it, the chain has {below}"
    usage = _extension(issuer, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        return f"issuer {_name(issuer)!r} may not sign certificates (keyUsage lacks keyCertSign)"
    return None


def _key_ids_match(issuer: x509.Certificate, cert: x509.Certificate) -> bool | None:
    """Whether ``cert``'s authorityKeyIdentifier is ``issuer``'s subjectKeyIdentifier (None: one is absent)."""
    aki = _extension(cert, x509.AuthorityKeyIdentifier)
    ski = _extension(issuer, x509.SubjectKeyIdentifier)
    if (
        isinstance(aki, x509.AuthorityKeyIdentifier)
        and aki.key_identifier
        and isinstance(ski, x509.SubjectKeyIdentifier)
    ):
        return aki.key_identifier == ski.digest
    return None


def _may_have_issued(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    """Names match and, where both are given, the key identifiers too (two CAs of one name differ there)."""
    return issuer.subject == cert.issuer and _key_ids_match(issuer, cert) is not False


def _signed_by(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _verify_manifest(
    cert: x509.Certificate, signature: bytes, manifest: bytes, algorithm: Algorithm, cert_name: str, manifest_name: str
) -> None:
    key = cert.public_key()
    digest = _HASHES[algorithm]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, manifest, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, manifest, ec.ECDSA(digest))
        else:
            raise UnsupportedFeature(f"{cert_name}: a {type(key).__name__} signing key (only RSA and ECDSA)")
    except InvalidSignature:
        raise SignatureInvalid(
            f"{cert_name}: the {algorithm} signature of {manifest_name} does not verify with the key of "
            f"{_name(cert)!r}: the manifest or the certificate was changed after signing"
        ) from None


def _certificates(parsed: CertificateFile, cert_name: str) -> list[x509.Certificate]:
    out = []
    for number, der in enumerate(parsed.certificates, start=1):
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise ManifestError(f"{cert_name}: certificate {number} is not an X.509 certificate ({exc})") from None
    return out


def check_signature(
    cert_file: str | bytes | None,
    manifest: bytes,
    manifest_name: str,
    *,
    trusted: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
    cert_name: str = "certificate",
) -> SignatureCheck:
    """Verify the ``.cert`` (``cert_file``, named ``cert_name`` in messages) over the manifest's exact
    bytes and its chain against ``trusted`` at ``now`` (default: the current time); ``UNSIGNED`` when
    there is no ``.cert`` (``cert_file`` None).

    Raises ``SignatureInvalid`` when the signature does not verify, ``ManifestError`` when the file is
    malformed or signs another file than ``manifest_name``, ``UnsupportedFeature`` for other key types.
    """
    if cert_file is None:
        return UNSIGNED
    now = now or datetime.now(UTC)
    parsed = parse_certificate_file(cert_file, manifest_name, cert_name)
    chain = _certificates(parsed, cert_name)
    signer = chain[0]
    _verify_manifest(signer, parsed.signature, manifest, parsed.algorithm, cert_name, manifest_name)

    def result(state: SignatureState, reason: str) -> SignatureCheck:
        return SignatureCheck(state, _name(signer), signer.issuer.rfc4514_string(), signer.not_valid_after_utc, reason)

    if not trusted:
        return result("Untrusted", "no trust bundle is configured to check the signer's certificate against")
    usage = _extension(signer, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not (usage.digital_signature or usage.content_commitment):
        return result("Untrusted", "the signer's certificate is not for signatures (keyUsage lacks digitalSignature)")
    pins = {c.fingerprint(hashes.SHA256()) for c in trusted}
    intermediates = chain[1:]
    path = [signer]
    while True:
        current = path[-1]
        what = "certificate" if current is signer else "intermediate certificate"
        problem = _validity_problem(current, now, what)
        if problem:
            return result("Untrusted", problem)
        if current.fingerprint(hashes.SHA256()) in pins:
            return result("Trusted", "")
        below = len(path) - 1  # CA certificates under the next issuer
        anchors = [a for a in trusted if _may_have_issued(a, current)]
        for anchor in anchors:
            if _signed_by(anchor, current):
                problem = _issuer_problem(anchor, below) or _validity_problem(anchor, now, "trusted CA certificate")
                return result("Untrusted", problem) if problem else result("Trusted", "")
        if any(_key_ids_match(a, current) for a in anchors):  # the very key that signed it: changed since
            raise SignatureInvalid(
                f"{cert_name}: the signature of the trusted CA {_name(anchors[0])!r} on {_name(current)!r} does "
                "not verify: the certificate was changed"
            )
        candidates = [c for c in intermediates if c not in path and _may_have_issued(c, current)]
        if not candidates:
            if anchors:
                reason = (
                    f"issuer {current.issuer.rfc4514_string()!r} in the trust bundle did not sign {_name(current)!r}"
                )
            else:
                reason = f"issuer {current.issuer.rfc4514_string()!r} is not in the trust bundle"
            return result("Untrusted", reason)
        issuer = next((c for c in candidates if _signed_by(c, current)), None)
        if issuer is None:
            raise SignatureInvalid(
                f"{cert_name}: the signature of {_name(candidates[0])!r} on {_name(current)!r} does not verify: "
                "a certificate was changed"
            )
        problem = _issuer_problem(issuer, below)
        if problem:
            return result("Untrusted", problem)
        if len(path) + 1 >= MAX_CHAIN:
            return result("Untrusted", f"the chain is longer than {MAX_CHAIN} certificates")
        path.append(issuer)


# --- signing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A private key (PEM, PKCS#8 or traditional; ``password`` if encrypted) and its certificate chain
    (PEM: the signer's certificate first, then intermediates), and the digest of the signature line."""

    key_pem: bytes
    chain_pem: bytes
    algorithm: Algorithm = "SHA256"
    password: bytes | None = None


def sign_manifest(manifest: bytes, manifest_name: str, signer: Signer) -> bytes:
    """The ``.cert`` for ``manifest`` (its exact bytes) in ovftool's form."""
    if signer.algorithm not in _HASHES:
        raise OvfError(f"unknown signature digest {signer.algorithm!r}")
    try:
        key = serialization.load_pem_private_key(signer.key_pem, signer.password)
        chain = x509.load_pem_x509_certificates(signer.chain_pem)
    except (ValueError, TypeError) as exc:
        raise OvfError(f"signing key or certificate chain: {exc}") from None
    if key.public_key() != chain[0].public_key():
        raise OvfError(f"the signing key is not the key of the first certificate ({_name(chain[0])!r})")
    digest = _HASHES[signer.algorithm]()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(manifest, padding.PKCS1v15(), digest)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(manifest, ec.ECDSA(digest))
    else:
        raise OvfError(f"a {type(key).__name__} signing key (only RSA and ECDSA)")
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return f"{signer.algorithm}({manifest_name})= {signature.hex()}\n".encode() + pem
