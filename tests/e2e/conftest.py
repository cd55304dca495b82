"""The local datacenter for end-to-end tests: control plane + libvirt hosts + the operator process."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import rig
from rig import wait_until

__all__ = ["wait_until"]

T = TypeVar("T")


@dataclass
class Operator:
    """`vdc run` as a real process against the test control plane."""

    cp: rig.ControlPlane
    log: Path
    process: rig.OperatorProcess | None = None
    port: int = 0
    metrics_port: int = 0
    starts: int = 0

    def start(self, *args: str) -> None:
        """Start `vdc run` (``args``: extra flags, e.g. ``--stats-interval 2``); metrics on a free port."""
        self.port, self.metrics_port = rig.free_ports(2)
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== operator start #{self.starts} =====\n".encode())
        liveness = ["--liveness", f"http://127.0.0.1:{self.port}/healthz"]
        metrics = ["--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port)]
        process = self.process = rig.OperatorProcess.start(*liveness, *metrics, *args, env=self.cp.env, log=self.log)
        wait_until("the operator's liveness endpoint", lambda: process.healthy(self.port), timeout=60)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def tail(self, lines: int = 60) -> str:
        return rig.tail(self.log, lines)


@dataclass
class Datacenter:
    cp: rig.ControlPlane
    hosts: rig.LibvirtHosts
    operator: Operator
    namespace: str = "e2e"
    host_objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, doc: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "--server-side", "--field-manager=e2e", "--force-conflicts", "-f", "-",
                        input=json.dumps(doc))  # fmt: skip

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.cp.kubectl(*args)
        return json.loads(out) if out.strip() else None

    def vm(self, name: str) -> dict[str, Any] | None:
        return self.get("virtualmachine", name, self.namespace)

    def condition(self, body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
        if not body:
            return None
        return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == type_), None)

    def wait_vm(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.vm(name)
            return body if body and predicate(body) else None

        try:
            return wait_until(f"vm {name}: {what}", check, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nvm: {json.dumps(self.vm(name), indent=1)}\noperator log:\n"
                                 f"{self.operator.tail()}") from None  # fmt: skip

    def wait_ready(self, name: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_vm(name, lambda b: (self.condition(b, "Ready") or {}).get("status") == "True", "Ready",
                            timeout)  # fmt: skip

    def host(self, name: str) -> rig.LibvirtHost:
        for h in self.hosts.hosts:
            if h.name == name or f"{h.name}-test" == name:
                return h
        raise KeyError(name)

    def virsh(self, host: str, *args: str, driver: str = "qemu", check: bool = True) -> str:
        h = self.host(host)
        uri = h.qemu_uri if driver == "qemu" else h.test_uri
        result = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} on {host}: {result.stderr}")
        return result.stdout

    def console_log(self, host: str, domain: str) -> str:
        path = self.hosts.state / "hosts" / host / "log" / "qemu" / f"{domain}.console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def vm_manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "memory": {"size": "96Mi"},
            "cpu": {"count": 1},
            "boot": {
                "kernel": {
                    "kernel": f"{TINY_DIR}/vmlinuz",
                    "initrd": f"{TINY_DIR}/initrd.img",
                    "cmdline": f"console=ttyS0 vdc.marker={name}",
                }
            },
            "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}},
            "terminationGracePeriodSeconds": 3,
        }
        base.update(spec)
        return {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": base,
        }


TINY_DIR = "/var/lib/libvirt/boot/vdc-tiny"
"""Where hack/libvirt-hosts.sh puts the tiny guest's kernel and initrd on every rig host."""


def host_object(name: str, uri: str, driver: str, **spec: Any) -> dict[str, Any]:
    """A Host; unless ``spec`` says otherwise, it lets every namespace boot the tiny guest's files."""
    spec.setdefault("hostFiles", {"allowedPaths": [TINY_DIR]})
    return {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "Host",
        "metadata": {"name": name, "labels": {"vdc.dev/driver": driver}},
        "spec": {"uri": uri, **spec},
    }


@pytest.fixture(scope="session")
def libvirt_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.LibvirtHosts]:
    state = tmp_path_factory.mktemp("hosts")
    prefix = f"vdce{secrets.token_hex(2)}"
    try:
        yield rig.start_libvirt_hosts(state, 2, prefix)
    finally:
        rig.stop_libvirt_hosts(state, prefix)


@pytest.fixture(scope="session")
def datacenter(
    controlplane: rig.ControlPlane, libvirt_hosts: rig.LibvirtHosts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Datacenter]:
    """Two libvirt hosts, each as a qemu Host and a test-driver Host, and the operator running."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    dc = Datacenter(controlplane, libvirt_hosts, Operator(controlplane, log))
    controlplane.kubectl("create", "namespace", dc.namespace)
    for h in libvirt_hosts.hosts:
        for doc in (
            # Two real CPUs per rig host: tiny guests share them (8 vCPUs per CPU).
            host_object(
                h.name,
                h.qemu_uri,
                "qemu",
                virtualization="Emulated",
                cpuOvercommit=8,
                **({"underlayAddress": h.address} if h.address else {}),
            ),
            host_object(f"{h.name}-test", h.test_uri, "test", cpuOvercommit=4),  # 16 fake CPUs each
        ):
            dc.apply(doc)
            dc.host_objects[doc["metadata"]["name"]] = doc
    dc.operator.start()
    try:
        for name in dc.host_objects:
            wait_until(
                f"host {name} Ready",
                lambda n=name: (dc.condition(dc.get("host", n), "Ready") or {}).get("status") == "True",
                timeout=60,
            )
        yield dc
    finally:
        dc.operator.stop()
        print(f"operator log: {log}")
