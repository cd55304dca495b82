"""`vdc run` serving `/metrics` against the real API server, with one Host on libvirt's in-process test
driver (``test:///default`` inside the operator process: no libvirt daemon needed): the flags wire the
server, the datacenter collector, the stats refresh and metering together."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import rig
from rig import sample

T = TypeVar("T")
NS = "metrics-it"
HOST = "metrics-it-host"


def until(what: str, fn: Callable[[], T | None], timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def operator(controlplane: rig.ControlPlane, tmp_path: Path) -> Iterator[tuple[rig.ControlPlane, int]]:
    """`vdc run` with metrics on a free loopback port, serving once this yields (its port)."""
    log = tmp_path / "operator.log"
    with rig.operator_with_metrics(controlplane, log, "--stats-interval", "0.5", cleanup=(NS, HOST)) as port:
        yield controlplane, port


def test_operator_serves_datacenter_vm_and_metering_metrics(operator: tuple[rig.ControlPlane, int]) -> None:
    cp, port = operator

    def scrape() -> str:  # the operator is serving: a failed scrape fails the test (never an empty "no series")
        return rig.scrape(port, timeout=5)

    scrape()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200
    cp.kubectl("create", "namespace", NS, check=False)
    docs = [
        {"apiVersion": "vdc.dev/v1alpha1", "kind": "Host", "metadata": {"name": HOST},
         "spec": {"uri": "test:///default", "cpuOvercommit": 4, "hostFiles": {"allowedPaths": ["/boot"]}}},
        {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualMachine", "metadata": {"name": "vm1", "namespace": NS},
         "spec": {"host": HOST, "cpu": {"count": 3}, "memory": {"size": "64Mi"},
                  "boot": {"kernel": {"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0"}}}},
    ]  # fmt: skip
    for doc in docs:
        cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(doc))

    vm = {"namespace": NS, "name": "vm1", "host": HOST}
    until("the VM's domain running on /metrics", lambda: sample(scrape(), "vdc_vm_state", state="running", **vm))
    first = until("vCPU metering", lambda: sample(scrape(), "vdc_metering_vcpu_seconds_total", namespace=NS))

    def vcpu_seconds() -> float:
        return sample(scrape(), "vdc_metering_vcpu_seconds_total", namespace=NS) or 0.0

    until("vCPU metering growing", lambda: vcpu_seconds() > first)
    text = scrape()
    vcpu = sample(text, "vdc_metering_vcpu_seconds_total", namespace=NS) or 0
    memory = sample(text, "vdc_metering_memory_byte_seconds_total", namespace=NS) or 0
    # The test driver reports no vCPU or memory figures: metering falls back to the spec (3 vCPUs, 64Mi),
    # integrated over the same intervals.
    assert memory / vcpu == pytest.approx(64 * 2**20 / 3)
    print(text)

    assert sample(text, "vdc_host_ready", host=HOST) == 1.0
    assert sample(text, "vdc_host_capacity_cpus", host=HOST) == 16  # the test driver's node
    assert sample(text, "vdc_virtualmachines", namespace=NS, host=HOST, phase="Running") == 1.0
    assert (sample(text, "vdc_reconcile_total", controller="vms", result="success") or 0) > 0
    assert (sample(text, "vdc_api_writes_total", kind="VirtualMachine", verb="patch-status") or 0) > 0
    assert (sample(text, "vdc_libvirt_call_duration_seconds_count", host=HOST) or 0) > 0
    assert sample(text, "vdc_vm_cpu_seconds_total", **vm) is None  # not reported by this driver: no series
    tool = shutil.which("promtool")
    if tool:
        result = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    cp.kubectl("delete", "virtualmachine", "vm1", "-n", NS, "--timeout=60s")
    until("the deleted VM's series gone", lambda: sample(scrape(), "vdc_vm_state", **vm) is None)
