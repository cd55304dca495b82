"""StoragePool: a libvirt storage pool realised on every matching host (cluster-scoped)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints

from vdc.api.common import (
    AllowedNamespaces,
    IoTune,
    LabelSelector,
    Name,
    Path,
    SecretRef,
    ShortText,
    cel,
    field,
    list_map,
    validations,
)
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column
from vdc.api.quantity import Quantity

POOL_PREFIX = "vdc-"
"""What the libvirt pools we create are called on the hosts (``vdc-<name>``): nothing without it is touched."""

PoolType = Literal["dir", "netfs", "logical", "rbd", "iscsi"]
HostAddress = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class PoolTarget(ApiModel):
    """Where the pool appears on each host."""

    path: Path = field("Directory (dir, netfs mount point) or device directory (logical, iscsi).")


class PoolSource(ApiModel):
    """Where the pool's storage comes from (not used by dir pools)."""

    hosts: list[HostAddress] = field(
        "Storage servers: the NFS server (netfs), Ceph monitors (rbd) or the iSCSI portal (iscsi).",
        default_factory=list,
        max_length=16,
    )
    dir: Annotated[str, StringConstraints(max_length=4096)] | None = field(
        "Exported directory on the NFS server (netfs).", default=None
    )
    name: Annotated[str, StringConstraints(max_length=253)] | None = field(
        "Volume group (logical) or Ceph pool (rbd) name.", default=None
    )
    devices: list[Annotated[str, StringConstraints(max_length=4096)]] = field(
        "Physical volumes (logical, to build the VG) or the iSCSI target IQN (iscsi).",
        default_factory=list,
        max_length=16,
    )
    format: Literal["auto", "nfs", "glusterfs", "cifs", "lvm2"] | None = field(
        "Source format (netfs: nfs, glusterfs, cifs; logical: lvm2).", default=None
    )
    auth_secret_ref: SecretRef | None = field(
        "Secret with credentials (rbd: key `key` and user `user`; iscsi: CHAP `username`/`password`).",
        default=None,
    )


class PublishedVolume(ApiModel):
    """A volume of this pool published to tenant namespaces: a base for their clones, or a read-only disk."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.+-]+$")] = field(
        "The volume's name in the pool."
    )
    allowed_namespaces: AllowedNamespaces = field("Namespaces that may use it.", default_factory=AllowedNamespaces)


class StoragePoolSpec(ApiModel):
    """Desired state of a storage pool."""

    model_config = {
        "json_schema_extra": validations(
            cel("self.type != 'dir' || has(self.target)", "a dir pool needs target.path", field_path=".target"),
            cel(
                "self.type != 'netfs' || (has(self.target) && has(self.source) && size(self.source.hosts) == 1"
                " && has(self.source.dir))",
                "a netfs pool needs target.path, source.hosts (one NFS server) and source.dir",
                field_path=".source",
            ),
            cel(
                "self.type != 'logical' || (has(self.source) && has(self.source.name))",
                "a logical pool needs source.name (the volume group)",
                field_path=".source",
            ),
            cel(
                "self.type != 'rbd' || (has(self.source) && size(self.source.hosts) > 0 && has(self.source.name))",
                "an rbd pool needs source.hosts (Ceph monitors) and source.name (the Ceph pool)",
                field_path=".source",
            ),
            cel(
                "self.type != 'iscsi' || (has(self.source) && size(self.source.hosts) == 1"
                " && size(self.source.devices) == 1)",
                "an iscsi pool needs source.hosts (one portal) and source.devices (one target IQN)",
                field_path=".source",
            ),
        )
    }

    type: PoolType = field("Pool type. dir works end to end; the others produce libvirt pool XML.", update="immutable")
    target: PoolTarget | None = field("Where the pool appears on each host.", default=None, update="restart")
    source: PoolSource | None = field("Where the storage comes from.", default=None, update="restart")
    host_selector: LabelSelector = field(
        "Hosts that get this pool (by Host labels). Empty: every host.",
        default_factory=LabelSelector,
        update="live",
    )
    shared: bool = field(
        "The same storage is reachable from every host of the pool (NFS, Ceph, iSCSI): a VM may run on, "
        "and move to, any of them without copying its disks.",
        default=False,
        update="immutable",
    )
    reserved: Quantity = field(
        "Space kept free on each host: volumes are not placed where they would eat into it.",
        default="0",
        update="live",
    )
    disk_iotune: IoTune | None = field(
        "Default I/O limits of every disk in this pool; a VM's disk may only lower them (and its burst). "
        "Applied live to running VMs.",
        default=None,
        update="live",
    )
    deletion_policy: Literal["Refuse", "Wait"] = field(
        "What deleting a pool that still holds our volumes does: Refuse keeps the pool and says so in "
        "status until the volumes are gone; Wait is the same without the Stalled condition. "
        "Volumes we did not create are never deleted.",
        default="Refuse",
        update="live",
    )
    allowed_namespaces: AllowedNamespaces = field(
        "Tenant namespaces whose VMs may keep disks in this pool (new volumes, clones, seeds) and whose "
        "Appliances may land here. Default: all namespaces (a pool is shared infrastructure, like a "
        "StorageClass); volumes stay private to their owner's namespace whatever this says.",
        default_factory=AllowedNamespaces,
        update="live",
    )
    adoption_namespaces: AllowedNamespaces | None = field(
        "Namespaces that may attach (adopt) volumes of this pool that no namespace owns, i.e. volumes the "
        "operator did not create. Default: none.",
        default=None,
        update="live",
    )
    published_volumes: list[PublishedVolume] = field(
        "Volumes of this pool a cluster admin publishes to tenants (golden images): they may be cloned, "
        "or attached read-only, by VMs of the allowed namespaces.",
        default_factory=list,
        max_length=256,
        extra=list_map("name"),
        update="live",
    )


class PoolHostStatus(ApiModel):
    """The pool on one host."""

    host: Name = field("The Host's name.")
    state: Literal["Pending", "Building", "Running", "Inactive", "Failed", "Unknown"] = field("Pool state.")
    capacity: Quantity | None = field("Capacity.", default=None)
    allocation: Quantity | None = field("Allocated.", default=None)
    available: Quantity | None = field("Available.", default=None)
    volumes: int | None = field("Volumes this operator created in the pool.", default=None, ge=0)
    message: ShortText = field("What is wrong, if anything.", default="")


class StoragePoolStatus(ApiModel):
    """Observed state of a storage pool."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    hosts: list[PoolHostStatus] = field(
        "Per host state.",
        default_factory=list,
        extra=list_map("host"),
    )
    ready_hosts: int = field("Hosts where the pool runs.", default=0, ge=0)
    capacity: Quantity | None = field("Total capacity (shared pools count once).", default=None)
    available: Quantity | None = field("Total available.", default=None)


class StoragePool(Resource):
    """A storage pool: defined, built, started and autostarted on every matching host."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="StoragePool",
        plural="storagepools",
        short_names=("vdcpool",),
        scope="Cluster",
        printer_columns=(
            ready_column(),
            PrinterColumn("Type", ".spec.type"),
            PrinterColumn("Shared", ".spec.shared", type="boolean"),
            PrinterColumn("Hosts", ".status.readyHosts", type="integer"),
            PrinterColumn("Available", ".status.available"),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "StoragePool"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: StoragePoolSpec = field("Desired state.")
    status: StoragePoolStatus | None = field("Observed state, written by the operator.", default=None)


def libvirt_pool_name(name: str) -> str:
    """The libvirt pool of the StoragePool ``name`` on every host."""
    return f"{POOL_PREFIX}{name}"
