"""The vdc qemu hook on a real rig host: libvirtd runs it before QEMU starts, it resolves the domain's
kernel and initrd on the host, and a symlink inside the allowed directory that leads outside is refused
with a message naming the file, where it leads and the allowed directories; the real files boot.

This works at the libvirt level, with a domain made by the operator's own builder (``domain_for``, the
Host's allowed directories in its owner metadata), so it needs no VirtualMachine; the operator's
reaction to a refusal is covered by ``test_tenancy.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY_DIR, Datacenter, wait_until
from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.vm_domain import domain_for
from vdc.libvirt.errors import HookRefused, translate

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

NAMESPACE = "hook-e2e"


def config_for(dc: Datacenter, name: str, initrd: str, dirs: tuple[str, ...] = (TINY_DIR,)) -> Any:
    body = dc.vm_manifest(name)
    body["metadata"].update(namespace=NAMESPACE, uid=str(uuid.uuid4()))
    body["spec"]["boot"]["kernel"]["initrd"] = initrd
    return domain_for(VirtualMachine.model_validate(body), domain_type="qemu", host_file_dirs=dirs)


@pytest.fixture
def conn(datacenter: Datacenter) -> Iterator[Any]:
    c = libvirt.open(datacenter.hosts.hosts[0].qemu_uri)
    try:
        yield c
    finally:
        for dom in c.listAllDomains():
            if dom.name().startswith(f"{NAMESPACE}_"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        c.close()


@pytest.fixture
def evil_initrd(datacenter: Datacenter) -> Iterator[str]:
    """A symlink in the host's tiny-guest directory (seen from here through the host's state dir) that
    leads to /etc/shadow; its path as the host sees it."""
    host = datacenter.hosts.hosts[0]
    boot = datacenter.hosts.state / "hosts" / host.name / "lib" / "boot" / "vdc-tiny"
    assert (boot / "initrd.img").is_file(), f"{boot} is not the host's {TINY_DIR}"
    link = boot / "hook-e2e-evil-initrd"
    link.unlink(missing_ok=True)
    os.symlink("/etc/shadow", link)
    try:
        yield f"{TINY_DIR}/{link.name}"
    finally:
        link.unlink(missing_ok=True)


def start_refused(conn: Any, xml: str) -> HookRefused:
    dom = conn.defineXML(xml)
    with pytest.raises(libvirt.libvirtError) as caught:
        dom.create()
    assert not dom.isActive()
    error = translate(caught.value)
    assert isinstance(error, HookRefused), f"{type(error).__name__}: {error}"
    return error


def test_the_hook_is_installed_where_libvirtd_looks(datacenter: Datacenter) -> None:
    host = datacenter.hosts.hosts[0]
    hook = datacenter.hosts.state / "hosts" / host.name / "etc" / "hooks" / "qemu.d" / "vdc-host-files"
    assert os.access(hook, os.X_OK), hook
    repo_hook = Path(__file__).resolve().parents[2] / "operator" / "vdc" / "hooks" / "libvirt_qemu.py"
    assert hook.read_text() == repo_hook.read_text()


def test_a_symlink_out_of_the_allowed_directory_is_refused_and_the_real_initrd_boots(
    datacenter: Datacenter, conn: Any, evil_initrd: str
) -> None:
    dc = datacenter
    host = dc.hosts.hosts[0]
    refused = start_refused(conn, config_for(dc, "evil", evil_initrd).to_string())
    expected = f"vdc: initrd {evil_initrd} resolves to /etc/shadow, outside the host's allowed directories ({TINY_DIR})"
    print(f"libvirt's error: {refused}")
    assert refused.refusal == expected, str(refused)
    assert "Hook script execution failed" in str(refused)

    good = config_for(dc, "good", f"{TINY_DIR}/initrd.img")
    dom = conn.defineXML(good.to_string())
    dom.create()

    def booted() -> str | None:
        text = dc.console_log(host.name, good.name)
        return text if "VDC-GUEST-READY" in text else None

    log = wait_until("the guest's marker on its serial console", booted, timeout=120)
    assert "VDC-MARKER=good" in log


def test_our_domain_whose_host_allows_no_directory_is_refused(datacenter: Datacenter, conn: Any) -> None:
    config = config_for(datacenter, "nodirs", f"{TINY_DIR}/initrd.img", dirs=())
    refused = start_refused(conn, config.to_string())
    assert refused.refusal.startswith(f"vdc: kernel {TINY_DIR}/vmlinuz: the domain lists no allowed host directories")


def test_a_directory_the_host_does_not_allow_is_refused(datacenter: Datacenter, conn: Any) -> None:
    config = config_for(datacenter, "otherdir", f"{TINY_DIR}/initrd.img", dirs=("/var/lib/libvirt/images",))
    refused = start_refused(conn, config.to_string())
    assert refused.refusal.splitlines() == [
        f"vdc: {tag} {TINY_DIR}/{f} is outside the host's allowed directories (/var/lib/libvirt/images)"
        for tag, f in (("kernel", "vmlinuz"), ("initrd", "initrd.img"))
    ]
