"""The safety-net resync against the real API server: a VM its last reconcile left Running is checked
against its domain (``VmController.verify``), not reconciled in full again, round after round. Its status
write gave it a new resourceVersion; the VM is settled at that version, the one its watch event carries."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import rig
from rig import sample

T = TypeVar("T")
NS = "resync-it"
HOST = "resync-it-host"


def until(what: str, fn: Callable[[], T | None], timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def operator(controlplane: rig.ControlPlane, tmp_path: Path) -> Iterator[tuple[rig.ControlPlane, int]]:
    """`vdc run` resyncing every second, metrics on a free port (yielded once it serves)."""
    [port] = rig.free_ports()
    log = tmp_path / "operator.log"
    args = ["--metrics-address", "127.0.0.1", "--metrics-port", str(port), "--resync-interval", "1"]
    process = rig.OperatorProcess.start(*args, env=controlplane.env, log=log)
    try:
        until("the operator's /healthz", lambda: process.healthy(port), timeout=60)
        yield controlplane, port
    finally:
        controlplane.kubectl("delete", "virtualmachine", "--all", "-n", NS, "--timeout=60s", check=False)
        controlplane.kubectl("delete", "host", HOST, "--ignore-not-found", "--timeout=60s", check=False)
        process.stop()
        print(log.read_text(errors="replace")[-4000:])


def test_a_running_vm_is_verified_at_each_resync_not_reconciled_again(operator: tuple[rig.ControlPlane, int]) -> None:
    cp, port = operator
    cp.kubectl("create", "namespace", NS, check=False)
    docs = [
        {"apiVersion": "vdc.dev/v1alpha1", "kind": "Host", "metadata": {"name": HOST},
         "spec": {"uri": "test:///default", "hostFiles": {"allowedPaths": ["/boot"]}}},
        {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualMachine", "metadata": {"name": "vm1", "namespace": NS},
         "spec": {"host": HOST, "cpu": {"count": 1}, "memory": {"size": "64Mi"},
                  "boot": {"kernel": {"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0"}}}},
    ]  # fmt: skip
    for doc in docs:
        cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(doc))

    def settled() -> bool:
        """Ready, and its Started Event written: the reconcile that made it has settled it (it writes the
        Event after the status, and records the VM as settled right after)."""
        vm = json.loads(cp.kubectl("get", "virtualmachine", "vm1", "-n", NS, "-o", "json"))
        conditions = (vm.get("status") or {}).get("conditions") or []
        selector = "involvedObject.name=vm1,reason=Started"
        events = json.loads(cp.kubectl("get", "events", "-n", NS, "--field-selector", selector, "-o", "json"))
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and bool(events["items"])

    until("vm1 Ready and its Started Event", settled)

    def checks(outcome: str) -> float:
        return sample(rig.scrape(port, timeout=5), "vdc_resync_vm_checks_total", outcome=outcome) or 0.0

    queued, verified = checks("reconcile"), checks("settled")  # rounds before it settled queued it
    until("three more resync rounds", lambda: checks("settled") >= verified + 3, timeout=60)
    assert checks("reconcile") == queued  # each round found it as its last reconcile left it
