"""The `vdc` CLI against the real control plane and libvirt hosts: power, addresses, hosts, the serial
console through a pty, VNC forwarding, export to an OVA and import of an OVA."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import re
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

import rig
from conftest import Datacenter, wait_until
from vdc.ovf.convert import to_stream_optimized_vmdk
from vdc.ovf.envelope import DiskFormat
from vdc.ovf.hardware import DiskDrive, HardwareSummary, summarize
from vdc.ovf.ova import open_ova
from vdc.ovf.writer import ExportSystem, build_descriptor, write_ova

VDC = str(rig.REPO / ".venv" / "bin" / "vdc")
POOL = "cli-pool"
SWITCH = "cli-lan"


def vdc(dc: Datacenter, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [VDC, *args, "-n", dc.namespace] if args[0] != "hosts" else [VDC, *args],
        env=dc.cp.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"vdc {' '.join(args)} exited {result.returncode}:\n{result.stderr}\n{dc.operator.tail()}")
    return result


def _phase(dc: Datacenter, name: str) -> str | None:
    return ((dc.vm(name) or {}).get("status") or {}).get("phase")


@pytest.fixture(scope="module")
def pool(datacenter: Datacenter) -> dict:
    datacenter.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": POOL},
        "spec": {"type": "dir", "target": {"path": "/var/lib/libvirt/vdc-pools/cli"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
    })  # fmt: skip

    def ready() -> dict | None:
        body = datacenter.get("storagepool", POOL)
        return body if (datacenter.condition(body, "Ready") or {}).get("status") == "True" else None

    return wait_until("the pool Ready", ready, timeout=60)


def test_errors_are_one_line_with_exit_code_1(datacenter: Datacenter) -> None:
    result = vdc(datacenter, "start", "no-such-vm", check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: virtualmachine {datacenter.namespace}/no-such-vm not found\n"
    assert vdc(datacenter, "console", "no-such-vm", check=False).returncode == 1


def test_stop_start_and_restart_by_cli(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.apply(dc.vm_manifest("cli-power"))
    body = dc.wait_ready("cli-power")
    host, domain = body["status"]["host"], body["status"]["domainName"]

    out = vdc(dc, "stop", "cli-power", "--wait", "--timeout", "90")
    assert "runStrategy Halted" in out.stdout and "phase Stopping" in out.stderr, out
    body = dc.vm("cli-power")
    assert body is not None and body["status"]["phase"] == "Stopped" and body["spec"]["runStrategy"] == "Halted"
    assert dc.virsh(host, "domstate", domain).strip() == "shut off"
    full = json.loads(dc.cp.kubectl("get", "vm", "cli-power", "-n", dc.namespace, "-o", "json",
                                    "--show-managed-fields"))  # fmt: skip
    managers = {m["manager"] for m in full["metadata"]["managedFields"]}
    assert "vdc-cli" in managers, managers

    refused = vdc(dc, "restart", "cli-power", check=False)
    assert refused.returncode == 1 and "is not running" in refused.stderr

    vdc(dc, "start", "cli-power", "--wait", "--timeout", "90")
    assert _phase(dc, "cli-power") == "Running"
    assert dc.virsh(host, "domstate", domain).strip() == "running"
    wait_until("the guest booted", lambda: "VDC-GUEST-READY" in dc.console_log(host, domain), timeout=120)
    boots = dc.console_log(host, domain).count("VDC-GUEST-READY")
    boot_time = dc.vm("cli-power")["status"]["bootTime"]  # type: ignore[index]

    started = time.monotonic()
    out = vdc(dc, "restart", "cli-power", "--wait", "--timeout", "120")
    assert "restart requested at" in out.stdout
    body = dc.vm("cli-power")
    assert body is not None and body["status"]["phase"] == "Running"
    assert body["status"]["bootTime"] > boot_time
    assert body["metadata"]["annotations"]["vdc.dev/restart-requested-at"] < body["status"]["bootTime"]
    # The tiny guest ignores ACPI: it was forced off after the 3 s grace period, then booted again.
    assert time.monotonic() - started >= 3
    wait_until("the guest booted again",
               lambda: dc.console_log(host, domain).count("VDC-GUEST-READY") > boots, timeout=120)  # fmt: skip
    # Restarted once, not again: the domain keeps running with the new boot time.
    time.sleep(5)
    assert dc.vm("cli-power")["status"]["bootTime"] == body["status"]["bootTime"]  # type: ignore[index]
    events = json.loads(dc.cp.kubectl("get", "events", "-n", dc.namespace, "-o", "json",
                                      "--field-selector", "involvedObject.name=cli-power"))["items"]  # fmt: skip
    assert any(e["reason"] == "Restarting" for e in events), [e["reason"] for e in events]


def test_addresses_and_hosts(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": SWITCH},
        "spec": {"mode": "isolated", "subnet": {"cidr": "10.124.0.0/24"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
    })  # fmt: skip
    dc.apply(dc.vm_manifest("cli-nic", interfaces=[{"name": "eth0", "switch": SWITCH}]))
    body = dc.wait_vm("cli-nic", lambda b: any(n.get("hostDevice") for n in
                                               (b.get("status") or {}).get("interfaces") or []),
                      "the NIC's host device in status")  # fmt: skip
    nic = body["status"]["interfaces"][0]

    table = vdc(dc, "addresses", "cli-nic").stdout.splitlines()
    assert table[0].split() == ["INTERFACE", "MAC", "SWITCH", "IPS"]
    assert table[1].split()[:3] == ["eth0", nic["macAddress"], SWITCH]
    assert nic["ipAddresses"][0] in table[1] and nic["ipAddresses"][0].startswith("10.124.0.")
    wide = vdc(dc, "addresses", "cli-nic", "-o", "wide").stdout
    assert nic["hostDevice"] in wide and body["status"]["host"] in wide
    as_json = json.loads(vdc(dc, "addresses", "cli-nic", "-o", "json").stdout)
    assert as_json == [{"name": "eth0", "macAddress": nic["macAddress"], "switch": SWITCH,
                        "hostDevice": nic["hostDevice"], "ipAddresses": nic["ipAddresses"]}]  # fmt: skip

    lines = vdc(dc, "hosts").stdout.splitlines()
    assert lines[0].startswith("NAME") and "CPUS (ALLOC/ALLOCATABLE)" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(dc.host_objects)
    hosts = {name: dc.get("host", name) for name in rows}
    for name, row in rows.items():
        status = hosts[name]["status"]  # type: ignore[index]
        assert row[1] == "True" and row[2] == "Ready"
        assert row[3] == f"{status['allocated']['cpus']}/{status['allocatable']['cpus']}"
    data = json.loads(vdc(dc, "hosts", "-o", "json").stdout)
    assert [h["name"] for h in data] == sorted(rows)


def _read_until(fd: int, pattern: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while pattern not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {pattern!r} on the console; got:\n{seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], min(left, 1))
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"console ended before {pattern!r}; got:\n{seen[-2000:]!r}")
            seen += chunk
    return seen


def test_console_through_a_pty_is_interactive_and_quits_on_ctrl_bracket(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.apply(dc.vm_manifest("cli-console"))
    body = dc.wait_ready("cli-console")
    host, domain = body["status"]["host"], body["status"]["domainName"]
    wait_until("the guest booted", lambda: "VDC-GUEST-READY" in dc.console_log(host, domain), timeout=120)

    pid, fd = pty.fork()
    if pid == 0:  # the child: `vdc console` on a terminal
        os.execve(VDC, [VDC, "console", "cli-console", "-n", dc.namespace], dc.cp.env)
    try:
        _read_until(fd, b"Escape character is ^]", 30)
        # The guest's shell answers: the arithmetic proves the input reached it and its output came back.
        os.write(fd, b"\recho CLI-$((6*7))-OK\r")
        _read_until(fd, b"CLI-42-OK", 60)
        os.write(fd, b"\x1d")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            with_data, _, _ = select.select([fd], [], [], 0.2)
            if with_data:
                with contextlib.suppress(OSError):
                    os.read(fd, 4096)
        else:
            raise AssertionError("vdc console did not quit on Ctrl-]")
        assert os.waitstatus_to_exitcode(status) == 0
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)

    # Without a terminal: stdin goes to the guest, its output to stdout, until stdin ends and the guest is quiet.
    piped = subprocess.run([VDC, "console", "cli-console", "-n", dc.namespace, "--timeout", "30"],
                           input="echo PIPED-$((7*6))\n", env=dc.cp.env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "PIPED-42" in piped.stdout


def test_vnc_endpoint_and_forward(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.apply(dc.vm_manifest("cli-vnc", graphics={"type": "VNC"}))
    body = dc.wait_ready("cli-vnc")
    xml = dc.virsh(body["status"]["host"], "dumpxml", body["status"]["domainName"])
    found = re.search(r"<graphics type='vnc' port='(\d+)'", xml)
    assert found, xml
    port = int(found.group(1))
    assert vdc(dc, "vnc", "cli-vnc").stdout.strip() == f"vnc://127.0.0.1:{port}"
    dc.apply(dc.vm_manifest("cli-novnc", runStrategy="Halted"))
    dc.wait_ready("cli-novnc")
    assert "has no VNC graphics" in vdc(dc, "vnc", "cli-novnc", check=False).stderr

    proc = subprocess.Popen([VDC, "vnc", "cli-vnc", "-n", dc.namespace, "--forward", "0", "--once"],
                            env=dc.cp.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        local = proc.stdout.readline().strip()
        match = re.fullmatch(r"vnc://127\.0\.0\.1:(\d+)", local)
        assert match, (local, proc.stderr.read() if proc.stderr else "")
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=30) as client:
            assert client.recv(12).startswith(b"RFB 003.")  # QEMU's VNC server greets through the tunnel
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_export_a_stopped_vm_to_an_ova(datacenter: Datacenter, pool: dict, tmp_path: Path) -> None:
    dc = datacenter
    dc.apply(dc.vm_manifest("cli-export", cpu={"count": 2}, memory={"size": "112Mi"},
                            disks=[{"name": "data", "source": {"blank": {"pool": POOL, "size": "16Mi"}}}]))  # fmt: skip
    dc.wait_ready("cli-export")
    out = tmp_path / "cli-export.ova"
    refused = vdc(dc, "export", "cli-export", "-o", str(out), check=False)
    assert refused.returncode == 1 and "vdc stop cli-export" in refused.stderr and not out.exists()

    vdc(dc, "stop", "cli-export", "--wait", "--timeout", "90")
    result = vdc(dc, "export", "cli-export", "-o", str(out))
    assert "download" in result.stderr and "write cli-export.ova" in result.stderr
    package = open_ova(out)
    hw = summarize(package.envelope, package.envelope.virtual_systems()[0])
    assert (hw.cpus, hw.memory_bytes, len(hw.disks)) == (2, 112 << 20, 1)
    assert hw.disks[0].capacity_bytes == 16 << 20
    assert hw.disks[0].format is not None and hw.disks[0].format.subformat == "streamOptimized"
    assert package.manifest is not None


def _tiny_ova(tmp_path: Path) -> Path:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\xab" * (1 << 20) + b"\0" * (3 << 20))
    vmdk = tmp_path / "tiny-disk1.vmdk"
    to_stream_optimized_vmdk(raw, "raw", vmdk)
    disk = DiskDrive("vmdisk1", 4 << 20, vmdk.name, DiskFormat("vmdk", "streamOptimized"))
    hw = HardwareSummary(cpus=1, memory_bytes=64 << 20, disks=(disk,))
    descriptor = build_descriptor(ExportSystem(id="tiny", hardware=hw), {vmdk.name: vmdk.stat().st_size})
    ova = tmp_path / "tiny.ova"
    write_ova(ova, "tiny.ovf", descriptor, {vmdk.name: vmdk})
    return ova


def test_import_ova_uploads_the_volume_and_creates_the_appliance(
    datacenter: Datacenter, pool: dict, tmp_path: Path
) -> None:
    dc = datacenter
    ova = _tiny_ova(tmp_path)
    result = vdc(dc, "import-ova", str(ova), "--name", "cli-tiny", "--pool", POOL)
    assert "upload tiny.ova" in result.stderr and "100%" in result.stderr
    volume = f"{dc.namespace}_cli-tiny_upload.ova"
    appliance = dc.get("appliance", "cli-tiny", dc.namespace)
    assert appliance is not None
    assert appliance["spec"]["source"]["volume"] == {"pool": POOL, "name": volume}
    assert appliance["spec"]["storagePool"] == POOL
    assert appliance["spec"]["source"]["sha256"] == hashlib.sha256(ova.read_bytes()).hexdigest()
    holders = [h.name for h in dc.hosts.hosts if volume in dc.virsh(h.name, "vol-list", f"vdc-{POOL}")]
    assert len(holders) == 1
    info = dc.virsh(holders[0], "vol-info", volume, "--pool", f"vdc-{POOL}", "--bytes")
    assert re.search(rf"Capacity:\s+{ova.stat().st_size} bytes", info), info

    again = vdc(dc, "import-ova", str(ova), "--name", "cli-tiny", "--pool", POOL, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    junk = tmp_path / "junk.ova"
    junk.write_bytes(b"not a tar")
    bad = vdc(dc, "import-ova", str(junk), "--name", "cli-junk", "--pool", POOL, check=False)
    assert bad.returncode == 1 and "not a usable OVA" in bad.stderr
