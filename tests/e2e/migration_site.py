"""The migration rig: a module's own three libvirt hosts registered as Hosts labelled
``vdc.dev/driver: migration`` in the session's datacenter, a shared and a local pool, and helpers that
look at every host (see tests/e2e/test_migration.py). Use :func:`migration_site` in a module-scoped
fixture."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rig
from conftest import TINY_DIR, Datacenter, host_object, wait_until

DRIVER = "migration"
SHARED_POOL = "e2e-mig-shared"
LOCAL_POOL = "e2e-mig-local"
TERMINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass
class Site:
    dc: Datacenter
    hosts: rig.LibvirtHosts
    state: Path
    prefix: str

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts.hosts]

    def host(self, name: str) -> rig.LibvirtHost:
        return next(h for h in self.hosts.hosts if h.name == name)

    def virsh(self, host: str, *args: str, check: bool = True) -> str:
        result = subprocess.run(["virsh", "-c", self.host(host).qemu_uri, *args], capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} on {host}: {result.stderr}")
        return result.stdout

    def running_on(self, domain: str) -> list[str]:
        """The hosts where a domain of that name runs, as their libvirtds say (a dead host says nothing)."""
        return [h for h in self.names if domain in self.virsh(h, "list", "--name", "--state-running", check=False)
                .split()]  # fmt: skip

    def defined_on(self, domain: str) -> list[str]:
        return [h for h in self.names if domain in self.virsh(h, "list", "--all", "--name", check=False).split()]

    def libvirtd_pid(self, host: str) -> int:
        pids = dict(line.split()[:2] for line in (self.state / "hosts" / host / "pids").read_text().splitlines()
                    if len(line.split()) >= 2)  # fmt: skip
        return int(pids["libvirtd"])

    def signal_host(self, host: str, sig: signal.Signals, spare: tuple[str, ...] = ()) -> None:
        """``sig`` to the host's libvirtd and every process in its mount namespace (its QEMUs, its heartbeat;
        a guest of the same name on another host is left alone) but those whose command name is in ``spare``."""
        try:
            namespace = os.readlink(f"/proc/{self.libvirtd_pid(host)}/ns/mnt")
        except FileNotFoundError:
            return  # its libvirtd is gone, and with it the namespace's processes (a power-off)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace and (entry / "comm").read_text().strip() not in spare:
                    os.kill(int(entry.name), sig)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue

    def power_off(self, host: str) -> None:
        """As a power loss would: SIGKILL every process of the host."""
        self.signal_host(host, signal.SIGKILL)

    def clear_vms(self) -> None:
        """Delete every VM on this site's hosts and wait until they are gone."""
        dc = self.dc
        vms = dc.cp.get_json("virtualmachines", "-n", dc.namespace)["items"]
        mine = [v["metadata"]["name"] for v in vms if (v.get("status") or {}).get("host") in self.names]
        if mine:
            dc.cp.kubectl("delete", "virtualmachine", *mine, "-n", dc.namespace, "--timeout=180s")

    def console(self, host: str, domain: str) -> str:
        path = self.state / "hosts" / host / "log" / "qemu" / f"{domain}.console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def vm(self, name: str, pool: str, **spec: Any) -> dict[str, Any]:
        marker = f"{name}-{secrets.token_hex(3)}"
        cmdline = f"console=ttyS0 vdc.marker={name} vdc.counter=1 vdc.diskwrite={marker} vdc.diskread=1"
        doc = self.dc.vm_manifest(
            name,
            boot={"kernel": {"kernel": f"{TINY_DIR}/vmlinuz", "initrd": f"{TINY_DIR}/initrd.img", "cmdline": cmdline}},
            hostSelector={"matchLabels": {"vdc.dev/driver": DRIVER}},
            disks=[{"name": "data", "source": {"blank": {"pool": pool, "size": "16Mi"}}}],
            **spec,
        )
        doc["metadata"]["annotations"] = {"e2e/marker": marker}
        return doc

    def migration(self, name: str, vm: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachineMigration",
            "metadata": {"name": name, "namespace": self.dc.namespace},
            "spec": {"vm": vm, **spec},
        }

    def get_migration(self, name: str) -> dict[str, Any] | None:
        return self.dc.get("virtualmachinemigration", name, self.dc.namespace)

    def wait_migration(self, name: str, phases: tuple[str, ...] = TERMINAL, timeout: float = 180) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.get_migration(name)
            return body if body and (body.get("status") or {}).get("phase") in phases else None

        try:
            return wait_until(f"migration {name} {'/'.join(phases)}", check, timeout=timeout)
        except AssertionError:
            print(json.dumps(self.get_migration(name), indent=1)[-3000:])
            print(self.dc.operator.tail(80))
            raise


def qemu_processes(domain: str) -> int:
    """QEMU processes of the domain on this machine, whatever any libvirtd says (never two copies)."""
    found = subprocess.run(["pgrep", "-f", f"guest={domain},"], capture_output=True, text=True, check=False)
    return len(found.stdout.split())


def counts(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"VDC-COUNT=(\d+)", log)]


def wait_counting(site: Site, host: str, domain: str, at_least: int = 3) -> int:
    return wait_until(f"{domain} counting on {host}",
                      lambda: (c := counts(site.console(host, domain))) and c[-1] >= at_least and c[-1],
                      timeout=120)  # fmt: skip


@contextmanager
def migration_site(datacenter: Datacenter, state: Path, *, disk_leases: bool = False) -> Iterator[Site]:
    """Three rig hosts, their Hosts and the two pools, all removed again afterwards. ``disk_leases``: the
    hosts run libvirt's lockd lock manager (see hack/libvirt-hosts.sh, VDC_HOST_LOCKD)."""
    dc = datacenter
    prefix = f"vdcm{secrets.token_hex(2)}"
    hosts = rig.start_libvirt_hosts(state, 3, prefix, disk_leases=disk_leases)
    s = Site(dc, hosts, state, prefix)
    try:
        for h in hosts.hosts:
            dc.apply(host_object(h.name, h.qemu_uri, DRIVER, virtualization="Emulated", cpuOvercommit=8,
                                 **({"underlayAddress": h.address} if h.address else {})))  # fmt: skip
        selector = {"matchLabels": {"vdc.dev/driver": DRIVER}}
        dc.apply({"apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": SHARED_POOL},
                  "spec": {"type": "dir", "target": {"path": str(hosts.shared_dir / "e2e-pool")}, "shared": True,
                           "hostSelector": selector}})  # fmt: skip
        dc.apply({"apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": LOCAL_POOL},
                  "spec": {"type": "dir", "target": {"path": "/var/lib/libvirt/vdc-pools/e2e-mig-local"},
                           "hostSelector": selector}})  # fmt: skip
        for name in s.names:
            wait_until(f"host {name} Ready", lambda n=name: (dc.condition(dc.get("host", n), "Ready") or {})
                       .get("status") == "True", timeout=90)  # fmt: skip
        for pool in (SHARED_POOL, LOCAL_POOL):
            wait_until(f"pool {pool} Ready", lambda p=pool: (dc.condition(dc.get("storagepool", p), "Ready") or {})
                       .get("status") == "True", timeout=90)  # fmt: skip
        yield s
    finally:
        try:
            _remove_objects(s)
        finally:  # whatever the API said: no libvirt host, QEMU or namespace outlives the module
            rig.stop_libvirt_hosts(state, prefix)


def _remove_objects(s: Site) -> None:
    dc = s.dc
    dc.cp.kubectl("delete", "virtualmachinemigrations", "--all", "-n", dc.namespace, "--timeout=60s", check=False)
    for name in s.names:
        dc.cp.kubectl("patch", "host", name, "--type=merge", "-p", '{"spec":{"maintenance":false}}', check=False)
    vms = dc.cp.get_json("virtualmachines", "-n", dc.namespace)["items"]
    mine = [v["metadata"]["name"] for v in vms if (v.get("status") or {}).get("host") in s.names]
    if mine:
        dc.cp.kubectl("delete", "virtualmachine", *mine, "-n", dc.namespace, "--timeout=120s", check=False)
    dc.cp.kubectl("delete", "storagepool", SHARED_POOL, LOCAL_POOL, "--timeout=60s", check=False)
    for name in s.names:
        dc.cp.kubectl("delete", "host", name, "--timeout=60s", check=False)
