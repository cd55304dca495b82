"""The rig's libvirt hosts enforce cgroup and block I/O tunables for real (QoS, issue 19).

hack/libvirt-hosts.sh runs each host's libvirtd in a cgroup subtree of its own
(<hierarchy>/<our cgroup>/vdc-rig/<host>) and names the controllers in qemu.conf's
cgroup_controllers; hack/build-guest.sh's vdc.ioload=1 makes the tiny guest read its disk with
O_DIRECT as fast as it can. One host, one guest booted directly with libvirt-python, no operator.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_rig import qemu_domain_xml

REPO = Path(__file__).resolve().parents[2]
HOSTS_SH = REPO / "hack" / "libvirt-hosts.sh"
BUILD_GUEST = REPO / "hack" / "build-guest.sh"

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64")):
    pytest.skip("needs root and libvirt-daemon-system, libvirt-clients, qemu-system-x86", allow_module_level=True)

libvirt: Any = pytest.importorskip("libvirt")


@dataclass
class Host:
    name: str
    qemu_uri: str
    dir: Path
    cgroups: dict[str, tuple[Path, Path]]
    """controller -> (the host's cgroup directory, the hierarchy's mount point), from <host>/cgroups"""


@dataclass
class Guest:
    host: Host
    conn: Any
    dom: Any
    serial: Path

    def qemu_pid(self) -> int:
        return int((self.host.dir / "run" / "qemu" / f"{self.dom.name()}.pid").read_text().strip())

    def cgroup_dir(self, controller: str) -> Path:
        """The domain's own cgroup (libvirt's <domain>.libvirt-qemu, above its vcpuN/emulator children)."""
        for line in Path(f"/proc/{self.qemu_pid()}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                d = self.host.cgroups[controller][1] / path.lstrip("/")
                while not d.name.endswith(".libvirt-qemu"):
                    assert d != d.parent, f"QEMU's {controller} cgroup {path} is not a libvirt domain's"
                    d = d.parent
                return d
        raise AssertionError(f"QEMU is in no {controller} cgroup")

    def read_reqs(self) -> int:
        ((_, stats),) = self.conn.domainListGetStats([self.dom], libvirt.VIR_DOMAIN_STATS_BLOCK)
        return int(stats["block.0.rd.reqs"])

    def read_iops(self, seconds: float) -> float:
        a, t0 = self.read_reqs(), time.monotonic()
        time.sleep(seconds)
        return (self.read_reqs() - a) / (time.monotonic() - t0)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    state = tmp_path_factory.mktemp("rig")
    prefix = f"vdcg-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "VDC_STATE": str(state), "VDC_HOST_PREFIX": prefix}

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(HOSTS_SH), *args], env=env, capture_output=True, text=True, timeout=300)

    cgroups: dict[str, tuple[Path, Path]] = {}
    try:
        up = script("up", "1")
        assert up.returncode == 0, f"libvirt-hosts.sh up 1 failed:\n{up.stderr}\n{up.stdout}"
        name, qemu_uri, *_ = (state / "hosts" / "hosts.txt").read_text().split()
        d = state / "hosts" / name
        for line in (d / "cgroups").read_text().splitlines():
            controller, directory, mount, _ = line.split(" ", 3)
            cgroups[controller] = (Path(directory), Path(mount))
        if "cpu" not in cgroups:
            pytest.skip(f"the rig host runs without a cpu cgroup (no cgroup v1 cpu hierarchy?):\n{up.stderr}")
        yield Host(name, qemu_uri, d, cgroups)
    finally:
        down = script("down")
        assert down.returncode == 0, f"libvirt-hosts.sh down failed:\n{down.stderr}"
        for cgdir, _ in cgroups.values():
            assert not cgdir.exists(), f"down left the host's cgroup {cgdir}"


@pytest.fixture(scope="module")
def guest(host: Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """A running tiny guest with a 32 MiB raw disk that it reads with O_DIRECT, forever (vdc.ioload=1)."""
    r = subprocess.run([str(BUILD_GUEST)], capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, f"build-guest.sh failed:\n{r.stderr}"
    guest_dir = Path(r.stdout.strip().splitlines()[-1])
    tmp = tmp_path_factory.mktemp("guest")
    disk = tmp / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(32 << 20)
    name = f"cg-{uuid.uuid4().hex[:6]}"
    serial = tmp / "serial.log"
    xml = qemu_domain_xml(
        name,
        extra_os=f"<kernel>{guest_dir / 'vmlinuz'}</kernel><initrd>{guest_dir / 'initrd.img'}</initrd>"
        "<cmdline>console=ttyS0 vdc.ioload=1</cmdline>",
        devices=f"<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        f"<serial type='file'><source path='{serial}'/><target port='0'/></serial>",
    )
    conn = libvirt.open(host.qemu_uri)
    dom = conn.createXML(xml)
    try:
        deadline = time.monotonic() + 120
        while "VDC-IOLOAD=" not in (text := serial.read_text(errors="replace") if serial.exists() else ""):
            assert time.monotonic() < deadline, f"the guest did not print VDC-IOLOAD= within 120 s:\n{text[-3000:]}"
            time.sleep(0.3)
        assert "VDC-IOLOAD=1" in text, text[-3000:]
        yield Guest(host, conn, dom, serial)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        conn.close()


@pytest.mark.e2e
def test_domain_cgroup_lies_in_its_hosts_subtree(host: Host, guest: Guest) -> None:
    assert set(host.cgroups) >= {"cpu", "cpuacct"}, host.cgroups
    for controller, (host_dir, _) in host.cgroups.items():
        assert host_dir.name == host.name and host_dir.parent.name == "vdc-rig", host_dir
        dom_dir = guest.cgroup_dir(controller)
        assert dom_dir == host_dir / "machine" / dom_dir.name, f"{controller}: {dom_dir} not under {host_dir}"
        assert dom_dir.name.endswith(f"-{guest.dom.name()}.libvirt-qemu")
        # cpu, cpuacct, cpuset: QEMU's main thread in the emulator child (vCPU threads in vcpuN); others: the domain's
        procs = dom_dir / "emulator" / "cgroup.procs"
        procs = procs if procs.exists() else dom_dir / "cgroup.procs"
        assert guest.qemu_pid() in {int(p) for p in procs.read_text().split()}, f"{controller}: QEMU not in {procs}"
    conf = (host.dir / "etc" / "qemu.conf").read_text()
    listed = ", ".join(f'"{c}"' for c in host.cgroups)
    assert f"cgroup_controllers = [ {listed} ]" in conf


@pytest.mark.e2e
def test_live_cpu_shares_and_quota_reach_the_domains_cgroup(guest: Guest) -> None:
    cpu = guest.cgroup_dir("cpu")
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    for shares in (2048, 512):
        guest.dom.setSchedulerParametersFlags({"cpu_shares": shares}, live)
        assert (cpu / "cpu.shares").read_text().strip() == str(shares)
        assert guest.dom.schedulerParametersFlags(live)["cpu_shares"] == shares
    guest.dom.setSchedulerParametersFlags({"global_period": 100000, "global_quota": 25000}, live)
    assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"
    guest.dom.setSchedulerParametersFlags({"global_quota": -1}, live)
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "-1"


@pytest.mark.e2e
def test_block_iotune_caps_the_ioload_guests_iops(guest: Guest) -> None:
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    uncapped = guest.read_iops(3)
    assert uncapped > 300, f"vdc.ioload=1 made only {uncapped:.0f} reads/s"
    guest.dom.setBlockIoTune("vda", {"total_iops_sec": 50}, live)
    try:
        time.sleep(1)  # what QEMU had queued before the limit
        capped = guest.read_iops(5)
        assert 40 <= capped <= 60, f"{capped:.1f} reads/s with total_iops_sec=50 (uncapped: {uncapped:.0f}/s)"
    finally:
        guest.dom.setBlockIoTune("vda", {"total_iops_sec": 0}, live)
    print(f"rd.reqs/s: {uncapped:.0f} uncapped, {capped:.1f} at total_iops_sec=50")
