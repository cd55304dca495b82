"""Realise a VM's volumes on its host (blocking: run through HostConnection.call)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import libvirt

from vdc.controllers.vm_disks import DiskSpecError, PoolMissing, VolumePlan
from vdc.libvirt import storage
from vdc.libvirt.errors import InvalidState, NotFound
from vdc.libvirt.storage import VolumeObservation
from vdc.libvirt.storage_xml import BackingStoreConfig, VolumeConfig


def ensure_volumes(
    conn: libvirt.virConnect, plans: Sequence[VolumePlan], seed: bytes | None,
    ovf_env: Callable[[], bytes] | None = None,
) -> dict[str, VolumeObservation]:  # fmt: skip
    """Every planned volume exists (created when missing); disk name -> volume. Growth is separate.
    ``ovf_env`` builds the OVF environment ISO: called only when that volume is missing."""

    # Per-disk lookups, not a listing of the whole pool (which may hold thousands of volumes). Only a
    # volume we did not make (an existing volume, a clone's base) may need a pool refresh to be seen.
    def lookup(plan: VolumePlan, name: str, *, refresh: bool = False) -> VolumeObservation | None:
        try:
            return storage.observe_volume(conn, plan.libvirt_pool, name, refresh=refresh)
        except (NotFound, InvalidState):
            raise PoolMissing(f"disk {plan.disk}: pool {plan.pool} is not running on this host") from None

    def find(plan: VolumePlan, name: str) -> VolumeObservation | None:
        return lookup(plan, name) or lookup(plan, name, refresh=True)

    out: dict[str, VolumeObservation] = {}
    for plan in plans:
        pool = plan.libvirt_pool
        vol = lookup(plan, plan.volume)
        if plan.kind == "volume":
            vol = vol or lookup(plan, plan.volume, refresh=True)
            if vol is None:
                raise DiskSpecError(f"disk {plan.disk}: volume {plan.volume} not found in pool {plan.pool}")
        elif plan.kind == "blank" and vol is None:
            vol = storage.create_volume(conn, pool, VolumeConfig(plan.volume, plan.capacity or 0, format="qcow2"))
        elif plan.kind == "clone" and vol is None:
            base = find(plan, plan.base_volume or "")
            if base is None:
                raise DiskSpecError(f"disk {plan.disk}: base volume {plan.base_volume} not found in pool {plan.pool}")
            backing_format: Literal["qcow2", "raw"] = "qcow2" if base.format == "qcow2" else "raw"
            capacity = max(plan.capacity or 0, base.capacity_bytes)
            vol = storage.create_volume(
                conn,
                pool,
                VolumeConfig(
                    plan.volume, capacity, format="qcow2", backing=BackingStoreConfig(base.path, backing_format)
                ),
            )
        elif plan.kind == "cloudInit" and vol is None:
            if seed is None:
                raise DiskSpecError(f"disk {plan.disk}: spec.cloudInit is missing")
            vol = storage.upload_volume(conn, pool, plan.volume, seed, "iso")
        elif plan.kind == "ovfEnv" and vol is None:
            if ovf_env is None:
                raise DiskSpecError(f"disk {plan.disk}: an ovfEnv disk needs spec.fromAppliance")
            vol = storage.upload_volume(conn, pool, plan.volume, ovf_env(), "iso")
        assert vol is not None
        out[plan.disk] = vol
    return out


def grow(conn: libvirt.virConnect, plan: VolumePlan, current: VolumeObservation) -> VolumeObservation:
    """Grow a stopped VM's volume to the planned size."""
    return storage.resize_volume(conn, plan.libvirt_pool, plan.volume, plan.capacity or current.capacity_bytes)


def delete_volumes(conn: libvirt.virConnect, plans: Sequence[VolumePlan]) -> list[str]:
    """Delete the volumes whose policy says so; the names deleted."""
    deleted = []
    for plan in plans:
        pool_here = plan.delete_with_vm and storage.observe_pool(conn, plan.libvirt_pool) is not None
        if pool_here and storage.delete_volume(conn, plan.libvirt_pool, plan.volume):
            deleted.append(plan.volume)
    return deleted
