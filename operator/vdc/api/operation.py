"""The parts every operation kind shares: its durable progress in status, and the pointer a VM
carries to the operation that owns it (see :mod:`vdc.operations`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from vdc.api.common import ShortText, field
from vdc.api.conditions import Condition, conditions_field
from vdc.api.meta import ApiModel

Text = Annotated[str, StringConstraints(max_length=4096)]


class OperationRef(ApiModel):
    """The operation that owns a VM: while it is set, the VM controller does not converge the VM."""

    kind: ShortText = field("The operation's kind (e.g. VirtualMachineMigration).")
    name: ShortText = field("The operation's name, in the VM's namespace.")
    uid: ShortText = field("The operation's uid (a re-created one of the same name is another).")


class Rollback(ApiModel):
    """Undoing the steps of an operation that failed or was cancelled, one step per reconcile."""

    reason: ShortText = field("Failed (a step failed) or Cancelled (the operation was deleted or cancelled).")
    failed_phase: ShortText | None = field("The phase whose step failed.", default=None)
    message: Text = field("What went wrong, or why it was cancelled.", default="")
    next_undo: int = field(
        "Index of the next step to undo, counting down; -1 when every step has been undone.", default=-1, ge=-1
    )


class OperationStatus(ApiModel):
    """Durable progress: ``phase`` is the step being worked on — every step before it has completed and
    was recorded before the next began — or a terminal phase."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    conditions: list[Condition] = conditions_field()  # type: ignore[assignment]
    phase: ShortText | None = field("The step being worked on, or Succeeded, Failed or Cancelled.", default=None)
    message: Text | None = field("What the current step is doing or waiting for.", default=None)
    start_time: ShortText | None = field("When the first step began (RFC 3339).", default=None)
    completion_time: ShortText | None = field("When it reached a terminal phase (RFC 3339).", default=None)
    rollback: Rollback | None = field("Set while the completed steps are being undone.", default=None)
