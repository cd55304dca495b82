"""What a VirtualMachine's spec may use, for its namespace. Pure."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vdc.api.common import AllowedNamespaces
from vdc.api.storagepool import StoragePoolSpec
from vdc.api.virtualmachine import VirtualMachine
from vdc.tenancy.access import (
    ApplianceGrant,
    Tenant,
    VolumeAccess,
    VolumeUse,
    appliance_refusal,
    is_access,
    pool_refusal,
    switch_refusal,
    volume_access,
)


@dataclass(frozen=True)
class Infrastructure:
    """What the cluster offers, as tenancy sees it. Objects missing here are not refused (the VM waits
    for them elsewhere); only what exists and is not granted is."""

    pools: Mapping[str, StoragePoolSpec] = field(default_factory=dict)
    switches: Mapping[str, AllowedNamespaces] = field(default_factory=dict)
    """Switch name -> its allowedNamespaces."""
    appliances: Mapping[tuple[str, str], ApplianceGrant] = field(default_factory=dict)
    adopted_by: Callable[[str, str], str | None] = lambda pool, volume: None
    """(pool, volume) -> namespace of another VM that adopted that unowned volume (asked only for
    volumes nobody owns, published or built: it scans the VMs)."""


@dataclass(frozen=True)
class VmAccess:
    refusals: tuple[str, ...]
    """Everything refused, each message naming the field; empty when the VM may proceed."""
    volumes: Mapping[str, VolumeAccess]
    """Disk name -> why its volume may be used."""


def check_vm(vm: VirtualMachine, tenant: Tenant, infra: Infrastructure) -> VmAccess:
    refusals: list[str] = []
    volumes: dict[str, VolumeAccess] = {}

    def pool_ok(where: str, pool: str) -> bool:
        spec = infra.pools.get(pool)
        refused = pool_refusal(pool, spec, tenant) if spec is not None else None
        if refused:
            refusals.append(f"{where}: {refused}")
        return refused is None

    def appliance_ok(where: str, name: str, namespace: str | None) -> bool:
        ns = namespace or tenant.namespace
        if ns == tenant.namespace:
            return True
        grant = infra.appliances.get((ns, name))
        # A missing appliance of another namespace reads as not shared: no tenant learns what exists elsewhere.
        refused = appliance_refusal(grant, tenant) if grant is not None else None
        if grant is None or refused:
            not_shared = f"Appliance {ns}/{name} is not shared with namespace {tenant.namespace}"
            refusals.append(f"{where}: {refused or not_shared}")
            return False
        return True

    def existing(where: str, disk: str, use: VolumeUse) -> None:
        spec = infra.pools.get(use.pool)
        if spec is None:
            return
        got = volume_access(
            use, spec, tenant, infra.appliances, functools.partial(infra.adopted_by, use.pool, use.volume)
        )
        if is_access(got):
            volumes[disk] = got
        else:
            refusals.append(f"{where}: {got}")

    if vm.spec.from_appliance is not None:
        src = vm.spec.from_appliance
        appliance_ok("spec.fromAppliance", src.name, src.namespace)
    for disk in vm.spec.disks:
        where = f"disk {disk.name}"
        source = disk.source
        if source.blank is not None:
            pool_ok(where, source.blank.pool)
            volumes[disk.name] = "Owned"
        elif source.cloud_init is not None:
            pool_ok(where, source.cloud_init.pool)
            volumes[disk.name] = "Owned"
        elif source.ovf_env is not None:
            pool_ok(where, source.ovf_env.pool)
            volumes[disk.name] = "Owned"
        elif source.clone is not None:
            clone = source.clone
            pool_ok(where, clone.pool)
            if clone.appliance is not None:
                appliance_ok(where, clone.appliance.name, clone.appliance.namespace)
            elif clone.base_volume is not None:
                existing(f"{where} (clone.baseVolume)", disk.name, VolumeUse(clone.pool, clone.base_volume, "clone"))
            volumes[disk.name] = "Owned"  # the overlay is the VM's own; its base was checked above
        elif source.volume is not None:
            use = VolumeUse(source.volume.pool, source.volume.name, "attach-read-only" if disk.read_only else "attach")
            existing(where, disk.name, use)
    for nic in vm.spec.interfaces:
        allowed = infra.switches.get(nic.switch)
        refused = switch_refusal(nic.switch, allowed, tenant) if allowed is not None else None
        if refused:
            refusals.append(f"interface {nic.name}: {refused}")
    return VmAccess(tuple(refusals), volumes)
