"""A Host whose credentials Secret is missing or incomplete is Stalled with a message saying what to fix."""

from __future__ import annotations

import json

from conftest import Datacenter, host_object, wait_until


def _stalled(dc: Datacenter, name: str) -> dict | None:
    body = dc.get("host", name)
    stalled = dc.condition(body, "Stalled")
    return stalled if stalled and stalled["status"] == "True" else None


def test_missing_secret_stalls_the_host(datacenter: Datacenter) -> None:
    dc = datacenter
    doc = host_object("ssh-no-secret", "qemu+ssh://root@hv-does-not-exist.invalid/system", "remote",
                      credentialsSecretRef={"name": "absent", "namespace": dc.namespace})  # fmt: skip
    dc.apply(doc)
    try:
        stalled = wait_until("Stalled=True", lambda: _stalled(dc, "ssh-no-secret"), timeout=60)
        assert stalled["reason"] == "CredentialsInvalid"
        assert "credentialsSecretRef" in stalled["message"]
        assert (dc.condition(dc.get("host", "ssh-no-secret"), "Ready") or {}).get("status") == "False"
    finally:
        dc.cp.kubectl("delete", "host", "ssh-no-secret", "--timeout=60s")


def test_secret_without_the_private_key_stalls_the_host_naming_the_key(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "no-key", "namespace": dc.namespace},
        "stringData": {"known_hosts": "hv ssh-ed25519 AAAA"},
    }))  # fmt: skip
    dc.apply(host_object("ssh-no-key", "qemu+ssh://root@hv-does-not-exist.invalid/system", "remote",
                         credentialsSecretRef={"name": "no-key", "namespace": dc.namespace}))  # fmt: skip
    try:
        stalled = wait_until("Stalled=True", lambda: _stalled(dc, "ssh-no-key"), timeout=60)
        assert "ssh-privatekey" in stalled["message"]
        secret_text = "hv ssh-ed25519 AAAA"
        assert secret_text not in dc.operator.log.read_text()  # secrets are never logged
    finally:
        dc.cp.kubectl("delete", "host", "ssh-no-key", "--timeout=60s")
