"""`/metrics` of the running operator with a real QEMU guest: the text passes promtool, the VM's CPU
seconds grow while the guest runs, the namespace's metering counters grow, and the VM's series are
gone once it is deleted."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

import rig
from conftest import Datacenter, wait_until
from rig import sample

STATS_INTERVAL = "1"


def scrape(dc: Datacenter) -> str:
    return rig.scrape(dc.operator.metrics_port)


@pytest.fixture
def fast_stats(datacenter: Datacenter) -> Iterator[Datacenter]:
    """The operator restarted with a short --stats-interval; restarted as before afterwards."""
    datacenter.operator.stop()
    datacenter.operator.start("--stats-interval", STATS_INTERVAL)
    try:
        yield datacenter
    finally:
        datacenter.operator.stop()
        datacenter.operator.start()


def test_scrape_vm_stats_and_metering(fast_stats: Datacenter) -> None:
    dc = fast_stats
    ns, name = dc.namespace, "metered"
    dc.apply(dc.vm_manifest(name, cpu={"count": 2}))
    body = dc.wait_ready(name)
    host = body["status"]["host"]
    vm = {"namespace": ns, "name": name, "host": host}

    def now(metric: str, /, **labels: str) -> float | None:
        return sample(scrape(dc), metric, **labels)

    def grows(what: str, metric: str, /, **labels: str) -> None:
        before = wait_until(f"{what} on /metrics", lambda: now(metric, **labels), timeout=60)
        wait_until(f"{what} growing", lambda: (now(metric, **labels) or 0) > before, timeout=60)

    grows("the VM's CPU seconds", "vdc_vm_cpu_seconds_total", **vm)  # the guest runs: QEMU burns CPU
    text = scrape(dc)
    assert sample(text, "vdc_vm_state", state="running", **vm) == 1.0
    assert sample(text, "vdc_vm_vcpus", **vm) == 2.0
    assert (sample(text, "vdc_vm_memory_bytes", **vm) or 0) > 0
    assert sample(text, "vdc_host_ready", host=host) == 1.0
    assert (sample(text, "vdc_reconcile_total", controller="vms", result="success") or 0) > 0
    grows("the namespace's vCPU metering", "vdc_metering_vcpu_seconds_total", namespace=ns)
    grows("the namespace's memory metering", "vdc_metering_memory_byte_seconds_total", namespace=ns)

    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is needed"
    check = [promtool, "check", "metrics"]
    result = subprocess.run(check, input=scrape(dc), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    dc.cp.kubectl("delete", "virtualmachine", name, "-n", ns, "--wait=true", "--timeout=120s")
    wait_until("the deleted VM's series gone from /metrics",
               lambda: now("vdc_vm_state", namespace=ns, name=name) is None, timeout=60)  # fmt: skip
