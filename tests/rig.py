"""Handles on the local datacenter rig (hack/ scripts) for tests: control plane and libvirt hosts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
VDC = REPO / ".venv" / "bin" / "vdc"


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


@contextlib.contextmanager
def probe_kind(cp: ControlPlane, kind: str, plural: str, namespace: str) -> Iterator[Any]:
    """A throwaway namespaced kind of a test's own (vdc.dev/v1alpha1, any fields, a status subresource) and
    ``namespace``, for tests of the API edge that must not depend on our CRDs; yields a kubernetes ApiClient."""
    import kubernetes
    import yaml

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.vdc.dev"},
        "spec": {
            "group": "vdc.dev",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
    cp.kubectl("wait", "--for=condition=Established", f"crd/{plural}.vdc.dev", "--timeout=60s")
    cp.kubectl("create", "namespace", namespace, check=False)
    try:
        yield kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
    finally:
        cp.kubectl("delete", "crd", f"{plural}.vdc.dev", "--wait=false", check=False)


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

    @property
    def shared_dir(self) -> Path:
        """The directory every host sees at this same path (hack/libvirt-hosts.sh writes hosts/shared.path):
        for a ``dir`` StoragePool shared by all hosts."""
        return Path((self.state / "hosts" / "shared.path").read_text().strip())


def start_libvirt_hosts(state: Path, count: int, prefix: str, *, disk_leases: bool = False) -> LibvirtHosts:
    """``disk_leases``: the hosts run virtlockd and libvirt's lockd lock manager (kept for later starts)."""
    env = {"VDC_HOST_PREFIX": prefix, **({"VDC_HOST_LOCKD": "1"} if disk_leases else {})}
    run_script("libvirt-hosts.sh", "up", str(count), state=state, env=env)
    hosts = []
    for line in (state / "hosts" / "hosts.txt").read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        hosts.append(LibvirtHost(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else None))
    return LibvirtHosts(state=state, prefix=prefix, hosts=hosts)


def stop_libvirt_hosts(state: Path, prefix: str) -> None:
    run_script("libvirt-hosts.sh", "down", state=state, env={"VDC_HOST_PREFIX": prefix}, timeout=300)


def start_redfish(state: Path, prefix: str, port: int | None = None, htpasswd: Path | None = None) -> str:
    """Start the rig's Redfish endpoint for the hosts of ``state`` (hack/libvirt-hosts.sh ``redfish up``): one
    ComputerSystem per host whose power actions really stop/start it; basic auth when given an htpasswd
    file (bcrypt). Returns its base URL."""
    port = port or free_ports()[0]
    env = {"VDC_HOST_PREFIX": prefix, **({"VDC_REDFISH_HTPASSWD": str(htpasswd)} if htpasswd else {})}
    run_script("libvirt-hosts.sh", "redfish", "up", str(port), state=state, env=env)
    return redfish_url(state)


def stop_redfish(state: Path, prefix: str) -> None:
    run_script("libvirt-hosts.sh", "redfish", "down", state=state, env={"VDC_HOST_PREFIX": prefix}, timeout=60)


def redfish_url(state: Path) -> str:
    """The base URL of the running Redfish endpoint of ``state`` (``http://127.0.0.1:PORT``)."""
    return f"http://127.0.0.1:{(state / 'hosts' / 'redfish.port').read_text().strip()}"


def free_ports(count: int = 1) -> list[int]:
    """``count`` different loopback TCP ports that nothing listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:  # all bound at once: the kernel hands out different ports
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class OperatorProcess:
    """`vdc run` as a real process, in its own session so that stopping it stops all it started."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, *args: str, env: Mapping[str, str], log: Path) -> OperatorProcess:
        """`vdc run *args` with ``env``; stdout and stderr are appended to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(VDC), "run", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(proc, log)

    def healthy(self, port: int) -> bool:
        """Whether ``/healthz`` on loopback ``port`` answers; an operator that exited fails the test."""
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}; log:\n{tail(self.log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the operator cleans up), SIGKILL if it has not exited after ``timeout`` seconds."""
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash would."""
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # nothing of the session is left
            os.killpg(self.proc.pid, sig)


@contextlib.contextmanager
def operator_with_metrics(
    cp: ControlPlane, log: Path, *args: str, cleanup: tuple[str, str] | None = None
) -> Iterator[int]:
    """`vdc run` with /metrics and /healthz on a free loopback port (``args``: more flags); yields the port
    once it serves, prints the log's end and stops it after. ``cleanup`` (namespace, host): the test's VMs in
    that namespace and its Host, deleted while the operator still runs (so their finalizers come off)."""
    [port] = free_ports()
    process = OperatorProcess.start("--metrics-address", "127.0.0.1", "--metrics-port", str(port), *args,
                                    env=cp.env, log=log)  # fmt: skip
    try:
        wait_until("the operator's /healthz", lambda: process.healthy(port), timeout=60, interval=0.3)
        yield port
    finally:
        if cleanup is not None:
            namespace, host = cleanup
            cp.kubectl("delete", "virtualmachine", "--all", "-n", namespace, "--timeout=60s", check=False)
            cp.kubectl("delete", "host", host, "--ignore-not-found", "--timeout=60s", check=False)
        process.stop()
        print(log.read_text(errors="replace")[-4000:])


def scrape(port: int, timeout: float = 10) -> str:
    """The text of the operator's ``/metrics`` on loopback ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        return str(resp.read().decode())


def sample(text: str, metric: str, /, **labels: str) -> float | None:
    """The value of the first sample of ``metric`` in exposition ``text`` that has ``labels``."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


GITOPS_DATACENTER = REPO / "examples" / "gitops" / "datacenter"


def example_manifests() -> list[Path]:
    """Every example a user applies: examples/*.yaml, then the resources listed by
    examples/gitops/datacenter/kustomization.yaml (what Argo CD or Flux would apply). Not the Argo CD
    Application and Flux objects in examples/gitops/ themselves: their CRDs are not installed here."""
    import yaml

    kustomization = yaml.safe_load((GITOPS_DATACENTER / "kustomization.yaml").read_text())
    return sorted((REPO / "examples").glob("*.yaml")) + [GITOPS_DATACENTER / r for r in kustomization["resources"]]


T = TypeVar("T")


def wait_until(what: str, fn: Callable[[], T | None], timeout: float = 120, interval: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
