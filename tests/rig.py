"""Handles on the local datacenter rig (hack/ scripts) for tests: control plane and libvirt hosts."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"


def run_script(script: str, *args: str, state: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    full_env = {**os.environ, "VDC_STATE": str(state), **(env or {})}
    result = subprocess.run([str(HACK / script), *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


class CommandFailed(Exception):
    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{' '.join(args)} -> {returncode}\n{stdout}\n{stderr}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass
class ControlPlane:
    """A running kube-apiserver + etcd started by hack/controlplane.sh."""

    state: Path
    kubeconfig: Path
    bin_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}:{os.environ['PATH']}",
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        cmd = [str(self.bin_dir / "kubectl"), *args]
        result = subprocess.run(cmd, input=input, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise CommandFailed(cmd, result.returncode, result.stdout, result.stderr)
        return result.stdout if check else result.stdout + result.stderr

    def kubectl_result(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), *args]
        return subprocess.run(cmd, input=input, env=self.env, capture_output=True, text=True, timeout=120)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args))


def start_controlplane(state: Path) -> ControlPlane:
    run_script("controlplane.sh", "up", state=state)
    cp_dir = state / "controlplane"
    return ControlPlane(
        state=state,
        kubeconfig=cp_dir / "kubeconfig",
        bin_dir=Path((cp_dir / "bin").read_text().strip()),
    )


def stop_controlplane(state: Path) -> None:
    run_script("controlplane.sh", "down", state=state, timeout=120)


def install_crds(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cp.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=vdc-operator",
    )


@dataclass
class LibvirtHost:
    name: str
    qemu_uri: str
    test_uri: str
    address: str | None = None


@dataclass
class LibvirtHosts:
    state: Path
    prefix: str
    hosts: list[LibvirtHost] = field(default_factory=list)


def start_libvirt_hosts(state: Path, count: int, prefix: str) -> LibvirtHosts:
    run_script("libvirt-hosts.sh", "up", str(count), state=state, env={"VDC_HOST_PREFIX": prefix})
    hosts = []
    for line in (state / "hosts" / "hosts.txt").read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        hosts.append(LibvirtHost(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else None))
    return LibvirtHosts(state=state, prefix=prefix, hosts=hosts)


def stop_libvirt_hosts(state: Path, prefix: str) -> None:
    run_script("libvirt-hosts.sh", "down", state=state, env={"VDC_HOST_PREFIX": prefix}, timeout=300)


GITOPS_DATACENTER = REPO / "examples" / "gitops" / "datacenter"


def example_manifests() -> list[Path]:
    """Every example a user applies: examples/*.yaml, then the resources listed by
    examples/gitops/datacenter/kustomization.yaml (what Argo CD or Flux would apply). Not the Argo CD
    Application and Flux objects in examples/gitops/ themselves: their CRDs are not installed here."""
    import yaml

    kustomization = yaml.safe_load((GITOPS_DATACENTER / "kustomization.yaml").read_text())
    return sorted((REPO / "examples").glob("*.yaml")) + [GITOPS_DATACENTER / r for r in kustomization["resources"]]
