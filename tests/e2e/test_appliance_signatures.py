"""Signed appliances on real hosts: the tiny guest's OVA signed with a test CA made here (tests/pki.py),
its CA certificate in a ConfigMap the Appliance names (spec.trustBundle); Trusted, refused by
spec.requireSignature when another CA signed it (and accepted once that is turned off: the field is
live), and refused whatever the policy when the manifest changed after signing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliances import ApplianceSystem, build_ova_info
from conftest import Datacenter, wait_until
from httpserve import FileServer
from pki import Identity, bundle, make_ca, make_signer, signed_copy

POOL = "e2e-signed-appliances"
CAS = "appliance-cas"


class Pki:
    def __init__(self) -> None:
        self.root = make_ca("vdc e2e appliance CA")
        self.vendor = make_signer("tiny appliances inc", self.root)
        self.other_root = make_ca("another CA")
        self.stranger = make_signer("stranger", self.other_root)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def site(datacenter: Datacenter, tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[FileServer]:
    """A pool on the qemu hosts, the test CA in a ConfigMap of the tenant's namespace, an HTTP server."""
    dc = datacenter
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": POOL},
        "spec": {"type": "dir", "target": {"path": "/var/lib/libvirt/vdc-pools/signed-appliances"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
    })  # fmt: skip
    dc.apply({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CAS, "namespace": dc.namespace},
        "data": {"ca.crt": bundle(pki.root)},
    })  # fmt: skip
    wait_until("the pool Ready", lambda: _ready(dc, "storagepool", POOL), timeout=60)
    with FileServer(tmp_path_factory.mktemp("www-signed")) as server:
        yield server


@pytest.fixture(scope="module")
def unsigned_ova() -> Path:
    return build_ova_info(systems=(ApplianceSystem("tiny"),)).path


def _ready(dc: Datacenter, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    body = dc.get(kind, name, namespace)
    return body if (dc.condition(body, "Ready") or {}).get("status") == "True" else None


def _stalled(dc: Datacenter, name: str) -> dict[str, Any] | None:
    body = dc.get("appliance", name, dc.namespace)
    return body if (dc.condition(body, "Stalled") or {}).get("status") == "True" else None


def _signed(site: FileServer, unsigned: Path, identity: Identity, name: str, **options: Any) -> str:
    path = signed_copy(unsigned, site.directory / name, identity.signer(), **options)
    return site.url(path.name)


def _appliance(dc: Datacenter, name: str, url: str, **spec: Any) -> None:
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "Appliance", "metadata": {"name": name, "namespace": dc.namespace},
        "spec": {"source": {"url": url}, "storagePool": POOL, "trustBundle": {"configMap": CAS, "key": "ca.crt"},
                 **spec},
    })  # fmt: skip


def _delete(dc: Datacenter, name: str) -> None:
    dc.cp.kubectl("delete", "appliance", name, "-n", dc.namespace, "--timeout=60s", "--ignore-not-found")


def test_a_package_signed_by_the_trusted_ca_is_trusted(
    datacenter: Datacenter, site: FileServer, unsigned_ova: Path, pki: Pki
) -> None:
    dc = datacenter
    _appliance(dc, "signed", _signed(site, unsigned_ova, pki.vendor, "signed.ova"), requireSignature=True)
    body = wait_until("the signed appliance Ready", lambda: _ready(dc, "appliance", "signed", dc.namespace), 240)
    signature = body["status"]["signature"]
    assert signature["state"] == "Trusted", signature
    assert signature["subject"] == "CN=tiny appliances inc,O=vdc tests"
    assert signature["issuer"] == "CN=vdc e2e appliance CA,O=vdc tests"
    assert signature["notAfter"] == pki.vendor.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "message" not in signature
    assert body["status"]["virtualSystems"][0]["id"] == "tiny"
    _delete(dc, "signed")


def test_require_signature_refuses_another_cas_certificate_until_it_is_turned_off(
    datacenter: Datacenter, site: FileServer, unsigned_ova: Path, pki: Pki
) -> None:
    dc = datacenter
    url = _signed(site, unsigned_ova, pki.stranger, "stranger.ova")
    _appliance(dc, "stranger", url, requireSignature=True)
    body = wait_until("the stranger's appliance Stalled", lambda: _stalled(dc, "stranger"), 240)
    assert body["status"]["phase"] == "Failed"
    stalled = dc.condition(body, "Stalled")
    assert stalled is not None and stalled["reason"] == "SignatureNotTrusted"
    assert "CN=stranger,O=vdc tests" in stalled["message"]
    assert "issuer 'CN=another CA,O=vdc tests' is not in the trust bundle" in stalled["message"]
    signature = body["status"]["signature"]
    assert signature["state"] == "Untrusted" and signature["subject"] == "CN=stranger,O=vdc tests"
    assert not body["status"].get("virtualSystems")  # refused before anything was converted
    events = json.loads(
        dc.cp.kubectl("get", "events", "-n", dc.namespace, "--field-selector",
                      "involvedObject.name=stranger,reason=SignatureNotTrusted", "-o", "json")
    )  # fmt: skip
    assert events["items"], "no warning Event"

    # requireSignature is live: turned off, the same package imports and says it is untrusted.
    dc.cp.kubectl("patch", "appliance", "stranger", "-n", dc.namespace, "--type=merge",
                  "-p", '{"spec": {"requireSignature": false}}')  # fmt: skip
    body = wait_until("the stranger's appliance Ready", lambda: _ready(dc, "appliance", "stranger", dc.namespace), 240)
    assert body["status"]["signature"]["state"] == "Untrusted"
    assert "is not in the trust bundle" in body["status"]["signature"]["message"]
    _delete(dc, "stranger")


def test_a_manifest_changed_after_signing_is_refused_whatever_the_policy(
    datacenter: Datacenter, site: FileServer, unsigned_ova: Path, pki: Pki
) -> None:
    """The manifest re-spaced after signing: every digest still matches, the signature does not."""
    dc = datacenter
    url = _signed(
        site, unsigned_ova, pki.vendor, "respaced.ova", edit_manifest=lambda m: m.replace(b"SHA256(", b"SHA256 (")
    )
    _appliance(dc, "respaced", url)  # requireSignature false
    body = wait_until("the tampered appliance Stalled", lambda: _stalled(dc, "respaced"), 240)
    assert body["status"]["phase"] == "Failed"
    stalled = dc.condition(body, "Stalled")
    assert stalled is not None and stalled["reason"] == "SignatureInvalid"
    assert stalled["message"].startswith("vdc-tiny.cert: the SHA256 signature of vdc-tiny.mf does not verify")
    assert "signature" not in body["status"]
    _delete(dc, "respaced")
