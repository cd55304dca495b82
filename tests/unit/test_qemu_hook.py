"""The libvirt qemu hook that keeps a domain's host files (kernel, initrd, dtb) inside the Host's allowed
directories after resolving symlinks and ``..`` on the host.

The script runs here as libvirt runs it: a separate process, the domain XML (made by the project's own
builder) on standard input, real files and symlinks in a temporary directory. That a real libvirtd runs
it and refuses the start is covered by ``tests/e2e/test_host_files.py``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vdc.hooks import libvirt_qemu
from vdc.libvirt.domain_xml import OWNER_NS, DomainConfig, OsConfig, OwnerMetadata

HOOK = Path(libvirt_qemu.__file__)
UID = "0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11"


@dataclasses.dataclass
class Tree:
    """``allowed/`` with a kernel and an initrd, ``outside/secret``, and room for symlinks."""

    root: Path

    @property
    def allowed(self) -> Path:
        return self.root / "allowed"

    @property
    def secret(self) -> Path:
        return self.root / "outside" / "secret"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path.resolve())
    t.allowed.mkdir()
    (t.allowed / "vmlinuz").write_text("kernel")
    (t.allowed / "initrd.img").write_text("initrd")
    t.secret.parent.mkdir()
    t.secret.write_text("not for guests")
    return t


def domain(
    kernel: str | None,
    initrd: str | None = None,
    dirs: tuple[str, ...] = (),
    *,
    ours: bool = True,
) -> str:
    config = DomainConfig(
        name="team-a_web",
        uuid=UID,
        owner=OwnerMetadata("team-a", "web", UID, host_file_dirs=dirs),
        memory_kib=65536,
        current_memory_kib=65536,
        domain_type="qemu",
        os=OsConfig(kernel=kernel, initrd=initrd, cmdline="console=ttyS0" if kernel else None),
    )
    if ours:
        return config.to_string()
    root = config.to_xml()  # a domain someone else made: no vdc metadata at all
    root.remove(root.find("metadata"))  # type: ignore[arg-type]
    text = ET.tostring(root, encoding="unicode")
    assert OWNER_NS not in text
    return text


def run_hook(xml: str, operation: str = "prepare", sub: str = "begin") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HOOK), "team-a_web", operation, sub, "-"],
        input=xml,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_files_in_an_allowed_directory_start(tree: Tree) -> None:
    xml = domain(f"{tree.allowed}/vmlinuz", f"{tree.allowed}/initrd.img", (str(tree.allowed),))
    result = run_hook(xml)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_symlink_inside_the_directory_that_leads_outside_is_refused_with_where_it_leads(tree: Tree) -> None:
    (tree.allowed / "evil-initrd").symlink_to(tree.secret)
    xml = domain(f"{tree.allowed}/vmlinuz", f"{tree.allowed}/evil-initrd", (str(tree.allowed),))
    result = run_hook(xml)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"vdc: initrd {tree.allowed}/evil-initrd resolves to {tree.secret}, "
        f"outside the host's allowed directories ({tree.allowed})"
    )


def test_a_symlinked_subdirectory_and_dotdot_are_resolved_too(tree: Tree) -> None:
    (tree.allowed / "up").symlink_to(tree.root)  # allowed/up/outside/secret is outside/secret
    (tree.allowed / "sub").mkdir()
    for kernel in (f"{tree.allowed}/up/outside/secret", f"{tree.allowed}/sub/../../outside/secret"):
        result = run_hook(domain(kernel, dirs=(str(tree.allowed),)))
        assert result.returncode == 1, kernel
        assert f"vdc: kernel {kernel} resolves to {tree.secret}, outside" in result.stderr


def test_a_path_outside_without_any_symlink_is_refused(tree: Tree) -> None:
    result = run_hook(domain(str(tree.secret), dirs=(str(tree.allowed),)))
    assert result.returncode == 1
    expected = f"vdc: kernel {tree.secret} is outside the host's allowed directories ({tree.allowed})"
    assert result.stderr.strip() == expected


def test_a_symlinked_allowed_directory_is_fine(tree: Tree) -> None:
    """The admin may declare a symlink to the real directory; files are compared with its target."""
    (tree.root / "boot").symlink_to(tree.allowed)
    declared = str(tree.root / "boot")
    assert run_hook(domain(f"{declared}/vmlinuz", f"{declared}/initrd.img", (declared,))).returncode == 0
    # and a file named through the real directory is inside the declared one as well
    assert run_hook(domain(f"{tree.allowed}/vmlinuz", dirs=(declared,))).returncode == 0


def test_a_symlink_between_allowed_directories_is_fine(tree: Tree) -> None:
    other = tree.root / "kernels"
    other.mkdir()
    (other / "vmlinuz-6.1").write_text("kernel")
    (tree.allowed / "vmlinuz-link").symlink_to(other / "vmlinuz-6.1")
    dirs = (str(tree.allowed), str(other))
    assert run_hook(domain(f"{tree.allowed}/vmlinuz-link", dirs=dirs)).returncode == 0
    assert run_hook(domain(f"{tree.allowed}/vmlinuz-link", dirs=dirs[:1])).returncode == 1


def test_a_directory_whose_name_extends_an_allowed_one_is_not_inside_it(tree: Tree) -> None:
    sibling = tree.root / "allowed-not"
    sibling.mkdir()
    (sibling / "vmlinuz").write_text("kernel")
    assert run_hook(domain(f"{sibling}/vmlinuz", dirs=(str(tree.allowed),))).returncode == 1


def test_every_refused_file_is_named(tree: Tree) -> None:
    (tree.allowed / "evil").symlink_to(tree.secret)
    result = run_hook(domain(str(tree.secret), f"{tree.allowed}/evil", (str(tree.allowed),)))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["kernel", "initrd"]


def test_our_domain_without_allowed_directories_is_refused(tree: Tree) -> None:
    result = run_hook(domain(f"{tree.allowed}/vmlinuz"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"vdc: kernel {tree.allowed}/vmlinuz: the domain lists no allowed host directories")


def test_our_domain_without_host_files_needs_no_directories() -> None:
    assert run_hook(domain(None)).returncode == 0


def test_a_domain_that_is_not_ours_is_left_alone(tree: Tree) -> None:
    result = run_hook(domain(str(tree.secret), ours=False))
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("operation", "sub"),
    [("start", "begin"), ("started", "begin"), ("stopped", "end"), ("release", "end"), ("migrate", "begin"),
     ("restore", "begin"), ("reconnect", "begin"), ("attach", "begin"), ("prepare", "end")],
)  # fmt: skip
def test_other_operations_pass(tree: Tree, operation: str, sub: str) -> None:
    result = run_hook(domain(str(tree.secret), dirs=(str(tree.allowed),)), operation, sub)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_relative_path_is_refused(tree: Tree) -> None:
    assert libvirt_qemu.refusals([("kernel", "vmlinuz")], [str(tree.allowed)]) == [
        "vdc: kernel 'vmlinuz' is not an absolute path"
    ]


def test_unreadable_xml_of_ours_is_refused_and_anything_else_passes() -> None:
    result = run_hook(f"<domain><metadata><vdc:owner xmlns:vdc='{OWNER_NS}'>")
    assert result.returncode == 1 and result.stderr.startswith("vdc: cannot read the domain XML")
    assert run_hook("").returncode == 0
    assert run_hook("<domain type='kvm'><name>x</name></domain>").returncode == 0


def test_the_hook_reads_the_operators_namespace_and_stands_alone() -> None:
    assert libvirt_qemu.OWNER_NS == OWNER_NS
    imports = [line for line in HOOK.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert all(not line.split()[1].startswith("vdc") for line in imports), imports
    assert HOOK.read_text().startswith("#!/usr/bin/python3 -I\n")


def test_usage_without_arguments() -> None:
    result = subprocess.run([sys.executable, str(HOOK)], input="", capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr


def test_install_writes_both_hooks_executable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vdc.cli.main import main

    assert main(["host-hook", "install", "--dir", str(tmp_path)]) == 0
    qemu, network = tmp_path / "qemu.d" / "vdc-host-files", tmp_path / "network.d" / "vdc-overlay"
    assert qemu.read_text() == HOOK.read_text()
    assert network.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(qemu, os.X_OK) and os.access(network, os.X_OK)
    assert main(["host-hook", "print", "qemu"]) == 0
    assert capsys.readouterr().out.endswith(HOOK.read_text())
    assert main(["host-hook", "print"]) == 2
