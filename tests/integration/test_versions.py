"""The control-plane binaries are the versions pinned in hack/versions.env."""

from __future__ import annotations

import json
import subprocess

import rig


def _pins() -> dict[str, str]:
    pins = {}
    for line in (rig.HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pins[key] = value
    return pins


def _run(cp: rig.ControlPlane, *args: str) -> str:
    return subprocess.run([str(cp.bin_dir / args[0]), *args[1:]], capture_output=True, text=True, check=True).stdout


def test_binaries_report_the_pinned_versions(controlplane: rig.ControlPlane) -> None:
    pins = _pins()
    assert _run(controlplane, "kube-apiserver", "--version").strip() == f"Kubernetes v{pins['KUBERNETES_VERSION']}"
    assert f"v{pins['KUBERNETES_VERSION']}" in _run(controlplane, "kubectl", "version", "--client")
    assert f"etcd Version: {pins['ETCD_VERSION']}" in _run(controlplane, "etcd", "--version")
    assert _run(controlplane, "helm", "version", "--short").startswith(f"v{pins['HELM_VERSION']}")
    server = json.loads(controlplane.kubectl("get", "--raw", "/version"))
    assert server["gitVersion"] == f"v{pins['KUBERNETES_VERSION']}"
