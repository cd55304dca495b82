"""VirtualMachine: a VM reconciled onto a libvirt host (namespaced)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import PlainValidator, StringConstraints, WithJsonSchema

from vdc.api.common import (
    IPV4,
    MAC,
    Bandwidth,
    CleanPath,
    IoTune,
    LabelSelector,
    Name,
    SecretKeyRef,
    ShortText,
    cel,
    field,
    list_map,
    validations,
)
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column
from vdc.api.operation import OperationRef
from vdc.api.quantity import Quantity, millicores, to_bytes

MAX_DISKS = 16
MAX_INTERFACES = 16

RESTART_ANNOTATION = "vdc.dev/restart-requested-at"
"""An RFC 3339 time (``vdc restart`` sets it): the VM restarts once if it has not booted since."""


def _parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def restart_pending(requested_at: str | None, boot_time: str | None) -> bool:
    """A restart was requested (:data:`RESTART_ANNOTATION`) after the guest last booted (``status.bootTime``).
    A VM that never booted, or a request that is not an RFC 3339 time with a zone, asks for nothing."""
    if not requested_at or not boot_time:
        return False
    requested, booted = _parse_time(requested_at), _parse_time(boot_time)
    return requested is not None and booted is not None and requested > booted


RunStrategy = Literal["Always", "RerunOnFailure", "Manual", "Halted", "Once"]
Phase = Literal[
    "Scheduling",
    "Provisioning",
    "Starting",
    "Running",
    "Stopping",
    "Stopped",
    "Migrating",
    "Failed",
    "Unknown",
]
DiskAccess = Literal["Owned", "Adopted", "Published", "Appliance"]
"""Why a VM may use a disk's volume (status.disks[].access; decided by vdc.tenancy.access)."""
VolumeName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.+-]+$")]
UserData = Annotated[str, StringConstraints(max_length=65536)]


class CpuTopology(ApiModel):
    """How the vCPUs are presented to the guest; sockets x cores x threads must equal cpu.count."""

    sockets: int = field("Sockets.", ge=1, le=64)
    cores: int = field("Cores per socket.", ge=1, le=256)
    threads: int = field("Threads per core.", ge=1, le=8)


class Cpu(ApiModel):
    """Virtual CPUs."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.topology) || self.topology.sockets * self.topology.cores * self.topology.threads"
                " == self.count",
                "topology.sockets * topology.cores * topology.threads must equal count",
                field_path=".topology",
            ),
            cel("self.mode != 'Custom' || has(self.model)", "mode Custom needs model", field_path=".model"),
            cel(
                "self.mode == 'Custom' || !has(self.model)", "model is only used with mode Custom", field_path=".model"
            ),
        )
    }

    count: int = field("Number of vCPUs.", default=1, ge=1, le=512, update="restart")
    topology: CpuTopology | None = field("Guest CPU topology.", default=None, update="restart")
    mode: Literal["Default", "HostPassthrough", "HostModel", "Custom"] = field(
        "CPU model mode: the hypervisor default, the host CPU passed through, the closest named model to "
        "the host, or a named model.",
        default="Default",
        update="restart",
    )
    model: ShortText | None = field(
        "Named CPU model (mode Custom), e.g. Skylake-Server.", default=None, update="restart"
    )


class Memory(ApiModel):
    """Guest memory."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.max) || quantity(string(self.max)).compareTo(quantity(string(self.size))) >= 0",
                "max must be at least size",
                field_path=".max",
            ),
            cel(
                "quantity(string(self.size)).compareTo(quantity('1Mi')) >= 0",
                "size must be at least 1Mi",
                field_path=".size",
            ),
        )
    }

    size: Quantity = field(
        "Memory the guest has, e.g. 512Mi. Changed live (balloon) up to max; beyond max at restart.",
        update="live",
    )
    max: Quantity | None = field(
        "Most memory the guest may be given live (default: size).", default=None, update="restart"
    )


class KernelBoot(ApiModel):
    """Direct kernel boot: the kernel and initrd are files on the host."""

    kernel: CleanPath = field(
        "Path of the kernel image on the host, under a directory the Host's hostFiles.allowedPaths declares."
    )
    initrd: CleanPath | None = field(
        "Path of the initrd on the host, under a directory the Host's hostFiles.allowedPaths declares.",
        default=None,
    )
    cmdline: Annotated[str, StringConstraints(max_length=4096)] | None = field("Kernel command line.", default=None)


class Boot(ApiModel):
    """How the VM boots. Without kernel it boots from the disk with the lowest bootOrder."""

    kernel: KernelBoot | None = field("Boot a kernel directly.", default=None, update="restart")


RESTART_PRIORITIES = ("Disabled", "Low", "Medium", "High", "Highest")


class Availability(ApiModel):
    """HA restart policy (vSphere HA's VM restart priority and orchestration)."""

    restart_priority: Literal["Disabled", "Low", "Medium", "High", "Highest"] = field(
        "Whether and how early the VM is restarted on another host when its host fails and is fenced: VMs of "
        "a higher priority on the same failed host are restarted first. Disabled: never restarted elsewhere.",
        default="Medium",
    )
    restart_after: list[Name] = field(
        "VMs of this namespace that must be Running before this one is restarted by HA (restart order).",
        default_factory=list,
        max_length=16,
    )
    vm_monitoring: Literal["Disabled", "Reset"] = field(
        "VM monitoring (vSphere HA's): Reset = the operator resets (forces off and starts again) a guest that "
        "stopped making progress: paused on an I/O error, paused by its watchdog, or crashed (guest panic), "
        "with a GuestReset Event. Disabled: such a guest is left as it is and the VM reports it (Ready=False, "
        "reason GuestStuck). Reset acts under runStrategy Always or RerunOnFailure only (Once reports it).",
        default="Disabled",
        update="live",
    )
    watchdog: bool = field(
        "Give the guest an i6300esb watchdog device whose expiry pauses the guest, so that vmMonitoring "
        "decides what happens to it. The guest must run a watchdog daemon that feeds /dev/watchdog (its "
        "kernel needs the i6300esb driver).",
        default=False,
        update="restart",
    )


class Console(ApiModel):
    """The guest's serial console."""

    serial: bool = field("Give the guest a serial console (ttyS0).", default=True, update="restart")
    log: bool = field("Also keep the console output in a log file on the host.", default=True, update="restart")


class Graphics(ApiModel):
    """Remote display."""

    type: Literal["None", "VNC"] = field("Display type.", default="None", update="restart")
    listen: Annotated[str, StringConstraints(max_length=45, pattern=IPV4)] = field(
        "Host address VNC listens on.", default="127.0.0.1", update="restart"
    )


class BlankVolume(ApiModel):
    """A new empty volume."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0",
                "size may only grow",
                field_path=".size",
            )
        )
    }

    pool: Name = field("StoragePool to create it in.", update="immutable")
    size: Quantity = field("Size; may grow (live when running), never shrink.", update="live")


class ApplianceDiskRef(ApiModel):
    """A disk of an Appliance: of the VM's namespace, or of another that shares it (spec.sharedWith)."""

    name: Name = field("The Appliance.")
    namespace: Name | None = field("The Appliance's namespace (default: the VM's).", default=None)
    disk: ShortText | None = field("The appliance's disk id (default: its first disk).", default=None)


class CloneVolume(ApiModel):
    """A copy-on-write qcow2 overlay on a base image."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.appliance) != has(self.baseVolume)",
                "set exactly one of appliance, baseVolume",
            ),
            cel(
                "!has(oldSelf.size) || (has(self.size) && "
                "quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0)",
                "size may only grow",
                field_path=".size",
            ),
        )
    }

    pool: Name = field("StoragePool the overlay lives in (the base must be reachable from it).", update="immutable")
    appliance: ApplianceDiskRef | None = field("Base image of an Appliance.", default=None, update="immutable")
    base_volume: VolumeName | None = field("A named base volume in the same pool.", default=None, update="immutable")
    size: Quantity | None = field(
        "Virtual size, at least the base's (default: the base's); may grow, never shrink.",
        default=None,
        update="live",
    )


class ExistingVolume(ApiModel):
    """A volume that already exists: adopted, never deleted unless deletionPolicy says Delete."""

    pool: Name = field("StoragePool holding it.", update="immutable")
    name: VolumeName = field("The volume's name.", update="immutable")


class OvfEnvSource(ApiModel):
    """This disk is the OVF environment ISO (``ovf-env.xml``) carrying ``fromAppliance.properties``."""

    pool: Name = field("StoragePool the ISO volume is created in.", update="immutable")


class CloudInitSource(ApiModel):
    """This disk is the NoCloud seed (CD-ROM) built from spec.cloudInit."""

    pool: Name = field("StoragePool the seed ISO volume is created in.", update="immutable")


class DiskSource(ApiModel):
    """Where a disk's data comes from: exactly one of blank, clone, volume, cloudInit."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "(has(self.blank) ? 1 : 0) + (has(self.clone) ? 1 : 0) + (has(self.volume) ? 1 : 0)"
                " + (has(self.cloudInit) ? 1 : 0) + (has(self.ovfEnv) ? 1 : 0) == 1",
                "set exactly one of blank, clone, volume, cloudInit, ovfEnv",
            ),
            cel(
                "has(self.blank) == has(oldSelf.blank) && has(self.clone) == has(oldSelf.clone)"
                " && has(self.volume) == has(oldSelf.volume) && has(self.cloudInit) == has(oldSelf.cloudInit)"
                " && has(self.ovfEnv) == has(oldSelf.ovfEnv)",
                "the kind of a disk's source is immutable: add a disk with another name instead",
            ),
        )
    }

    blank: BlankVolume | None = field("A new blank volume.", default=None)
    clone: CloneVolume | None = field("A copy-on-write overlay on a base image.", default=None)
    volume: ExistingVolume | None = field("An existing volume.", default=None)
    cloud_init: CloudInitSource | None = field("The cloud-init NoCloud seed ISO.", default=None)
    ovf_env: OvfEnvSource | None = field("The OVF environment ISO of a VM made from an Appliance.", default=None)


class Disk(ApiModel):
    """A disk of the VM."""

    name: Name = field("Name, unique within the VM; also names the volume.")
    source: DiskSource = field("Where the data comes from. Its kind and pool are immutable; sizes may grow.")
    bus: Literal["virtio", "sata", "scsi", "ide"] = field("Bus.", default="virtio", update="restart")
    boot_order: int | None = field("Boot priority (1 first).", default=None, ge=1, le=64, update="restart")
    cache: Literal["default", "none", "writethrough", "writeback", "directsync", "unsafe"] = field(
        "Host cache mode.", default="default", update="restart"
    )
    io: Literal["default", "native", "threads", "io_uring"] = field("I/O mode.", default="default", update="restart")
    read_only: bool = field("Attach read-only.", default=False, update="restart")
    serial: Annotated[str, StringConstraints(max_length=20, pattern=r"^[A-Za-z0-9_-]*$")] | None = field(
        "Serial number the guest sees.", default=None, update="restart"
    )
    iotune: IoTune | None = field("I/O limits.", default=None, update="live")
    deletion_policy: Literal["Delete", "Retain"] | None = field(
        "Whether deleting the VM deletes this disk's volume. Default: Delete for volumes the operator "
        "created (blank, clone, cloudInit), Retain for an existing volume it adopted.",
        default=None,
        update="live",
    )


class Interface(ApiModel):
    """A NIC on a VirtualSwitch."""

    name: Name = field("Name, unique within the VM.")
    switch: Name = field("The VirtualSwitch.", update="restart")
    model: Literal["virtio", "e1000", "e1000e", "rtl8139"] = field("NIC model.", default="virtio", update="restart")
    mac_address: Annotated[str, StringConstraints(max_length=17, pattern=MAC)] | None = field(
        "MAC address (default: derived from the VM's uid and the NIC name).", default=None, update="immutable"
    )
    ip_address: Annotated[str, StringConstraints(max_length=15, pattern=IPV4)] | None = field(
        "Fixed IPv4 address inside the switch's subnet (default: allocated by the switch's IPAM).",
        default=None,
        update="restart",
    )
    bandwidth: Bandwidth | None = field("Limits, at most the switch's.", default=None, update="live")
    link_state: Literal["up", "down"] = field("Link state.", default="up", update="live")


class CloudInit(ApiModel):
    """cloud-init NoCloud data, served to the guest on a seed ISO (a disk with source.cloudInit)."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!(has(self.userData) && has(self.userDataSecretRef))",
                "set userData or userDataSecretRef, not both",
            ),
            cel(
                "!(has(self.networkData) && has(self.networkDataSecretRef))",
                "set networkData or networkDataSecretRef, not both",
            ),
        )
    }

    user_data: UserData | None = field("user-data (e.g. #cloud-config …).", default=None, update="restart")
    user_data_secret_ref: SecretKeyRef | None = field("user-data from a Secret.", default=None, update="restart")
    network_data: UserData | None = field("network-config (v1 or v2).", default=None, update="restart")
    network_data_secret_ref: SecretKeyRef | None = field(
        "network-config from a Secret.", default=None, update="restart"
    )
    meta_data: dict[
        Annotated[str, StringConstraints(max_length=253)], Annotated[str, StringConstraints(max_length=4096)]
    ] = field(
        "Extra meta-data keys (instance-id and local-hostname are set by the operator).",
        default_factory=dict,
        max_length=64,
        update="restart",
    )


class FromAppliance(ApiModel):
    """Instantiate a virtual system of an Appliance: its hardware is the default for this VM."""

    name: Name = field("The Appliance.")
    namespace: Name | None = field(
        "The Appliance's namespace (default: the VM's); another namespace's appliance must be shared with "
        "the VM's (its spec.sharedWith).",
        default=None,
    )
    virtual_system: ShortText | None = field("The VirtualSystem id (default: the first).", default=None)
    deployment_option: ShortText | None = field(
        "The appliance's deployment option (its status.deploymentOptions; default: the descriptor's default). "
        "It chooses the hardware, disks and property defaults written into this spec.",
        default=None,
        update="immutable",
    )
    properties: dict[
        Annotated[str, StringConstraints(max_length=253)], Annotated[str, StringConstraints(max_length=4096)]
    ] = field("Values of the appliance's user-configurable properties.", default_factory=dict, max_length=128)
    network_mapping: dict[Annotated[str, StringConstraints(max_length=253)], Name] = field(
        "OVF network name -> VirtualSwitch name.", default_factory=dict, max_length=32
    )


SHARES_LEVELS: dict[str, int] = {"Low": 512, "Normal": 1024, "High": 2048}
"""CPU shares per vCPU of each level (cgroup ``cpu.shares``; Normal is the kernel's default of 1,024, as
vSphere's levels are 500/1,000/2,000 per vCPU). A VM's shares are its level's times its vCPUs."""
MIN_SHARES, MAX_SHARES = 2, 262144


def _shares(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError("shares must be Low, Normal, High or a number")
    if isinstance(value, int):
        if not MIN_SHARES <= value <= MAX_SHARES:
            raise ValueError(f"custom shares must be {MIN_SHARES}..{MAX_SHARES}, got {value}")
        return value
    if isinstance(value, str) and value in SHARES_LEVELS:
        return value
    raise ValueError(f"shares must be Low, Normal, High or a number {MIN_SHARES}..{MAX_SHARES}, got {value!r}")


Shares = Annotated[
    int | str,
    PlainValidator(_shares),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-validations": [
                {
                    "rule": f"type(self) == int ? (self >= {MIN_SHARES} && self <= {MAX_SHARES})"
                    " : self in ['Low', 'Normal', 'High']",
                    "message": f"shares must be Low, Normal, High or a number {MIN_SHARES}..{MAX_SHARES}",
                }
            ],
        }
    ),
]
"""Low, Normal, High (per vCPU: :data:`SHARES_LEVELS`) or a custom number for the whole VM."""


class CpuQos(ApiModel):
    """CPU reservation, limit and shares of the whole VM (vSphere's model). CPU amounts are in host CPUs
    as Kubernetes writes them: ``500m`` is half a host CPU, ``2`` two."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.limit) || quantity(string(self.limit)).compareTo(quantity('10m')) >= 0",
                "limit must be at least 10m",
                field_path=".limit",
            ),
            cel(
                "!has(self.reservation) || !has(self.limit)"
                " || quantity(string(self.reservation)).compareTo(quantity(string(self.limit))) <= 0",
                "reservation must not be above limit",
                field_path=".reservation",
            ),
        )
    }

    reservation: Quantity | None = field(
        "CPU guaranteed to the VM: placement never reserves more of a host than it has (its CPUs less "
        "spec.reserved.cpus). Live; a change that no longer fits its host is refused (Scheduled=False).",
        default=None,
        update="live",
    )
    limit: Quantity | None = field(
        "Most CPU the whole VM may use (a CFS quota on its cgroup), e.g. 250m. Live.",
        default=None,
        update="live",
    )
    shares: Shares | None = field(
        "Relative weight under contention: Low, Normal, High (512, 1024, 2048 per vCPU) or a number for the "
        "whole VM (2..262144). Default: the host's default (1024). Live.",
        default=None,
        update="live",
    )


class MemoryQos(ApiModel):
    """Memory reservation and limit. libvirt has no memory shares (nor has cgroup v1): not offered."""

    reservation: Quantity | None = field(
        "Memory guaranteed to the VM: placement never reserves more of a host than it has (less "
        "spec.reserved.memory); on the host it is the cgroup's soft limit, which the kernel reclaims others "
        "down to first under pressure. At most spec.memory.size. Live.",
        default=None,
        update="live",
    )
    limit: Quantity | None = field(
        "Most host memory the VM's QEMU may use, its own overhead included (the cgroup's hard limit). "
        "Set it well above spec.memory.size: at the limit the kernel reclaims from or kills the QEMU. Live.",
        default=None,
        update="live",
    )


class Qos(ApiModel):
    """Quality of service: CPU and memory reservation, limit and shares, applied on the running domain."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.cpuShares) || !has(self.cpu) || !has(self.cpu.shares)",
                "set cpu.shares, not both it and the older cpuShares",
                field_path=".cpuShares",
            ),
            cel(
                "!has(self.cpuLimit) || !has(self.cpu) || !has(self.cpu.limit)",
                "set cpu.limit, not both it and the older cpuLimit",
                field_path=".cpuLimit",
            ),
        )
    }

    cpu: CpuQos | None = field("CPU reservation, limit and shares.", default=None, update="live")
    memory: MemoryQos | None = field("Memory reservation and limit.", default=None, update="live")
    cpu_shares: int | None = field(
        "Deprecated: use cpu.shares. Relative CPU weight of the whole VM.",
        default=None,
        ge=MIN_SHARES,
        le=MAX_SHARES,
        update="live",
    )
    cpu_limit: int | None = field(
        "Deprecated: use cpu.limit. CPU limit in millicores for the whole VM (1000 = one host CPU).",
        default=None,
        ge=10,
        le=1_000_000,
        update="live",
    )

    def shares_for(self, vcpus: int) -> int | None:
        """The cgroup CPU shares of the whole VM, or None: the host's default."""
        shares = self.cpu.shares if self.cpu is not None and self.cpu.shares is not None else self.cpu_shares
        if isinstance(shares, str):
            return min(MAX_SHARES, SHARES_LEVELS[shares] * vcpus)
        return shares

    def cpu_limit_millis(self) -> int | None:
        if self.cpu is not None and self.cpu.limit is not None:
            return millicores(self.cpu.limit)
        return self.cpu_limit

    def cpu_reservation_millis(self) -> int:
        return millicores(self.cpu.reservation) if self.cpu is not None and self.cpu.reservation else 0

    def memory_reservation_bytes(self) -> int:
        return to_bytes(self.memory.reservation) if self.memory is not None and self.memory.reservation else 0

    def memory_limit_bytes(self) -> int | None:
        return to_bytes(self.memory.limit) if self.memory is not None and self.memory.limit else None


class VirtualMachineSpec(ApiModel):
    """Desired state of a virtual machine."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.cloudInit) || (has(self.disks) && self.disks.exists(d, has(d.source.cloudInit)))",
                "cloudInit needs a disk with source.cloudInit to carry the seed",
                field_path=".cloudInit",
            ),
            cel(
                "!has(self.disks) || self.disks.filter(d, has(d.source.cloudInit)).size() <= 1",
                "at most one disk may carry the cloud-init seed",
                field_path=".disks",
            ),
            cel(
                "has(self.memory) || has(self.fromAppliance)",
                "memory is required (a VM from an Appliance gets the appliance's)",
                field_path=".memory",
            ),
            cel(
                "!has(self.qos) || !has(self.qos.cpu) || !has(self.qos.cpu.reservation)"
                " || quantity(string(self.qos.cpu.reservation)).asApproximateFloat()"
                " <= double(has(self.cpu) && has(self.cpu.count) ? self.cpu.count : 1)",
                "qos.cpu.reservation must not be above cpu.count (a VM cannot use more CPU than its vCPUs)",
                field_path=".qos.cpu.reservation",
            ),
            cel(
                "!has(self.qos) || !has(self.qos.memory) || !has(self.qos.memory.reservation) || !has(self.memory)"
                " || quantity(string(self.qos.memory.reservation)).compareTo(quantity(string(self.memory.size))) <= 0",
                "qos.memory.reservation must not be above memory.size",
                field_path=".qos.memory.reservation",
            ),
            cel(
                "!has(self.qos) || !has(self.qos.memory) || !has(self.qos.memory.limit) || !has(self.memory)"
                " || quantity(string(self.qos.memory.limit)).compareTo(quantity(string(self.memory.size))) > 0",
                "qos.memory.limit must be above memory.size (it caps QEMU, whose own overhead comes on top)",
                field_path=".qos.memory.limit",
            ),
            cel(
                "!has(self.disks) || self.disks.all(d, !has(d.source.ovfEnv)) || has(self.fromAppliance)",
                "an ovfEnv disk carries fromAppliance.properties: it needs fromAppliance",
                field_path=".disks",
            ),
        )
    }

    run_strategy: RunStrategy = field(
        "Always: keep running; RerunOnFailure: restart only after a crash; Manual: the operator neither "
        "starts nor stops it; Halted: keep stopped; Once: run until the guest stops, then stay stopped.",
        default="Always",
        update="live",
    )
    cpu: Cpu = field("Virtual CPUs.", default_factory=Cpu, update="restart")
    memory: Memory | None = field(
        "Memory. Required unless fromAppliance gives it (the operator then writes the appliance's here).",
        default=None,
        update="live",
    )
    firmware: Literal["BIOS", "UEFI"] = field("Firmware.", default="BIOS", update="restart")
    boot: Boot = field("Boot method.", default_factory=Boot, update="restart")
    console: Console = field("Serial console.", default_factory=Console, update="restart")
    graphics: Graphics = field("Remote display.", default_factory=Graphics, update="restart")
    disks: list[Disk] = field(
        "Disks.",
        default_factory=list,
        max_length=MAX_DISKS,
        extra=list_map("name"),
    )
    interfaces: list[Interface] = field(
        "NICs.",
        default_factory=list,
        max_length=MAX_INTERFACES,
        extra=list_map("name"),
    )
    cloud_init: CloudInit | None = field("cloud-init data.", default=None, update="restart")
    from_appliance: FromAppliance | None = field(
        "Instantiate an Appliance: the operator fills in what the spec leaves out (cpu, memory, firmware, "
        "disks as overlays on its base images, NICs through networkMapping, an ovfEnv disk with the "
        "properties) once the appliance is Ready.",
        default=None,
        update="immutable",
    )
    host: Name | None = field(
        "Pin the VM to this Host (skips scoring; the host must still fit).", default=None, update="restart"
    )
    host_selector: LabelSelector = field(
        "Hosts the VM may run on (by Host labels).", default_factory=LabelSelector, update="restart"
    )
    qos: Qos | None = field(
        "Quality of service: CPU and memory reservation, limit and shares.", default=None, update="live"
    )
    availability: Availability = field(
        "What HA does when the VM's host fails and is fenced.", default_factory=Availability, update="live"
    )
    drs: Literal["Default", "Disabled", "Manual", "PartiallyAutomated", "FullyAutomated"] = field(
        "DRS automation for this VM, overriding its ComputeCluster's spec.drs.automation: Disabled (DRS never "
        "moves it nor recommends a move, rules included), Manual (moves only recommended), PartiallyAutomated, "
        "FullyAutomated (moved by DRS), Default (the cluster's).",
        default="Default",
        update="live",
    )
    eviction_strategy: Literal["LiveMigrate", "LiveMigrateIfPossible", "Shutdown", "None"] = field(
        "What happens to the running VM when its host enters maintenance: LiveMigrate (moved to another host; "
        "while it cannot be, it blocks the evacuation), LiveMigrateIfPossible (moved, else shut down), Shutdown "
        "(shut down, and kept stopped while the host is in maintenance), None (left running; it blocks the "
        "evacuation).",
        default="LiveMigrate",
        update="live",
    )
    termination_grace_period_seconds: int = field(
        "How long a graceful shutdown may take before the domain is destroyed.",
        default=60,
        ge=0,
        le=3600,
        update="live",
    )


class DiskStatus(ApiModel):
    """A disk as realised."""

    name: Name = field("The disk.")
    host: Name | None = field("Host holding the volume.", default=None)
    pool: Name | None = field("Pool holding the volume.", default=None)
    volume: Annotated[str, StringConstraints(max_length=253)] | None = field("Volume name.", default=None)
    path: Annotated[str, StringConstraints(max_length=4096)] | None = field("Volume path on the host.", default=None)
    capacity: Quantity | None = field("Virtual size.", default=None)
    allocation: Quantity | None = field("Space used.", default=None)
    access: DiskAccess | None = field(
        "Why this VM may use the volume: its namespace owns it (the operator created it for this VM), it "
        "adopted a volume nobody owned (the pool allows it), a cluster admin published it, or it is an "
        "appliance's base image.",
        default=None,
    )
    owner: ShortText | None = field(
        "The volume's owner as namespace/vm (uid) for volumes the operator created.", default=None
    )
    iotune: IoTune | None = field(
        "The I/O limits the host enforces on the running disk, read back from libvirt.", default=None
    )


class InterfaceStatus(ApiModel):
    """A NIC as realised."""

    name: Name = field("The interface.")
    mac_address: ShortText | None = field("MAC address.", default=None)
    ip_addresses: list[ShortText] = field("IP addresses (IPAM, and the guest's when reported).", default_factory=list)
    switch: Name | None = field("The VirtualSwitch.", default=None)
    host_device: ShortText | None = field("Host-side device (tap).", default=None)
    bandwidth: Bandwidth | None = field(
        "The limits the host enforces on the running NIC, read back from libvirt.", default=None
    )


class QosStatus(ApiModel):
    """The CPU and memory tunables the host enforces on the running domain, read back from libvirt."""

    cpu_shares: int | None = field("CPU shares (none: the host's default).", default=None)
    cpu_limit: Quantity | None = field("CPU limit of the whole VM, e.g. 250m (none: no limit).", default=None)
    memory_reservation: Quantity | None = field("Memory soft limit (none: not set).", default=None)
    memory_limit: Quantity | None = field("Memory hard limit (none: no limit).", default=None)


class VirtualMachineStatus(ApiModel):
    """Observed state of a virtual machine."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    phase: Phase | None = field("Lifecycle phase.", default=None)
    printable_status: ShortText | None = field("Short status for kubectl.", default=None)
    host: Name | None = field("The Host the VM is placed on.", default=None)
    domain_uuid: ShortText | None = field("libvirt domain UUID (= metadata.uid).", default=None)
    domain_name: ShortText | None = field("libvirt domain name.", default=None)
    boot_time: str | None = field("When the guest last started (RFC 3339).", default=None)
    shutdown_requested_at: str | None = field(
        "When the operator asked the guest to shut down (RFC 3339): the grace period counts from here, "
        "across operator restarts.",
        default=None,
    )
    restart_required_fields: list[ShortText] = field(
        "Spec fields changed that take effect at the next restart.", default_factory=list
    )
    qos: QosStatus | None = field(
        "The CPU and memory tunables in force on the running domain (read back from libvirt).", default=None
    )
    disks: list[DiskStatus] = field(
        "Disks.",
        default_factory=list,
        extra=list_map("name"),
    )
    interfaces: list[InterfaceStatus] = field(
        "NICs.",
        default_factory=list,
        extra=list_map("name"),
    )
    operation: OperationRef | None = field(
        "The operation (a migration …) that owns the VM: while set, the operator reports the VM but does not "
        "converge it on a host. Written by the operation, not by the VM controller.",
        default=None,
    )


class VirtualMachine(Resource):
    """A virtual machine: placed on a Host, defined and run there as a libvirt domain."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="VirtualMachine",
        plural="virtualmachines",
        short_names=("vm", "vms"),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("Status", ".status.printableStatus"),
            ready_column(),
            PrinterColumn("Host", ".status.host"),
            PrinterColumn("IP", ".status.interfaces[0].ipAddresses[0]"),
            PrinterColumn("CPUs", ".spec.cpu.count", type="integer", priority=1),
            PrinterColumn("Memory", ".spec.memory.size", priority=1),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "VirtualMachine"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: VirtualMachineSpec = field("Desired state.")
    status: VirtualMachineStatus | None = field("Observed state, written by the operator.", default=None)
