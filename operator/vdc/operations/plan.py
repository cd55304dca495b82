"""Durable multi-step operations: a plan of idempotent steps, advanced one step per reconcile.

An operation (a live migration, an HA restart, an evacuation …) is a custom resource. Its status
records how far it got (:class:`vdc.api.operation.OperationStatus`): ``phase`` names the step being
worked on, and it is written *after* the previous step completed and *before* the next one starts.
After a crash or an operator restart the operation resumes at that step; a step that had done part
of its work before the crash runs again, so every step must be idempotent (look first, then act).

A step that fails for good raises :class:`StepFailed`; a cancellation (the operation deleted or its
spec says so) is the same path with another ending. Both first record a :class:`Rollback` in status,
then undo the completed steps — the failed one included, since it may have done part of its work —
newest first, one per reconcile, each recorded before the next, and end in ``Failed`` or
``Cancelled``. Nothing here does I/O: the caller reads the status, calls :func:`advance` and writes
the :class:`Advance` it returns (see :mod:`vdc.operations.runner`).

Models: KubeVirt's migration controller (phases kept in status) and Nova's conductor tasks (each
task records its progress in a migration record and rolls back what it did on failure).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from vdc.api.operation import OperationStatus, Rollback

Context = TypeVar("Context")

SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


class StepFailed(Exception):
    """The step cannot succeed (the message says why): the operation is rolled back and Failed."""


@dataclass(frozen=True)
class StepResult:
    """``done``: the step completed, the next may start. Otherwise it waits (``retry_after`` seconds)."""

    done: bool = True
    retry_after: float = 5.0
    message: str = ""

    @classmethod
    def waiting(cls, message: str, retry_after: float = 5.0) -> StepResult:
        return cls(done=False, retry_after=retry_after, message=message)


StepAction = Callable[[Context], Awaitable[StepResult]]


@dataclass(frozen=True)
class Step(Generic[Context]):
    """One step: ``phase`` is shown while it runs; ``undo`` (idempotent too) reverses it on rollback."""

    phase: str
    run: StepAction[Context]
    undo: StepAction[Context] | None = None


@dataclass(frozen=True)
class Plan(Generic[Context]):
    """The ordered steps of an operation kind."""

    steps: tuple[Step[Context], ...]

    def __post_init__(self) -> None:
        phases = [s.phase for s in self.steps]
        if not phases or len(set(phases)) != len(phases) or set(phases) & set(TERMINAL):
            raise ValueError(f"a plan needs distinct, non-terminal step phases: {phases}")

    def index(self, phase: str | None) -> int:
        """The step of ``phase`` (None: the first). A phase the plan does not know is a bug or an old
        operator's record: it raises rather than guess."""
        if phase is None:
            return 0
        for i, step in enumerate(self.steps):
            if step.phase == phase:
                return i
        raise ValueError(f"phase {phase!r} is not a step of this plan ({', '.join(s.phase for s in self.steps)})")


Kind = Literal["ran", "waiting", "rollback", "terminal"]


@dataclass(frozen=True)
class Advance:
    """What one call of :func:`advance` did, and the status to write before anything else happens.

    ``requeue_after``: when to call again (0: at once, for the next step; None: never, terminal)."""

    kind: Kind
    """ran: a step completed; waiting: the step is not done yet; rollback: a failure or cancellation was
    recorded, or one step was undone; terminal: Succeeded, Failed or Cancelled."""
    status: OperationStatus
    requeue_after: float | None
    event: tuple[str, str] | None = None
    """(reason, message) worth an Event: a step completed, a failure, the end."""


def _with(status: OperationStatus, **changes: object) -> OperationStatus:
    return status.model_copy(update=changes)


async def advance(
    plan: Plan[Context],
    status: OperationStatus,
    context: Context,
    *,
    cancel: str | None = None,
    now: str,
) -> Advance:
    """Perform at most one step (or one undo) of the operation whose durable progress is ``status``.

    ``cancel``: why the operation is being cancelled (None: it is not). ``now``: RFC 3339, for times.
    Exceptions other than :class:`StepFailed` propagate (a transient error: the caller retries the
    same step later; nothing was recorded).
    """
    if status.phase in TERMINAL:
        return Advance("terminal", status, None)
    if status.rollback is None and cancel is not None:
        # Steps before the recorded phase completed; the recorded one may have begun.
        rollback = Rollback(reason=CANCELLED, message=cancel, next_undo=plan.index(status.phase))
        cancelling = _with(status, rollback=rollback, message=f"cancelling: {cancel}")
        return Advance("rollback", cancelling, 0, ("Cancelling", cancel))
    if status.rollback is not None:
        return await _undo_one(plan, status, status.rollback, context, now)

    index = plan.index(status.phase)
    step = plan.steps[index]
    started = status.start_time or now
    try:
        result = await step.run(context)
    except StepFailed as exc:
        rollback = Rollback(reason=FAILED, failed_phase=step.phase, message=str(exc), next_undo=index)
        failed = _with(status, phase=step.phase, start_time=started, rollback=rollback, message=f"failed: {exc}")
        return Advance("rollback", failed, 0, ("StepFailed", f"{step.phase}: {exc}"))
    if not result.done:
        waiting = _with(status, phase=step.phase, start_time=started, message=result.message or None)
        return Advance("waiting", waiting, result.retry_after)
    if index + 1 == len(plan.steps):
        done = _with(status, phase=SUCCEEDED, start_time=started, completion_time=now, message=result.message or None)
        return Advance("terminal", done, None, (SUCCEEDED, result.message or f"{step.phase} completed"))
    following = plan.steps[index + 1].phase
    moved = _with(status, phase=following, start_time=started, message=result.message or None)
    return Advance("ran", moved, 0, (step.phase, result.message or f"{step.phase} completed"))


async def _undo_one(
    plan: Plan[Context], status: OperationStatus, rollback: Rollback, context: Context, now: str
) -> Advance:
    """Undo the step ``rollback.next_undo`` (newest first); at -1, the terminal phase."""
    ending = FAILED if rollback.reason == FAILED else CANCELLED
    if rollback.next_undo < 0:
        final = _with(status, phase=ending, completion_time=now, message=rollback.message or None)
        return Advance("terminal", final, None, (ending, rollback.message))
    step = plan.steps[rollback.next_undo]
    if step.undo is not None:
        result = await step.undo(context)  # StepFailed here propagates: an undo must not give up
        if not result.done:
            undoing = _with(status, message=f"undoing {step.phase}: {result.message}")
            return Advance("waiting", undoing, result.retry_after)
    following = rollback.model_copy(update={"next_undo": rollback.next_undo - 1})
    return Advance("rollback", _with(status, rollback=following, message=f"undid {step.phase}"), 0)
