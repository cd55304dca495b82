"""A host that goes away: Host Ready=False within seconds, its VMs Unknown, deletion has a way out."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from conftest import Datacenter, host_object, wait_until


@pytest.fixture
def doomed_host(datacenter: Datacenter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.LibvirtHost]:
    """One more libvirt host, as a Host object, that the test may kill."""
    state = tmp_path_factory.mktemp("doomed")
    prefix = f"vdcl{secrets.token_hex(2)}"
    hosts = rig.start_libvirt_hosts(state, 1, prefix)
    host = hosts.hosts[0]
    datacenter.apply(host_object(host.name, host.qemu_uri, "doomed", virtualization="Emulated", cpuOvercommit=8))
    try:
        yield host
    finally:
        rig.stop_libvirt_hosts(state, prefix)
        datacenter.cp.kubectl("delete", "host", host.name, "--ignore-not-found", "--timeout=60s")


def _libvirtd_pid(state_dir: str) -> int:
    for line in (Path(state_dir) / "pids").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "libvirtd":
            return int(parts[1])
    raise AssertionError("no libvirtd pid")


def test_lost_host_is_not_ready_its_vms_unknown_and_deletion_can_be_forced(
    datacenter: Datacenter, doomed_host: rig.LibvirtHost
) -> None:
    dc = datacenter
    wait_until("doomed host Ready", lambda: (dc.condition(dc.get("host", doomed_host.name), "Ready") or {})
               .get("status") == "True", timeout=60)  # fmt: skip
    dc.apply(dc.vm_manifest("stranded", hostSelector={"matchLabels": {"vdc.dev/driver": "doomed"}}))
    body = dc.wait_ready("stranded")
    assert body["status"]["host"] == doomed_host.name

    host_dir = next(p for p in dc.hosts.state.parent.glob(f"doomed*/hosts/{doomed_host.name}"))
    os.kill(_libvirtd_pid(str(host_dir)), signal.SIGKILL)

    host = wait_until(
        "the Host to turn Ready=False",
        lambda: (
            (h := dc.get("host", doomed_host.name)) and (dc.condition(h, "Ready") or {}).get("status") == "False" and h
        ),
        timeout=30,
    )
    assert host["status"]["phase"] == "NotReady"
    assert dc.condition(host, "Ready")["reason"] == "Disconnected"
    vm = dc.wait_vm("stranded", lambda b: b["status"]["phase"] == "Unknown", "phase Unknown", timeout=60)
    assert dc.condition(vm, "Ready")["status"] == "Unknown"

    # Deleting the VM cannot reach the host: it waits, saying how to get out ...
    dc.cp.kubectl("delete", "vm", "stranded", "-n", dc.namespace, "--wait=false")
    wait_until(
        "an event explaining the blocked deletion",
        lambda: "orphan-domain" in dc.cp.kubectl("get", "events", "-n", dc.namespace,
                                                 "--field-selector", "involvedObject.name=stranded"),
        timeout=60,
    )  # fmt: skip
    assert dc.vm("stranded") is not None
    # ... and the documented way out finishes it.
    dc.cp.kubectl("annotate", "vm", "stranded", "-n", dc.namespace, "vdc.dev/orphan-domain=true")
    wait_until("the VM gone", lambda: dc.vm("stranded") is None, timeout=60)
