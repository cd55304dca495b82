"""Host: a libvirt host the operator connects to (cluster-scoped)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import StringConstraints

from vdc.api.common import (
    IPV4,
    AllowedNamespaces,
    CleanPath,
    Name,
    SecretRef,
    ShortText,
    cel,
    field,
    list_map,
    validations,
)
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import (
    ApiModel,
    KindInfo,
    PrinterColumn,
    Resource,
    age_column,
    ready_column,
    reason_column,
)
from vdc.api.quantity import Quantity

URI_PATTERN = r"^(qemu|test)(\+(unix|ssh|tls|tcp|libssh|libssh2))?://[^\s]*$"


class HostReservation(ApiModel):
    """Resources kept back for the host itself: not offered to VMs."""

    cpus: int = field("Host CPUs not offered to VMs.", default=0, ge=0, le=4096)
    memory: Quantity = field("Host memory not offered to VMs.", default="0")


class HostFiles(ApiModel):
    """Directories of this host whose files tenants may name: a VM's kernel and initrd, an Appliance's
    hostPath. A path is allowed only when it lies under one of them after ``..`` and symlinks are
    resolved on the host (the vdc qemu hook checks that again at every start)."""

    allowed_paths: list[CleanPath] = field(
        "Absolute directories. Empty: no host file may be named by a tenant.", default_factory=list, max_length=32
    )
    allowed_namespaces: AllowedNamespaces = field(
        "Namespaces that may name files under allowedPaths. Default: all namespaces.",
        default_factory=AllowedNamespaces,
    )


class RedfishEndpoint(ApiModel):
    """A DMTF Redfish service (the host's BMC) and the ComputerSystem in it that is this host."""

    endpoint: Annotated[
        str, StringConstraints(min_length=1, max_length=1024, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    ] = field("Base URL of the Redfish service, e.g. https://bmc-hv1.example.com (/redfish/v1 is added).")
    system_id: ShortText | None = field(
        "The ComputerSystem's Id in that service. Default: the service's only system.", default=None
    )
    credentials_secret_ref: SecretRef | None = field(
        "Secret with keys username and password (and ca.crt: the CA that signed the service's certificate). "
        "Never logged.",
        default=None,
    )
    verify_tls: bool = field("Verify the service's TLS certificate (against ca.crt when given).", default=True)


class PowerManagement(ApiModel):
    """Out-of-band power control: what fences the host (powers it off for sure) before HA restarts its VMs
    elsewhere, and what powers it on again."""

    redfish: RedfishEndpoint = field("The host's Redfish service.")


class HostSpec(ApiModel):
    """Desired state of a libvirt host."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!self.uri.startsWith('qemu+ssh') && !self.uri.startsWith('qemu+tls') "
                "|| has(self.credentialsSecretRef)",
                "qemu+ssh and qemu+tls hosts need credentialsSecretRef (SSH key / client certificate)",
                field_path=".credentialsSecretRef",
            ),
            cel(
                "!has(self.powerState) || self.powerState != 'Standby' || has(self.powerManagement)",
                "powerState Standby needs powerManagement (the host is powered off through its Redfish service)",
                field_path=".powerState",
            ),
        )
    }

    uri: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=URI_PATTERN)] = field(
        "libvirt connection URI, e.g. qemu+ssh://root@host1/system or qemu+unix:///system?socket=/run/x.sock.",
        update="live",
    )
    credentials_secret_ref: SecretRef | None = field(
        "Secret with credentials: keys ssh-privatekey and known_hosts for qemu+ssh; "
        "tls.crt, tls.key and ca.crt for qemu+tls. Never logged.",
        default=None,
        update="live",
    )
    migration_uri: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=URI_PATTERN)] | None = field(
        "The URI by which the other hosts' libvirtds reach this one for a live migration (peer-to-peer: the "
        "source's libvirtd connects to the target's, not the operator). Default: spec.uri, right when every "
        "host can use it (qemu+tls with one CA, or the local rig's unix sockets); with qemu+ssh the hosts "
        "need keys for each other, or give e.g. qemu+tls://hv1.example.com/system here.",
        default=None,
        update="live",
    )
    underlay_address: Annotated[str, StringConstraints(max_length=15, pattern=IPV4)] | None = field(
        "The host's address on the network between hosts, which overlay (VXLAN) switches tunnel over. "
        "Needed on every host of an overlay switch.",
        default=None,
        update="live",
    )
    virtualization: Literal["Auto", "KVM", "Emulated"] = field(
        "How guests run: KVM (hardware virtualisation), Emulated (QEMU's TCG: slow, works everywhere), or "
        "Auto (KVM when the host offers it). Use Emulated where /dev/kvm exists but does not work (some "
        "nested setups).",
        default="Auto",
        update="restart",
    )
    maintenance: bool = field(
        "Cordons the host (no new VMs are placed on it) and evacuates it: each running VM is live-migrated, "
        "shut down or left, as its evictionStrategy says, within the MigrationPolicies' parallelism limits. "
        "Ending maintenance does not move VMs back.",
        default=False,
        update="live",
    )
    host_files: HostFiles = field(
        "Host directories tenants may take files from (kernels, initrds, OVAs). Default: none.",
        default_factory=HostFiles,
        update="live",
    )
    power_management: PowerManagement | None = field(
        "Out-of-band power control (Redfish). Without it a failed host cannot be fenced and its VMs are not "
        "restarted elsewhere (they stay Unknown).",
        default=None,
        update="live",
    )
    power_state: Literal["On", "Standby"] = field(
        "Desired power state. Standby: the host is evacuated as for maintenance, then powered off through "
        "spec.powerManagement (Redfish GracefulShutdown); On again powers it on (Redfish On). DPM puts hosts in "
        "Standby with the vdc.dev/dpm-standby annotation instead (spec stays yours).",
        default="On",
        update="live",
    )
    reserved: HostReservation = field(
        "Resources reserved for the host itself.", default_factory=HostReservation, update="live"
    )
    cpu_overcommit: float = field(
        "vCPUs offered per host CPU (1.0 = no overcommit).", default=1.0, ge=0.1, le=64, update="live"
    )
    memory_overcommit: float = field(
        "Memory offered per byte of host memory (1.0 = no overcommit).",
        default=1.0,
        ge=0.1,
        le=4,
        update="live",
    )


class HostResources(ApiModel):
    """CPUs and memory."""

    cpus: int = field("CPUs (or vCPUs).", default=0, ge=0)
    memory: Quantity = field("Memory.", default="0")


class ReservedResources(ApiModel):
    """CPU (in host CPUs: ``1500m`` is one and a half) and memory, as guarantees count them."""

    cpu: Quantity = field("CPU, e.g. 1500m.", default="0")
    memory: Quantity = field("Memory.", default="0")


class HostDomainCounts(ApiModel):
    """Domains seen on the host."""

    total: int = field("All domains libvirt knows on the host.", default=0, ge=0)
    managed: int = field("Domains created by this operator.", default=0, ge=0)
    running: int = field("Managed domains that are running.", default=0, ge=0)


ORPHANS_LISTED = 20
"""Orphan domains and volumes named in a Host's status, each (the counts are complete)."""

REMOVE_ORPHANS_ANNOTATION = "vdc.dev/remove-orphans"
"""Set on a Host (any value: a token naming the request) to have the operator remove the orphans it sees
on that host at that moment; the operator clears it when done (``vdc gc --host NAME`` sets it)."""


class OrphanOwner(ApiModel):
    """The VirtualMachine an orphan claims to belong to (from its ownership metadata or its name)."""

    namespace: ShortText = field("The owner's namespace.")
    name: ShortText = field("The owner's name.")
    uid: ShortText | None = field("The owner's uid (domains record it; volume names do not).", default=None)


class OrphanDomain(ApiModel):
    """A libvirt domain carrying our ownership metadata whose VirtualMachine no longer exists."""

    name: ShortText = field("The libvirt domain name.")
    uuid: ShortText = field("The libvirt domain UUID.")
    owner: OrphanOwner = field("The VirtualMachine it claims (no live VM has that uid).")
    running: bool = field("Whether it is running (removal destroys it).", default=False)


class OrphanVolume(ApiModel):
    """A volume named as we name VM volumes (``<namespace>_<vm>_<disk>.<ext>``) in one of our pools
    whose VirtualMachine no longer exists and that nothing still uses."""

    pool: ShortText = field("The StoragePool (libvirt pool vdc-<pool>).")
    name: ShortText = field("The volume name.")
    owner: OrphanOwner = field("The VirtualMachine its name claims (no live VM has that namespace/name).")


class OrphanRemoval(ApiModel):
    """What the last vdc.dev/remove-orphans request removed on this host."""

    token: ShortText = field("The annotation's value (the request).")
    time: ShortText = field("When the removal finished (RFC 3339).")
    domains: list[ShortText] = field(
        f"Domains removed (destroyed and undefined), at most {ORPHANS_LISTED}.",
        default_factory=list,
        max_length=ORPHANS_LISTED,
    )
    volumes: list[ShortText] = field(
        f"Volumes deleted, as <pool>/<volume>, at most {ORPHANS_LISTED}.",
        default_factory=list,
        max_length=ORPHANS_LISTED,
    )
    failed: list[ShortText] = field(
        f"What could not be removed, with libvirt's message, at most {ORPHANS_LISTED}.",
        default_factory=list,
        max_length=ORPHANS_LISTED,
    )
    message: Annotated[str, StringConstraints(max_length=1024)] = field(
        "Summary: counts, what was left alone because it was no longer an orphan, what failed.", default=""
    )


class HostOrphans(ApiModel):
    """Domains and volumes made by this operator whose VirtualMachine no longer exists (say, after etcd
    was restored from an older backup). Counted at every host reconcile; removed only when an admin
    asks (annotation vdc.dev/remove-orphans, or `vdc gc --host NAME`)."""

    domain_count: int = field("Orphan domains on the host.", default=0, ge=0)
    volume_count: int = field("Orphan volumes in the host's vdc pools.", default=0, ge=0)
    domains: list[OrphanDomain] = field(
        f"The first {ORPHANS_LISTED} orphan domains by name.",
        default_factory=list,
        max_length=ORPHANS_LISTED,
        extra=list_map("name"),
    )
    volumes: list[OrphanVolume] = field(
        f"The first {ORPHANS_LISTED} orphan volumes by pool and name.",
        default_factory=list,
        max_length=ORPHANS_LISTED,
        extra=list_map("pool", "name"),
    )
    last_removal: OrphanRemoval | None = field("The last removal asked for by annotation.", default=None)


class BlockingVm(ApiModel):
    """A VM that keeps an evacuation from finishing, and why."""

    namespace: Name = field("The VM's namespace.")
    name: Name = field("The VM.")
    reason: ShortText = field("Why it has not left.")


class Evacuation(ApiModel):
    """Moving the VMs off a host in maintenance."""

    phase: Literal["Evacuating", "Evacuated", "Blocked"] = field(
        "Evacuating: VMs are being moved or shut down; Evacuated: none runs here any more (VMs left by "
        "evictionStrategy None excepted); Blocked: some cannot leave (see blocking)."
    )
    total: int = field("VMs on the host now, stopped ones included (those moved away are not).", default=0, ge=0)
    migrating: int = field("VMs being live-migrated now.", default=0, ge=0)
    migrated: int = field("VMs this evacuation has live-migrated away.", default=0, ge=0)
    shut_down: int = field("VMs stopped for maintenance (evictionStrategy Shutdown, or IfPossible).", default=0, ge=0)
    remaining: int = field("VMs still running here that should leave.", default=0, ge=0)
    blocking: list[BlockingVm] = field(
        "VMs that cannot leave now, and why.", default_factory=list, max_length=100, extra=list_map("namespace", "name")
    )


HEARTBEAT_FILE_PREFIX = "vdc-heartbeat-"
"""A host rewrites ``vdc-heartbeat-<Host name>`` every few seconds in each shared pool's directory (HA's
datastore heartbeat): not a volume of ours, and no reason to keep a pool."""

DPM_STANDBY_ANNOTATION = "vdc.dev/dpm-standby"
"""Set on a Host by its ComputeCluster's DPM (value: the cluster's name) to put it in Standby, as
spec.powerState Standby does; removed to wake it."""


def standby_intended(body: Mapping[str, Any]) -> bool:
    """spec.powerState is Standby, or DPM asked for Standby (its annotation)."""
    spec = body.get("spec") or {}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return spec.get("powerState") == "Standby" or DPM_STANDBY_ANNOTATION in annotations


def evacuating(body: Mapping[str, Any]) -> bool:
    """The host is to be emptied: maintenance, or Standby asked for."""
    return bool((body.get("spec") or {}).get("maintenance")) or standby_intended(body)


POWER_ACTION_ANNOTATION = "vdc.dev/power-action"
"""Set on a Host to On, ForceOff, ForceRestart or GracefulShutdown to have the operator send that Redfish
reset once; the operator records the result in status.power.lastAction and an Event, then removes it."""


class PowerAction(ApiModel):
    """A Redfish reset the operator sent, and what came of it."""

    action: ShortText = field("On, ForceOff, ForceRestart or GracefulShutdown.")
    reason: ShortText = field("Who asked: Annotation (an admin), Fencing (HA).")
    result: Literal["Succeeded", "Failed"] = field("Whether the service accepted it.")
    time: ShortText = field("When it was sent (RFC 3339).")
    message: Annotated[str, StringConstraints(max_length=1024)] = field("The service's answer.", default="")


class HostPower(ApiModel):
    """The host's power as its Redfish service reports it."""

    state: Literal["On", "Off", "PoweringOn", "PoweringOff", "Unknown"] | None = field(
        "Power state at checkedAt (None: the service could not be asked; see error).", default=None
    )
    checked_at: ShortText | None = field("When the service was last asked (RFC 3339).", default=None)
    error: Annotated[str, StringConstraints(max_length=1024)] | None = field(
        "Why the service could not be asked.", default=None
    )
    last_action: PowerAction | None = field("The last reset sent.", default=None)


class HostHealth(ApiModel):
    """The host as HA judges it. Healthy: libvirt answers. Suspect: libvirt does not answer, but nothing
    else says the host is down (a partition, a stuck libvirtd): its VMs are left alone. Failed: a second
    signal agrees (the failure timeout passed with no power management to ask): not fenced, so its VMs stay
    Unknown. Fenced: its Redfish service reports it Off: its VMs restart elsewhere. Recovering: it answers
    again and its stale domains (of VMs that run elsewhere now) are being removed before it is Ready."""

    state: Literal["Healthy", "Suspect", "Failed", "Fenced", "Recovering", "Standby"] = field(
        "See above. Standby: powered off on purpose (spec.powerState or DPM), not a failure."
    )
    since: ShortText | None = field("When the host entered this state (RFC 3339).", default=None)
    message: Annotated[str, StringConstraints(max_length=1024)] = field("Why, and what happens next.", default="")
    stale_domains_removed: list[ShortText] = field(
        "Domains removed from the host when it came back (their VMs run elsewhere).",
        default_factory=list,
        max_length=ORPHANS_LISTED,
    )


class HostStatus(ApiModel):
    """Observed state of a libvirt host."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    phase: Literal["Connecting", "Ready", "NotReady", "Maintenance", "EnteringStandby", "Standby", "Waking"] | None = (
        field("Summary of the host's state.", default=None)
    )
    hostname: ShortText | None = field("The host's hostname as libvirt reports it.", default=None)
    host_uuid: ShortText | None = field("The host's UUID (libvirt capabilities).", default=None)
    libvirt_version: ShortText | None = field("libvirt version of the host.", default=None)
    hypervisor: ShortText | None = field("Hypervisor type.", default=None)
    hypervisor_version: ShortText | None = field("Hypervisor (QEMU) version.", default=None)
    capacity: HostResources | None = field("Physical CPUs and memory.", default=None)
    allocatable: HostResources | None = field(
        "What may be given to VMs: capacity less reservations, times overcommit.", default=None
    )
    allocated: HostResources | None = field("What this operator's VMs placed here ask for.", default=None)
    reservable: ReservedResources | None = field(
        "What VMs' reservations may guarantee here: capacity less spec.reserved, never overcommitted.",
        default=None,
    )
    reserved: ReservedResources | None = field(
        "What the VMs placed here reserve (their spec.qos reservations).", default=None
    )
    domains: HostDomainCounts | None = field("Domain counts.", default=None)
    orphans: HostOrphans | None = field(
        "Our domains and volumes whose VirtualMachine no longer exists: never removed unless asked.", default=None
    )
    last_seen: str | None = field("When the host last answered (RFC 3339).", default=None)
    power: HostPower | None = field("Power, from spec.powerManagement.", default=None)
    ha: HostHealth | None = field("The host's health as HA judges it.", default=None)
    evacuation: Evacuation | None = field(
        "Progress of the evacuation while the host is in maintenance (written by the evacuation, not the host "
        "controller).",
        default=None,
    )


class Host(Resource):
    """A libvirt host: where VMs, pools and switches are realised."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="Host",
        plural="hosts",
        short_names=("vdchost",),
        scope="Cluster",
        printer_columns=(
            ready_column(),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("CPUs", ".status.capacity.cpus", type="integer"),
            PrinterColumn("Memory", ".status.capacity.memory"),
            PrinterColumn("VMs", ".status.domains.managed", type="integer"),
            PrinterColumn("Health", ".status.ha.state"),
            PrinterColumn("Power", ".status.power.state", priority=1),
            PrinterColumn("Orphan Domains", ".status.orphans.domainCount", type="integer", priority=1),
            PrinterColumn("Orphan Volumes", ".status.orphans.volumeCount", type="integer", priority=1),
            PrinterColumn("URI", ".spec.uri", priority=1),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "Host"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: HostSpec = field("Desired state.")
    status: HostStatus | None = field("Observed state, written by the operator.", default=None)
