"""Policy: which libvirt domain a VirtualMachine becomes (names, identity, devices). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, cast

from vdc.api.quantity import to_bytes
from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.disk_sources import AttachedVolume, IoTuneConflict, source_of
from vdc.controllers.vm_disks import target_devices
from vdc.libvirt.domain_xml import (
    CpuConfig,
    CpuMode,
    CpuTuneConfig,
    DiskConfig,
    DomainConfig,
    DomainType,
    DomainXmlError,
    GraphicsConfig,
    InterfaceConfig,
    MemTuneConfig,
    OsConfig,
    OwnerMetadata,
    SerialConsoleConfig,
    WatchdogConfig,
)

CPU_MODES: dict[str, CpuMode] = {
    "Default": "default",
    "HostPassthrough": "host-passthrough",
    "HostModel": "host-model",
    "Custom": "custom",
}
CPU_PERIOD_US = 100_000
CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"


def domain_name(namespace: str, name: str) -> str:
    """``<namespace>_<name>``: unique, since neither part may contain an underscore."""
    return f"{namespace}_{name}"


class UnsupportedSpec(ValueError):
    """The spec asks for something this version cannot build yet (says what, for a Stalled condition)."""


def domain_for(
    vm: VirtualMachine,
    *,
    domain_type: str,
    volumes: Mapping[str, AttachedVolume] | None = None,
    interfaces: Sequence[InterfaceConfig] = (),
    host_file_dirs: Sequence[str] = (),
    generation: int | None = None,
) -> DomainConfig:
    """The domain a VM should be. Its UUID is the VM's uid, so it is found again after any restart.

    ``host_file_dirs``: the Host's ``spec.hostFiles.allowedPaths`` (never anything from the VM's spec).
    A domain that boots from host files (a kernel) carries them in its owner metadata, where the vdc
    qemu hook on the host reads them to check the files after resolving symlinks; other domains
    carry none, so a change of the Host's directories does not touch them.

    ``generation``: the VM's ``metadata.generation`` the domain is made from (its owner metadata).

    Raises UnsupportedSpec for anything admission let through that libvirt XML cannot express."""
    try:
        config = _domain_for(
            vm,
            domain_type=domain_type,
            volumes=volumes or {},
            interfaces=tuple(interfaces),
            host_file_dirs=tuple(host_file_dirs),
            generation=generation,
        )
        config.to_string()  # text XML cannot carry (control characters) fails here, not in the define
    except DomainXmlError as exc:
        raise UnsupportedSpec(f"the spec cannot be expressed as a libvirt domain: {exc}") from exc
    except IoTuneConflict as exc:
        raise UnsupportedSpec(str(exc)) from exc
    return config


def _disks(vm: VirtualMachine, volumes: Mapping[str, AttachedVolume]) -> tuple[DiskConfig, ...]:
    devices = target_devices(vm.spec.disks)
    configs = []
    for disk in vm.spec.disks:
        volume = volumes.get(disk.name)
        if volume is None:
            raise UnsupportedSpec(f"disk {disk.name} has no volume yet")
        configs.append(source_of(disk).disk_config(disk, devices[disk.name], volume))
    return tuple(configs)


def _domain_for(
    vm: VirtualMachine,
    *,
    domain_type: str,
    volumes: Mapping[str, AttachedVolume],
    interfaces: tuple[InterfaceConfig, ...],
    host_file_dirs: tuple[str, ...],
    generation: int | None,
) -> DomainConfig:
    meta = vm.metadata
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    spec = vm.spec
    if len(interfaces) != len(spec.interfaces):
        raise UnsupportedSpec("the VM's interfaces have no switch ports yet")
    if spec.boot.kernel is None and not spec.disks:
        raise UnsupportedSpec("a VM without disks needs spec.boot.kernel (direct kernel boot)")
    disks = _disks(vm, volumes)
    if spec.memory is None:
        raise UnsupportedSpec("spec.memory is not set (a VM from an Appliance gets it once the appliance is Ready)")
    size = to_bytes(spec.memory.size) // 1024
    maximum = to_bytes(spec.memory.max) // 1024 if spec.memory.max else size
    topology = spec.cpu.topology
    kernel = spec.boot.kernel
    dname = domain_name(namespace, name)
    cputune, memtune = qos_tunes(vm)
    return DomainConfig(
        name=dname,
        uuid=uid,
        owner=OwnerMetadata(
            namespace=namespace,
            name=name,
            uid=uid,
            host_file_dirs=host_file_dirs if kernel is not None else (),
            generation=generation,
        ),
        domain_type=cast(DomainType, domain_type),
        memory_kib=max(size, maximum),
        current_memory_kib=size,
        vcpus=spec.cpu.count,
        cpu=CpuConfig(
            mode=CPU_MODES[spec.cpu.mode],
            model=spec.cpu.model if spec.cpu.mode == "Custom" else None,
            sockets=topology.sockets if topology else None,
            cores=topology.cores if topology else None,
            threads=topology.threads if topology else None,
        ),
        os=OsConfig(
            firmware="efi" if spec.firmware == "UEFI" else "bios",
            kernel=kernel.kernel if kernel else None,
            initrd=kernel.initrd if kernel else None,
            cmdline=kernel.cmdline if kernel else None,
            # Without a kernel and without per-disk boot orders: the first hard disk.
            boot_devices=("hd",) if kernel is None and not any(d.boot_order for d in disks) else (),
        ),
        disks=disks,
        interfaces=interfaces,
        serial=SerialConsoleConfig(log_file=f"{CONSOLE_LOG_DIR}/{dname}.console.log" if spec.console.log else None)
        if spec.console.serial
        else None,
        graphics=GraphicsConfig(type="vnc", listen=spec.graphics.listen) if spec.graphics.type == "VNC" else None,
        cputune=cputune,
        memtune=memtune,
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
        watchdog=WatchdogConfig() if spec.availability.watchdog else None,
    )


def qos_tunes(vm: VirtualMachine) -> tuple[CpuTuneConfig | None, MemTuneConfig | None]:
    """The domain's ``<cputune>`` and ``<memtune>`` from ``spec.qos``. The CPU limit is for the whole VM,
    so it is the domain cgroup's quota (``global_*``), not each vCPU's. The memory reservation is the
    cgroup's soft limit: under pressure the kernel reclaims other cgroups down to theirs first."""
    qos = vm.spec.qos
    if qos is None:
        return None, None
    shares = qos.shares_for(vm.spec.cpu.count)
    limit = qos.cpu_limit_millis()
    quota = None if limit is None else max(1000, limit * CPU_PERIOD_US // 1000)
    cputune = None
    if shares is not None or quota is not None:
        cputune = CpuTuneConfig(
            shares=shares, global_period=CPU_PERIOD_US if quota is not None else None, global_quota=quota
        )
    reservation, hard = qos.memory_reservation_bytes(), qos.memory_limit_bytes()
    memtune = None
    if reservation or hard:
        memtune = MemTuneConfig(
            hard_limit=-(-hard // 1024) if hard else None, soft_limit=-(-reservation // 1024) if reservation else None
        )
    return cputune, memtune


Wanted = Literal["running", "stopped", "any"]
