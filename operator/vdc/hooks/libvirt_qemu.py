#!/usr/bin/python3 -I
"""vdc-operator's libvirt qemu hook: host files only from the directories the cluster admin declared.

A VirtualMachine may boot a kernel, initrd or device tree from a file on its host, named by path in its
spec. The operator allows only paths under the Host's ``spec.hostFiles.allowedPaths``, but it checks
the text of the path: only the host can tell where a symlink inside an allowed directory really leads,
and the operator reaches hosts through libvirt, which resolves no paths for it. So each host runs this
hook, installed as ``/etc/libvirt/hooks/qemu.d/vdc-host-files`` (``vdc host-hook install`` writes it;
libvirtd looks for hooks when it starts, so restart it once after installing). libvirt runs it as
``vdc-host-files <domain> <operation> <sub-operation> -`` with the domain XML on standard input.

On ``prepare begin`` (before QEMU starts, for every start, restore or incoming migration) it acts on
domains the operator made, those whose ``<metadata>`` carries our ``<vdc:owner>`` element (see
:class:`vdc.libvirt.domain_xml.OwnerMetadata`): it resolves ``os/kernel``, ``os/initrd`` and
``os/dtb`` with :func:`os.path.realpath` (``..`` and every symlink, as the host sees them) and refuses
the start unless each lies inside the resolved form of one of the directories listed in the owner's
``<vdc:hostFiles><vdc:allowed path=…/></vdc:hostFiles>`` (which the operator writes from the Host's
spec, never from the tenant's). A domain of ours that names a host file but lists no directory is
refused too. ``os/loader`` and ``os/nvram`` are left alone: they come from the operator's firmware
choice, not from the tenant. Other operations and domains that are not ours pass at once.

A refusal exits 1 with one line per file on standard error, which libvirt puts into the error of the
start (``Hook script execution failed: … unexpected exit status 1: vdc: initrd … resolves to …``).

This file is deliberately standalone: the Python standard library is all it needs on the host. It runs
as root for every QEMU domain operation, so it names its interpreter (``/usr/bin/python3``, isolated
from the environment with ``-I``) rather than whatever ``python3`` the daemon's PATH finds, and it
imports the XML parser only when it has a domain to check. :func:`refusals` is pure but for the path
resolution it is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

OWNER_NS = "https://vdc.dev/xmlns/owner/v1"
OWNER_TAG = f"{{{OWNER_NS}}}owner"
ALLOWED_PATH = f"{{{OWNER_NS}}}hostFiles/{{{OWNER_NS}}}allowed"
HOST_FILE_TAGS = ("kernel", "initrd", "dtb")
"""The elements of ``<os>`` whose files come from the tenant's spec."""
CHECKED = frozenset({("prepare", "begin")})


def host_files(domain: ET.Element) -> list[tuple[str, str]]:
    """``(tag, path)`` of each host file the domain boots from."""
    os_el = domain.find("os")
    if os_el is None:
        return []
    return [(tag, (el.text or "").strip()) for tag in HOST_FILE_TAGS if (el := os_el.find(tag)) is not None]


def _inside(path: str, directory: str) -> bool:
    return path != directory and os.path.commonpath([path, directory]) == directory


def refusals(
    files: Sequence[tuple[str, str]], allowed: Sequence[str], realpath: Callable[[str], str] = os.path.realpath
) -> list[str]:
    """Why each file that does not resolve into an allowed directory is refused (empty: all allowed)."""
    if not files:
        return []
    if not allowed:
        return [
            f"vdc: {tag} {path}: the domain lists no allowed host directories (the Host declares no "
            "spec.hostFiles.allowedPaths), so it may use no host file"
            for tag, path in files
        ]
    directories = [realpath(d) for d in allowed if os.path.isabs(d)]
    shown = ", ".join(allowed)
    problems = []
    for tag, path in files:
        if not os.path.isabs(path):
            problems.append(f"vdc: {tag} {path!r} is not an absolute path")
            continue
        real = realpath(path)
        if any(_inside(real, d) for d in directories):
            continue
        where = f"resolves to {real}, outside" if real != path else "is outside"
        problems.append(f"vdc: {tag} {path} {where} the host's allowed directories ({shown})")
    return problems


def check(text: str) -> list[str]:
    """The refusals for a domain XML as libvirt hands it to the hook (empty: not ours, or allowed)."""
    if OWNER_NS not in text:  # cheap: most domains on a host that are not ours are not even parsed
        return []
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return [f"vdc: cannot read the domain XML: {exc}"]
    domain = root if root.tag == "domain" else root.find("domain")
    if domain is None:
        return []
    owner = domain.find(f"metadata/{OWNER_TAG}")
    if owner is None:
        return []
    allowed = [el.get("path") or "" for el in owner.findall(ALLOWED_PATH)]
    return refusals(host_files(domain), [a for a in allowed if a])


def main(argv: list[str], stdin: str) -> int:
    if len(argv) < 4:
        print("usage: vdc-host-files <domain> <operation> <sub-operation> - (libvirt qemu hook)", file=sys.stderr)
        return 2
    if (argv[2], argv[3]) not in CHECKED:
        return 0
    problems = check(stdin)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv, sys.stdin.read()))
