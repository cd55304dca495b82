"""The safety-net resync against the real API server: a VM its last reconcile left Running is checked
against its domain (``VmController.verify``), not reconciled in full again, round after round. Its status
write gave it a new resourceVersion; the VM is settled at that version, the one its watch event carries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from rig import sample, wait_until

NS = "resync-it"
HOST = "resync-it-host"


@pytest.fixture
def operator(controlplane: rig.ControlPlane, tmp_path: Path) -> Iterator[tuple[rig.ControlPlane, int]]:
    """`vdc run` resyncing every second, metrics on a free port (yielded once it serves). It watches only this
    test's namespace: the control plane is shared, and the resync's counters must count this test's VM."""
    args = ("--resync-interval", "1", "--namespace", NS)
    log = tmp_path / "operator.log"
    with rig.operator_with_metrics(controlplane, log, *args, cleanup=(NS, HOST)) as port:
        yield controlplane, port


def test_a_running_vm_is_verified_at_each_resync_not_reconciled_again(
    operator: tuple[rig.ControlPlane, int], tmp_path: Path
) -> None:
    cp, port = operator
    cp.kubectl("create", "namespace", NS, check=False)
    node = tmp_path / "node.xml"  # a test driver of its own: test:///default is shared by every such Host
    node.write_text("<node>\n</node>\n")
    docs = [
        {"apiVersion": "vdc.dev/v1alpha1", "kind": "Host", "metadata": {"name": HOST},
         "spec": {"uri": f"test://{node}", "hostFiles": {"allowedPaths": ["/boot"]}}},
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

    wait_until("vm1 Ready and its Started Event", settled, timeout=90, interval=0.2)

    def checks(outcome: str) -> float:
        return sample(rig.scrape(port, timeout=5), "vdc_resync_vm_checks_total", outcome=outcome) or 0.0

    queued, verified = checks("reconcile"), checks("settled")  # rounds before it settled queued it
    wait_until("three more resync rounds", lambda: checks("settled") >= verified + 3, timeout=60, interval=0.2)
    assert checks("reconcile") == queued  # each round found it as its last reconcile left it
