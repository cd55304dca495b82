"""VirtualMachineMigration (namespaced): one live migration of one VM, an operation whose phases are
kept in status; MigrationPolicy (cluster-scoped): migration tuning chosen by VM and namespace labels,
as KubeVirt's MigrationPolicy."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import StringConstraints

from vdc.api.common import LabelSelector, Name, ShortText, field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, reason_column
from vdc.api.operation import OperationStatus
from vdc.api.quantity import Quantity

Text = Annotated[str, StringConstraints(max_length=4096)]

PHASES = ("Pending", "Scheduling", "PreparingTarget", "Migrating")
"""The steps of a migration, in order; it ends Succeeded, Failed or Cancelled."""


class MigrationTuning(ApiModel):
    """How a migration runs. A field left out comes from the MigrationPolicy that selects the VM, else
    from the operator's default (shown in each field)."""

    bandwidth: Quantity | None = field(
        "Most bytes per second the migration stream may use (e.g. 64Mi). Default: unlimited.", default=None
    )
    auto_converge: bool | None = field(
        "Slow the guest's vCPUs down when memory is dirtied faster than it is copied. Default: false.", default=None
    )
    allow_post_copy: bool | None = field(
        "Switch to post-copy (the guest runs on the target, missing pages fetched on demand) when pre-copy does "
        "not converge. A failure of the network during post-copy loses the guest. Default: false.",
        default=None,
    )
    post_copy_after_seconds: int | None = field(
        "With allowPostCopy: seconds of pre-copy before switching. Default: 30.", default=None, ge=0, le=86400
    )
    max_downtime_milliseconds: int | None = field(
        "The longest pause of the guest libvirt may plan for the final switch-over. Default: libvirt's (300).",
        default=None,
        ge=1,
        le=600000,
    )
    completion_timeout_per_gi_b: int | None = field(
        "Seconds per GiB of memory and copied disk after which the migration is aborted (Failed, the VM stays "
        "on its source). Default: 150.",
        default=None,
        ge=1,
        le=86400,
        alias="completionTimeoutPerGiB",
    )


class VirtualMachineMigrationSpec(ApiModel):
    """Which VM to move, and where."""

    vm: Name = field("The VirtualMachine to migrate, in this namespace. It must be running.", update="immutable")
    target_host: Name | None = field(
        "The Host to move it to. Default: the scheduler picks one, by the rules that place a new VM, never the "
        "host it runs on.",
        default=None,
        update="immutable",
    )
    tuning: MigrationTuning | None = field(
        "Overrides of the MigrationPolicy's settings for this migration.", default=None, update="immutable"
    )


class DataProgress(ApiModel):
    """Bytes of one kind of data a migration copies."""

    processed: Quantity | None = field("Copied so far.", default=None)
    remaining: Quantity | None = field("Still to copy.", default=None)
    total: Quantity | None = field("To copy in all (grows while the guest dirties memory).", default=None)


class MigrationProgress(ApiModel):
    """What libvirt reports of the running migration job (and, at the end, of the completed one)."""

    percent: int | None = field("Data copied over data to copy, memory and disks together.", default=None)
    memory: DataProgress | None = field("Guest memory.", default=None)
    disks: DataProgress | None = field("Disks copied to the target (local pools).", default=None)
    iteration: int | None = field("Pre-copy passes over memory so far.", default=None)
    dirty_rate: Quantity | None = field("Bytes of memory the guest dirties per second.", default=None)
    expected_downtime_milliseconds: int | None = field("libvirt's estimate of the final pause.", default=None)
    downtime_milliseconds: int | None = field("The guest's actual pause at switch-over (when done).", default=None)
    elapsed_milliseconds: int | None = field("How long the libvirt job has run.", default=None)
    post_copy: bool | None = field("The migration switched to post-copy.", default=None)


class VirtualMachineMigrationStatus(OperationStatus):
    """Durable progress (``phase``), and what the migration is doing."""

    source: Name | None = field("The host the VM runs on when the migration began.", default=None)
    target: Name | None = field("The host it moves to (chosen in Scheduling, kept from then on).", default=None)
    vm_uid: ShortText | None = field("The migrated VM's uid.", default=None)
    policy: Name | None = field("The MigrationPolicy applied (none: the operator's defaults).", default=None)
    copied_disks: list[Name] = field(
        "Disks on local pools, copied to the target (block migration); disks on shared pools are not copied.",
        default_factory=list,
    )
    created_volumes: list[Name] = field(
        "Disks whose volumes this migration created on the target (removed again if it fails).",
        default_factory=list,
    )
    progress: MigrationProgress | None = field("What the libvirt job reports.", default=None)
    migration_started_at: ShortText | None = field(
        "When the libvirt migration job was started (RFC 3339).", default=None
    )
    attempts: int = field("How many times the libvirt migration was started.", default=0, ge=0)
    libvirt_error: Text | None = field("libvirt's error when the migration failed.", default=None)


class VirtualMachineMigration(Resource):
    """One live migration of one running VM. Delete it while it runs to cancel it: the VM stays on its source."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="VirtualMachineMigration",
        plural="virtualmachinemigrations",
        short_names=("vdcmig", "vmim"),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("VM", ".spec.vm"),
            PrinterColumn("Source", ".status.source"),
            PrinterColumn("Target", ".status.target"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Progress", ".status.progress.percent", type="integer"),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "VirtualMachineMigration"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: VirtualMachineMigrationSpec = field("Desired state.")
    status: VirtualMachineMigrationStatus | None = field("Observed state, written by the operator.", default=None)


class MigrationPolicySpec(MigrationTuning):
    """Tuning for the VMs it selects, and how many migrations may run at once."""

    vm_selector: LabelSelector = field(
        "VMs (by their labels) this policy applies to. Empty: every VM.", default_factory=LabelSelector
    )
    namespace_selector: LabelSelector = field(
        "Namespaces (by their labels) whose VMs this policy applies to. Empty: every namespace.",
        default_factory=LabelSelector,
    )
    parallel_migrations_per_host: int | None = field(
        "Migrations that may run at once into or out of one host (counting both). Default: 2.",
        default=None,
        ge=1,
        le=64,
    )
    parallel_migrations_per_cluster: int | None = field(
        "Migrations that may run at once in the whole cluster. Default: 5.", default=None, ge=1, le=1024
    )


class MigrationPolicyStatus(ApiModel):
    """Observed state (a policy is read where it is used; the operator writes nothing here yet)."""

    observed_generation: int | None = field("The generation last acted on.", default=None)


class MigrationPolicy(Resource):
    """Migration tuning for the VMs whose labels and namespace labels its selectors match. When several
    match a VM, the one whose selectors name the most labels wins (VM selector first, then namespace
    selector); a tie goes to the name first in alphabetical order. Only one policy applies to a VM."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="MigrationPolicy",
        plural="migrationpolicies",
        short_names=("vdcmigpol",),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("Bandwidth", ".spec.bandwidth"),
            PrinterColumn("PerHost", ".spec.parallelMigrationsPerHost", type="integer"),
            PrinterColumn("PerCluster", ".spec.parallelMigrationsPerCluster", type="integer"),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "MigrationPolicy"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: MigrationPolicySpec = field("Desired state.", default_factory=MigrationPolicySpec)
    status: MigrationPolicyStatus | None = field("Observed state.", default=None)
