"""ComputeCluster: Hosts chosen by a label selector, pooled, with an HA policy (cluster-scoped).

The operator reports on a cluster: its members, their capacity and use, and whether the HA admission-control
policy holds; the scheduler refuses a VM whose placement on a member would break that policy. DRS balances
the members by measured demand and keeps the cluster's rules; DPM puts idle hosts in Standby (Redfish).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from vdc.api.common import LabelSelector, Name, ShortText, field, list_map
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column
from vdc.api.quantity import Quantity

LongText = Annotated[str, StringConstraints(max_length=1024)]
"""A message with figures and names (DRS, DPM)."""

DRS_APPLY_ANNOTATION = "vdc.dev/drs-apply"
"""Set on a ComputeCluster to a recommendation's id (several: comma-separated; or "all") to have DRS make
those moves once; DRS removes it when they are made."""
DRS_OWNER_LABEL = "vdc.dev/drs-cluster"
"""On the VirtualMachineMigrations DRS makes: the ComputeCluster (also their owner)."""

MAX_HOSTS_LISTED = 1000
"""Member host names listed in a cluster's status (the counts are complete)."""

AdmissionPolicy = Literal["None", "HostFailuresTolerated", "PercentageReserved"]


class AdmissionControl(ApiModel):
    """How much capacity HA keeps free so that the VMs of failed hosts can be restarted on the others."""

    policy: AdmissionPolicy = field(
        "None: nothing is kept free (a restart happens where capacity is left). HostFailuresTolerated: the "
        "members left after the hostFailuresTolerated largest ones (by allocatable memory) fail must still "
        "hold what runs on all of them. PercentageReserved: cpuPercentReserved and memoryPercentReserved of "
        "the members' capacity are kept free.",
        default="None",
        update="live",
    )
    host_failures_tolerated: int = field(
        "Hosts that may fail at once (policy HostFailuresTolerated).", default=1, ge=0, le=32, update="live"
    )
    cpu_percent_reserved: int = field(
        "Percent of the members' allocatable CPUs kept free (policy PercentageReserved).",
        default=25,
        ge=0,
        le=100,
        update="live",
    )
    memory_percent_reserved: int = field(
        "Percent of the members' allocatable memory kept free (policy PercentageReserved).",
        default=25,
        ge=0,
        le=100,
        update="live",
    )


class HighAvailability(ApiModel):
    """High availability: restart the VMs of a failed host on the cluster's other hosts.

    The operator reports admission control (status.ha) and enforces it: a new VM (or a migration into the
    cluster) is not placed on a member when that would leave less free than the policy keeps (the VM
    stays Unschedulable with the numbers); a restart after a host failure uses the room kept for it."""

    enabled: bool = field(
        "Whether the cluster is protected by HA: the VMs of a member host that fails are restarted on the others "
        "once it is fenced (its Redfish service reports it Off).",
        default=False,
        update="live",
    )
    disk_leases: bool = field(
        "Every member's libvirtd runs libvirt's lock manager (lock_manager = \"lockd\" with virtlockd, "
        "auto_disk_leases) over the shared pools, so a second QEMU cannot open a disk a live one holds: the VMs "
        "of a Failed host that cannot be fenced are restarted too (a start fails while the old copy lives).",
        default=False,
        update="live",
    )
    admission_control: AdmissionControl = field(
        "Capacity kept free for restarts.", default_factory=AdmissionControl, update="live"
    )


DrsAutomation = Literal["Manual", "PartiallyAutomated", "FullyAutomated"]


class Drs(ApiModel):
    """Distributed Resource Scheduling: keep the members' measured demand balanced and the rules kept, by live
    migration."""

    enabled: bool = field("Whether DRS looks at the cluster at all.", default=False, update="live")
    automation: DrsAutomation = field(
        "Manual: moves are only recommended (status.drs.recommendations; apply one with `vdc drs apply` or the "
        "vdc.dev/drs-apply annotation). PartiallyAutomated: new VMs are placed by DRS's demand scoring, moves "
        "are recommended. FullyAutomated: the recommended moves are made (VirtualMachineMigrations owned by the "
        "cluster). A VM's spec.drs overrides it.",
        default="Manual",
        update="live",
    )
    migration_threshold: int = field(
        "1 (conservative) to 5 (aggressive): 1 makes only the moves that fix a rule's violation; 2-5 also move "
        "for balance while the imbalance (standard deviation of the hosts' load) exceeds 0.20, 0.10, 0.05 or "
        "0.02, each move worth its VM: moving load x from a host at load a to one at b gains 2x(a-b-x), and "
        "2(a-b-x) must reach 0.3, 0.2, 0.1 or 0.04.",
        default=3,
        ge=1,
        le=5,
        update="live",
    )
    max_concurrent_moves: int = field(
        "DRS migrations of this cluster running at once (new ones wait).", default=2, ge=1, le=64, update="live"
    )
    cooldown_seconds: int = field(
        "A VM that DRS moved is not moved again for balance within this time (no ping-pong).",
        default=600,
        ge=0,
        le=86400,
        update="live",
    )
    interval_seconds: int = field("How often DRS looks at the cluster.", default=60, ge=2, le=3600, update="live")


DpmAutomation = Literal["Off", "Manual", "Automated"]


class DpmHostOverride(ApiModel):
    """DPM automation for one member host."""

    host: Name = field("The Host.")
    automation: Literal["Disabled", "Manual", "Automated"] = field(
        "Disabled: DPM never puts this host in Standby. Manual: only recommended. Automated: done."
    )


class Dpm(ApiModel):
    """Distributed Power Management: put member hosts in Standby (evacuated, then powered off through Redfish)
    while the others can carry the load, and power them on again when they are needed."""

    automation: DpmAutomation = field(
        "Off: nothing. Manual: power actions are recommended in status.dpm. Automated: they are carried out.",
        default="Off",
        update="live",
    )
    target_utilization_low: int = field(
        "Percent: when the powered-on members' utilization (the higher of CPU demand over CPUs and allocated "
        "memory over memory) is under this, a host may go to Standby.",
        default=45,
        ge=0,
        le=100,
        update="live",
    )
    target_utilization_high: int = field(
        "Percent: above this a Standby host is powered on (also when a VM fits nowhere, or HA admission control "
        "lacks capacity). A host goes to Standby only when the others stay under it.",
        default=81,
        ge=1,
        le=100,
        update="live",
    )
    min_hosts_on: int = field("Members kept powered on whatever the load.", default=1, ge=1, le=1000, update="live")
    host_overrides: list[DpmHostOverride] = field(
        "Per-host automation.", default_factory=list, max_length=1000, extra=list_map("host"), update="live"
    )


class ClusterRule(ApiModel):
    """A placement rule. VmAffinity: the selected VMs run on one host. VmAntiAffinity: on different hosts.
    VmHost: the selected VMs run (placement RunOn) or do not run (NotRunOn) on the hosts hostSelector picks.
    Must: the scheduler refuses a placement, restart or migration that breaks it. Should: DRS prefers it and
    fixes a violation when it can, the scheduler does not refuse."""

    name: Name = field("The rule's name (unique in the cluster).")
    type: Literal["VmAffinity", "VmAntiAffinity", "VmHost"] = field("See above.")
    enforcement: Literal["Must", "Should"] = field("See above.", default="Must")
    vm_selector: LabelSelector = field("The VMs (by their labels) the rule is about.")
    namespaces: list[Name] = field(
        "Only VMs in these namespaces (empty: any namespace, so a tenant that labels its VMs joins the group: "
        "name the namespaces for a must rule tenants must not steer).",
        default_factory=list,
        max_length=64,
    )
    host_selector: LabelSelector | None = field("VmHost: the host group (by Host labels).", default=None)
    placement: Literal["RunOn", "NotRunOn"] = field("VmHost: run on, or not on, the host group.", default="RunOn")


class ComputeClusterSpec(ApiModel):
    """Desired state of a cluster of hosts."""

    host_selector: LabelSelector = field(
        "Hosts (by their labels) that are members. Empty: every host. A host selected by two or more "
        "ComputeClusters is a member of none of them (status.conflicts).",
        default_factory=LabelSelector,
        update="live",
    )
    ha: HighAvailability = field("High availability policy.", default_factory=HighAvailability, update="live")
    drs: Drs = field("Balancing by live migration.", default_factory=Drs, update="live")
    dpm: Dpm = field("Power management of the members.", default_factory=Dpm, update="live")
    rules: list[ClusterRule] = field(
        "Affinity, anti-affinity and VM-Host rules.",
        default_factory=list,
        max_length=200,
        extra=list_map("name"),
        update="live",
    )


class ClusterResources(ApiModel):
    """CPUs and memory summed over the members."""

    cpus: int = field("CPUs (or vCPUs).", default=0, ge=0)
    memory: Quantity = field("Memory.", default="0")


class HostConflict(ApiModel):
    """A host selected by this cluster and others: a member of none of them until the selectors differ."""

    host: Name = field("The Host.")
    other_clusters: list[ShortText] = field(
        "The other ComputeClusters selecting it, by name.", default_factory=list, max_length=64
    )


class HAStatus(ApiModel):
    """What HA admission control makes of the members now."""

    state: Literal["Disabled", "Protected", "NotProtected"] = field(
        "Disabled: spec.ha.enabled is false. Protected: enough Ready hosts and capacity for the policy. "
        "NotProtected: too few Ready hosts, or what runs takes more than the policy leaves (see message)."
    )
    message: ShortText = field("Why, with the numbers.", default="")
    headroom: ClusterResources | None = field(
        "What may still be placed without breaking admission control (policy None: the capacity left), "
        "counted over the Ready members out of maintenance. Never negative.",
        default=None,
    )


class DrsRecommendation(ApiModel):
    """A live migration DRS recommends (or makes, FullyAutomated)."""

    id: ShortText = field("Stable while the recommendation stands: what `vdc drs apply` names.")
    namespace: Name = field("The VM's namespace.")
    vm: Name = field("The VM.")
    source: Name = field("The host it runs on.")
    target: Name = field("The host it would move to.")
    reason: Literal["RuleViolation", "Balance"] = field("What the move serves.")
    rule: Name | None = field("The rule it serves (reason RuleViolation).", default=None)
    message: LongText = field("Why, in words, with the figures.")
    imbalance_before: ShortText = field("The cluster's imbalance now.")
    imbalance_after: ShortText = field("The imbalance expected after this move (and those listed before it).")
    migration: Name | None = field("The VirtualMachineMigration made for it (applied or automated).", default=None)


class RuleViolation(ApiModel):
    """A rule broken now (after a manual move, say): DRS fixes it when it can."""

    rule: Name = field("The rule.")
    message: LongText = field("What breaks it.")


class HostLoad(ApiModel):
    """One member as DRS and DPM see it."""

    host: Name = field("The Host.")
    power: Literal["On", "Standby", "EnteringStandby", "Waking"] = field("Its power as DPM sees it.")
    cpu_demand_milli: int = field("Measured CPU demand of its VMs, in thousandths of a core.", default=0, ge=0)
    cpus: int = field("The CPUs the demand is weighed against (physical CPUs).", default=0, ge=0)
    memory_demand: Quantity = field("Memory demand of its VMs.", default="0")
    memory: Quantity = field("Allocatable memory.", default="0")
    load_percent: int = field("The higher of CPU and memory demand over capacity.", default=0, ge=0)
    vms: int = field("Running VMs.", default=0, ge=0)


class DrsStatus(ApiModel):
    """What DRS made of the cluster at its last look."""

    automation: ShortText = field("The automation level in force.")
    imbalance: ShortText = field("Standard deviation of the members' load now (0: perfectly balanced).")
    target: ShortText = field("The imbalance DRS tolerates at this migrationThreshold.")
    message: LongText = field("The summary.", default="")
    last_run: ShortText | None = field("When DRS last looked (RFC 3339).", default=None)
    moving: int = field("DRS migrations running now.", default=0, ge=0)
    recommendations: list[DrsRecommendation] = field(
        "Moves recommended (Manual, or VMs overridden to Manual) or being made.",
        default_factory=list,
        max_length=100,
        extra=list_map("id"),
    )
    violations: list[RuleViolation] = field("Rules broken now.", default_factory=list, max_length=100)
    hosts: list[HostLoad] = field(
        f"The members' load (the first {MAX_HOSTS_LISTED}).",
        default_factory=list,
        max_length=MAX_HOSTS_LISTED,
        extra=list_map("host"),
    )


class DpmRecommendation(ApiModel):
    """A power action DPM recommends (Manual) or is carrying out (Automated)."""

    host: Name = field("The Host.")
    action: Literal["Standby", "PowerOn"] = field("Standby: evacuate, then power off. PowerOn: wake it.")
    message: LongText = field("Why, with the figures.")


class DpmStatus(ApiModel):
    """What DPM made of the cluster at its last look."""

    automation: ShortText = field("The automation level in force.")
    utilization_percent: int = field("The powered-on members' utilization now.", default=0, ge=0)
    hosts_on: int = field("Members powered on.", default=0, ge=0)
    standby: list[Name] = field("Members in Standby or entering it.", default_factory=list, max_length=1000)
    message: LongText = field("The summary.", default="")
    recommendations: list[DpmRecommendation] = field(
        "Power actions recommended or in progress.", default_factory=list, max_length=100, extra=list_map("host")
    )


class ComputeClusterStatus(ApiModel):
    """Observed state of a cluster."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    hosts: list[ShortText] = field(
        f"Member Hosts, sorted by name (the first {MAX_HOSTS_LISTED}).",
        default_factory=list,
        max_length=MAX_HOSTS_LISTED,
    )
    host_count: int = field("Member Hosts.", default=0, ge=0)
    ready_hosts: int = field("Member Hosts that are Ready.", default=0, ge=0)
    capacity: ClusterResources | None = field("The members' allocatable CPUs and memory, summed.", default=None)
    usage: ClusterResources | None = field("What VMs placed on the members ask for, summed.", default=None)
    conflicts: list[HostConflict] = field(
        "Hosts this cluster selects that other ComputeClusters select too (members of none).",
        default_factory=list,
        max_length=100,
        extra=list_map("host"),
    )
    ha: HAStatus | None = field("High availability state.", default=None)
    drs: DrsStatus | None = field("DRS's last look (spec.drs.enabled).", default=None)
    dpm: DpmStatus | None = field("DPM's last look (spec.dpm.automation not Off).", default=None)


class ComputeCluster(Resource):
    """Hosts chosen by a label selector, pooled as one cluster with a high availability policy."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="ComputeCluster",
        plural="computeclusters",
        short_names=("vdccluster",),
        scope="Cluster",
        printer_columns=(
            ready_column(),
            PrinterColumn("Hosts", ".status.hostCount", type="integer"),
            PrinterColumn("ReadyHosts", ".status.readyHosts", type="integer"),
            PrinterColumn("CPUs", ".status.capacity.cpus", type="integer"),
            PrinterColumn("Memory", ".status.capacity.memory"),
            PrinterColumn("HA", ".status.ha.state"),
            PrinterColumn("Imbalance", ".status.drs.imbalance"),
            PrinterColumn("Used CPUs", ".status.usage.cpus", type="integer", priority=1),
            PrinterColumn("Used Memory", ".status.usage.memory", priority=1),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "ComputeCluster"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: ComputeClusterSpec = field("Desired state.", default_factory=ComputeClusterSpec)
    status: ComputeClusterStatus | None = field("Observed state, written by the operator.", default=None)
