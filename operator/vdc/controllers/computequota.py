"""ComputeQuota: report what its namespace's VMs take. Enforcement is the VM controller's, at placement."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vdc.api.computequota import ComputeQuota, ComputeQuotaStatus
from vdc.api.conditions import set_kstatus
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch
from vdc.kube.cache import Key, ObjectCache
from vdc.kube.client import KubeWriter
from vdc.tenancy.quota import LABELS, hard_limits
from vdc.tenancy.view import HostOf, TenancyView


class QuotaController:
    def __init__(self, quotas: ObjectCache, tenancy: TenancyView, host_of: HostOf, writer: KubeWriter) -> None:
        self.quotas = quotas
        self.tenancy = tenancy
        self.host_of = host_of
        self.writer = writer

    async def reconcile(self, key: Key) -> float | None:
        body = self.quotas.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        generation = body["metadata"].get("generation")
        try:
            old = ComputeQuotaStatus.model_validate(body.get("status") or {})
        except ValidationError:
            old = ComputeQuotaStatus()  # unreadable (an older schema): written afresh
        try:
            quota = ComputeQuota.model_validate({**body, "status": None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            message = f"invalid spec: {problems}"
            conds = set_kstatus(old.conditions, "Failed", "InvalidSpec", message, observed_generation=generation)
            await self._write(body, ComputeQuotaStatus(observed_generation=generation, conditions=conds))
            return None
        used = self.tenancy.usage(key[0], self.host_of)
        over = [
            LABELS[name] for name, limit in hard_limits(quota.spec.hard).items() if getattr(used, name) > limit
        ]  # e.g. after a limit was lowered below what runs: nothing is stopped, nothing new is placed
        message = f"over the limit for {', '.join(over)}: no new VM is placed" if over else "within limits"
        conds = set_kstatus(old.conditions, "Current", "Counted", message, observed_generation=generation)
        status = ComputeQuotaStatus(
            observed_generation=generation, conditions=conds, hard=quota.spec.hard, used=used.to_amounts()
        )
        await self._write(body, status)
        return None

    async def _write(self, body: dict[str, Any], status: ComputeQuotaStatus) -> None:
        wire = status.to_wire()
        if wire != (body.get("status") or {}) and (
            sent := await self.writer.patch_status(ComputeQuota.KIND, body, wire)
        ):
            meta = body["metadata"]
            self.quotas.note_status((meta["namespace"], meta["name"]), sent)


def usage_may_change(event: ObjectEvent) -> bool:
    """Whether a VM event may change what its namespace's quotas count: it went, its spec changed, or its
    status names another host or other disks (our own status writes otherwise count nothing new)."""
    if event.deleted or event.changed or event.old is None:
        return True
    new, old = event.body.get("status") or {}, event.old.get("status") or {}
    return bool(new.get("host") != old.get("host") or new.get("disks") != old.get("disks"))


def _quotas_of_vm(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """The ComputeQuotas of the VM's namespace count again (deduplicated while queued: a burst, few counts)."""
    if not usage_may_change(event):
        return []
    namespace = event.key[0]
    return [(namespace, b["metadata"]["name"]) for b in view.quotas.in_namespace(namespace)]


WATCHES = (Watch(kind="VirtualMachine", map=_quotas_of_vm),)
