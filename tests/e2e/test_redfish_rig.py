"""The rig's Redfish endpoint really powers a rig host off and on (hack/redfish-rig.py, sushy-tools).

Two hosts with their own VDC_STATE and prefix, a QEMU guest on each, the endpoint on loopback with basic auth;
everything through the ``sushy`` client library: ForceOff host 2 kills its libvirtd and every process in its mount
namespace (its QEMU too) and leaves host 1 alone; On starts host 2 again.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest
import requests
import sushy

import rig
from conftest import wait_until

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64")):
    pytest.skip("needs root and libvirt-daemon-system, libvirt-clients, qemu-system-x86", allow_module_level=True)

GUEST = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def virsh(uri: str, *args: str) -> str:
    return subprocess.run(["virsh", "-c", uri, *args], check=True, capture_output=True, text=True, timeout=60).stdout


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s*Z", status, re.M)


def libvirtd_pid(state: Path, host: str) -> int:
    pids = dict(line.split()[:2] for line in (state / "hosts" / host / "pids").read_text().splitlines() if line.split())
    return int(pids["libvirtd"])


TRANSIENT = {"sleep", "date"}
"""What the host's heartbeat loop runs every 2 s: short-lived, not part of what must survive or die."""


def namespace_pids(pid: int) -> set[int]:
    """Every live long-lived process in the mount namespace of ``pid``."""
    namespace = os.readlink(f"/proc/{pid}/ns/mnt")
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and os.readlink(entry / "ns" / "mnt") == namespace
                and alive(int(entry.name))
                and (entry / "comm").read_text().strip() not in TRANSIENT
            ):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def qemu_pid(state: Path, host: str, domain: str) -> int:
    return int((state / "hosts" / host / "run" / "qemu" / f"{domain}.pid").read_text().strip())


def test_redfish_force_off_kills_the_host_and_on_starts_it(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    state = tmp_path_factory.mktemp("redfish")
    prefix = f"vdcr{secrets.token_hex(2)}"
    try:
        hosts = rig.start_libvirt_hosts(state, 2, prefix)
        one, two = hosts.hosts
        password = secrets.token_hex(8)
        htpasswd = tmp_path / "htpasswd"
        htpasswd.write_text(f"admin:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
        url = rig.start_redfish(state, prefix, htpasswd=htpasswd)
        assert requests.get(f"{url}/redfish/v1/Systems", timeout=10).status_code == 401
        for host in (one, two):
            xml = tmp_path / f"{host.name}.xml"
            xml.write_text(GUEST.format(name=f"guest-{host.name}"))
            virsh(host.qemu_uri, "create", str(xml))
        qemu_one, qemu_two = (qemu_pid(state, h.name, f"guest-{h.name}") for h in (one, two))
        assert alive(qemu_one) and alive(qemu_two)

        root = sushy.Sushy(url + "/redfish/v1/", username="admin", password=password)
        members = sorted(m.rsplit("/", 1)[-1] for m in root.get_system_collection().members_identities)
        assert members == sorted([one.name, two.name])
        for host in (one, two):
            system = root.get_system(f"/redfish/v1/Systems/{host.name}")
            assert system.power_state == sushy.POWER_STATE_ON, host.name
            assert system.uuid == (state / "hosts" / host.name / "host_uuid").read_text().strip()

        one_before = namespace_pids(libvirtd_pid(state, one.name))
        two_libvirtd = libvirtd_pid(state, two.name)
        two_before = namespace_pids(two_libvirtd)
        assert {two_libvirtd, qemu_two} <= two_before
        assert qemu_one in one_before

        system = root.get_system(f"/redfish/v1/Systems/{two.name}")
        system.reset_system(sushy.RESET_FORCE_OFF)
        assert not [p for p in two_before if alive(p)], "processes of host 2 survived ForceOff"
        system.refresh()
        assert system.power_state == sushy.POWER_STATE_OFF
        # host 1 untouched: the same processes, its guest still running
        assert namespace_pids(libvirtd_pid(state, one.name)) >= one_before
        assert virsh(one.qemu_uri, "domstate", f"guest-{one.name}").strip() == "running"
        assert root.get_system(f"/redfish/v1/Systems/{one.name}").power_state == sushy.POWER_STATE_ON

        system.reset_system(sushy.RESET_ON)

        def on() -> bool:
            system.refresh()
            return system.power_state == sushy.POWER_STATE_ON

        wait_until("host 2 powered on", on, timeout=180)
        assert libvirtd_pid(state, two.name) != two_libvirtd
        virsh(two.qemu_uri, "list")  # its libvirtd answers again
        assert alive(qemu_one) and namespace_pids(libvirtd_pid(state, one.name)) >= one_before

        redfish_pid = int((state / "hosts" / "redfish.pid").read_text())
        rig.stop_libvirt_hosts(state, prefix)  # `down` stops the endpoint too
        assert not alive(redfish_pid)
    finally:
        rig.stop_redfish(state, prefix)
        rig.stop_libvirt_hosts(state, prefix)
