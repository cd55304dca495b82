"""A host's power through its BMC's DMTF Redfish service, by the ``sushy`` client library.

Blocking calls (run them in a thread). Every failure becomes :class:`PowerFailure` with a message that
names the endpoint and what went wrong; no sushy type leaves this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import sushy
from sushy import exceptions as sushy_errors

# sushy warns on every connection to a service without a SessionService (it falls back to basic auth, which
# is what we ask for): once per power read, every few seconds per host, it would drown the operator's log.
logging.getLogger("sushy.main").setLevel(logging.ERROR)

PowerState = Literal["On", "Off", "PoweringOn", "PoweringOff", "Unknown"]
ResetAction = Literal["On", "ForceOff", "ForceRestart", "GracefulShutdown"]

RESET_ACTIONS: tuple[ResetAction, ...] = ("On", "ForceOff", "ForceRestart", "GracefulShutdown")

_STATES: dict[object, PowerState] = {
    sushy.POWER_STATE_ON: "On",
    sushy.POWER_STATE_OFF: "Off",
    sushy.POWER_STATE_POWERING_ON: "PoweringOn",
    sushy.POWER_STATE_POWERING_OFF: "PoweringOff",
}
_RESETS: dict[ResetAction, object] = {
    "On": sushy.RESET_ON,
    "ForceOff": sushy.RESET_FORCE_OFF,
    "ForceRestart": sushy.RESET_FORCE_RESTART,
    "GracefulShutdown": sushy.RESET_GRACEFUL_SHUTDOWN,
}


class PowerFailure(Exception):
    """The Redfish service could not be reached, refused the credentials, or refused the call."""


@dataclass(frozen=True)
class RedfishTarget:
    """One ComputerSystem of one Redfish service."""

    endpoint: str
    """Base URL of the service, e.g. ``https://bmc1.example.com`` (``/redfish/v1`` is added)."""
    system_id: str | None = None
    """The ComputerSystem's Id; None: the service's only system."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify: bool | str = True
    """Verify the service's TLS certificate (True), against a CA bundle file (a path), or not (False)."""


def _system(target: RedfishTarget) -> sushy.resources.system.system.System:
    root = sushy.Sushy(
        target.endpoint.rstrip("/") + "/redfish/v1/",
        username=target.username,
        password=target.password,
        verify=target.verify,
    )
    if target.system_id is not None:
        return root.get_system(f"/redfish/v1/Systems/{target.system_id}")
    members = sorted(root.get_system_collection().members_identities)
    if len(members) != 1:
        ids = ", ".join(m.rsplit("/", 1)[-1] for m in members)
        raise PowerFailure(f"{target.endpoint} has {len(members)} ComputerSystems ({ids}): name one in systemId")
    return root.get_system(members[0])


def _failure(target: RedfishTarget, what: str, exc: Exception) -> PowerFailure:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, sushy_errors.AccessError):
        detail = f"credentials refused ({detail})"
    return PowerFailure(f"redfish {target.endpoint}: {what}: {detail}")


def power_state(target: RedfishTarget) -> PowerState:
    """The system's power state as the service reports it now."""
    try:
        return _STATES.get(_system(target).power_state, "Unknown")
    except PowerFailure:
        raise
    except Exception as exc:  # sushy's errors, requests' connection errors, a bad URL …
        raise _failure(target, "reading the power state", exc) from exc


def reset(target: RedfishTarget, action: ResetAction) -> None:
    """ComputerSystem.Reset with ``action``; returns when the service accepted it (not when it is done)."""
    try:
        _system(target).reset_system(_RESETS[action])
    except PowerFailure:
        raise
    except Exception as exc:
        raise _failure(target, f"{action}", exc) from exc
