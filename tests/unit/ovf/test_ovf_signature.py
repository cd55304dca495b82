"""OVF package signatures: OVAs signed by the writer with a test PKI made here (tests/pki.py), then
verified: the signature over the manifest, the chain to the trust bundle, validity, and what is
refused (a changed manifest or certificate) as opposed to merely untrusted."""

from __future__ import annotations

import re
import tarfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from ovf_testlib import TarBuilder, minimal_descriptor

from pki import Identity, bundle, make_ca, make_intermediate, make_signer, signed_copy
from vdc.ovf.errors import DigestMismatch, ManifestError, OvfError, SignatureInvalid
from vdc.ovf.manifest import Algorithm, compare_digests, require_verified
from vdc.ovf.ova import extract_ova, open_ova
from vdc.ovf.signature import (
    UNSIGNED,
    SignatureCheck,
    TrustBundleError,
    check_signature,
    load_trust_bundle,
    sign_manifest,
)
from vdc.ovf.writer import write_ova

pytestmark = pytest.mark.unit


class Pki:
    def __init__(self) -> None:
        self.root = make_ca("vdc test root CA")
        self.intermediate = make_intermediate("vdc test signing CA", self.root)
        self.vendor = make_signer("appliance vendor", self.root)
        self.vendor_via_intermediate = make_signer("appliance vendor (intermediate)", self.intermediate)
        self.other_root = make_ca("some other CA")
        self.stranger = make_signer("stranger", self.other_root)
        self.ec_vendor = make_signer("ecdsa vendor", self.root, key="ec")


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


def signed_ova(
    tmp_path: Path, identity: Identity | None, algorithm: Algorithm = "SHA256", *, with_chain: bool = True
) -> Path:
    disk = tmp_path / "disk1.vmdk"
    disk.write_bytes(b"not really a disk image " * 100)
    descriptor = minimal_descriptor({disk.name: disk.stat().st_size})
    out = tmp_path / "appliance.ova"
    signer = identity.signer(algorithm, with_chain=with_chain) if identity else None
    write_ova(out, "appliance.ovf", descriptor, {disk.name: disk}, signer=signer)
    return out


def members(ova: Path) -> dict[str, bytes]:
    with tarfile.open(ova) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def check(
    ova: Path, trusted: str | None, now: datetime | None = None, *, cert: bytes | None = None, mf: bytes | None = None
) -> SignatureCheck:
    files = members(ova)
    anchors = load_trust_bundle(trusted) if trusted else ()
    return check_signature(
        cert if cert is not None else files.get("appliance.cert"),
        mf if mf is not None else files["appliance.mf"],
        "appliance.mf",
        trusted=anchors,
        now=now,
        cert_name="appliance.cert",
    )


# --- the writer ------------------------------------------------------------------------------------


def test_signed_ova_has_the_certificate_after_the_manifest(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor_via_intermediate)
    with tarfile.open(ova) as tar:
        assert tar.getnames() == ["appliance.ovf", "appliance.mf", "appliance.cert", "disk1.vmdk"]
    cert = members(ova)["appliance.cert"].decode()
    assert re.match(r"^SHA256\(appliance\.mf\)= [0-9a-f]{512}\n-----BEGIN CERTIFICATE-----\n", cert)
    assert cert.count("-----BEGIN CERTIFICATE-----") == 2  # the signer's, then the intermediate's
    package = open_ova(ova)  # the structure check of the existing reader accepts it
    assert package.certificate is not None and package.certificate_name == "appliance.cert"
    assert package.certificate.algorithm == "SHA256" and len(package.certificate.certificates) == 2
    assert package.payload_names() == ("appliance.ovf", "disk1.vmdk")


def test_unsigned_ova_has_no_certificate(tmp_path: Path) -> None:
    ova = signed_ova(tmp_path, None)
    assert list(members(ova)) == ["appliance.ovf", "appliance.mf", "disk1.vmdk"]
    assert open_ova(ova).certificate is None
    assert check(ova, None) == UNSIGNED
    assert UNSIGNED.state == "Unsigned" and "not signed" in UNSIGNED.message


def test_signing_needs_the_key_of_the_certificate(pki: Pki) -> None:
    mismatched = replace(pki.vendor.signer(), chain_pem=pki.stranger.cert_pem)
    with pytest.raises(OvfError, match="not the key of the first certificate"):
        sign_manifest(b"SHA256(a)= 00\n", "a.mf", mismatched)


# --- trusted -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
def test_signed_by_a_trusted_ca_is_trusted(tmp_path: Path, pki: Pki, algorithm: Algorithm) -> None:
    ova = signed_ova(tmp_path, pki.vendor, algorithm)
    assert members(ova)["appliance.cert"].startswith(f"{algorithm}(appliance.mf)= ".encode())
    result = check(ova, bundle(pki.root))
    assert result.state == "Trusted" and result.trusted and result.reason == ""
    assert result.subject == pki.vendor.subject == "CN=appliance vendor,O=vdc tests"
    assert result.issuer == pki.root.subject
    assert result.not_after == pki.vendor.cert.not_valid_after_utc
    assert result.message == "signed by 'CN=appliance vendor,O=vdc tests'"


def test_a_bundle_of_several_cas_and_an_ecdsa_key(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.ec_vendor, "SHA512")
    assert check(ova, bundle(pki.other_root, pki.root)).state == "Trusted"


def test_chain_through_an_intermediate_in_the_cert(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor_via_intermediate)
    result = check(ova, bundle(pki.root))
    assert result.state == "Trusted"
    assert result.issuer == pki.intermediate.subject
    # trusting the intermediate alone is enough too
    assert check(ova, bundle(pki.intermediate)).state == "Trusted"


def test_without_the_intermediate_the_chain_stops_at_its_name(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor_via_intermediate, with_chain=False)
    result = check(ova, bundle(pki.root))
    assert result.state == "Untrusted"
    assert result.reason == "issuer 'CN=vdc test signing CA,O=vdc tests' is not in the trust bundle"


def test_a_pinned_signer_certificate_is_trusted(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.stranger)
    assert check(ova, bundle(pki.stranger)).state == "Trusted"


# --- untrusted ---------------------------------------------------------------------------------------


def test_certificate_from_another_ca_names_the_issuer(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.stranger)
    result = check(ova, bundle(pki.root))
    assert result.state == "Untrusted" and not result.trusted
    assert result.reason == "issuer 'CN=some other CA,O=vdc tests' is not in the trust bundle"
    assert result.subject == "CN=stranger,O=vdc tests"
    assert result.message == f"signed by 'CN=stranger,O=vdc tests': {result.reason}"


def test_a_ca_of_the_same_name_with_another_key_is_not_the_issuer(tmp_path: Path, pki: Pki) -> None:
    impostor = make_ca("vdc test root CA")
    ova = signed_ova(tmp_path, pki.vendor)
    result = check(ova, bundle(impostor))
    assert result.state == "Untrusted"
    assert result.reason == "issuer 'CN=vdc test root CA,O=vdc tests' is not in the trust bundle"


def test_no_trust_bundle_is_untrusted(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor)
    result = check(ova, None)
    assert result.state == "Untrusted" and result.subject == pki.vendor.subject
    assert result.reason == "no trust bundle is configured to check the signer's certificate against"


def test_expired_certificate_is_untrusted_naming_the_expiry(tmp_path: Path, pki: Pki) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    expired = make_signer(
        "expired vendor", pki.root, not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    ova = signed_ova(tmp_path, expired)
    result = check(ova, bundle(pki.root))
    assert result.state == "Untrusted"
    when = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.reason == f"certificate 'CN=expired vendor,O=vdc tests' expired at {when}"
    assert result.not_after == now - timedelta(days=1)


def test_validity_is_judged_at_the_time_given(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor)
    later = pki.vendor.cert.not_valid_after_utc + timedelta(seconds=1)
    assert "expired at" in check(ova, bundle(pki.root), now=later).reason
    earlier = pki.vendor.cert.not_valid_before_utc - timedelta(seconds=1)
    result = check(ova, bundle(pki.root), now=earlier)
    assert result.state == "Untrusted" and "is not valid before" in result.reason


def test_an_expired_intermediate_or_root_is_untrusted(tmp_path: Path, pki: Pki) -> None:
    now = datetime.now(UTC)
    old = make_intermediate(
        "old signing CA", pki.root, not_before=now - timedelta(days=9), not_after=now - timedelta(days=2)
    )
    ova = signed_ova(tmp_path, make_signer("vendor of an old CA", old))
    result = check(ova, bundle(pki.root))
    assert result.state == "Untrusted"
    assert result.reason.startswith("intermediate certificate 'CN=old signing CA,O=vdc tests' expired at")
    old_root = make_ca("old root", not_before=now - timedelta(days=9), not_after=now - timedelta(days=2))
    ova = signed_ova(tmp_path, make_signer("vendor of an old root", old_root))
    result = check(ova, bundle(old_root))
    assert result.state == "Untrusted"
    assert result.reason.startswith("trusted CA certificate 'CN=old root,O=vdc tests' expired at")


def test_an_issuer_that_is_not_a_ca_is_untrusted(tmp_path: Path, pki: Pki) -> None:
    not_a_ca = make_signer("end entity", pki.root)
    ova = signed_ova(tmp_path, make_signer("signed by an end entity", not_a_ca))
    assert (
        check(ova, bundle(not_a_ca)).reason == "issuer 'CN=end entity,O=vdc tests' is not a CA (no basicConstraints cA)"
    )
    # in the chain: the root is trusted, the end entity between is no CA
    ova = signed_ova(tmp_path, replace(make_signer("signed by an end entity", not_a_ca), chain=[not_a_ca.cert]))
    assert (
        check(ova, bundle(pki.root)).reason == "issuer 'CN=end entity,O=vdc tests' is not a CA (no basicConstraints cA)"
    )


# --- refused: the signature does not verify ----------------------------------------------------------


def test_tampered_manifest_is_refused(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor)
    mf = members(ova)["appliance.mf"]
    changed = re.sub(rb"= ([0-9a-f])", lambda m: b"= " + (b"0" if m.group(1) != b"0" else b"1"), mf, count=1)
    assert changed != mf
    for trust in (bundle(pki.root), None):  # whatever the policy
        with pytest.raises(
            SignatureInvalid, match=r"^appliance\.cert: the SHA256 signature of appliance\.mf does not verify"
        ):
            check(ova, trust, mf=changed)
    with pytest.raises(SignatureInvalid):
        check(ova, None, mf=mf + b"\n")  # even a byte the manifest parser would not notice


def test_tampered_signature_or_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor)
    cert = members(ova)["appliance.cert"]
    hex_start = cert.index(b"= ") + 2
    flipped = cert[:hex_start] + (b"1" if cert[hex_start : hex_start + 1] == b"0" else b"0") + cert[hex_start + 1 :]
    with pytest.raises(SignatureInvalid):
        check(ova, bundle(pki.root), cert=flipped)
    # the signer's certificate swapped for another (the stranger's): its key did not sign the manifest
    line = cert.split(b"\n", 1)[0] + b"\n"
    with pytest.raises(SignatureInvalid, match="with the key of 'CN=stranger,O=vdc tests'"):
        check(ova, bundle(pki.root), cert=line + pki.stranger.cert_pem)


def test_a_changed_certificate_with_the_same_key_is_refused(tmp_path: Path, pki: Pki) -> None:
    """The signer's certificate changed (another subject) but its key kept: the manifest signature
    still verifies, the trusted CA's signature on the certificate does not."""
    original = pki.vendor.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=appliance vendor (changed),O=vdc tests"))
        .issuer_name(original.issuer)
        .public_key(original.public_key())
        .serial_number(original.serial_number)
        .not_valid_before(original.not_valid_before_utc)
        .not_valid_after(original.not_valid_after_utc)
    )
    for extension in original.extensions:  # the authorityKeyIdentifier names the root's key
        builder = builder.add_extension(extension.value, extension.critical)
    changed = builder.sign(make_ca("x").key, hashes.SHA256())  # re-signed: stands for edited DER bytes
    ova = signed_ova(tmp_path, Identity(changed, pki.vendor.key))
    with pytest.raises(SignatureInvalid, match="signature of the trusted CA 'CN=vdc test root CA,O=vdc tests'"):
        check(ova, bundle(pki.root))


def test_tampered_descriptor_is_caught_by_the_manifest_check(tmp_path: Path, pki: Pki, make_tar: TarBuilder) -> None:
    """The signature covers the manifest; the manifest covers the descriptor and disks. A descriptor
    changed after signing leaves the signature valid and fails the digest check."""
    ova = signed_ova(tmp_path, pki.vendor)
    files = members(ova)
    descriptor = files["appliance.ovf"].replace(b"<Info>vm</Info>", b"<Info>VM</Info>")
    assert descriptor != files["appliance.ovf"]
    tampered = make_tar([(n, descriptor if n == "appliance.ovf" else d) for n, d in files.items()])
    assert check(tampered, bundle(pki.root)).state == "Trusted"
    package = open_ova(tampered)
    assert package.manifest is not None
    out = tmp_path / "out"
    out.mkdir()
    extracted = extract_ova(package, out)
    with pytest.raises(DigestMismatch, match=r"appliance\.ovf: SHA256 is [0-9a-f]+, the manifest says"):
        require_verified(compare_digests(package.manifest, {n: f.digests for n, f in extracted.items()}))


def test_the_cert_must_sign_the_packages_manifest(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor)
    cert = members(ova)["appliance.cert"].replace(b"SHA256(appliance.mf)", b"SHA256(other.mf)")
    with pytest.raises(ManifestError, match=r"the signature is of 'other\.mf', not of the manifest 'appliance\.mf'"):
        check(ova, bundle(pki.root), cert=cert)


def test_a_cert_with_a_broken_certificate_is_malformed(tmp_path: Path, pki: Pki) -> None:
    ova = signed_ova(tmp_path, pki.vendor)
    line = members(ova)["appliance.cert"].split(b"\n", 1)[0]
    junk = b"-----BEGIN CERTIFICATE-----\nMIIB" + b"A" * 100 + b"\n-----END CERTIFICATE-----\n"
    with pytest.raises(ManifestError, match=r"appliance\.cert: certificate 1 is not an X\.509 certificate"):
        check(ova, None, cert=line + b"\n" + junk)


def test_trust_bundle_must_be_pem_certificates(pki: Pki) -> None:
    with pytest.raises(TrustBundleError, match=r"ConfigMap a/b key ca\.crt: no PEM certificate"):
        load_trust_bundle("hello", "ConfigMap a/b key ca.crt")
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(TrustBundleError, match="bundle: not PEM certificates"):
        load_trust_bundle(broken, "bundle")
    assert len(load_trust_bundle("# our CAs\n" + bundle(pki.root, pki.other_root))) == 2


def test_signed_copy_of_an_unsigned_ova(tmp_path: Path, pki: Pki) -> None:
    """tests/pki.signed_copy (what the e2e tests sign the tiny guest's OVAs with)."""
    unsigned = signed_ova(tmp_path, None)
    copy = signed_copy(unsigned, tmp_path / "copy.ova", pki.vendor.signer())
    assert list(members(copy)) == ["appliance.ovf", "appliance.mf", "appliance.cert", "disk1.vmdk"]
    assert check(copy, bundle(pki.root)).state == "Trusted"
    respaced = signed_copy(
        unsigned,
        tmp_path / "respaced.ova",
        pki.vendor.signer(),
        edit_manifest=lambda m: m.replace(b"SHA256(", b"SHA256 ("),
    )
    assert open_ova(respaced).manifest == open_ova(unsigned).manifest  # the same digests, other bytes
    with pytest.raises(SignatureInvalid):
        check(respaced, bundle(pki.root))


def test_the_appliance_controller_keeps_and_checks_the_signed_files(tmp_path: Path, pki: Pki) -> None:
    """vdc.controllers.appliance: the manifest and .cert as read from the package (a disk far larger than
    a manifest beside them), checked again later from the copies kept in the work directory."""
    from vdc.controllers.appliance import _check_signed_files, _keep_signed_files

    disk = tmp_path / "disk1.vmdk"
    disk.write_bytes(b"\0" * (3 << 20))
    descriptor = minimal_descriptor({disk.name: disk.stat().st_size})
    ova = tmp_path / "big.ova"
    write_ova(ova, "big.ovf", descriptor, {disk.name: disk}, signer=pki.vendor.signer("SHA512"))
    kept = tmp_path / "work" / "signature"
    _keep_signed_files(open_ova(ova), kept)
    assert sorted(p.name for p in kept.iterdir()) == ["certificate", "manifest", "signed.json"]
    assert _check_signed_files(kept, list(load_trust_bundle(bundle(pki.root)))).state == "Trusted"
    assert _check_signed_files(kept, []).state == "Untrusted"
    unsigned = tmp_path / "unsigned.ova"
    write_ova(unsigned, "big.ovf", descriptor, {disk.name: disk})
    _keep_signed_files(open_ova(unsigned), kept)
    assert _check_signed_files(kept, []) == UNSIGNED
