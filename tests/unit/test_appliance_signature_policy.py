"""The Appliance controller's signature policy without a cluster: where trust bundles are read from
(the cluster-wide ConfigMap, the Appliance's own ConfigMap or Secret), what an unreadable one does,
and what spec.requireSignature refuses."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pytest

sys.path.append(str(Path(__file__).parent / "ovf"))  # ovf_testlib
from ovf_testlib import minimal_descriptor

from pki import bundle, make_ca, make_signer
from vdc.api.appliance import Appliance
from vdc.controllers.appliance import SIGNED, ApplianceController, ImportFailed, _keep_signed_files
from vdc.kube.cache import ObjectCache
from vdc.ovf.ova import open_ova
from vdc.ovf.signature import SignatureCheck
from vdc.ovf.writer import write_ova

pytestmark = pytest.mark.unit

ROOT = make_ca("policy test CA")
VENDOR = make_signer("policy vendor", ROOT)
OTHER = make_ca("policy other CA")


class Writer:
    """What the controller reads through KubeWriter: ConfigMaps and Secrets by namespace/name."""

    def __init__(self, configmaps: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]]) -> None:
        self.configmaps, self.secrets, self.reads = configmaps, secrets, []

    async def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        return self._read("configmaps", self.configmaps, namespace, name)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return self._read("secrets", self.secrets, namespace, name)

    def _read(self, kind: str, store: dict[str, dict[str, str]], namespace: str, name: str) -> dict[str, str]:
        self.reads.append(f"{kind} {namespace}/{name}")
        if f"{namespace}/{name}" not in store:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        return store[f"{namespace}/{name}"]


class Reporter:
    def __init__(self) -> None:
        self.signatures: list[SignatureCheck | None] = []

    async def signature(self, result: SignatureCheck | None) -> None:
        self.signatures.append(result)


def controller(writer: Writer, trust: tuple[str, str] | None = None) -> ApplianceController:
    return ApplianceController(ObjectCache(), ObjectCache(), ObjectCache(), None, writer, trust_configmap=trust)  # type: ignore[arg-type]


def appliance(**spec: Any) -> Appliance:
    return Appliance.model_validate({
        "metadata": {"name": "a", "namespace": "team-a", "uid": "u"},
        "spec": {"source": {"url": "http://x/a.ova"}, "storagePool": "p", **spec},
    })  # fmt: skip


@pytest.fixture
def work(tmp_path: Path) -> Path:
    disk = tmp_path / "disk1.vmdk"
    disk.write_bytes(b"disk" * 1000)
    ova = tmp_path / "a.ova"
    write_ova(ova, "a.ovf", minimal_descriptor({disk.name: disk.stat().st_size}), {disk.name: disk},
              signer=VENDOR.signer())  # fmt: skip
    _keep_signed_files(open_ova(ova), tmp_path / "work" / SIGNED)
    return tmp_path / "work"


async def test_the_cluster_bundle_is_every_pem_value_of_its_configmap(work: Path) -> None:
    writer = Writer({"vdc-system/cas": {"README": "our CAs", "a.pem": bundle(OTHER), "b.pem": bundle(ROOT)}}, {})
    report = Reporter()
    result = await controller(writer, ("vdc-system", "cas"))._signature(appliance(requireSignature=True), work, report)  # type: ignore[arg-type]
    assert result.state == "Trusted" and report.signatures == [result]
    assert writer.reads == ["configmaps vdc-system/cas"]


async def test_the_appliances_own_secret_in_its_namespace(work: Path) -> None:
    secret = {"ca.crt": base64.b64encode(bundle(ROOT).encode()).decode()}
    writer = Writer({}, {"team-a/vendor-ca": secret})
    spec = {"requireSignature": True, "trustBundle": {"secret": "vendor-ca"}}
    result = await controller(writer)._signature(appliance(**spec), work, Reporter())  # type: ignore[arg-type]
    assert result.state == "Trusted"
    assert writer.reads == ["secrets team-a/vendor-ca"]  # the Appliance's namespace: a reference has none


async def test_an_unreadable_bundle_is_named_in_the_reason(work: Path) -> None:
    writer = Writer({"team-a/cas": {"other.crt": bundle(ROOT)}}, {})
    spec = {"trustBundle": {"configMap": "cas"}}  # key ca.crt is not there
    result = await controller(writer, ("vdc-system", "gone"))._signature(appliance(**spec), work, Reporter())  # type: ignore[arg-type]
    assert result.state == "Untrusted"
    assert result.reason == (
        "no trust bundle is configured to check the signer's certificate against (trust bundle ConfigMap "
        "vdc-system/gone: Not Found; trust bundle ConfigMap team-a/cas has no key ca.crt)"
    )


async def test_require_signature_refuses_untrusted_naming_the_signer_and_why(work: Path) -> None:
    writer = Writer({"team-a/cas": {"ca.crt": bundle(OTHER)}}, {})
    report = Reporter()
    spec = {"requireSignature": True, "trustBundle": {"configMap": "cas"}}
    with pytest.raises(ImportFailed) as failed:
        await controller(writer)._signature(appliance(**spec), work, report)  # type: ignore[arg-type]
    assert failed.value.reason == "SignatureNotTrusted"
    assert str(failed.value) == (
        "spec.requireSignature is set and the signature is not trusted: signed by 'CN=policy vendor,O=vdc tests': "
        "issuer 'CN=policy test CA,O=vdc tests' is not in the trust bundle"
    )
    assert report.signatures[0] is not None and report.signatures[0].state == "Untrusted"  # status says it too


async def test_a_changed_manifest_fails_whatever_the_policy(work: Path) -> None:
    manifest = work / SIGNED / "manifest"
    manifest.write_bytes(manifest.read_bytes() + b"\n")
    report = Reporter()
    with pytest.raises(ImportFailed) as failed:
        await controller(Writer({}, {}))._signature(appliance(), work, report)  # type: ignore[arg-type]
    assert failed.value.reason == "SignatureInvalid"
    assert str(failed.value).startswith("a.cert: the SHA256 signature of a.mf does not verify")
    assert report.signatures == [None]
