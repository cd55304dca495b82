"""The Condition type shared by every kind and pure helpers to update a list of them (kstatus rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import StringConstraints

from vdc.api.common import field, list_map
from vdc.api.meta import ApiModel

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One observation of an aspect of the object (metav1.Condition)."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316)] = field(
        "The aspect: Ready, Reconciling, Stalled or a kind-specific one such as Scheduled."
    )
    status: ConditionStatus = field("True, False or Unknown.")
    reason: Annotated[str, StringConstraints(max_length=1024)] = field(
        "A CamelCase machine-readable reason.", default=""
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = field(
        "A human-readable explanation: what happened and, when stuck, what to fix.", default=""
    )
    last_transition_time: str | None = field("When the status last changed (RFC 3339).", default=None)
    observed_generation: int | None = field("The generation this condition was computed from.", default=None, ge=0)


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str = "",
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """A new list with ``type_`` set; lastTransitionTime moves only when the status changes."""
    result: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            result.append(cond)
            continue
        found = True
        transition = cond.last_transition_time if cond.status == status else (now or now_rfc3339())
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=transition,
                observed_generation=observed_generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now or now_rfc3339(),
                observed_generation=observed_generation,
            )
        )
    return result


KstatusState = Literal["Current", "InProgress", "Failed", "NotReady"]
"""What kstatus (and Argo CD / Flux health) will call the object; ``NotReady`` is settled but not Ready."""


def set_kstatus(
    conditions: list[Condition],
    state: KstatusState,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    ready_reason: str | None = None,
    ready_message: str | None = None,
    now: str | None = None,
) -> list[Condition]:
    """Ready, Reconciling and Stalled set together, so that no combination kstatus misreads is written:

    * ``Current``: Ready=True, Reconciling=False, Stalled=False;
    * ``InProgress``: Ready=False, Reconciling=True (``reason``/``message`` say what it waits for), Stalled=False;
    * ``Failed``: Ready=False, Reconciling=False, Stalled=True (``message`` says what to fix);
    * ``NotReady``: Ready=False, Reconciling=False, Stalled=False: observed, nothing under way and nothing to
      fix in the spec (an unreachable host, no host matching the selector). kstatus calls it Current, Argo CD
      Progressing with Ready's message.

    ``ready_reason``/``ready_message`` give Ready its own reason and message where they differ.
    """
    Triplet = tuple[ConditionStatus, str, str]
    ready: Triplet = ("True" if state == "Current" else "False", ready_reason or reason, ready_message or message)
    reconciling: Triplet = ("True", reason, message) if state == "InProgress" else ("False", reason, "")
    stalled: Triplet = ("True", reason, message) if state == "Failed" else ("False", reason, "")
    result = conditions
    for type_, (status, why, text) in ((READY, ready), (RECONCILING, reconciling), (STALLED, stalled)):
        result = set_condition(result, type_, status, why, text, observed_generation=observed_generation, now=now)
    return result


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def conditions_field() -> object:
    """The ``conditions`` field of every status: a list-map keyed by type."""
    return field(
        "Current conditions: Ready, Reconciling, Stalled and kind-specific ones.",
        default_factory=list,
        max_length=32,
        extra=list_map("type"),
    )
