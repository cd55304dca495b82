"""The VM plan: from (run strategy, desired domain, observed domain) to actions and a phase. Pure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from vdc.api.virtualmachine import RESTART_ANNOTATION, Phase, RunStrategy, restart_pending
from vdc.libvirt.domain_xml import CpuTuneConfig, DiskConfig, DomainConfig, IoTuneConfig, MemTuneConfig
from vdc.libvirt.domains import DEFAULT_CPU_SHARES, MEMORY_UNLIMITED_KIB, DomainObservation, PausedReason

Action = Literal[
    "define",
    "start",
    "shutdown",
    "destroy",
    "set-memory",
    "set-link-state",
    "set-bandwidth",
    "set-cpu-tune",
    "set-memory-tune",
    "set-io-tune",
]
VmMonitoring = Literal["Disabled", "Reset"]

GUEST_RESET = "GuestReset"
"""Reason (and Event) of a guest that stopped making progress and that VM monitoring resets."""
GUEST_STUCK = "GuestStuck"
"""Reason (Stalled) of a guest that stopped making progress and that nothing resets."""
STUCK: dict[PausedReason, str] = {
    "ioerror": "it is paused on a disk I/O error",
    "watchdog": "its watchdog fired",
    "crashed": "it crashed (guest panic)",
}
"""The reasons a paused domain has stopped making progress, in words."""
RESETTING: tuple[RunStrategy, ...] = ("Always", "RerunOnFailure")
"""The run strategies under which VM monitoring resets a stuck guest (they want it running)."""


@dataclass(frozen=True)
class VmPlan:
    actions: tuple[Action, ...]
    phase: Phase
    ready: bool
    reason: str
    message: str
    restart_required: tuple[str, ...] = ()
    failed: bool = False
    """Not ready and nothing under way: a failure to show (Stalled), e.g. a guest stuck and not reset."""


MACHINE_EXPANSIONS = {"q35": "pc-q35-", "pc": "pc-i440fx-"}


def comparable(config: DomainConfig, desired: DomainConfig) -> DomainConfig:
    """``config`` with what libvirt fills in on its own (machine version, emulator, generation) taken
    from ``desired``, so that only real differences remain (one copy of ``config``: it is read back for
    every VM reconciled)."""
    os = config.os
    # libvirt expands "q35" to the versioned "pc-q35-7.2" and "pc" to "pc-i440fx-7.2".
    wanted = desired.os.machine
    if wanted and os.machine and os.machine.startswith(MACHINE_EXPANSIONS.get(wanted, f"{wanted}-")):
        os = dataclasses.replace(os, machine=wanted)
    # Without any boot device or disk boot order libvirt adds <boot dev='hd'/>.
    if not desired.os.boot_devices and os.boot_devices == ("hd",):
        os = dataclasses.replace(os, boot_devices=())
    changes: dict[str, Any] = {
        "os": os,
        "emulator": desired.emulator if desired.emulator is None else config.emulator,
        "owner": dataclasses.replace(config.owner, generation=desired.owner.generation),
    }
    # A running domain shows the CPU model libvirt/QEMU chose; only topology and named models are ours.
    if desired.cpu.mode in ("default", "host-model") and config.cpu != desired.cpu:
        changes["cpu"] = dataclasses.replace(
            desired.cpu, sockets=config.cpu.sockets, cores=config.cpu.cores, threads=config.cpu.threads
        )
    # A running domain names its NICs' host devices (vnetN) unless we did.
    if any(want.target_dev is None for want in desired.interfaces[: len(config.interfaces)]):
        changes["interfaces"] = (
            tuple(
                dataclasses.replace(have, target_dev=want.target_dev) if want.target_dev is None else have
                for have, want in zip(config.interfaces, desired.interfaces, strict=False)
            )
            + config.interfaces[len(desired.interfaces) :]
        )
    # Tunables a running domain shows as the host's defaults once they were reset live: equal in effect.
    if config.cputune != desired.cputune and cpu_effect(config.cputune) == cpu_effect(desired.cputune):
        changes["cputune"] = desired.cputune
    if config.memtune != desired.memtune and memory_effect(config.memtune) == memory_effect(desired.memtune):
        changes["memtune"] = desired.memtune
    if len(config.disks) == len(desired.disks) and any(
        have.iotune != want.iotune for have, want in zip(config.disks, desired.disks, strict=True)
    ):
        changes["disks"] = tuple(
            dataclasses.replace(have, iotune=want.iotune)
            if have.iotune != want.iotune and io_effect(have.iotune) == io_effect(want.iotune)
            else have
            for have, want in zip(config.disks, desired.disks, strict=True)
        )
    return dataclasses.replace(config, **changes)


def cpu_effect(tune: CpuTuneConfig | None) -> tuple[int, int | None, int | None]:
    """(shares, the whole domain's quota per period, each vCPU's): what a ``<cputune>`` enforces, None
    for unlimited, so that a reset to the defaults compares equal to no ``<cputune>``."""
    if tune is None:
        return DEFAULT_CPU_SHARES, None, None

    def rate(period: int | None, quota: int | None) -> int | None:
        return None if quota is None or quota < 0 else quota * 1_000_000 // (period or 100_000)

    return tune.shares or DEFAULT_CPU_SHARES, rate(tune.global_period, tune.global_quota), rate(tune.period, tune.quota)


def memory_effect(tune: MemTuneConfig | None) -> tuple[int | None, int | None]:
    """(hard limit, soft limit) in KiB, None for unlimited."""
    if tune is None:
        return None, None
    return tuple(None if v is None or v >= MEMORY_UNLIMITED_KIB else v for v in (tune.hard_limit, tune.soft_limit))  # type: ignore[return-value]


def io_effect(tune: IoTuneConfig | None) -> dict[str, int]:
    """The limits an ``<iotune>`` enforces: QEMU's burst length defaults to 1 s where a burst is set."""
    if tune is None:
        return {}
    values = {k: v for k, v in dataclasses.asdict(tune).items() if v}
    for key in [k for k in values if k.endswith("_max")]:
        values.setdefault(f"{key}_length", 1)
    return values


def only_iotune_differs(current: tuple[DiskConfig, ...], desired: tuple[DiskConfig, ...]) -> bool:
    """The disks are the same but for some I/O limits (set on the running domain, no restart)."""
    if len(current) != len(desired) or current == desired:
        return False
    return all(dataclasses.replace(h, iotune=w.iotune) == w for h, w in zip(current, desired, strict=True))


def differing_fields(current: DomainConfig, desired: DomainConfig) -> tuple[str, ...]:
    current = comparable(current, desired)
    return tuple(
        f.name for f in dataclasses.fields(DomainConfig) if getattr(current, f.name) != getattr(desired, f.name)
    )


LIVE_FIELDS = {"current_memory_kib"}
"""Fields changed on the running domain without a restart (besides the tunables of :data:`TUNE_ACTIONS`
and the NICs' and disks' live settings)."""
TUNE_ACTIONS: dict[str, Action] = {"cputune": "set-cpu-tune", "memtune": "set-memory-tune"}
"""Tunables set on the running domain (libvirt's scheduler and memory parameters), never a restart."""
DEFINITION_ONLY_FIELDS = {"owner"}
"""Fields only the definition needs: a redefine is enough, a running domain never restarts for them.
The owner's ``host_file_dirs`` (the Host's allowed directories) are read by the host's qemu hook
when the domain next starts; the rest of the owner never changes for a domain."""


def nic_live_changes(current: DomainConfig, desired: DomainConfig) -> tuple[Action, ...]:
    """What sets the NICs as desired on the running domain: their link states, their bandwidth, both, or
    () when anything else of them differs too (a restart) or nothing does."""
    have = comparable(current, desired).interfaces
    if len(have) != len(desired.interfaces) or have == desired.interfaces:
        return ()
    pairs = list(zip(have, desired.interfaces, strict=True))
    if not all(dataclasses.replace(h, link_state=w.link_state, bandwidth=w.bandwidth) == w for h, w in pairs):
        return ()
    actions: list[Action] = []
    if any(h.link_state != w.link_state for h, w in pairs):
        actions.append("set-link-state")
    if any(h.bandwidth != w.bandwidth for h, w in pairs):
        actions.append("set-bandwidth")
    return tuple(actions)


def restart_requested(body: dict[str, Any]) -> bool:
    """A VM body whose restart annotation is newer than its last boot (a metadata change: the generation
    stays, so this is how an event that is otherwise our own status write coming back still counts)."""
    annotations = body["metadata"].get("annotations") or {}
    return restart_pending(annotations.get(RESTART_ANNOTATION), (body.get("status") or {}).get("bootTime"))


def plan_vm(
    strategy: RunStrategy,
    desired: DomainConfig,
    observed: DomainObservation | None,
    *,
    booted_before: bool,
    shutdown_elapsed: float | None,
    grace_seconds: int,
    restart_requested: bool = False,
    vm_monitoring: VmMonitoring = "Disabled",
) -> VmPlan:
    """What to do next. ``shutdown_elapsed``: seconds since we asked the guest to shut down (None: not asked).

    A guest that stopped making progress (paused on an I/O error, by its watchdog, or after a panic; or a
    crashed domain) under a run strategy of :data:`RESETTING` is reset (destroyed, started) when
    ``vm_monitoring`` is Reset; a paused one is otherwise left as it is and reported (GuestStuck).

    ``restart_requested`` (see :func:`restart_pending`): a running guest is asked to shut down, forced off
    after the grace period, then started; a guest that is off is started (whatever the run strategy but
    Halted, which ignores the request)."""
    if observed is None:
        if strategy in ("Halted", "Manual") or (strategy == "Once" and booted_before):
            return VmPlan(("define",), "Stopped", True, "Defined", "domain defined; the run strategy keeps it off")
        return VmPlan(("define", "start"), "Starting", False, "Starting", "defining and starting the domain")

    actions: list[Action] = []
    if observed.defined is None or differing_fields(observed.defined, desired):
        actions.append("define")
    restart_required: tuple[str, ...] = ()
    if observed.state in ("running", "paused") and observed.live is not None:
        live_diff = differing_fields(observed.live, desired)
        if set(live_diff) & LIVE_FIELDS and desired.current_memory_kib <= observed.live.memory_kib:
            actions.append("set-memory")
        nic_actions = nic_live_changes(observed.live, desired) if "interfaces" in live_diff else ()
        if nic_actions:
            actions.extend(nic_actions)
            live_diff = tuple(f for f in live_diff if f != "interfaces")
        if "disks" in live_diff and only_iotune_differs(comparable(observed.live, desired).disks, desired.disks):
            actions.append("set-io-tune")
            live_diff = tuple(f for f in live_diff if f != "disks")
        actions.extend(TUNE_ACTIONS[f] for f in live_diff if f in TUNE_ACTIONS)
        live_diff = tuple(f for f in live_diff if f not in TUNE_ACTIONS)
        restart_required = tuple(
            f
            for f in live_diff
            if f not in DEFINITION_ONLY_FIELDS
            and (f not in LIVE_FIELDS or desired.current_memory_kib > observed.live.memory_kib)
        )

    on = observed.state in ("running", "paused")
    if strategy == "Halted":
        if not on and observed.state != "crashed":
            return VmPlan(tuple(actions), "Stopped", True, "Stopped", "stopped, as runStrategy Halted asks")
        if observed.state == "crashed" or (shutdown_elapsed is not None and shutdown_elapsed >= grace_seconds):
            return VmPlan((*actions, "destroy"), "Stopping", False, "Stopping", "forcing the domain off")
        if shutdown_elapsed is None:
            return VmPlan((*actions, "shutdown"), "Stopping", False, "Stopping", "asking the guest to shut down")
        return VmPlan(
            tuple(actions),
            "Stopping",
            False,
            "Stopping",
            f"waiting for the guest to shut down ({int(shutdown_elapsed)}s of {grace_seconds}s)",
        )

    if restart_requested:
        if on and shutdown_elapsed is None:
            return VmPlan(
                (*actions, "shutdown"),
                "Stopping",
                False,
                "Restarting",
                "restart requested: asking the guest to shut down",
            )
        if on and shutdown_elapsed is not None and shutdown_elapsed < grace_seconds:
            return VmPlan(
                tuple(actions),
                "Stopping",
                False,
                "Restarting",
                f"restart requested: waiting for the guest to shut down ({int(shutdown_elapsed)}s of {grace_seconds}s)",
            )
        off: tuple[Action, ...] = ("destroy",) if on or observed.state == "crashed" else ()
        why = "forcing the domain off and starting it again" if on else "starting the domain again"
        return VmPlan((*actions, *off, "start"), "Starting", False, "Restarting", f"restart requested: {why}")

    if strategy == "Manual":
        phase: Phase = "Running" if on else "Stopped"
        return VmPlan(
            tuple(actions),
            phase,
            True,
            phase,
            "runStrategy Manual: the operator neither starts nor stops it",
            restart_required,
        )

    if strategy == "Once" and booted_before and observed.state == "crashed":
        return VmPlan(
            (*actions, "destroy"), "Stopping", False, "Stopping", "the guest crashed; runStrategy Once keeps it off"
        )
    stays_off = (strategy == "RerunOnFailure" and observed.state == "shutoff" and observed.cause == "guest") or (
        strategy == "Once" and booted_before
    )
    if observed.state == "paused" and observed.paused_reason in STUCK:
        why = STUCK[observed.paused_reason]
        if strategy in RESETTING and vm_monitoring == "Reset":
            return VmPlan(
                (*actions, "destroy", "start"),
                "Starting",
                False,
                GUEST_RESET,
                f"the guest stopped making progress ({why}): reset by VM monitoring",
            )
        instead = (
            "spec.availability.vmMonitoring: Reset would reset it"
            if strategy in RESETTING
            else f"runStrategy {strategy} does not reset it"
        )
        return VmPlan(
            tuple(actions),
            "Failed",
            False,
            GUEST_STUCK,
            f"the guest stopped making progress ({why}) and is left paused; {instead}",
            restart_required,
            failed=True,
        )
    if on:
        return VmPlan(tuple(actions), "Running", True, "Running", "the domain is running", restart_required)
    if stays_off and observed.state == "shutoff":
        return VmPlan(
            tuple(actions), "Stopped", True, "Stopped", f"the guest stopped and runStrategy {strategy} keeps it off"
        )
    prefix: tuple[Action, ...] = ("destroy",) if observed.state == "crashed" else ()
    if observed.state == "crashed" and strategy in RESETTING and vm_monitoring == "Reset":
        message = "the guest stopped making progress (it crashed): reset by VM monitoring"
        return VmPlan((*actions, *prefix, "start"), "Starting", False, GUEST_RESET, message)
    return VmPlan((*actions, *prefix, "start"), "Starting", False, "Starting", "starting the domain")
