"""ComputeCluster: Hosts chosen by a label selector, pooled, with an HA policy (cluster-scoped).

The operator reports on a cluster: its members, their capacity and use, and whether the HA admission-control
policy holds; the scheduler refuses a VM whose placement on a member would break that policy. Restarting VMs
after a host failure (with fencing by the Hosts' power management) is being built; DRS and DPM are not built.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from vdc.api.common import LabelSelector, Name, ShortText, field, list_map
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column
from vdc.api.quantity import Quantity

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


class ComputeClusterSpec(ApiModel):
    """Desired state of a cluster of hosts."""

    host_selector: LabelSelector = field(
        "Hosts (by their labels) that are members. Empty: every host. A host selected by two or more "
        "ComputeClusters is a member of none of them (status.conflicts).",
        default_factory=LabelSelector,
        update="live",
    )
    ha: HighAvailability = field("High availability policy.", default_factory=HighAvailability, update="live")


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
