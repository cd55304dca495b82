"""``vdc import-ova`` (a local OVA into a StoragePool volume, and the Appliance that uses it) and
``vdc export`` (a VM's disks and hardware into an OVA)."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import libvirt

from vdc.api.meta import GROUP, VERSION
from vdc.api.storagepool import libvirt_pool_name
from vdc.cli.context import CliError, Kube, add_common_options, host_connection, libvirt_error, vm_domain, vm_host
from vdc.cli.format import condition, progress_line
from vdc.libvirt import storage
from vdc.libvirt.domain_xml import DiskConfig, DomainConfig, DomainXmlError
from vdc.libvirt.errors import LibvirtFailure
from vdc.ovf.convert import image_info, to_stream_optimized_vmdk
from vdc.ovf.envelope import DiskFormat
from vdc.ovf.errors import OvfError
from vdc.ovf.hardware import Bus, DiskDrive, HardwareSummary, NetworkAdapter
from vdc.ovf.ova import open_ova
from vdc.ovf.writer import ExportSystem, build_descriptor, write_ova


class Progress:
    """Byte progress on stderr: rewritten in place on a terminal, a line per quarter otherwise."""

    def __init__(self, what: str, total: int | None, out: TextIO | None = None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self._last = 0.0
        self._quarter = 0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.2:
                self._last = now
                self.out.write("\r" + progress_line(self.what, self.done, self.total))
                self.out.flush()
        elif self.total and 4 * self.done // self.total > self._quarter:
            self._quarter = 4 * self.done // self.total
            print(progress_line(self.what, self.done, self.total), file=self.out)

    def end(self) -> None:
        if self.tty:
            self.out.write("\r" + progress_line(self.what, self.done, self.total) + "\n")
        elif self._quarter < 4:
            print(progress_line(self.what, self.done, self.total), file=self.out)


class _Hashing:
    """A file object that hashes what is read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha256.update(data)
        return data


# --- import-ova ----------------------------------------------------------------------------------


def appliance_volume_name(namespace: str, name: str) -> str:
    """``<ns>_<appliance>_upload.ova``: the name says the namespace owns it (vdc.tenancy.access.owner_namespace)."""
    return f"{namespace}_{name}_upload.ova"


def pick_pool_host(pool: Mapping[str, Any], hosts: Mapping[str, Mapping[str, Any]]) -> str:
    """The first (by name) host where the pool runs and whose Host is Ready."""
    running = sorted(h["host"] for h in (pool.get("status") or {}).get("hosts") or [] if h.get("state") == "Running")
    for name in running:
        host = hosts.get(name)
        if host is not None and (condition(host, "Ready") or {}).get("status") == "True":
            return str(name)
    pool_name = pool["metadata"]["name"]
    where = f" (it runs on {', '.join(running)}, none of them Ready)" if running else ""
    raise CliError(f"storagepool {pool_name} runs on no Ready host{where}")


def appliance_manifest(namespace: str, name: str, pool: str, volume: str, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Appliance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"volume": {"pool": pool, "name": volume}, "sha256": sha256}, "storagePool": pool},
    }


def cmd_import_ova(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        package = open_ova(path)  # a broken or unsafe package is refused before anything is uploaded
    except (OvfError, OSError) as exc:
        raise CliError(f"{path}: not a usable OVA: {exc}") from exc
    kube = Kube.from_args(args)
    if kube.appliance_exists(args.name):
        raise CliError(f"appliance {kube.namespace}/{args.name} already exists")
    pool = kube.pool(args.pool)
    hosts = {h["metadata"]["name"]: h for h in kube.hosts()}
    host = pick_pool_host(pool, hosts)
    volume = appliance_volume_name(kube.namespace, args.name)
    size = path.stat().st_size
    progress = Progress(f"upload {path.name} to {args.pool}/{volume} on {host}", size)
    with host_connection(kube, hosts[host]) as conn, path.open("rb") as f:
        source = _Hashing(f)  # hashed as it is uploaded: one read of the file, and the digest is of what was sent
        try:
            storage.upload_stream(
                conn, libvirt_pool_name(args.pool), volume, cast(BinaryIO, source), size, "raw", progress
            )
        except LibvirtFailure as exc:
            raise CliError(f"host {host}: uploading to pool {args.pool}: {exc}") from exc
        progress.end()
    body = appliance_manifest(kube.namespace, args.name, args.pool, volume, source.sha256.hexdigest())
    kube.create_appliance(body)
    systems = len(package.envelope.virtual_systems())
    print(f"appliance {kube.namespace}/{args.name} created from volume {args.pool}/{volume} ({systems} system(s))")
    return 0


# --- export --------------------------------------------------------------------------------------

_BUSES: dict[str, Bus] = {"virtio": "virtio", "sata": "sata", "scsi": "scsi", "ide": "ide"}


def exported_disks(config: DomainConfig) -> list[DiskConfig]:
    """The disks an export carries: file-backed disks (not CD-ROMs such as cloud-init seeds)."""
    return [d for d in config.disks if d.device == "disk" and d.source_file]


def export_hardware(
    config: DomainConfig, disks: Sequence[tuple[str, int]], switches: Mapping[str, str]
) -> HardwareSummary:
    """The OVF hardware of a domain: ``disks`` are (package file, virtual size) per exported disk in
    domain order; ``switches`` maps a NIC's MAC to its switch (else the libvirt network's name)."""
    exported = exported_disks(config)
    if len(exported) != len(disks):
        raise ValueError("one (file, size) per exported disk is needed")
    return HardwareSummary(
        cpus=config.vcpus,
        memory_bytes=config.memory_kib * 1024,
        cores_per_socket=config.cpu.cores if config.cpu.cores and config.cpu.sockets else None,
        disks=tuple(
            DiskDrive(f"vmdisk{i}", size, file, DiskFormat("vmdk", "streamOptimized"), _BUSES.get(disk.bus, "other"))
            for i, (disk, (file, size)) in enumerate(zip(exported, disks, strict=True), start=1)
        ),
        nics=tuple(NetworkAdapter(switches.get(nic.mac, nic.network), nic.model) for nic in config.interfaces),
    )


def _rebase(image: Path, fmt: str, base: Path, base_fmt: str) -> None:
    """Point the local qcow2 copy ``image`` at the local copy of its backing file (header only: ``-u``)."""
    command = ["qemu-img", "rebase", "-u", "-f", fmt, "-b", str(base), "-F", base_fmt, str(image)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        raise CliError(f"qemu-img rebase {image.name}: {exc.stderr.strip() or exc}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliError(f"qemu-img rebase {image.name}: {exc}") from exc


def _download_chain(conn: libvirt.virConnect, path: str, workdir: Path, label: str, index: int) -> tuple[Path, str]:
    """Download the volume at ``path`` and, for a qcow2 overlay, its backing chain (rebased onto the local
    copies, so qemu-img can flatten it). Returns the local file and its format."""
    local = workdir / f"{label}-{index}"
    progress = Progress(f"download {Path(path).name}", None)  # bytes only: a sparse volume streams more than it holds
    with local.open("wb") as sink:
        observed = storage.download_volume(conn, path, sink, progress)
    progress.end()
    fmt = observed.format or "raw"
    if observed.backing_path:
        base, base_fmt = _download_chain(conn, observed.backing_path, workdir, label, index + 1)
        _rebase(local, fmt, base, base_fmt)
    return local, fmt


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".ova":
        raise CliError(f"{out}: the output file must end in .ova")
    if not out.parent.is_dir():
        raise CliError(f"{out.parent}: no such directory")
    kube = Kube.from_args(args)
    vm = kube.vm(args.vm)
    label = f"{kube.namespace}/{args.vm}"
    with vm_domain(kube, vm) as (conn, dom), tempfile.TemporaryDirectory(prefix="vdc-export-") as tmp:
        try:
            active = bool(dom.isActive())
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as exc:
            raise libvirt_error(vm_host(vm), exc) from exc
        if active and not args.allow_running:
            raise CliError(
                f"vm {label} is running: stop it first (`vdc stop {args.vm} --wait`), or pass --allow-running "
                "for a crash-consistent copy"
            )
        try:
            config = DomainConfig.from_string(xml)
        except DomainXmlError as exc:
            raise CliError(f"vm {label}: cannot read its domain: {exc}") from exc
        if config.os.kernel:
            print(f"note: {label} boots a kernel from its host; the OVA holds its disks only", file=sys.stderr)
        workdir = Path(tmp)
        files: dict[str, Path] = {}
        sizes: list[tuple[str, int]] = []
        for number, disk in enumerate(exported_disks(config), start=1):
            assert disk.source_file is not None
            try:
                local, fmt = _download_chain(conn, disk.source_file, workdir, f"disk{number}", 0)
            except LibvirtFailure as exc:
                raise CliError(f"vm {label}: downloading disk {disk.target_dev}: {exc}") from exc
            name = f"{args.vm}-disk{number}.vmdk"
            target = workdir / name
            try:
                to_stream_optimized_vmdk(local, fmt, target)
                virtual_size = image_info(target, "vmdk").virtual_size
            except OvfError as exc:
                raise CliError(f"vm {label}: converting disk {disk.target_dev}: {exc}") from exc
            local.unlink()
            files[name] = target
            sizes.append((name, virtual_size))
        switches = {
            str(n.get("macAddress")): str(n.get("switch"))
            for n in (vm.get("status") or {}).get("interfaces") or []
            if n.get("switch")
        }
        hardware = export_hardware(config, sizes, switches)
        file_sizes = {name: path.stat().st_size for name, path in files.items()}
        descriptor = build_descriptor(
            ExportSystem(id=args.vm, name=args.vm, hardware=hardware, annotation=f"exported from {label} by vdc"),
            file_sizes,
        )
        progress = Progress(f"write {out.name}", sum(file_sizes.values()))
        try:
            write_ova(out, f"{args.vm}.ovf", descriptor, files, progress=progress)
        except OSError as exc:
            raise CliError(f"{out}: {exc.strerror or exc}") from exc
        progress.end()
    print(f"{out}: {len(files)} disk(s), {config.vcpus} vCPU(s), {config.memory_kib // 1024} MiB")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import-ova",
        help="upload a local OVA into a StoragePool and create the Appliance",
        description="Check the OVA locally, upload it as the raw volume appliance-<namespace>-<name>.ova into "
        "the StoragePool on one Ready host of the pool (a libvirt stream; progress on stderr), then create "
        "the Appliance with spec.source.volume (and the file's SHA-256) and spec.storagePool.",
    )
    p.add_argument("file", help="the .ova file")
    p.add_argument("--name", required=True, help="name of the Appliance to create")
    p.add_argument("--pool", required=True, help="StoragePool to upload into (also the Appliance's storagePool)")
    add_common_options(p)
    p.set_defaults(func=cmd_import_ova)

    p = sub.add_parser(
        "export",
        help="export a stopped VM to an OVA",
        description="Read the VM's domain from its host (vCPUs, memory, disks, NICs), download each disk "
        "through libvirt (qcow2 overlays with their backing chain), convert them to streamOptimized VMDK "
        "and write an OVA (OVF 1.0 descriptor, SHA-256 manifest). CD-ROMs (cloud-init seeds) are left out.",
    )
    p.add_argument("vm", help="VirtualMachine name")
    p.add_argument("-o", "--output", required=True, metavar="FILE.ova", help="the OVA to write")
    p.add_argument("--allow-running", action="store_true", help="export a running VM anyway (crash-consistent disks)")
    add_common_options(p)
    p.set_defaults(func=cmd_export)
