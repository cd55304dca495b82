"""Which operation owns a VM. Pure.

A VM's ``status.operation`` points at the operation that owns it. While it is set, the VM controller
reports the VM but does not converge it against a host (an operation may be moving it away), and no
other operation may claim it. The claim is written with the VM's resourceVersion (the caller patches
conditionally), so two operations racing for one VM cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vdc.api.operation import OperationRef


class OwnedByAnother(Exception):
    """The VM is already owned by another operation (named in the message)."""

    def __init__(self, owner: OperationRef) -> None:
        super().__init__(f"owned by {owner.kind} {owner.name}")
        self.owner = owner


def owner(vm: Mapping[str, Any]) -> OperationRef | None:
    """The operation that owns the VM body, if any."""
    ref = (vm.get("status") or {}).get("operation")
    return OperationRef.model_validate(ref) if ref else None


def claim(vm: Mapping[str, Any], ref: OperationRef) -> dict[str, Any] | None:
    """The status patch that makes ``ref`` the VM's owner (None: it already is). Write it only if the
    VM is still at the body's resourceVersion."""
    current = owner(vm)
    if current is None:
        return {"operation": ref.to_wire()}
    if current.uid == ref.uid:
        return None
    raise OwnedByAnother(current)


def release(vm: Mapping[str, Any], ref: OperationRef) -> dict[str, Any] | None:
    """The status patch that ends ``ref``'s ownership (None: it does not own the VM)."""
    current = owner(vm)
    if current is None or current.uid != ref.uid:
        return None
    return {"operation": None}


def converge_hold(vm: Mapping[str, Any]) -> str | None:
    """Why the VM controller must not converge this VM now (None: it may)."""
    current = owner(vm)
    return None if current is None else f"{current.kind} {current.name} owns it"
