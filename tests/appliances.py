"""Test appliances built from the project's tiny guest (hack/build-guest.sh): bootable disks and OVAs.

No root and no loop mounts: a boot disk is an unpartitioned FAT image ("superfloppy", dosfstools'
``mkfs.vfat``) holding the guest's ``vmlinuz`` and ``initrd.img`` (copied in with mtools' ``mcopy``)
and a ``syslinux.cfg``, made bootable with ``syslinux --install`` (which also works through mtools).
SeaBIOS boots it from an IDE or virtio disk; the guest prints ``VDC-MARKER=<marker>`` and then
``VDC-GUEST-READY`` on ttyS0.

OVAs are written with ``vdc.ovf.writer`` (disks converted with ``vdc.ovf.convert``): one
VirtualSystem, or a vApp (VirtualSystemCollection with a StartupSection) when given several systems.
Every system gets its own boot disk with its own marker, so a test can tell which one booted.

Everything built is cached under ``$VDC_CACHE/appliances`` (default ``~/.cache/vdc/appliances``),
keyed by a hash of what went into it (guest files, this module's source, the OVF writer's source,
the parameters); callers that pass ``path`` get a private copy, callers that pass none get the cached
file, which they must not modify (boot it with ``snapshot=on``, as ``boot`` does).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from vdc.ovf import writer as ovf_writer
from vdc.ovf.convert import image_info, to_qcow2, to_stream_optimized_vmdk
from vdc.ovf.envelope import DiskFormat, ProductSection, Property, StartupItem
from vdc.ovf.hardware import Bus, DiskDrive, HardwareSummary, NetworkAdapter
from vdc.ovf.manifest import file_digest
from vdc.ovf.writer import ExportCollection, ExportSystem, build_collection_descriptor, build_descriptor, write_ova

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VDC_CACHE", str(Path.home() / ".cache" / "vdc"))) / "appliances"

DiskFormatName = Literal["vmdk-streamOptimized", "raw", "qcow2"]
_PACKAGE_FORMATS: dict[str, tuple[DiskFormat, str, str]] = {  # name: (OVF format, qemu-img format, suffix)
    "vmdk-streamOptimized": (DiskFormat("vmdk", "streamOptimized"), "vmdk", "vmdk"),
    "raw": (DiskFormat("raw"), "raw", "img"),
    "qcow2": (DiskFormat("qcow2"), "qcow2", "qcow2"),
}
_CONTROLLER_MODELS: dict[str, str | None] = {"ide": None, "virtio": "virtio", "sata": "AHCI", "scsi": "lsilogic"}
# Kernel arguments are split on blanks and syslinux.cfg is line based: keep markers plain.
_MARKER = re.compile(r"^[A-Za-z0-9._:,+=/@-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

GUEST_READY = "VDC-GUEST-READY"


# --- the guest and the cache --------------------------------------------------------------------------


@cache
def guest_dir() -> Path:
    """The tiny guest (``vmlinuz``, ``initrd.img``), built once per machine by hack/build-guest.sh."""
    done = subprocess.run(
        [str(REPO / "hack" / "build-guest.sh")], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"hack/build-guest.sh failed ({done.returncode}):\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@cache
def _recipe_hash() -> str:
    """What the artifacts depend on besides their parameters: the guest, this recipe, the OVF writer."""
    guest = guest_dir()
    inputs = (guest / "vmlinuz", guest / "initrd.img", Path(__file__), Path(ovf_writer.__file__))
    parts = [file_digest(path, "SHA256") for path in inputs]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _key(kind: str, params: dict[str, object]) -> str:
    text = json.dumps({"kind": kind, "recipe": _recipe_hash(), **params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextmanager
def _locked() -> Iterator[None]:
    """Serialise builders (pytest-xdist workers, several sessions) on one cache lock."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _workdir(parent: Path = CACHE) -> Iterator[Path]:
    """A scratch directory beside the result, so that the result is renamed into place atomically."""
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sparse_copy(source: Path, target: Path) -> None:
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True, timeout=300)


def _deliver(cached: Path, path: Path | None) -> Path:
    """The cached file itself (``path`` None), or a sparse private copy at ``path``."""
    os.utime(cached)  # last use, for prune_cache
    if path is None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    _sparse_copy(cached, path)
    return path


def prune_cache(max_age_days: float = 14.0) -> list[Path]:
    """Delete cached artifacts unused for ``max_age_days`` (old recipes, one-off markers); returns them."""
    if not CACHE.is_dir():
        return []
    cutoff = time.time() - max_age_days * 86400
    removed: list[Path] = []
    with _locked():
        for entry in CACHE.iterdir():
            if entry.name.startswith(("boot-", "ova-")) and entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"{name} not found: run hack/bootstrap.sh (dosfstools, mtools, syslinux)")


def _run(args: Sequence[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=300, check=False, env=env, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


# --- boot disk ----------------------------------------------------------------------------------------


def syslinux_cfg(marker: str, cmdline_extra: str = "") -> str:
    """The boot loader configuration: boot the guest at once with ``console=ttyS0 vdc.marker=<marker>``."""
    if not _MARKER.match(marker):
        raise ValueError(f"marker {marker!r}: use 1-64 of A-Z a-z 0-9 . _ : , + = / @ -")
    if any(c in cmdline_extra for c in "\r\n\0") or len(cmdline_extra) > 1024:
        raise ValueError("cmdline_extra must be one line of at most 1024 characters")
    append = " ".join(part for part in ("console=ttyS0", f"vdc.marker={marker}", cmdline_extra.strip()) if part)
    return f"DEFAULT vdc\nPROMPT 0\nTIMEOUT 0\nLABEL vdc\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND {append}\n"


def build_boot_disk(
    path: Path | None = None,
    marker: str = "vdc-appliance",
    cmdline_extra: str = "",
    *,
    size_mib: int = 48,
    cache: bool = True,
) -> Path:
    """A raw disk image that SeaBIOS boots into the tiny guest, printing ``VDC-MARKER=<marker>``.

    ``cmdline_extra`` is appended to the kernel command line (e.g. ``vdc.hostname=web``).
    Returns ``path`` (a private copy) or, with no ``path``, the cached image (do not modify it).
    ``cache=False`` (needs ``path``) builds straight into ``path``: for one-off markers.
    """
    config = syslinux_cfg(marker, cmdline_extra)
    if not 32 <= size_mib <= 2048:
        raise ValueError("size_mib must be within 32..2048 (the guest takes ~16 MiB)")
    if not cache:
        if path is None:
            raise ValueError("cache=False needs a path")
        path.parent.mkdir(parents=True, exist_ok=True)
        _build_boot_disk(path, config, size_mib)
        return path
    cached = CACHE / f"boot-{_key('boot-disk', {'cfg': config, 'size_mib': size_mib})}.raw"
    if not cached.exists():
        prune_cache()
        with _locked():
            if not cached.exists():
                _build_boot_disk(cached, config, size_mib)
    return _deliver(cached, path)


def _build_boot_disk(out: Path, config: str, size_mib: int) -> None:
    guest = guest_dir()
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"}
    with _workdir(out.parent) as work:
        image = work / "disk.raw"
        with image.open("wb") as f:
            f.truncate(size_mib << 20)
        # --invariant: fixed volume id and times, so the same inputs give the same bytes.
        _run([_tool("mkfs.vfat"), "--invariant", "-n", "VDCBOOT", str(image)], env)
        cfg = work / "syslinux.cfg"
        cfg.write_text(config)
        os.utime(cfg, (1_600_000_000, 1_600_000_000))
        _run(
            [
                _tool("mcopy"),
                "-m",
                "-i",
                str(image),
                str(guest / "vmlinuz"),
                str(guest / "initrd.img"),
                str(cfg),
                "::/",
            ],
            env,
        )
        _run([_tool("syslinux"), "--install", str(image)], env)
        with image.open("rb") as f:
            f.seek(510)
            if f.read(2) != b"\x55\xaa":
                raise RuntimeError("syslinux left no boot signature on the image")
        os.replace(image, out)


# --- OVA ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplianceSystem:
    """One VM of a test OVA. Its disk boots the tiny guest, which prints ``VDC-MARKER=<marker>``."""

    id: str = "tiny"
    marker: str | None = None  # default: "vdc-<id>"
    cmdline_extra: str = ""
    cpus: int = 1
    memory_mib: int = 256
    disk_mib: int = 48
    disk_bus: Bus = "ide"
    nic_model: str | None = "virtio"  # None: no NIC
    name: str | None = None
    properties: tuple[Property, ...] = ()  # this system's own ProductSection (class None)

    @property
    def boot_marker(self) -> str:
        return self.marker or f"vdc-{self.id}"

    @property
    def disk_name_stem(self) -> str:
        return f"{self.id}-disk1"


def prop(
    key: str,
    default: str | None = None,
    *,
    type: str = "string",
    label: str | None = None,
    description: str | None = None,
    user_configurable: bool = True,
    password: bool = False,
    qualifiers: str | None = None,
) -> Property:
    """A ProductSection property (user configurable unless said otherwise)."""
    return Property(
        key=key,
        type=type,
        qualifiers=qualifiers,
        default=default,
        user_configurable=user_configurable,
        password=password,
        label=label,
        description=description,
    )


DEFAULT_PROPERTIES: tuple[Property, ...] = (
    prop("hostname", "tiny", label="Host name"),
    prop("admin.password", "", password=True, label="Administrator password"),
    prop("build", "vdc-test", user_configurable=False, label="Build"),
)

# The guest's CIM_OperatingSystem type (101: "Linux 64-bit") and VMware's name for it.
OS_ID = 101
VMW_OS_TYPE = "otherLinux64Guest"


@dataclass(frozen=True)
class BuiltOva:
    """What ``build_ova`` wrote, for tests to check an import against."""

    path: Path
    descriptor_name: str
    disk_files: dict[str, str] = field(default_factory=dict)  # system id -> package file name
    markers: dict[str, str] = field(default_factory=dict)  # system id -> VDC-MARKER value


@dataclass(frozen=True)
class _OvaRecipe:
    """The parameters of an OVA: what ``_build_ova`` builds from, and so its cache key."""

    systems: tuple[ApplianceSystem, ...]
    properties: tuple[Property, ...]
    network: str
    disk_format: DiskFormatName
    tamper: bool
    name: str
    startup: tuple[StartupItem, ...]
    collection_id: str


def build_ova(path: Path | None = None, **options: Any) -> Path:
    """An OVA of the tiny guest: ``build_ova_info(path, **options).path``."""
    return build_ova_info(path, **options).path


def build_ova_info(
    path: Path | None = None,
    *,
    systems: Sequence[ApplianceSystem] = (ApplianceSystem(),),
    properties: Sequence[Property] = DEFAULT_PROPERTIES,
    network: str = "VM Network",
    disk_format: DiskFormatName = "vmdk-streamOptimized",
    tamper: bool = False,
    name: str = "vdc-tiny",
    startup: Sequence[StartupItem] | None = None,
    collection_id: str = "vapp",
) -> BuiltOva:
    """An OVA ``<name>.ovf``, ``<name>.mf`` (SHA-256), then one disk per system, ``<id>-disk1.<ext>``.

    One system: a single VirtualSystem whose ProductSection holds ``properties``. Several: a vApp,
    VirtualSystemCollection ``collection_id`` holding ``properties`` and a StartupSection
    (``startup``; default: the systems in the given order, 0 s apart); each system's own
    ``properties`` go in its ProductSection. Every NIC connects to ``network``. Firmware is BIOS.
    ``tamper``: one byte of the first disk is changed after the manifest was written.
    """
    if not systems:
        raise ValueError("an OVA needs at least one system")
    if disk_format not in _PACKAGE_FORMATS:
        raise ValueError(f"disk_format {disk_format!r}: use one of {sorted(_PACKAGE_FORMATS)}")
    for what in (name, collection_id, *(s.id for s in systems)):
        if not _NAME.match(what):
            raise ValueError(f"{what!r}: use letters, digits, '.', '_' and '-'")
    ids = [s.id for s in systems]
    if len(set(ids)) != len(ids) or collection_id in ids:
        raise ValueError(f"system ids must be unique and differ from the collection id: {ids}")
    if startup and len(systems) == 1:
        raise ValueError("a StartupSection needs a vApp: give two or more systems")
    if startup is None:
        startup = [StartupItem(s.id, order=i) for i, s in enumerate(systems, start=1)] if len(systems) > 1 else []
    recipe = _OvaRecipe(
        systems=tuple(systems),
        properties=tuple(properties),
        network=network,
        disk_format=disk_format,
        tamper=tamper,
        name=name,
        startup=tuple(startup),
        collection_id=collection_id,
    )
    _, _, suffix = _PACKAGE_FORMATS[disk_format]
    built = BuiltOva(
        path=CACHE / f"ova-{_key('ova', asdict(recipe))}.ova",
        descriptor_name=f"{name}.ovf",
        disk_files={s.id: f"{s.disk_name_stem}.{suffix}" for s in systems},
        markers={s.id: s.boot_marker for s in systems},
    )
    if not built.path.exists():
        disks = {s.id: build_boot_disk(None, s.boot_marker, s.cmdline_extra, size_mib=s.disk_mib) for s in systems}
        with _locked():
            if not built.path.exists():
                _build_ova(built, recipe, disks)
    return replace(built, path=_deliver(built.path, path))


def _build_ova(built: BuiltOva, recipe: _OvaRecipe, boot_disks: dict[str, Path]) -> None:
    ovf_format, qemu_format, _ = _PACKAGE_FORMATS[recipe.disk_format]
    with _workdir() as work:
        files: dict[str, Path] = {}
        exports: list[ExportSystem] = []
        for system in recipe.systems:
            disk_file = built.disk_files[system.id]
            target = work / disk_file
            source = boot_disks[system.id]
            if qemu_format == "vmdk":
                to_stream_optimized_vmdk(source, "raw", target)
            elif qemu_format == "qcow2":
                to_qcow2(source, "raw", target)
            else:
                _sparse_copy(source, target)
            files[disk_file] = target
            hardware = HardwareSummary(
                cpus=system.cpus,
                memory_bytes=system.memory_mib << 20,
                firmware="bios",
                disks=(
                    DiskDrive(
                        disk_id=None,
                        capacity_bytes=image_info(target, qemu_format).virtual_size,
                        file=disk_file,
                        format=ovf_format,
                        bus=system.disk_bus,
                        controller_model=_CONTROLLER_MODELS.get(system.disk_bus),
                    ),
                ),
                nics=(NetworkAdapter(recipe.network, system.nic_model),) if system.nic_model else (),
            )
            exports.append(
                ExportSystem(
                    id=system.id,
                    name=system.name or system.id,
                    hardware=hardware,
                    os_id=OS_ID,
                    os_description="vdc tiny guest (Debian cloud kernel, busybox initramfs)",
                    vmw_os_type=VMW_OS_TYPE,
                    annotation=f"boots to VDC-MARKER={system.boot_marker}",
                    products=(ProductSection(info="System properties", properties=system.properties),)
                    if system.properties
                    else (),
                )
            )
        product = ProductSection(
            info="Appliance properties",
            product="vdc tiny appliance",
            vendor="vdc-operator tests",
            version="1.0",
            properties=recipe.properties,
        )
        sizes = {name: p.stat().st_size for name, p in files.items()}
        if len(exports) == 1:
            descriptor = build_descriptor(replace(exports[0], products=(product, *exports[0].products)), sizes)
        else:
            descriptor = build_collection_descriptor(
                ExportCollection(
                    id=recipe.collection_id,
                    systems=tuple(exports),
                    name=recipe.name,
                    startup=recipe.startup,
                    products=(product,),
                ),
                sizes,
            )
        out = work / "package.ova"
        write_ova(out, built.descriptor_name, descriptor, files)
        if recipe.tamper:
            tampered_copy(out, work / "tampered.ova")
            out = work / "tampered.ova"
        os.replace(out, built.path)


VAPP_SYSTEMS: tuple[ApplianceSystem, ...] = (
    ApplianceSystem("db", cmdline_extra="vdc.hostname=db", properties=(prop("db.port", "5432", type="uint16"),)),
    ApplianceSystem("web", cmdline_extra="vdc.hostname=web", memory_mib=192, cpus=2),
)


def build_vapp(
    path: Path | None = None,
    *,
    start_delay: int = 5,
    disk_format: DiskFormatName = "vmdk-streamOptimized",
    tamper: bool = False,
    network: str = "VM Network",
) -> BuiltOva:
    """A two-tier vApp: ``db`` (order 1, then ``start_delay`` s) and ``web`` (order 2), markers vdc-db/vdc-web.

    The collection ``vapp`` carries ``DEFAULT_PROPERTIES``; ``db`` its own ``db.port`` property.
    """
    startup = (
        StartupItem("db", order=1, start_delay=start_delay, waiting_for_guest=True),
        StartupItem("web", order=2, stop_action="guestShutdown"),
    )
    return build_ova_info(
        path,
        systems=VAPP_SYSTEMS,
        startup=startup,
        disk_format=disk_format,
        tamper=tamper,
        network=network,
        name="vdc-vapp",
    )


# --- tampering, unpacking -----------------------------------------------------------------------------


def tampered_copy(ova: Path, out: Path) -> str:
    """Copy ``ova`` to ``out`` with one byte changed in the middle of its first disk member.

    The tar stays well formed (same names and sizes); only that file's manifest digest fails.
    Returns the tampered member's name.
    """
    with tarfile.open(ova) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    disks = [m for m in members if not m.name.endswith((".ovf", ".mf", ".cert"))]
    if not disks:
        raise ValueError(f"{ova.name} holds no disk member")
    member = disks[0]
    shutil.copyfile(ova, out)
    offset = member.offset_data + member.size // 2
    with out.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    return member.name


def unpack_ova(ova: Path, directory: Path) -> Path:
    """Unpack ``ova`` into ``directory`` (an OVF directory: descriptor, manifest, disks); returns the descriptor."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ova) as tar:
        tar.extractall(directory, filter="data")
        descriptors = [m.name for m in tar.getmembers() if m.name.endswith(".ovf")]
    if len(descriptors) != 1:
        raise ValueError(f"{ova.name}: {len(descriptors)} descriptors")
    return directory / descriptors[0]


# --- booting under QEMU (TCG), no libvirt ------------------------------------------------------------


@dataclass(frozen=True)
class BootResult:
    serial: str  # everything the guest wrote on ttyS0
    seconds: float  # from QEMU's start until the last expected line appeared

    def marker(self) -> str | None:
        """The value of the last ``VDC-MARKER=`` line, if any."""
        found = re.findall(r"VDC-MARKER=(\S+)", self.serial)
        return found[-1] if found else None


def boot(
    image: Path,
    image_format: str,
    serial_log: Path,
    *,
    expect: Sequence[str] = (GUEST_READY,),
    bus: Literal["ide", "virtio"] = "ide",
    memory_mib: int = 256,
    timeout: float = 120.0,
) -> BootResult:
    """Boot ``image`` with ``qemu-system-x86_64 -machine pc -accel tcg`` (SeaBIOS), disk in snapshot mode.

    Waits until every string of ``expect`` is in the serial output, then kills QEMU. Raises
    ``TimeoutError`` (with the serial output) if that takes longer than ``timeout`` seconds or QEMU
    exits first. The image is never written (``snapshot=on``).
    """
    qemu = _tool("qemu-system-x86_64")
    serial_log.parent.mkdir(parents=True, exist_ok=True)
    serial_log.write_bytes(b"")
    args = [
        qemu,
        "-machine", "pc",
        "-accel", "tcg",
        "-m", str(memory_mib),
        "-nographic",
        "-display", "none",
        "-monitor", "none",
        "-nic", "none",
        "-no-reboot",
        "-serial", f"file:{serial_log}",
        "-drive", f"file={image},format={image_format},if={bus},snapshot=on",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    text = ""
    try:
        while True:
            text = serial_log.read_bytes().decode("utf-8", "replace")
            if all(e in text for e in expect):
                return BootResult(text, time.monotonic() - started)
            if proc.poll() is not None:
                err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
                raise TimeoutError(f"QEMU exited ({proc.returncode}) before {list(expect)}: {err}\n{text[-2000:]}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no {list(expect)} within {timeout:.0f} s; serial output:\n{text[-2000:]}")
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
