"""What the VirtualMachine controller watches besides VirtualMachines, and which VMs a change there
concerns (``WATCHES``; see ``vdc.cluster.watches``). Every fan-out reads the cluster view's indexes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vdc.api.host import evacuating
from vdc.api.quantity import to_bytes, to_decimal
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch
from vdc.kube.cache import Key

__all__ = ["WATCHES"]


def _unplaced(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A Host that changed (its status too: Ready, allocatable), a pool's availability: VMs that fit nowhere
    may fit now. A Host's own VMs need a look only when its connection changes, which the connection says."""
    return view.unplaced_vms()


_HOST_BOOKKEEPING = ("allocated", "reserved", "domains", "orphans", "lastSeen")
"""Host status fields that report, not decide: no placement reads them (the ledger, not ``allocated``)."""


def _may_make_room(event: ObjectEvent) -> bool:
    """Whether a Host change can let a VM that fits nowhere fit: anything but its bookkeeping, or less of
    it allocated. During a rollout a Host's status is rewritten as its domains come (counts, allocated):
    requeuing every unplaced VM at each of those writes grew as hosts x VMs."""
    if event.old is None or event.deleted:
        return True
    old_status, new_status = event.old.get("status") or {}, event.body.get("status") or {}
    if any(new < old for new, old in zip(_allocated(new_status), _allocated(old_status), strict=True)):
        return True  # less of one of them allocated

    def deciding(body: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[Any, ...]:
        meta = body.get("metadata") or {}
        kept = {k: v for k, v in status.items() if k not in _HOST_BOOKKEEPING}
        return meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"), body.get("spec"), kept

    return deciding(event.old, old_status) != deciding(event.body, new_status)


def _allocated(status: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """(CPUs, memory) allocated and (CPU, memory) reserved."""
    allocated, reserved = status.get("allocated") or {}, status.get("reserved") or {}
    try:
        return (
            float(allocated.get("cpus") or 0),
            float(to_bytes(str(allocated.get("memory") or "0"))),
            float(to_decimal(str(reserved.get("cpu") or "0"))),
            float(to_bytes(str(reserved.get("memory") or "0"))),
        )
    except (ValueError, TypeError, ArithmeticError):
        return 0.0, 0.0, 0.0, 0.0


def _unplaced_and_maintained(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """:func:`_unplaced` when the change may make room (:func:`_may_make_room`), and a Host whose
    maintenance began or ended: its VMs that stop for maintenance (evictionStrategy Shutdown) stop, or
    start again."""
    old = evacuating(event.old) if event.old is not None else False
    new = evacuating(event.body)
    extra = view.vms_on(event.key[1]) if bool(old) != bool(new) and not event.deleted else []
    return [*(view.unplaced_vms() if _may_make_room(event) else ()), *extra]


def _pool_users_and_unplaced(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A pool's spec changed (its default disk limits): its VMs apply them; any change may let a VM that
    fits nowhere fit (the pool came up on a host, got room)."""
    users = view.vms_using("StoragePool", event.key[1]) if event.changed or event.deleted else []
    return [*users, *view.unplaced_vms()]


def _unplaced_when_one_went(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A VM that went frees its room (and its quota)."""
    return view.unplaced_vms() if event.deleted else []


def _switch_users_and_unplaced(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """New addresses or hosts on a switch: its VMs may be waiting for them, unplaced VMs for hosts."""
    return [*view.vms_using("VirtualSwitch", event.key[1]), *view.unplaced_vms()]


def _appliance_users(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """VMs made from an appliance wait for it to be Ready (or say that it failed); its progress writes do not
    matter. A spec change (sharedWith) may grant or revoke other namespaces' access."""
    phase = (event.body.get("status") or {}).get("phase")
    if event.deleted or event.changed or phase in ("Ready", "Failed"):
        return sorted(view.vms_using("Appliance", event.key[1], event.key[0]))
    return []


def _namespace_vms(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """Namespace labels decide allowedNamespaces selectors: a change may grant or revoke access."""
    return view.vms_in(event.key[1]) if event.labels_changed else []


def _unplaced_in_quota_namespace(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """New limits: VMs waiting for quota may fit now."""
    return [key for key in view.unplaced_vms() if key[0] == event.key[0]] if event.changed else []


def _migrated_vm(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A migration that ended (or went) has released its VM: the VM controller takes it back."""
    phase = (event.body.get("status") or {}).get("phase")
    if not (event.deleted or phase in ("Succeeded", "Failed", "Cancelled")):
        return []
    vm = (event.body.get("spec") or {}).get("vm")
    return [(event.key[0], str(vm))] if vm else []


def _unplaced_on_cluster_change(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A ComputeCluster's spec (its HA admission control, its hosts) changed, or it went: VMs that admission
    control kept from its hosts may fit now. Its own status writes change nothing placement reads."""
    return view.unplaced_vms() if event.deleted or event.changed else []


WATCHES = (
    Watch(kind="Host", map=_unplaced_and_maintained),
    Watch(kind="VirtualMachine", map=_unplaced_when_one_went),
    Watch(kind="StoragePool", map=_pool_users_and_unplaced),
    Watch(kind="VirtualSwitch", map=_switch_users_and_unplaced),
    Watch(kind="Appliance", map=_appliance_users),
    Watch(kind="Namespace", map=_namespace_vms),
    Watch(kind="ComputeQuota", map=_unplaced_in_quota_namespace),
    Watch(kind="VirtualMachineMigration", map=_migrated_vm),
    Watch(kind="ComputeCluster", map=_unplaced_on_cluster_change),
)
