"""ComputeQuota: per-namespace limits on what tenants' VMs may take (namespaced)."""

from __future__ import annotations

from typing import ClassVar

from vdc.api.common import field
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel, KindInfo, PrinterColumn, Resource, age_column, ready_column, reason_column
from vdc.api.quantity import Quantity


class QuotaAmounts(ApiModel):
    """Amounts counted per namespace. An amount left out is not limited."""

    virtual_machines: int | None = field("VirtualMachines placed on a host.", default=None, ge=0)
    vcpus: int | None = field("vCPUs of those VMs (spec.cpu.count).", default=None, ge=0)
    memory: Quantity | None = field("Memory of those VMs (spec.memory.max, else size).", default=None)
    storage: Quantity | None = field(
        "Virtual size of the volumes the operator creates for those VMs (blank and clone disks).", default=None
    )
    public_addresses: int | None = field(
        "NICs of those VMs on public VirtualSwitches (spec.public).", default=None, ge=0
    )


class ComputeQuotaSpec(ApiModel):
    """Desired limits."""

    hard: QuotaAmounts = field(
        "Limits for the namespace. A VM that would take the namespace over any of them is not placed "
        "(Scheduled=False, QuotaExceeded). Several ComputeQuotas in one namespace all apply.",
        update="live",
    )


class ComputeQuotaStatus(ApiModel):
    """What the namespace uses now."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    hard: QuotaAmounts | None = field("The limits in force.", default=None)
    used: QuotaAmounts | None = field("What the namespace's placed VMs take.", default=None)


class ComputeQuota(Resource):
    """Per-namespace limits on VMs, vCPUs, memory, disk and public addresses, enforced at placement."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="ComputeQuota",
        plural="computequotas",
        short_names=("vdcquota",),
        scope="Namespaced",
        printer_columns=(
            ready_column(),
            PrinterColumn("VMs", ".status.used.virtualMachines", type="integer"),
            PrinterColumn("vCPUs", ".status.used.vcpus", type="integer"),
            PrinterColumn("Memory", ".status.used.memory"),
            PrinterColumn("Storage", ".status.used.storage", priority=1),
            reason_column(),
            age_column(),
        ),
    )

    api_version: str = "vdc.dev/v1alpha1"
    kind: str = "ComputeQuota"
    metadata: dict[str, object] = field("Standard object metadata.", default_factory=dict)
    spec: ComputeQuotaSpec = field("Desired state.")
    status: ComputeQuotaStatus | None = field("Observed state, written by the operator.", default=None)
