"""What must survive an operator crash lives in status or libvirt, and deletion leaves nothing on any
host (issue 12, items 3 and 4)."""

from __future__ import annotations

import time
from typing import Any

from conftest import Datacenter, wait_until


def _phase(body: dict[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


def _seconds(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_a_shutdown_grace_deadline_survives_an_operator_restart(datacenter: Datacenter) -> None:
    dc = datacenter
    grace = 20
    dc.apply(dc.vm_manifest("grace", terminationGracePeriodSeconds=grace))
    dc.wait_ready("grace")
    dc.apply(dc.vm_manifest("grace", terminationGracePeriodSeconds=grace, runStrategy="Halted"))
    # The tiny guest ignores ACPI: it stops only when the grace period is over and the domain is destroyed.
    body = dc.wait_vm("grace", lambda b: bool(b["status"].get("shutdownRequestedAt")), "a shutdown requested")
    asked = body["status"]["shutdownRequestedAt"]
    dc.operator.kill()
    dc.operator.start()
    dc.cp.kubectl("annotate", "vm", "grace", "-n", dc.namespace, "--overwrite", f"e2e/poke={time.time()}")
    seen: list[str] = []

    def stopped() -> dict[str, Any] | None:
        body = dc.vm("grace") or {}
        if _phase(body) == "Stopping":
            seen.append(body["status"].get("shutdownRequestedAt", ""))
        return body if _phase(body) == "Stopped" else None

    body = wait_until("the VM Stopped", stopped, timeout=120)
    assert seen and set(seen) == {asked}  # the restarted operator counted from the same moment
    assert "shutdownRequestedAt" not in body["status"]
    stopped_at = _seconds(dc.condition(body, "Ready")["lastTransitionTime"])
    print(f"grace {grace}s: stopped {stopped_at - _seconds(asked):.0f}s after the shutdown was asked")
    dc.cp.kubectl("delete", "vm", "grace", "-n", dc.namespace, "--timeout=60s")


def test_deleting_a_vm_removes_a_copy_of_its_domain_from_another_host(datacenter: Datacenter) -> None:
    dc = datacenter
    first, second = (h.name for h in dc.hosts.hosts[:2])
    dc.apply(dc.vm_manifest("copied", memory={"size": "32Mi"}, host=f"{first}-test",
                            hostSelector={"matchLabels": {"vdc.dev/driver": "test"}}))  # fmt: skip
    body = dc.wait_ready("copied")
    domain = body["status"]["domainName"]
    # A copy of the domain on another host, as a crash of an older operator mid-placement could leave.
    xml = dc.virsh(first, "dumpxml", domain, driver="test")
    path = dc.hosts.state / "copied.xml"
    path.write_text(xml)
    dc.virsh(second, "define", str(path), driver="test")
    assert domain in dc.virsh(second, "list", "--all", "--name", driver="test").split()
    dc.cp.kubectl("delete", "vm", "copied", "-n", dc.namespace, "--timeout=60s")
    for host in (first, second):
        assert domain not in dc.virsh(host, "list", "--all", "--name", driver="test").split(), host
