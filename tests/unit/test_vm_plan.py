"""The VM plan (``vm_plan.plan_vm``): run strategy x observed domain -> actions, phase, Ready.

Run strategies follow KubeVirt: Always restarts anything that is off; RerunOnFailure restarts unless
the guest shut itself down; Halted stops (graceful shutdown first, destroy after the grace period);
Manual never starts or stops; Once runs until it has stopped once. A VM that the spec says is
stopped and is stopped is Ready.

``comparable``/``differing_fields`` must ignore what libvirt fills in on its own (versioned machine,
the CPU model chosen for mode default/host-model, ``<boot dev='hd'/>``, emulator path, the owner's
generation) and report every real change.
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdc.api.virtualmachine import RunStrategy, restart_pending
from vdc.controllers.vm_plan import (
    GUEST_RESET,
    GUEST_STUCK,
    LIVE_FIELDS,
    STUCK,
    VmMonitoring,
    VmPlan,
    comparable,
    differing_fields,
    plan_vm,
)
from vdc.libvirt.domain_xml import (
    BandwidthConfig,
    BandwidthLimitConfig,
    CpuConfig,
    CpuMode,
    CpuTuneConfig,
    DiskConfig,
    DomainConfig,
    GraphicsConfig,
    InterfaceConfig,
    IoTuneConfig,
    MemTuneConfig,
    OsConfig,
    OwnerMetadata,
    SerialConsoleConfig,
)
from vdc.libvirt.domains import MEMORY_UNLIMITED_KIB, DomainObservation, PausedReason, ShutoffCause

UID = "0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11"
GIB_KIB = 1024 * 1024
GRACE = 60
STRATEGIES: tuple[RunStrategy, ...] = get_args(RunStrategy)
CAUSES: tuple[ShutoffCause, ...] = get_args(ShutoffCause)

DESIRED = DomainConfig(
    name="team-a_web",
    uuid=UID,
    owner=OwnerMetadata(namespace="team-a", name="web", uid=UID, generation=3),
    memory_kib=4 * GIB_KIB,
    current_memory_kib=2 * GIB_KIB,
    vcpus=2,
    domain_type="qemu",
    os=OsConfig(kernel="/var/lib/vdc/boot/vmlinuz", initrd="/var/lib/vdc/boot/initrd.img", cmdline="console=ttyS0"),
    serial=SerialConsoleConfig(log_file="/var/log/libvirt/qemu/team-a_web.console.log"),
)


def as_libvirt_returns_it(config: DomainConfig, *, generation: int | None = 1) -> DomainConfig:
    """``config`` as the QEMU driver gives it back: versioned machine, the CPU it picked for mode
    default/host-model, ``<boot dev='hd'/>``, its emulator, and the generation of an earlier define."""
    os = config.os
    if os.machine in ("q35", "pc"):
        os = dataclasses.replace(os, machine={"q35": "pc-q35-7.2", "pc": "pc-i440fx-7.2"}[os.machine])
    if not os.boot_devices:
        os = dataclasses.replace(os, boot_devices=("hd",))
    cpu = config.cpu
    if cpu.mode in ("default", "host-model"):
        cpu = dataclasses.replace(cpu, mode="custom", model="qemu64")
    return dataclasses.replace(
        config,
        os=os,
        cpu=cpu,
        emulator=config.emulator or "/usr/bin/qemu-system-x86_64",
        owner=dataclasses.replace(config.owner, generation=generation),
    )


RETURNED = as_libvirt_returns_it(DESIRED)


def observation(state: str, cause: ShutoffCause = "other", config: DomainConfig = RETURNED) -> DomainObservation:
    """A domain whose persistent (and, when on, live) definition is ``config``."""
    on = state in ("running", "paused")
    return DomainObservation(
        state=state,  # type: ignore[arg-type]
        cause=cause if state == "shutoff" else "other",
        defined=config,
        live=config if on else None,
    )


def plan(
    strategy: RunStrategy,
    observed: DomainObservation | None,
    *,
    desired: DomainConfig = DESIRED,
    booted_before: bool = False,
    shutdown_elapsed: float | None = None,
    grace_seconds: int = GRACE,
    restart_requested: bool = False,
    vm_monitoring: VmMonitoring = "Disabled",
) -> VmPlan:
    return plan_vm(
        strategy,
        desired,
        observed,
        booted_before=booted_before,
        shutdown_elapsed=shutdown_elapsed,
        grace_seconds=grace_seconds,
        restart_requested=restart_requested,
        vm_monitoring=vm_monitoring,
    )


# --- the strategy x state table -------------------------------------------------------------------

# Observed states: "missing" (no domain), running, paused, shutoff with each cause, crashed.
OBSERVED: dict[str, DomainObservation | None] = {
    "missing": None,
    "running": observation("running"),
    "paused": observation("paused"),
    **{f"shutoff-{cause}": observation("shutoff", cause) for cause in CAUSES},
    "crashed": observation("crashed"),
}
SHUTOFF = [k for k in OBSERVED if k.startswith("shutoff-")]

Expected = tuple[tuple[str, ...], str, bool]
START: Expected = (("start",), "Starting", False)
CREATE: Expected = (("define", "start"), "Starting", False)
DEFINE_ONLY: Expected = (("define",), "Stopped", True)
RUNNING: Expected = ((), "Running", True)
STOPPED: Expected = ((), "Stopped", True)
RESTART_CRASHED: Expected = (("destroy", "start"), "Starting", False)


def table() -> list[tuple[RunStrategy, bool, str, Expected]]:
    """(strategy, booted_before, observed state, (actions, phase, ready)) with the domain defined as desired."""
    rows: list[tuple[RunStrategy, bool, str, Expected]] = []
    for booted in (False, True):
        expected: dict[RunStrategy, dict[str, Expected]] = {
            "Always": {
                "missing": CREATE,
                "running": RUNNING,
                "paused": RUNNING,
                **dict.fromkeys(SHUTOFF, START),
                "crashed": RESTART_CRASHED,
            },
            "RerunOnFailure": {
                "missing": CREATE,
                "running": RUNNING,
                "paused": RUNNING,
                **dict.fromkeys(SHUTOFF, START),
                "shutoff-guest": STOPPED,  # the guest shut itself down: a success, stays off
                "crashed": RESTART_CRASHED,
            },
            "Manual": {
                "missing": DEFINE_ONLY,
                "running": RUNNING,
                "paused": RUNNING,
                **dict.fromkeys(SHUTOFF, STOPPED),
                "crashed": STOPPED,  # Manual never starts or stops, not even a crashed domain
            },
            "Halted": {
                "missing": DEFINE_ONLY,
                "running": (("shutdown",), "Stopping", False),
                "paused": (("shutdown",), "Stopping", False),
                **dict.fromkeys(SHUTOFF, STOPPED),
                "crashed": (("destroy",), "Stopping", False),
            },
            "Once": (
                {
                    "missing": DEFINE_ONLY,
                    "running": RUNNING,
                    "paused": RUNNING,
                    **dict.fromkeys(SHUTOFF, STOPPED),
                    # "crashed" after it has run: see test_once_does_not_restart_a_crashed_domain_after_it_ran
                }
                if booted
                else {
                    "missing": CREATE,
                    "running": RUNNING,
                    "paused": RUNNING,
                    **dict.fromkeys(SHUTOFF, START),
                    "crashed": RESTART_CRASHED,
                }
            ),
        }
        for strategy, by_state in expected.items():
            for state, want in by_state.items():
                rows.append((strategy, booted, state, want))
    return rows


@pytest.mark.parametrize(
    ("strategy", "booted_before", "state", "expected"),
    table(),
    ids=[f"{s}-{'booted' if b else 'new'}-{st_}" for s, b, st_, _ in table()],
)
def test_strategy_and_observed_state_give_actions_phase_and_ready(
    strategy: RunStrategy, booted_before: bool, state: str, expected: Expected
) -> None:
    result = plan(strategy, OBSERVED[state], booted_before=booted_before)
    assert (result.actions, result.phase, result.ready) == expected, result
    assert result.reason
    assert result.message
    assert result.restart_required == ()


def test_table_covers_every_strategy_and_state() -> None:
    seen = {(s, b, state) for s, b, state, _ in table()}
    missing = {
        (s, b, state) for s in STRATEGIES for b in (False, True) for state in OBSERVED if (s, b, state) not in seen
    }
    # The single gap is the Once/crashed case that has its own test below.
    assert missing == {("Once", True, "crashed")}


def test_once_does_not_restart_a_crashed_domain_after_it_ran() -> None:
    result = plan("Once", observation("crashed"), booted_before=True)
    assert "start" not in result.actions


@pytest.mark.parametrize("strategy", ["Always", "RerunOnFailure", "Manual", "Halted"])
@pytest.mark.parametrize("state", list(OBSERVED))
def test_booted_before_matters_only_for_once(strategy: RunStrategy, state: str) -> None:
    assert plan(strategy, OBSERVED[state], booted_before=False) == plan(strategy, OBSERVED[state], booted_before=True)


@pytest.mark.parametrize("strategy", ["Always", "RerunOnFailure", "Manual", "Once"])
@pytest.mark.parametrize("state", list(OBSERVED))
def test_shutdown_elapsed_matters_only_for_halted(strategy: RunStrategy, state: str) -> None:
    assert plan(strategy, OBSERVED[state], shutdown_elapsed=None) == plan(
        strategy, OBSERVED[state], shutdown_elapsed=GRACE * 10
    )


# --- Halted: graceful shutdown, then destroy after the grace period --------------------------------


@pytest.mark.parametrize("state", ["running", "paused"])
def test_halted_asks_the_guest_first(state: str) -> None:
    result = plan("Halted", observation(state), shutdown_elapsed=None)
    assert result.actions == ("shutdown",)
    assert (result.phase, result.ready) == ("Stopping", False)


@pytest.mark.parametrize("elapsed", [0.0, 1.0, GRACE - 0.5])
def test_halted_waits_within_the_grace_period(elapsed: float) -> None:
    result = plan("Halted", observation("running"), shutdown_elapsed=elapsed)
    assert result.actions == ()
    assert (result.phase, result.ready) == ("Stopping", False)
    assert f"of {GRACE}s" in result.message


@pytest.mark.parametrize("elapsed", [float(GRACE), GRACE + 0.1, GRACE * 100.0])
def test_halted_destroys_after_the_grace_period(elapsed: float) -> None:
    result = plan("Halted", observation("running"), shutdown_elapsed=elapsed)
    assert result.actions == ("destroy",)
    assert (result.phase, result.ready) == ("Stopping", False)


def test_halted_with_no_grace_destroys_once_asked() -> None:
    assert plan("Halted", observation("running"), shutdown_elapsed=0.0, grace_seconds=0).actions == ("destroy",)


@pytest.mark.parametrize("cause", CAUSES)
def test_halted_and_shut_off_is_stopped_and_ready_even_while_a_shutdown_was_pending(cause: ShutoffCause) -> None:
    result = plan("Halted", observation("shutoff", cause), shutdown_elapsed=3.0)
    assert (result.actions, result.phase, result.ready) == ((), "Stopped", True)


# --- the definition: define, restart-required fields, live memory ---------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", [k for k in OBSERVED if k != "missing"])
def test_a_changed_definition_is_redefined_first(strategy: RunStrategy, state: str) -> None:
    observed = OBSERVED[state]
    assert observed is not None
    old = dataclasses.replace(RETURNED, vcpus=1)
    changed = dataclasses.replace(observed, defined=old, live=old if observed.live is not None else None)
    unchanged = plan(strategy, observed, booted_before=True)
    result = plan(strategy, changed, booted_before=True)
    assert result.actions[0] == "define"
    assert result.actions[1:] == unchanged.actions
    assert (result.phase, result.ready) == (unchanged.phase, unchanged.ready)


def test_an_unreadable_definition_is_redefined() -> None:
    result = plan("Always", DomainObservation(state="shutoff", cause="destroyed", defined=None))
    assert result.actions == ("define", "start")


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"vcpus": 4}, ("vcpus",)),
        ({"memory_kib": 8 * GIB_KIB}, ("memory_kib",)),
        ({"os": dataclasses.replace(DESIRED.os, cmdline="console=ttyS0 debug")}, ("os",)),
        ({"cpu": CpuConfig(mode="host-passthrough")}, ("cpu",)),
        ({"graphics": GraphicsConfig(type="vnc")}, ("graphics",)),
        ({"vcpus": 4, "memory_kib": 8 * GIB_KIB}, ("memory_kib", "vcpus")),
    ],
)
@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_change_to_a_running_domain_needs_a_restart(
    change: dict[str, object], fields: tuple[str, ...], state: str
) -> None:
    desired = dataclasses.replace(DESIRED, **change)  # type: ignore[arg-type]
    result = plan("Always", observation(state), desired=desired)
    assert result.actions == ("define",)
    assert (result.phase, result.ready) == ("Running", True)
    assert sorted(result.restart_required) == sorted(fields)


def test_restart_required_is_empty_once_the_running_domain_has_the_change() -> None:
    desired = dataclasses.replace(DESIRED, vcpus=4)
    result = plan("Always", observation("running", config=as_libvirt_returns_it(desired)), desired=desired)
    assert (result.actions, result.restart_required) == ((), ())


def test_manual_reports_restart_required_too() -> None:
    desired = dataclasses.replace(DESIRED, vcpus=4)
    result = plan("Manual", observation("running"), desired=desired)
    assert result.actions == ("define",)
    assert result.restart_required == ("vcpus",)


def test_a_stopped_domain_needs_no_restart_for_a_change() -> None:
    desired = dataclasses.replace(DESIRED, vcpus=4)
    result = plan("Always", observation("shutoff", "destroyed"), desired=desired)
    assert result.actions == ("define", "start")
    assert result.restart_required == ()


def test_current_memory_within_max_is_changed_live() -> None:
    desired = dataclasses.replace(DESIRED, current_memory_kib=3 * GIB_KIB)
    # Not yet redefined: define (for the next boot) and balloon the running guest.
    result = plan("Always", observation("running"), desired=desired)
    assert result.actions == ("define", "set-memory")
    assert result.restart_required == ()
    assert (result.phase, result.ready) == ("Running", True)
    # Already redefined, still running with the old balloon target: only the live change.
    redefined = dataclasses.replace(observation("running"), defined=as_libvirt_returns_it(desired))
    assert plan("Always", redefined, desired=desired).actions == ("set-memory",)


def test_shrinking_current_memory_is_live_too() -> None:
    desired = dataclasses.replace(DESIRED, current_memory_kib=GIB_KIB)
    result = plan("RerunOnFailure", observation("paused"), desired=desired)
    assert result.actions == ("define", "set-memory")
    assert result.restart_required == ()


def test_current_memory_beyond_the_running_max_needs_a_restart() -> None:
    desired = dataclasses.replace(DESIRED, memory_kib=8 * GIB_KIB, current_memory_kib=6 * GIB_KIB)
    result = plan("Always", observation("running"), desired=desired)
    assert "set-memory" not in result.actions
    assert result.actions == ("define",)
    assert set(result.restart_required) == {"memory_kib", "current_memory_kib"}


NIC = InterfaceConfig(network="vdc-lan", mac="52:54:00:aa:bb:01")
WITH_NIC = dataclasses.replace(DESIRED, interfaces=(NIC,))


def running_with(*interfaces: InterfaceConfig) -> DomainObservation:
    """Running, defined as WITH_NIC, live with these NICs (as libvirt names their host devices)."""
    live = as_libvirt_returns_it(dataclasses.replace(WITH_NIC, interfaces=interfaces))
    return dataclasses.replace(observation("running"), defined=as_libvirt_returns_it(WITH_NIC), live=live)


def test_the_host_devices_libvirt_names_are_not_differences() -> None:
    result = plan("Always", running_with(dataclasses.replace(NIC, target_dev="vnet3")), desired=WITH_NIC)
    assert (result.actions, result.restart_required) == ((), ())


def test_a_link_state_is_changed_live() -> None:
    down = dataclasses.replace(WITH_NIC, interfaces=(dataclasses.replace(NIC, link_state="down"),))
    result = plan("Always", running_with(dataclasses.replace(NIC, target_dev="vnet3")), desired=down)
    assert result.actions == ("define", "set-link-state") and result.restart_required == ()


def test_another_nic_change_with_a_link_state_needs_a_restart() -> None:
    changed = dataclasses.replace(NIC, link_state="down", model="e1000")
    result = plan("Always", running_with(NIC), desired=dataclasses.replace(WITH_NIC, interfaces=(changed,)))
    assert "set-link-state" not in result.actions and result.restart_required == ("interfaces",)
    added = dataclasses.replace(WITH_NIC, interfaces=(NIC, dataclasses.replace(NIC, mac="52:54:00:aa:bb:02")))
    result = plan("Always", running_with(NIC), desired=added)
    assert "set-link-state" not in result.actions and result.restart_required == ("interfaces",)


# --- QoS: set on the running domain, never a restart -------------------------------------------------

DISK = DiskConfig(target_dev="vda", source_file="/var/lib/vdc/pools/p/web-root.qcow2", driver_type="qcow2")
WITH_DISK = dataclasses.replace(DESIRED, disks=(DISK,))
IOPS_50 = IoTuneConfig(total_iops_sec=50)


@pytest.mark.parametrize(
    ("change", "action"),
    [
        ({"cputune": CpuTuneConfig(shares=512)}, "set-cpu-tune"),
        ({"cputune": CpuTuneConfig(global_period=100_000, global_quota=25_000)}, "set-cpu-tune"),
        ({"memtune": MemTuneConfig(soft_limit=GIB_KIB)}, "set-memory-tune"),
        ({"disks": (dataclasses.replace(DISK, iotune=IOPS_50),)}, "set-io-tune"),
        (
            {"interfaces": (dataclasses.replace(NIC, bandwidth=BandwidthConfig(BandwidthLimitConfig(1000))),)},
            "set-bandwidth",
        ),
    ],
)
@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_qos_change_is_set_on_the_running_domain(change: dict[str, object], action: str, state: str) -> None:
    base = dataclasses.replace(DESIRED, disks=(DISK,), interfaces=(NIC,))
    desired = dataclasses.replace(base, **change)  # type: ignore[arg-type]
    result = plan("Always", observation(state, config=as_libvirt_returns_it(base)), desired=desired)
    assert result.actions == ("define", action)
    assert result.restart_required == ()
    done = plan("Always", observation(state, config=as_libvirt_returns_it(desired)), desired=desired)
    assert (done.actions, done.restart_required) == ((), ())


@pytest.mark.parametrize(
    ("live", "desired"),
    [
        # A reset to the host's defaults shows as explicit default values.
        (CpuTuneConfig(shares=1024, global_period=100_000, global_quota=-1), None),
        (CpuTuneConfig(shares=1024, global_period=100_000, global_quota=-1, quota=-1), CpuTuneConfig(shares=1024)),
        # The same rate over another period enforces the same.
        (
            CpuTuneConfig(global_period=50_000, global_quota=12_500),
            CpuTuneConfig(global_period=100_000, global_quota=25_000),
        ),
    ],
)
def test_tunables_equal_in_effect_are_not_differences(live: CpuTuneConfig, desired: CpuTuneConfig | None) -> None:
    want = dataclasses.replace(DESIRED, cputune=desired)
    running = dataclasses.replace(
        observation("running"), live=as_libvirt_returns_it(dataclasses.replace(DESIRED, cputune=live))
    )
    assert differing_fields(running.live, want) == ()  # type: ignore[arg-type]


def test_memory_limits_reset_to_unlimited_are_no_memtune() -> None:
    live = dataclasses.replace(
        RETURNED, memtune=MemTuneConfig(hard_limit=MEMORY_UNLIMITED_KIB, soft_limit=MEMORY_UNLIMITED_KIB)
    )
    assert differing_fields(live, DESIRED) == ()


def test_qemus_default_burst_length_is_not_a_difference() -> None:
    burst = IoTuneConfig(total_iops_sec=50, total_iops_sec_max=200)
    live = dataclasses.replace(burst, total_iops_sec_max_length=1)
    have = as_libvirt_returns_it(dataclasses.replace(WITH_DISK, disks=(dataclasses.replace(DISK, iotune=live),)))
    assert (
        differing_fields(have, dataclasses.replace(WITH_DISK, disks=(dataclasses.replace(DISK, iotune=burst),))) == ()
    )


def test_another_disk_change_with_its_limits_needs_a_restart() -> None:
    changed = dataclasses.replace(DISK, iotune=IOPS_50, cache="none")
    result = plan("Always", observation("running", config=as_libvirt_returns_it(WITH_DISK)),
                  desired=dataclasses.replace(WITH_DISK, disks=(changed,)))  # fmt: skip
    assert "set-io-tune" not in result.actions and result.restart_required == ("disks",)


def test_link_state_and_bandwidth_are_set_together() -> None:
    both = dataclasses.replace(NIC, link_state="down", bandwidth=BandwidthConfig(outbound=BandwidthLimitConfig(500)))
    result = plan("Always", running_with(NIC), desired=dataclasses.replace(WITH_NIC, interfaces=(both,)))
    assert result.actions == ("define", "set-link-state", "set-bandwidth") and result.restart_required == ()


def test_new_host_file_directories_are_redefined_quietly_never_a_restart() -> None:
    """The Host's allowed directories live in the owner metadata, read by the host's qemu hook at the next
    start: a running domain is redefined, not reported RestartRequired, and once redefined nothing is left
    to do although the live definition keeps the old ones."""
    desired = dataclasses.replace(
        DESIRED, owner=dataclasses.replace(DESIRED.owner, host_file_dirs=("/var/lib/libvirt/boot/vdc-tiny",))
    )
    for state in ("running", "paused"):
        result = plan("Always", observation(state), desired=desired)
        assert (result.actions, result.restart_required) == (("define",), ())
        assert (result.phase, result.ready) == ("Running", True)
    redefined = dataclasses.replace(observation("running"), defined=as_libvirt_returns_it(desired))
    assert plan("Always", redefined, desired=desired).actions == ()
    assert differing_fields(RETURNED, desired) == ("owner",)
    # Together with a real change, only the real change needs the restart.
    both = dataclasses.replace(desired, vcpus=4)
    assert plan("Always", observation("running"), desired=both).restart_required == ("vcpus",)


def test_live_fields_are_only_current_memory() -> None:
    assert {"current_memory_kib"} == LIVE_FIELDS


def test_halted_running_domain_with_a_memory_change_balloons_and_shuts_down() -> None:
    desired = dataclasses.replace(DESIRED, current_memory_kib=GIB_KIB)
    assert plan("Halted", observation("running"), desired=desired).actions == ("define", "set-memory", "shutdown")


# --- comparable / differing_fields -----------------------------------------------------------------


def test_libvirts_expansions_are_not_differences() -> None:
    assert RETURNED != DESIRED
    assert differing_fields(RETURNED, DESIRED) == ()
    assert comparable(RETURNED, DESIRED) == DESIRED


@pytest.mark.parametrize(
    ("field", "returned"),
    [
        ("machine", dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, machine="pc-q35-7.2"))),
        ("machine-pc", None),
        ("cpu", dataclasses.replace(DESIRED, cpu=CpuConfig(mode="custom", model="qemu64"))),
        ("boot", dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, boot_devices=("hd",)))),
        ("emulator", dataclasses.replace(DESIRED, emulator="/usr/bin/qemu-system-x86_64")),
        ("generation", dataclasses.replace(DESIRED, owner=dataclasses.replace(DESIRED.owner, generation=None))),
        ("generation-newer", dataclasses.replace(DESIRED, owner=dataclasses.replace(DESIRED.owner, generation=9))),
    ],
)
def test_each_libvirt_expansion_alone_is_ignored(field: str, returned: DomainConfig | None) -> None:
    desired = DESIRED
    if returned is None:  # i440fx: "pc" -> "pc-i440fx-7.2"
        desired = dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, machine="pc"))
        returned = dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, machine="pc-i440fx-7.2"))
    assert differing_fields(returned, desired) == (), field


@pytest.mark.parametrize("mode", ["default", "host-model"])
def test_the_cpu_libvirt_picked_keeps_our_topology_in_the_comparison(mode: CpuMode) -> None:
    desired = dataclasses.replace(DESIRED, vcpus=4, cpu=CpuConfig(mode=mode, sockets=2, cores=2, threads=1))
    same = dataclasses.replace(desired, cpu=CpuConfig(mode="custom", model="qemu64", sockets=2, cores=2, threads=1))
    other = dataclasses.replace(desired, cpu=CpuConfig(mode="custom", model="qemu64", sockets=1, cores=4, threads=1))
    no_topology = dataclasses.replace(desired, cpu=CpuConfig(mode="custom", model="qemu64"))
    assert differing_fields(same, desired) == ()
    assert differing_fields(other, desired) == ("cpu",)
    assert differing_fields(no_topology, desired) == ("cpu",)


@pytest.mark.parametrize(
    ("desired_cpu", "returned_cpu"),
    [
        (CpuConfig(mode="custom", model="Haswell-noTSX"), CpuConfig(mode="custom", model="Skylake-Server")),
        (CpuConfig(mode="host-passthrough"), CpuConfig(mode="custom", model="qemu64")),
        (CpuConfig(mode="custom", model="Haswell-noTSX"), CpuConfig()),
    ],
)
def test_a_named_or_passthrough_cpu_is_compared_exactly(desired_cpu: CpuConfig, returned_cpu: CpuConfig) -> None:
    desired = dataclasses.replace(DESIRED, cpu=desired_cpu)
    assert differing_fields(dataclasses.replace(DESIRED, cpu=returned_cpu), desired) == ("cpu",)


def test_an_emulator_we_ask_for_is_compared() -> None:
    desired = dataclasses.replace(DESIRED, emulator="/opt/qemu/bin/qemu-system-x86_64")
    returned = dataclasses.replace(DESIRED, emulator="/usr/bin/qemu-system-x86_64")
    assert differing_fields(returned, desired) == ("emulator",)
    assert differing_fields(desired, desired) == ()


def test_boot_devices_we_ask_for_are_compared() -> None:
    desired = dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, boot_devices=("cdrom", "hd")))
    returned = dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, boot_devices=("hd",)))
    assert differing_fields(returned, desired) == ("os",)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vcpus": 3}, "vcpus"),
        ({"memory_kib": 3 * GIB_KIB}, "memory_kib"),
        ({"current_memory_kib": GIB_KIB}, "current_memory_kib"),
        ({"os": dataclasses.replace(RETURNED.os, cmdline="console=ttyS0 quiet")}, "os"),
        ({"os": dataclasses.replace(RETURNED.os, kernel="/other/vmlinuz")}, "os"),
        ({"os": dataclasses.replace(RETURNED.os, firmware="efi")}, "os"),
        ({"serial": None}, "serial"),
        ({"graphics": GraphicsConfig(type="vnc", listen="0.0.0.0")}, "graphics"),
        ({"domain_type": "kvm"}, "domain_type"),
        ({"name": "team-a_other"}, "name"),
        ({"on_crash": "restart"}, "on_crash"),
        ({"memballoon": False}, "memballoon"),
    ],
)
def test_a_real_change_is_a_difference_despite_the_expansions(change: dict[str, object], field: str) -> None:
    returned = dataclasses.replace(RETURNED, **change)  # type: ignore[arg-type]
    assert differing_fields(returned, DESIRED) == (field,)


def test_a_different_machine_family_is_a_difference() -> None:
    assert differing_fields(
        dataclasses.replace(RETURNED, os=dataclasses.replace(RETURNED.os, machine="pc-i440fx-7.2")), DESIRED
    ) == ("os",)


def test_q35_is_not_the_expansion_of_pc() -> None:
    desired = dataclasses.replace(DESIRED, os=dataclasses.replace(DESIRED.os, machine="pc"))
    assert differing_fields(RETURNED, desired) == ("os",)


def test_differing_fields_are_in_declaration_order() -> None:
    returned = dataclasses.replace(RETURNED, vcpus=1, memory_kib=8 * GIB_KIB, serial=None)
    assert differing_fields(returned, DESIRED) == ("memory_kib", "vcpus", "serial")


# --- properties ----------------------------------------------------------------------------------

cpu_modes: st.SearchStrategy[CpuMode] = st.sampled_from(["default", "host-model", "host-passthrough", "custom"])


@st.composite
def desired_configs(draw: st.DrawFn) -> DomainConfig:
    vcpus = draw(st.integers(1, 16))
    mode = draw(cpu_modes)
    topology = draw(st.sampled_from([None, (vcpus, 1, 1), (1, vcpus, 1)]))
    cpu = CpuConfig(
        mode=mode,
        model=draw(st.sampled_from(["Haswell-noTSX", "Skylake-Server", "EPYC"])) if mode == "custom" else None,
        sockets=topology[0] if topology else None,
        cores=topology[1] if topology else None,
        threads=topology[2] if topology else None,
    )
    current = draw(st.integers(1024, 64 * GIB_KIB))
    kernel = draw(st.none() | st.just("/var/lib/vdc/boot/vmlinuz"))
    os = OsConfig(
        machine=draw(st.sampled_from(["q35", "pc"])),
        firmware=draw(st.sampled_from(["bios", "efi"])),
        kernel=kernel,
        initrd=draw(st.none() | st.just("/var/lib/vdc/boot/initrd.img")) if kernel else None,
        cmdline=draw(st.none() | st.text(min_size=1, max_size=30)) if kernel else None,
        boot_devices=() if kernel else draw(st.sampled_from([(), ("hd",), ("cdrom", "hd")])),
    )
    return DomainConfig(
        name=f"ns_{draw(st.from_regex(r'[a-z][a-z0-9-]{0,20}', fullmatch=True))}",
        uuid=UID,
        owner=OwnerMetadata("ns", "vm", UID, generation=draw(st.none() | st.integers(1, 1000))),
        memory_kib=current + draw(st.integers(0, 8 * GIB_KIB)),
        current_memory_kib=current,
        vcpus=vcpus,
        domain_type=draw(st.sampled_from(["qemu", "kvm"])),
        cpu=cpu,
        os=os,
        serial=draw(st.none() | st.builds(SerialConsoleConfig, log_file=st.none() | st.just("/var/log/x.log"))),
        graphics=draw(st.none() | st.just(GraphicsConfig(type="vnc"))),
        cputune=draw(st.none() | st.just(CpuTuneConfig(shares=512, period=100000, quota=50000))),
        emulator=draw(st.none() | st.just("/usr/bin/qemu-system-x86_64")),
    )


@settings(max_examples=200, deadline=None)
@given(desired=desired_configs(), generation=st.none() | st.integers(1, 1000))
def test_running_domain_defined_as_desired_needs_nothing_under_always(
    desired: DomainConfig, generation: int | None
) -> None:
    returned = as_libvirt_returns_it(desired, generation=generation)
    assert differing_fields(returned, desired) == ()
    for state in ("running", "paused"):
        result = plan("Always", observation(state, config=returned), desired=desired)
        assert result == VmPlan((), "Running", True, "Running", result.message, ())


@settings(max_examples=100, deadline=None)
@given(
    desired=desired_configs(),
    cause=st.sampled_from(CAUSES),
    booted_before=st.booleans(),
    elapsed=st.none() | st.floats(0, 10_000),
)
def test_halted_vm_that_is_shut_off_needs_nothing_and_is_ready(
    desired: DomainConfig, cause: ShutoffCause, booted_before: bool, elapsed: float | None
) -> None:
    returned = as_libvirt_returns_it(desired)
    result = plan(
        "Halted",
        observation("shutoff", cause, config=returned),
        desired=desired,
        booted_before=booted_before,
        shutdown_elapsed=elapsed,
    )
    assert (result.actions, result.phase, result.ready) == ((), "Stopped", True)


@settings(max_examples=200, deadline=None)
@given(
    strategy=st.sampled_from(STRATEGIES),
    state=st.sampled_from(list(OBSERVED)),
    booted_before=st.booleans(),
    elapsed=st.none() | st.floats(0, 10_000),
)
def test_plan_invariants(strategy: RunStrategy, state: str, booted_before: bool, elapsed: float | None) -> None:
    result = plan(strategy, OBSERVED[state], booted_before=booted_before, shutdown_elapsed=elapsed)
    # No action twice; define, when there, comes first; start comes last; shutdown and start exclude each other.
    assert len(set(result.actions)) == len(result.actions)
    if "define" in result.actions:
        assert result.actions[0] == "define"
    if "start" in result.actions:
        assert result.actions[-1] == "start"
        assert "shutdown" not in result.actions
    # Ready exactly when nothing is under way: a settled phase.
    assert result.ready == (result.phase in ("Running", "Stopped"))
    if result.ready:
        assert not {"start", "shutdown", "destroy"} & set(result.actions)
    # Manual never starts or stops; Halted never starts.
    if strategy == "Manual":
        assert not {"start", "shutdown", "destroy"} & set(result.actions)
    if strategy == "Halted":
        assert "start" not in result.actions


# --- restart requests (vdc.dev/restart-requested-at) ---------------------------------------------


@pytest.mark.parametrize(
    ("requested", "boot_time", "pending"),
    [
        ("2025-03-01T10:00:05Z", "2025-03-01T10:00:00Z", True),
        ("2025-03-01T10:00:00.250Z", "2025-03-01T10:00:00Z", True),  # sub-second requests count
        ("2025-03-01T10:00:00Z", "2025-03-01T10:00:00Z", False),  # booted at the request: done
        ("2025-03-01T09:59:59Z", "2025-03-01T10:00:00Z", False),  # booted since the request
        ("2025-03-01T12:00:05+02:00", "2025-03-01T10:00:00Z", True),  # 10:00:05 UTC
        ("2025-03-01T12:00:05+02:00", "2025-03-01T10:00:06Z", False),
        ("2025-03-01T10:00:05Z", None, False),  # never booted: nothing to restart
        (None, "2025-03-01T10:00:00Z", False),
        ("", "2025-03-01T10:00:00Z", False),
        ("yesterday", "2025-03-01T10:00:00Z", False),  # not a time: ignored
        ("2025-03-01T10:00:05", "2025-03-01T10:00:00Z", False),  # no zone: ambiguous, ignored
    ],
)
def test_restart_is_pending_only_for_a_request_newer_than_the_last_boot(
    requested: str | None, boot_time: str | None, pending: bool
) -> None:
    assert restart_pending(requested, boot_time) is pending


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "Halted"])
def test_restart_of_a_running_vm_asks_the_guest_to_shut_down_first(strategy: RunStrategy) -> None:
    result = plan(strategy, observation("running"), booted_before=True, restart_requested=True)
    assert (result.actions, result.phase, result.ready, result.reason) == (
        ("shutdown",),
        "Stopping",
        False,
        "Restarting",
    )


def test_restart_waits_for_the_guest_during_the_grace_period() -> None:
    result = plan("Always", observation("running"), booted_before=True, restart_requested=True, shutdown_elapsed=10)
    assert (result.actions, result.phase, result.ready) == ((), "Stopping", False)
    assert "10s of 60s" in result.message


@pytest.mark.parametrize("elapsed", [GRACE, GRACE + 30.5])
def test_restart_forces_the_domain_off_after_the_grace_period_and_starts_it(elapsed: float) -> None:
    result = plan(
        "Always", observation("running"), booted_before=True, restart_requested=True, shutdown_elapsed=elapsed
    )
    assert (result.actions, result.phase, result.ready, result.reason) == (
        ("destroy", "start"),
        "Starting",
        False,
        "Restarting",
    )


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "Halted"])
@pytest.mark.parametrize("cause", CAUSES)
def test_restart_starts_a_guest_that_has_shut_down_whatever_the_strategy_but_halted(
    strategy: RunStrategy, cause: ShutoffCause
) -> None:
    # RerunOnFailure and Once would keep a guest-stopped domain off: a restart must bring it back.
    result = plan(strategy, observation("shutoff", cause), booted_before=True, restart_requested=True)
    assert (result.actions, result.phase, result.reason) == (("start",), "Starting", "Restarting")


def test_restart_of_a_crashed_domain_destroys_then_starts() -> None:
    result = plan("Manual", observation("crashed"), booted_before=True, restart_requested=True)
    assert result.actions == ("destroy", "start")


@pytest.mark.parametrize("state", ["running", "shutoff-guest", "crashed"])
def test_a_halted_vm_ignores_restart_requests(state: str) -> None:
    assert plan("Halted", OBSERVED[state], booted_before=True, restart_requested=True) == plan(
        "Halted", OBSERVED[state], booted_before=True
    )


def test_restart_redefines_first_so_pending_changes_apply_at_the_new_boot() -> None:
    bigger = dataclasses.replace(DESIRED, vcpus=4)
    result = plan(
        "Always",
        observation("running"),
        desired=bigger,
        booted_before=True,
        restart_requested=True,
        shutdown_elapsed=GRACE,
    )
    assert result.actions == ("define", "destroy", "start")


def test_without_a_request_a_running_vm_is_left_alone() -> None:
    assert plan("Always", observation("running"), booted_before=True, restart_requested=False).actions == ()


def test_a_restart_annotation_alone_makes_the_vm_event_count() -> None:
    # Metadata changes keep the generation, so the event handler must notice a pending request itself.
    from vdc.handlers import _restart_requested

    body = {"metadata": {"annotations": {"vdc.dev/restart-requested-at": "2025-03-01T10:00:05.000Z"}},
            "status": {"bootTime": "2025-03-01T10:00:00Z"}}  # fmt: skip
    assert _restart_requested(body)
    body["status"]["bootTime"] = "2025-03-01T10:00:09Z"
    assert not _restart_requested(body)
    assert not _restart_requested({"metadata": {}, "status": {"bootTime": "2025-03-01T10:00:00Z"}})


# --- VM monitoring (spec.availability.vmMonitoring) ----------------------------------------------

STUCK_REASONS: tuple[PausedReason, ...] = ("ioerror", "watchdog", "crashed")


def stuck(reason: PausedReason) -> DomainObservation:
    return dataclasses.replace(observation("paused"), paused_reason=reason)


@pytest.mark.parametrize("strategy", ["Always", "RerunOnFailure"])
@pytest.mark.parametrize(
    ("reason", "words"),
    [("ioerror", "paused on a disk I/O error"), ("watchdog", "its watchdog fired"), ("crashed", "guest panic")],
)
def test_vm_monitoring_resets_a_guest_that_stopped_making_progress(
    strategy: RunStrategy, reason: PausedReason, words: str
) -> None:
    result = plan(strategy, stuck(reason), booted_before=True, vm_monitoring="Reset")
    assert (result.actions, result.phase, result.ready, result.failed) == (
        ("destroy", "start"),
        "Starting",
        False,
        False,
    )
    assert result.reason == GUEST_RESET
    assert words in result.message and "reset by VM monitoring" in result.message


@pytest.mark.parametrize("strategy", ["Always", "RerunOnFailure"])
@pytest.mark.parametrize("reason", STUCK_REASONS)
def test_without_vm_monitoring_a_stuck_guest_is_left_alone_and_reported_as_a_failure(
    strategy: RunStrategy, reason: PausedReason
) -> None:
    result = plan(strategy, stuck(reason), booted_before=True)
    assert (result.actions, result.phase, result.ready, result.failed) == ((), "Failed", False, True)
    assert result.reason == GUEST_STUCK
    assert STUCK[reason] in result.message
    assert "spec.availability.vmMonitoring: Reset" in result.message


@pytest.mark.parametrize("monitoring", ["Disabled", "Reset"])
def test_once_never_resets_a_stuck_guest_and_says_so(monitoring: VmMonitoring) -> None:
    result = plan("Once", stuck("watchdog"), booted_before=True, vm_monitoring=monitoring)
    assert (result.actions, result.reason, result.failed) == ((), GUEST_STUCK, True)
    assert "runStrategy Once does not reset it" in result.message


@pytest.mark.parametrize("monitoring", ["Disabled", "Reset"])
def test_manual_and_halted_are_not_changed_by_vm_monitoring(monitoring: VmMonitoring) -> None:
    assert plan("Manual", stuck("ioerror"), vm_monitoring=monitoring) == plan("Manual", observation("paused"))
    assert plan("Halted", stuck("ioerror"), vm_monitoring=monitoring) == plan("Halted", observation("paused"))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_guest_paused_for_another_reason_is_running_whatever_the_policy(strategy: RunStrategy) -> None:
    other = dataclasses.replace(observation("paused"), paused_reason="other")
    assert plan(strategy, other, vm_monitoring="Reset") == plan(strategy, observation("paused"))


def test_a_crashed_domain_is_restarted_either_way_and_vm_monitoring_names_it() -> None:
    plain = plan("Always", observation("crashed"))
    monitored = plan("Always", observation("crashed"), vm_monitoring="Reset")
    assert plain.actions == monitored.actions == ("destroy", "start")
    assert plain.reason == "Starting"
    assert monitored.reason == GUEST_RESET and "crashed" in monitored.message


def test_a_restart_request_goes_before_vm_monitoring() -> None:
    result = plan("Always", stuck("watchdog"), restart_requested=True, vm_monitoring="Reset")
    assert result.reason == "Restarting"


def test_a_stuck_guest_with_a_changed_definition_is_redefined_before_the_reset() -> None:
    changed = dataclasses.replace(DESIRED, vcpus=4)
    result = plan("Always", stuck("watchdog"), desired=changed, vm_monitoring="Reset")
    assert result.actions == ("define", "destroy", "start")
