"""Realise a VM's volumes on a host (blocking: run through HostConnection.call); each disk's source
(``disk_sources``) does its own part."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import libvirt

from vdc.controllers.disk_sources import Content, VolumePlan
from vdc.libvirt import storage
from vdc.libvirt.storage import VolumeObservation


def ensure_volumes(
    conn: libvirt.virConnect, plans: Sequence[VolumePlan], contents: Mapping[str, Content | None]
) -> dict[str, VolumeObservation]:
    """Every planned volume exists (created when missing); disk name -> volume. Growth is separate.
    ``contents``: disk name -> what its source prepared (an ISO's builder, called only when missing)."""
    return {plan.disk: plan.source.ensure(conn, plan, contents.get(plan.disk)) for plan in plans}


def grow(conn: libvirt.virConnect, plan: VolumePlan, current: VolumeObservation) -> VolumeObservation:
    """Grow a stopped VM's volume to the planned size."""
    return storage.resize_volume(conn, plan.libvirt_pool, plan.volume, plan.capacity or current.capacity_bytes)


def delete_volumes(conn: libvirt.virConnect, plans: Sequence[VolumePlan]) -> list[str]:
    """Delete the volumes whose policy says so; the names deleted."""
    return [plan.volume for plan in plans if plan.source.delete(conn, plan)]
