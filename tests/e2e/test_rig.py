"""The libvirt test rig works for real: hack/libvirt-hosts.sh and hack/build-guest.sh.

Two hosts are started with their own VDC_STATE and prefix, so this can run next to a demo or
other tests. Only the two scripts, virsh, ip and iptables are used (and the libvirt Python
binding where it is importable).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTS_SH = REPO / "hack" / "libvirt-hosts.sh"
BUILD_GUEST = REPO / "hack" / "build-guest.sh"

GUEST_TIMEOUT = 120.0

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64")):
    pytest.skip("needs root and libvirt-daemon-system, libvirt-clients, qemu-system-x86", allow_module_level=True)


@dataclass
class Host:
    name: str
    qemu_uri: str
    test_uri: str
    address: str | None
    dir: Path


@dataclass
class Rig:
    state: Path
    prefix: str
    env: dict[str, str]
    hosts: list[Host]

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HOSTS_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


def virsh(uri: str, *args: str, check: bool = True, timeout: float = 60) -> str:
    r = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"virsh -c {uri} {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
    return r.stdout


def domains(uri: str) -> set[str]:
    return {line.strip() for line in virsh(uri, "list", "--all", "--name").splitlines() if line.strip()}


def define(uri: str, xml: str, tmp: Path, *, start: bool = False) -> None:
    f = tmp / f"dom-{uuid.uuid4().hex[:8]}.xml"
    f.write_text(xml)
    virsh(uri, "create" if start else "define", str(f))


def qemu_domain_xml(name: str, *, extra_os: str = "", devices: str = "", memory_mib: int = 128) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    {extra_os}
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    {devices}
  </devices>
</domain>
"""


def alive(pid: int) -> bool:
    """A process exists and is not a zombie (a zombie has stopped; only its parent has not reaped it yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone (FileNotFoundError, ProcessLookupError)
        return False
    m = re.search(r"^State:\s+(\S)", status, re.M)
    return m is not None and m.group(1) != "Z"


def read_pids(host: Host) -> dict[str, int]:
    pids = {}
    for line in (host.dir / "pids").read_text().splitlines():
        what, pid = line.split()
        pids[what] = int(pid)
    return pids


def qemu_pids(host: Host) -> list[int]:
    """PIDs of the host's running QEMUs, from libvirt's <domain>.pid files (driver.pid is libvirtd's own)."""
    pids = []
    for f in (host.dir / "run" / "qemu").glob("*.pid"):
        text = f.read_text().strip()
        if f.name != "driver.pid" and text.isdigit():
            pids.append(int(text))
    return pids


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    state = tmp_path_factory.mktemp("rig")
    prefix = f"vdct-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "VDC_STATE": str(state), "VDC_HOST_PREFIX": prefix}
    r = Rig(state=state, prefix=prefix, env=env, hosts=[])
    try:
        up = r.script("up", "2")
        assert up.returncode == 0, f"libvirt-hosts.sh up 2 failed:\n{up.stderr}\n{up.stdout}"
        for line in (state / "hosts" / "hosts.txt").read_text().splitlines():
            name, qemu_uri, test_uri, address = line.split()
            r.hosts.append(Host(name, qemu_uri, test_uri, None if address == "-" else address, state / "hosts" / name))
        assert [h.name for h in r.hosts] == [f"{prefix}-1", f"{prefix}-2"]
        yield r
    finally:
        down = r.script("down")
        assert down.returncode == 0, f"libvirt-hosts.sh down failed:\n{down.stderr}"


@pytest.mark.e2e
def test_hosts_files_and_status(rig: Rig) -> None:
    for h in rig.hosts:
        assert (h.dir / "qemu.uri").read_text().strip() == h.qemu_uri
        assert (h.dir / "test.uri").read_text().strip() == h.test_uri
        assert h.qemu_uri.startswith("qemu+unix:///system?socket=")
        assert h.test_uri.startswith("test+unix:///default?socket=")
        assert set(read_pids(h)) >= {"libvirtd", "virtlogd"}
        assert all(alive(p) for p in read_pids(h).values())
    st = rig.script("status")
    assert st.returncode == 0, st.stderr
    assert len(re.findall(r"\brunning\b", st.stdout)) == 2


@pytest.mark.e2e
def test_hosts_have_distinct_identity(rig: Rig) -> None:
    seen_uuids = set()
    for h in rig.hosts:
        assert virsh(h.qemu_uri, "hostname").strip() == h.name
        caps = ET.fromstring(virsh(h.qemu_uri, "capabilities"))
        host_uuid = caps.findtext("host/uuid")
        assert host_uuid == (h.dir / "host_uuid").read_text().strip()
        seen_uuids.add(host_uuid)
        # Guests are TCG: the 'qemu' domain type is offered.
        assert caps.find("guest/arch[@name='x86_64']/domain[@type='qemu']") is not None
    assert len(seen_uuids) == 2


@pytest.mark.e2e
def test_hosts_have_own_network(rig: Rig) -> None:
    if any(h.address is None for h in rig.hosts):
        pytest.skip("rig started without network namespaces (VDC_HOST_NETNS=0)")
    a, b = rig.hosts
    assert a.address != b.address
    for h in rig.hosts:
        assert (h.dir / "address").read_text().strip() == h.address
        assert h.name in netns_names()
        out = subprocess.run(
            ["ip", "-n", h.name, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True, check=True
        ).stdout
        assert f"inet {h.address}/24" in out
    if shutil.which("busybox"):
        ping = subprocess.run(
            ["ip", "netns", "exec", a.name, "busybox", "ping", "-c", "1", "-W", "5", str(b.address)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr


@pytest.mark.e2e
def test_domain_defined_on_one_host_is_invisible_on_the_other(rig: Rig, tmp_path: Path) -> None:
    a, b = rig.hosts
    name = f"iso-{uuid.uuid4().hex[:6]}"
    define(a.qemu_uri, qemu_domain_xml(name), tmp_path)
    try:
        assert name in domains(a.qemu_uri)
        assert name not in domains(b.qemu_uri)
        # Persistent config lives in the host's private /etc/libvirt, not the machine's.
        assert (a.dir / "etc" / "qemu" / f"{name}.xml").exists()
        assert not (b.dir / "etc" / "qemu" / f"{name}.xml").exists()
        assert not Path(f"/etc/libvirt/qemu/{name}.xml").exists()
    finally:
        virsh(a.qemu_uri, "undefine", name, check=False)
    assert name not in domains(a.qemu_uri)


@pytest.fixture(scope="module")
def guest_dir() -> Path:
    r = subprocess.run([str(BUILD_GUEST)], capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, f"build-guest.sh failed:\n{r.stderr}"
    d = Path(r.stdout.strip().splitlines()[-1])
    assert (d / "vmlinuz").stat().st_size > 0
    assert (d / "initrd.img").stat().st_size > 0
    return d


def wait_for_lines(path: Path, wanted: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        lines = {line.strip() for line in text.splitlines()}
        if all(w in lines for w in wanted):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{path} did not show {wanted} within {timeout:.0f}s; it has:\n{text[-3000:]}")


@pytest.mark.e2e
def test_tiny_guest_boots_as_libvirt_domain(rig: Rig, guest_dir: Path, tmp_path: Path) -> None:
    host = rig.hosts[0]
    t0 = time.monotonic()
    name = f"guest-{uuid.uuid4().hex[:6]}"
    marker = uuid.uuid4().hex
    serial = host.dir / f"{name}-serial.log"
    xml = qemu_domain_xml(
        name,
        memory_mib=256,
        extra_os=f"""<kernel>{guest_dir / "vmlinuz"}</kernel>
    <initrd>{guest_dir / "initrd.img"}</initrd>
    <cmdline>console=ttyS0 vdc.hostname={name} vdc.marker={marker}</cmdline>""",
        devices=f"""<serial type='file'>
      <source path='{serial}'/>
      <target port='0'/>
    </serial>""",
    )
    define(host.qemu_uri, xml, tmp_path)
    try:
        virsh(host.qemu_uri, "start", name)
        assert virsh(host.qemu_uri, "domstate", name).strip() == "running"
        text = wait_for_lines(
            serial, ["VDC-GUEST-READY", f"VDC-MARKER={marker}", f"VDC-GUEST-HOSTNAME={name}"], GUEST_TIMEOUT
        )
        assert "Kernel panic" not in text
        print(f"guest {name} ready {time.monotonic() - t0:.1f}s after start")
        assert virsh(host.qemu_uri, "domstate", name).strip() == "running"
        assert name not in domains(rig.hosts[1].qemu_uri)
    finally:
        virsh(host.qemu_uri, "destroy", name, check=False)
        virsh(host.qemu_uri, "undefine", name, check=False)


TEST_DRIVER_DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
</domain>
"""


@pytest.mark.e2e
def test_test_driver_state_is_shared_by_connections_to_one_host(rig: Rig, tmp_path: Path) -> None:
    a, b = rig.hosts
    assert "test" in domains(a.test_uri)  # test:///default's stock domain
    name = f"fake-{uuid.uuid4().hex[:6]}"
    define(a.test_uri, TEST_DRIVER_DOMAIN.format(name=name), tmp_path)  # one virsh, one connection...
    try:
        assert name in domains(a.test_uri)  # ...another virsh, another connection: same daemon state
        virsh(a.test_uri, "start", name)
        assert virsh(a.test_uri, "domstate", name).strip() == "running"
        assert name not in domains(b.test_uri)  # another host, another daemon
        assert name not in domains(a.qemu_uri)  # and not a QEMU domain
    finally:
        virsh(a.test_uri, "destroy", name, check=False)
        virsh(a.test_uri, "undefine", name, check=False)


@pytest.mark.e2e
def test_python_binding_talks_to_the_hosts(rig: Rig) -> None:
    libvirt = pytest.importorskip("libvirt")
    a, b = rig.hosts
    for h in rig.hosts:
        conn = libvirt.open(h.qemu_uri)
        try:
            assert conn.getHostname() == h.name
        finally:
            conn.close()
    c1 = libvirt.open(a.test_uri)
    c2 = libvirt.open(a.test_uri)
    other = libvirt.open(b.test_uri)
    name = f"py-{uuid.uuid4().hex[:6]}"
    try:
        dom = c1.defineXML(TEST_DRIVER_DOMAIN.format(name=name))
        assert name in c2.listDefinedDomains()
        assert name not in other.listDefinedDomains()
        dom.undefine()
    finally:
        for c in (c1, c2, other):
            c.close()


@pytest.mark.e2e
def test_up_is_idempotent(rig: Rig) -> None:
    before = {h.name: read_pids(h) for h in rig.hosts}
    r = rig.script("up", "2")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already running") == 2
    assert {h.name: read_pids(h) for h in rig.hosts} == before


@pytest.mark.e2e
def test_down_leaves_nothing_behind(rig: Rig, tmp_path: Path) -> None:
    a, b = rig.hosts
    # A running guest on each host (no disk: QEMU just sits in its firmware), and on host 2
    # libvirtd is killed first, so its QEMU is orphaned: down must find it all the same.
    for h in rig.hosts:
        define(h.qemu_uri, qemu_domain_xml(f"left-{h.name}"), tmp_path, start=True)
    qemus = {h.name: qemu_pids(h) for h in rig.hosts}
    assert all(len(p) == 1 and alive(p[0]) for p in qemus.values()), qemus
    daemons = [pid for h in rig.hosts for pid in read_pids(h).values()]
    os.kill(read_pids(b)["libvirtd"], 9)
    net_env = rig.state / "hosts" / "net.env"
    net = dict(line.split("=", 1) for line in net_env.read_text().splitlines()) if net_env.exists() else {}

    r = rig.script("down")
    assert r.returncode == 0, r.stderr
    assert f"destroying guest left-{a.name}" in r.stderr

    pids = daemons + [p for ps in qemus.values() for p in ps]
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in pids if alive(p)] == []

    # Nothing else runs that mentions this rig's state, nor inside its namespaces.
    leftovers = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not alive(int(proc.name)):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(rig.state) in cmdline or rig.prefix in cmdline:
            leftovers.append(f"{proc.name}: {cmdline}")
    assert leftovers == []

    assert not {h.name for h in rig.hosts} & netns_names()
    if net:
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        assert net["VDC_BRIDGE"] not in links
        assert f"vdcv{net['VDC_NET_ID']}" not in links  # the hosts' veths
        if shutil.which("iptables"):
            rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True, check=False).stdout
            assert net["VDC_IPT_COMMENT"] not in rules
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(rig.state) not in mounts and rig.prefix not in mounts
    for h in rig.hosts:
        assert not (h.dir / "sock" / "libvirt-sock").exists()
        assert not (h.dir / "pids").exists()
        gone = subprocess.run(["virsh", "-c", h.qemu_uri, "version"], capture_output=True, timeout=30, check=False)
        assert gone.returncode != 0
    assert (rig.state / "hosts" / "hosts.txt").read_text() == ""
    st = rig.script("status")
    assert st.returncode != 0
    assert " running " not in st.stdout
