"""Durable operations: one step per reconcile, recorded before the next; a crash anywhere resumes at the
recorded step; a failure or a cancellation undoes the completed steps newest first; a VM has one owner."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from vdc.api.conditions import get_condition
from vdc.api.operation import OperationRef, OperationStatus
from vdc.operations.ownership import OwnedByAnother, claim, converge_hold, owner, release
from vdc.operations.plan import Plan, Step, StepFailed, StepResult, advance
from vdc.operations.runner import reconcile_operation


@dataclass
class World:
    """What the steps change: a target volume, a domain, a switch port; and how often each ran."""

    made: set[str] = field(default_factory=set)
    runs: dict[str, int] = field(default_factory=dict)
    undos: list[str] = field(default_factory=list)
    fail_in: str | None = None
    wait_in: dict[str, int] = field(default_factory=dict)


def _step(name: str) -> Step[World]:
    async def run(world: World) -> StepResult:
        world.runs[name] = world.runs.get(name, 0) + 1
        if world.fail_in == name:
            world.made.add(f"{name}-partial")
            raise StepFailed(f"{name} cannot be done")
        if world.wait_in.get(name, 0) > 0:
            world.wait_in[name] -= 1
            return StepResult.waiting(f"{name} not ready yet", retry_after=2.0)
        world.made.add(name)  # idempotent: a set
        return StepResult(message=f"{name} made")

    async def undo(world: World) -> StepResult:
        world.undos.append(name)
        world.made.discard(name)
        world.made.discard(f"{name}-partial")
        return StepResult()

    return Step(name, run, undo)


PLAN: Plan[World] = Plan((_step("Scheduling"), _step("PreparingTarget"), _step("Migrating")))


class Store:
    """The API server as far as an operation sees it: its status, kept only when written."""

    def __init__(self, crash_on_write: int | None = None) -> None:
        self.body: dict[str, Any] = {"metadata": {"name": "op", "generation": 1}, "status": {}}
        self.history: list[str | None] = []
        self.events: list[tuple[str, bool]] = []
        self.writes = 0
        self.crash_on_write = crash_on_write

    async def write_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        self.writes += 1
        if self.writes == self.crash_on_write:
            raise ConnectionError("the operator died before the status was written")
        self.body["status"] = copy.deepcopy(status)
        self.history.append(status.get("phase"))

    async def event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None:
        self.events.append((reason, warning))

    @property
    def status(self) -> OperationStatus:
        return OperationStatus.model_validate(self.body["status"])


async def run_to_end(store: Store, world: World, cancel_after: int | None = None, limit: int = 50) -> None:
    """Reconcile as a work queue would, surviving 'crashes' (a failed write) by reconciling again."""
    for calls in range(limit):
        cancel = "the user deleted it" if cancel_after is not None and calls >= cancel_after else None
        try:
            again = await reconcile_operation(PLAN, store.body, world, store, cancel=cancel, now="2026-12-03T00:00:00Z")
        except ConnectionError:
            continue  # a restart: the next reconcile starts from what was written
        if again is None:
            return
    raise AssertionError("the operation never ended")


async def test_each_step_runs_once_and_is_recorded_before_the_next() -> None:
    store, world = Store(), World()
    await run_to_end(store, world)
    assert store.history == ["PreparingTarget", "Migrating", "Succeeded"]
    assert world.runs == {"Scheduling": 1, "PreparingTarget": 1, "Migrating": 1}
    assert world.made == {"Scheduling", "PreparingTarget", "Migrating"}
    ready = get_condition(store.status.conditions, "Ready")
    assert ready is not None and ready.status == "True" and store.status.completion_time is not None


async def test_one_call_does_at_most_one_step() -> None:
    store, world = Store(), World()
    assert await reconcile_operation(PLAN, store.body, world, store, now="t") == 0
    assert world.runs == {"Scheduling": 1} and store.status.phase == "PreparingTarget"
    reconciling = get_condition(store.status.conditions, "Reconciling")
    assert reconciling is not None and reconciling.status == "True"


@pytest.mark.parametrize("crash_on_write", [1, 2, 3])
async def test_a_crash_before_the_record_resumes_at_the_recorded_step(crash_on_write: int) -> None:
    store, world = Store(crash_on_write=crash_on_write), World()
    await run_to_end(store, world)
    assert store.status.phase == "Succeeded"
    assert world.made == {"Scheduling", "PreparingTarget", "Migrating"}  # nothing doubled, nothing lost
    ran_twice = [name for name, n in world.runs.items() if n == 2]
    assert ran_twice == [PLAN.steps[crash_on_write - 1].phase]  # only the unrecorded step ran again


async def test_a_waiting_step_keeps_its_phase_and_asks_to_be_called_later() -> None:
    store, world = Store(), World(wait_in={"PreparingTarget": 2})
    await reconcile_operation(PLAN, store.body, world, store, now="t")
    assert await reconcile_operation(PLAN, store.body, world, store, now="t") == 2.0
    assert store.status.phase == "PreparingTarget" and store.status.message == "PreparingTarget not ready yet"
    await run_to_end(store, world)
    assert store.status.phase == "Succeeded" and world.runs["PreparingTarget"] == 3


async def test_a_failed_step_undoes_what_was_done_newest_first_and_ends_failed() -> None:
    store, world = Store(), World(fail_in="Migrating")
    await run_to_end(store, world)
    status = store.status
    assert status.phase == "Failed" and "Migrating cannot be done" in (status.message or "")
    assert world.undos == ["Migrating", "PreparingTarget", "Scheduling"] and world.made == set()
    stalled = get_condition(status.conditions, "Stalled")
    assert stalled is not None and stalled.status == "True"
    assert ("StepFailed", True) in store.events and store.events[-1] == ("Failed", True)


@pytest.mark.parametrize("crash_on_write", [3, 4, 5, 6])
async def test_a_crash_during_the_rollback_resumes_it_without_skipping_an_undo(crash_on_write: int) -> None:
    store, world = Store(crash_on_write=crash_on_write), World(fail_in="Migrating")
    await run_to_end(store, world)
    assert store.status.phase == "Failed" and world.made == set()
    assert [u for u in dict.fromkeys(world.undos)] == ["Migrating", "PreparingTarget", "Scheduling"]


async def test_cancelling_undoes_the_completed_steps_and_the_current_one() -> None:
    store, world = Store(), World(wait_in={"Migrating": 100})
    await run_to_end(store, world, cancel_after=4)
    assert store.status.phase == "Cancelled" and store.status.message == "the user deleted it"
    assert world.undos == ["Migrating", "PreparingTarget", "Scheduling"] and world.made == set()
    ready = get_condition(store.status.conditions, "Ready")
    assert ready is not None and ready.status == "True"  # it ended as asked


async def test_a_phase_the_plan_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="'Teleporting' is not a step of this plan"):
        await advance(PLAN, OperationStatus(phase="Teleporting"), World(), now="t")


def test_a_plan_needs_distinct_non_terminal_phases() -> None:
    with pytest.raises(ValueError, match="distinct, non-terminal"):
        Plan((_step("A"), _step("A")))
    with pytest.raises(ValueError, match="distinct, non-terminal"):
        Plan((_step("Succeeded"),))


MIGRATION = OperationRef(kind="VirtualMachineMigration", name="move-web", uid="u1")
OTHER = OperationRef(kind="VirtualMachineMigration", name="move-web-again", uid="u2")


def test_a_vm_has_at_most_one_owning_operation() -> None:
    vm: dict[str, Any] = {"status": {"phase": "Running"}}
    assert owner(vm) is None and converge_hold(vm) is None
    patch = claim(vm, MIGRATION)
    assert patch == {"operation": {"kind": "VirtualMachineMigration", "name": "move-web", "uid": "u1"}}
    vm["status"].update(patch)
    assert claim(vm, MIGRATION) is None  # claiming again is a no-op
    with pytest.raises(OwnedByAnother, match="owned by VirtualMachineMigration move-web"):
        claim(vm, OTHER)
    assert converge_hold(vm) == "VirtualMachineMigration move-web owns it"
    assert release(vm, OTHER) is None  # only the owner releases
    assert release(vm, MIGRATION) == {"operation": None}
