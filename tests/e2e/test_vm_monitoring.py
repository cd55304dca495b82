"""VM monitoring on real QEMU guests: a guest whose watchdog fires is paused (reason watchdog); with
``spec.availability.vmMonitoring: Disabled`` the VM says so (Stalled, GuestStuck) and is left alone;
switched to Reset, the operator resets it (a second boot of the guest, a GuestReset Event, Running).

The rig's tiny guest runs Debian's cloud kernel, which has no i6300esb driver: this test builds the tiny
guest once more (its own cache) on Debian's generic kernel with the i6300esb module and puts it next to
the tiny guest on each rig host. ``vdc.watchdog=N`` makes the guest feed /dev/watchdog for N seconds
and then stop (the device's timeout is 5 s)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY_DIR, Datacenter, wait_until

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("VDC_CACHE", Path.home() / ".cache" / "vdc")).with_name("vdc-watchdog")
KERNEL, INITRD = "vmlinuz-watchdog", "initrd-watchdog.img"


@pytest.fixture(scope="module")
def watchdog_guest(datacenter: Datacenter) -> None:
    """The tiny guest on the generic kernel with i6300esb, as TINY_DIR/{KERNEL,INITRD} on every rig host."""
    env = {
        **os.environ,
        "VDC_CACHE": str(CACHE),
        "VDC_GUEST_KERNEL_PKG": "linux-image-amd64",
        "VDC_GUEST_MODULES": "virtio_pci virtio_net virtio_balloon virtio_blk i6300esb",
    }
    done = subprocess.run([str(REPO / "hack" / "build-guest.sh")], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    built = Path(done.stdout.strip())
    for host in datacenter.hosts.hosts:
        boot = datacenter.hosts.state / "hosts" / host.name / "lib" / "boot" / "vdc-tiny"
        shutil.copy(built / "vmlinuz", boot / KERNEL)
        shutil.copy(built / "initrd.img", boot / INITRD)


def boot_ids(text: str) -> list[str]:
    return re.findall(r"VDC-BOOT-ID=(\S+)", text)


def test_a_guest_whose_watchdog_fires_is_reported_then_reset_by_vm_monitoring(
    datacenter: Datacenter, watchdog_guest: None
) -> None:
    dc = datacenter
    name = "watchdog"
    manifest = dc.vm_manifest(
        name,
        memory={"size": "256Mi"},
        boot={
            "kernel": {
                "kernel": f"{TINY_DIR}/{KERNEL}",
                "initrd": f"{TINY_DIR}/{INITRD}",
                "cmdline": f"console=ttyS0 vdc.marker={name} vdc.watchdog=8",
            }
        },
        availability={"watchdog": True, "vmMonitoring": "Disabled"},
        runStrategy="Always",
    )
    dc.apply(manifest)
    try:
        body = dc.wait_ready(name, timeout=180)
        host, domain = body["status"]["host"], body["status"]["domainName"]
        assert "<watchdog model='i6300esb' action='pause'" in dc.virsh(host, "dumpxml", domain)
        wait_until("the guest feeds its watchdog", lambda: "VDC-WATCHDOG-FEEDING=8" in dc.console_log(host, domain),
                   timeout=120)  # fmt: skip
        assert "VDC-GUEST-MODULE-FAILED" not in dc.console_log(host, domain)

        # Disabled: the watchdog fires, the domain is paused and the VM says so; nothing resets it.
        stopped_feeding = time.monotonic()
        stuck = dc.wait_vm(name, lambda b: (dc.condition(b, "Stalled") or {}).get("reason") == "GuestStuck",
                           "Stalled GuestStuck", timeout=90)  # fmt: skip
        print(f"watchdog fired and the VM reported it {time.monotonic() - stopped_feeding:.1f}s after "
              f"VDC-WATCHDOG-FEEDING (8 s of feeding + 5 s timeout)")  # fmt: skip
        assert dc.virsh(host, "domstate", "--reason", domain).strip() == "paused (watchdog)"
        ready = dc.condition(stuck, "Ready") or {}
        assert ready.get("status") == "False"
        assert "its watchdog fired" in ready["message"]
        assert "spec.availability.vmMonitoring: Reset" in ready["message"]
        assert stuck["status"]["phase"] == "Failed"
        time.sleep(3)
        assert dc.virsh(host, "domstate", "--reason", domain).strip() == "paused (watchdog)"
        assert len(boot_ids(dc.console_log(host, domain))) == 1

        # Reset: the operator resets the guest, which boots again.
        asked = time.monotonic()
        dc.apply(
            {**manifest, "spec": {**manifest["spec"], "availability": {"watchdog": True, "vmMonitoring": "Reset"}}}
        )
        wait_until("a second boot of the guest", lambda: len(boot_ids(dc.console_log(host, domain))) >= 2,
                   timeout=120)  # fmt: skip
        print(f"guest booted again {time.monotonic() - asked:.1f}s after vmMonitoring: Reset was applied")
        ids = boot_ids(dc.console_log(host, domain))
        assert ids[0] != ids[1]
        events = json.loads(dc.cp.kubectl("get", "events", "-n", dc.namespace, "-o", "json", "--field-selector",
                                          f"involvedObject.name={name},reason=GuestReset"))["items"]  # fmt: skip
        assert events, "no GuestReset Event"
        assert events[0]["type"] == "Warning"
        assert "its watchdog fired" in events[0]["message"]
        body = dc.wait_vm(name, lambda b: b["status"].get("phase") == "Running", "Running again", timeout=60)
        assert (dc.condition(body, "Stalled") or {}).get("status") == "False"
    finally:
        dc.cp.kubectl("delete", "virtualmachine", name, "-n", dc.namespace, "--ignore-not-found", "--wait=false")
