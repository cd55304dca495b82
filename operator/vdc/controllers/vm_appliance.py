"""A VM made from an Appliance (``spec.fromAppliance``): what its spec gets from the appliance (in the
deployment option it names), the property values its guest sees, and when a vApp member may start
and stop. Pure.

The appliance's hardware is written into the VM's spec once (only what the spec leaves out), so the
VM then behaves like any other and ``kubectl get vm -o yaml`` shows what it has: cpu, memory and
firmware; a disk per appliance disk, a copy-on-write overlay on the appliance's base image (or a
blank disk where the descriptor has an empty one); a NIC per appliance NIC on the switch
``networkMapping`` names for its OVF network; and, when the appliance has properties, an ``ovfEnv``
disk: the ISO transport of the OVF environment document with their values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vdc.api.appliance import ApplianceStatus, DeploymentOption, StartupEntry, VirtualSystem

OVF_ENV_DISK = "ovf-env"
_BUSES = {"ide": "sata", "sata": "sata", "scsi": "scsi", "virtio": "virtio"}
"""OVF controller -> our disk bus: IDE becomes SATA (AHCI), which q35 machines have instead."""
_NIC_MODELS = {"virtio": "virtio", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139", "pcnet": "rtl8139"}
VM_NIC_MODELS = tuple(_NIC_MODELS)
"""Adapter models a VM made from an appliance keeps (others, such as vmxnet3, become virtio)."""
_INTEGER_TYPES = {"uint8", "sint8", "uint16", "sint16", "uint32", "sint32", "uint64", "sint64", "int"}


class ApplianceWait(Exception):
    """The appliance is not ready for this VM yet (the message says what it waits for)."""


class ApplianceMismatch(ValueError):
    """The VM asks for something the appliance does not have (the message says what to change)."""


def _label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50].strip("-")
    return label or "x"


def chosen_option(status: ApplianceStatus, wanted: str | None) -> DeploymentOption | None:
    """The deployment option ``wanted`` (None: the appliance's default, when it has options)."""
    if wanted is None:
        return next((o for o in status.deployment_options if o.default), None)
    for option in status.deployment_options:
        if option.id == wanted:
            return option
    if not status.deployment_options:
        raise ApplianceMismatch(f"fromAppliance.deploymentOption {wanted!r}: the appliance has no deployment options")
    known = ", ".join(f"{o.id} ({o.label})" if o.label else o.id for o in status.deployment_options)
    raise ApplianceMismatch(f"fromAppliance.deploymentOption {wanted!r} is not in the appliance (it has: {known})")


def chosen_system(status: ApplianceStatus, wanted: str | None, option: str | None = None) -> VirtualSystem:
    """The virtual system ``wanted`` (None: the first) with the hardware of deployment option ``option``."""
    chosen = chosen_option(status, option)
    systems = chosen.virtual_systems if chosen is not None and chosen.virtual_systems else status.virtual_systems
    if not systems:
        raise ApplianceMismatch("the appliance has no virtual system")
    if wanted is None:
        return systems[0]
    for system in systems:
        if system.id == wanted:
            return system
    known = ", ".join(s.id for s in systems)
    raise ApplianceMismatch(f"fromAppliance.virtualSystem {wanted!r} is not in the appliance (it has: {known})")


def appliance_status(appliance: Mapping[str, Any] | None, name: str) -> ApplianceStatus:
    """The status of a Ready appliance; else ApplianceWait (or ApplianceMismatch when it failed)."""
    if appliance is None:
        raise ApplianceWait(f"appliance {name} does not exist")
    status = ApplianceStatus.model_validate(appliance.get("status") or {})
    if status.phase == "Failed":
        raise ApplianceMismatch(f"appliance {name} failed to import: {status.message or 'see its status'}")
    if status.phase != "Ready":
        raise ApplianceWait(f"appliance {name} is {status.phase or 'Pending'}: {status.message or 'not imported yet'}")
    return status


def property_values(status: ApplianceStatus, given: Mapping[str, str], option: str | None = None) -> dict[str, str]:
    """Every property's value: the VM's where given (only user-configurable ones may be), else the
    default of deployment option ``option`` (None: the appliance's default option)."""
    known = {p.key: p for p in status.properties}
    for key, value in given.items():
        prop = known.get(key)
        if prop is None:
            raise ApplianceMismatch(f"fromAppliance.properties: the appliance has no property {key!r}")
        if not prop.user_configurable:
            raise ApplianceMismatch(f"fromAppliance.properties: property {key!r} is not user-configurable")
        if prop.type == "boolean" and value.lower() not in ("true", "false"):
            raise ApplianceMismatch(f"fromAppliance.properties: {key!r} is a boolean, not {value!r}")
        if prop.type in _INTEGER_TYPES and not re.fullmatch(r"-?[0-9]+", value):
            raise ApplianceMismatch(f"fromAppliance.properties: {key!r} is an integer ({prop.type}), not {value!r}")
        if prop.type.startswith("uint") and value.startswith("-"):
            raise ApplianceMismatch(f"fromAppliance.properties: {key!r} is unsigned ({prop.type}), not {value!r}")
    values = {p.key: p.default for p in status.properties if p.default is not None}
    chosen = chosen_option(status, option)
    if chosen is not None:
        values.update(chosen.property_defaults)
    values.update(given)
    return values


def disk_name(disk_id: str) -> str:
    return f"disk-{_label(disk_id)}"


def spec_defaults(spec: Mapping[str, Any], status: ApplianceStatus, pool: str) -> dict[str, Any]:
    """What to add to the VM's spec (a merge patch of ``spec``; empty: nothing is missing)."""
    source = spec["fromAppliance"]
    option = source.get("deploymentOption")
    system = chosen_system(status, source.get("virtualSystem"), option)
    property_values(status, source.get("properties") or {}, option)  # refuse bad values before anything is made
    patch: dict[str, Any] = {}
    if "cpu" not in spec and system.cpus:
        patch["cpu"] = {"count": system.cpus}
    if "memory" not in spec:
        if system.memory is None:
            raise ApplianceMismatch(f"virtual system {system.id} says no memory: set spec.memory")
        patch["memory"] = {"size": str(system.memory)}
    if "firmware" not in spec and system.firmware:
        patch["firmware"] = system.firmware
    disks = list(spec.get("disks") or [])
    names = {d.get("name") for d in disks}
    added = []
    for index, disk in enumerate(system.disks):
        name = disk_name(disk.id)
        if name in names:
            continue
        entry: dict[str, Any] = {"name": name, "bus": _BUSES.get(disk.bus or "", "virtio")}
        if disk.volume:
            ref = {"name": source["name"], "disk": disk.id}
            if source.get("namespace"):  # an appliance another namespace shares
                ref["namespace"] = source["namespace"]
            entry["source"] = {"clone": {"pool": pool, "appliance": ref}}
        elif disk.capacity is not None:
            entry["source"] = {"blank": {"pool": pool, "size": str(disk.capacity)}}
        else:
            continue
        if index == 0 and not (spec.get("boot") or {}).get("kernel") and not any(d.get("bootOrder") for d in disks):
            entry["bootOrder"] = 1
        added.append(entry)
    if (
        status.properties
        and OVF_ENV_DISK not in names
        and not any((d.get("source") or {}).get("ovfEnv") for d in disks)
    ):
        added.append({"name": OVF_ENV_DISK, "source": {"ovfEnv": {"pool": pool}}, "bus": "sata"})
    if added:
        patch["disks"] = disks + added
    if not spec.get("interfaces") and system.nics:
        mapping = source.get("networkMapping") or {}
        nics = []
        for index, nic in enumerate(system.nics):
            switch = mapping.get(nic.network)
            if switch is None:
                raise ApplianceMismatch(
                    f"map OVF network {nic.network!r} to a VirtualSwitch in fromAppliance.networkMapping"
                )
            nics.append({"name": f"nic{index}", "switch": switch, "model": _NIC_MODELS.get(nic.model or "", "virtio")})
        patch["interfaces"] = nics
    return patch


def base_volumes(status: ApplianceStatus) -> dict[str | None, str]:
    """Disk id -> base volume; None -> the first disk's (``clone.appliance.disk`` left out)."""
    out: dict[str | None, str] = {}
    every_option = [s for o in status.deployment_options for s in o.virtual_systems]
    for system in [*status.virtual_systems, *every_option]:  # a disk may be in one option only
        for disk in system.disks:
            if disk.volume:
                out.setdefault(None, disk.volume)
                out.setdefault(disk.id, disk.volume)
    return out


@dataclass(frozen=True)
class Sibling:
    """Another VM made from the same appliance."""

    virtual_system: str | None
    phase: str | None
    boot_time: str | None
    """RFC 3339, when it last started."""


def startup_wait(
    startup: Iterable[StartupEntry], system: str, siblings: Iterable[Sibling], seconds_since: Mapping[str, float]
) -> str | None:
    """Why this vApp member may not start yet (None: it may): every member of a lower StartupSection
    order must run, and have run for its startDelay. ``seconds_since`` maps a boot time to its age."""
    order = {e.id: e for e in startup}
    mine = order.get(system)
    if mine is None:
        return None
    for sibling in siblings:
        entry = order.get(sibling.virtual_system or "")
        if entry is None or entry.order >= mine.order:
            continue
        if sibling.phase != "Running" or sibling.boot_time is None:
            return f"waiting for {entry.id} (start order {entry.order}) to run"
        age = seconds_since.get(sibling.boot_time, 0.0)
        if age < entry.start_delay:
            return f"waiting {int(entry.start_delay - age)}s more after {entry.id} started (its startDelay)"
    return None


# --- stop order (StartupSection stopAction / stopDelay) ---------------------------------------------


@dataclass(frozen=True)
class StopSibling:
    """Another VM made from the same appliance in the same namespace, as the stop order sees it."""

    name: str
    virtual_system: str | None
    stopping: bool
    """Asked to stop as well (runStrategy Halted, or being deleted): only the message depends on it."""
    stopped: bool
    """Its guest is off (or never ran); a VM that is gone is not a sibling at all."""


@dataclass(frozen=True)
class StopBehaviour:
    """How a vApp member stops (its StartupSection stopAction and stopDelay)."""

    power_off: bool
    """stopAction powerOff: forced off at once, the guest is not asked to shut down."""
    grace_seconds: int | None
    """How long the guest may take to shut down (ACPI) before it is forced off; None: the VM's own
    ``terminationGracePeriodSeconds`` (stopAction guestShutdown with stopDelay 0, or none)."""


def stop_wait(startup: Iterable[StartupEntry], system: str, siblings: Iterable[StopSibling]) -> str | None:
    """Why this vApp member may not stop yet (None: it may). Members stop in reverse start order: every
    sibling of a higher StartupSection order must have stopped (or be gone) first, as ``startup_wait``
    has every lower one run first. A sibling meant to keep running holds it up too (the message says
    to stop it): two members stopped or deleted at once reach the operator one after the other, and
    the first must not go before it sees the second."""
    order = {e.id: e for e in startup}
    mine = order.get(system)
    if mine is None:
        return None
    blocking = sorted(
        (entry.order, sibling.name, entry.id, sibling.stopping)
        for sibling in siblings
        if not sibling.stopped
        and (entry := order.get(sibling.virtual_system or "")) is not None
        and entry.order > mine.order
    )
    if not blocking:
        return None
    later, name, later_id, stopping = blocking[0]
    more = f" and {len(blocking) - 1} more" if len(blocking) > 1 else ""
    hint = "" if stopping else f"; it is not being stopped: stop or delete {name} too"
    return (
        f"waiting for VM {name} ({later_id}, start order {later}){more} to stop first: "
        f"vApp members stop in reverse start order ({system} has order {mine.order}){hint}"
    )


def stop_behaviour(startup: Iterable[StartupEntry], system: str) -> StopBehaviour:
    """powerOff: forced off at once; guestShutdown: an ACPI shutdown, forced off after stopDelay seconds
    (0: the VM's own grace period); none (or not in the StartupSection): the VM's normal stop."""
    entry = next((e for e in startup if e.id == system), None)
    if entry is None or entry.stop_action == "none":
        return StopBehaviour(power_off=False, grace_seconds=None)
    if entry.stop_action == "powerOff":
        return StopBehaviour(power_off=True, grace_seconds=0)
    return StopBehaviour(power_off=False, grace_seconds=entry.stop_delay or None)
