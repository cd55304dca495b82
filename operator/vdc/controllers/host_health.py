"""HA's judgement of a host: pure functions of what the operator observes (no I/O here).

Losing the libvirt connection makes a host *suspect* at once. It is *failed* only when a second signal
agrees, so that a partition between the operator and a healthy host (or a stuck libvirtd, whose QEMUs go on
running) never has its VMs started a second time. The signals:

- its **datastore heartbeat**: a file the host itself rewrites every few seconds on each shared pool, read
  through the other hosts' libvirtds. Still changing: the host lives (Suspect, whatever else is said).
  Stopped changing: it is dead or hung;
- its **Redfish power state**. Off: the host is down and cannot come back on its own, which is also the
  fence: *Fenced*, its VMs may restart elsewhere. On, with a heartbeat that stopped: the host is hung;
  it is *Failed* and HA powers it off (ForceOff) to fence it. On, with no heartbeat to read: it may live
  (isolation response: its VMs are left running where they are, the host stays Suspect);
- a **timeout**, when nothing else can be asked: *Failed* after ``failure_timeout``, not fenced.

A Failed host is never a reason to restart anything: only Fenced is. A Failed or Fenced host that answers
again is *Recovering* until its stale domains are removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HealthState = Literal["Healthy", "Suspect", "Failed", "Fenced", "Recovering", "Standby"]
Heartbeat = Literal["alive", "stale"]

FAILURE_TIMEOUT_SECONDS = 60.0
"""How long a host with nothing else to ask stays Suspect before it is Failed (not fenced)."""


@dataclass(frozen=True)
class HealthSignals:
    connected: bool
    power_managed: bool
    """The Host has spec.powerManagement."""
    power: str | None
    """The Redfish power state read just now (On, Off, PoweringOn, PoweringOff, Unknown); None when it
    could not be read (see power_error) or there is no power management."""
    power_error: str | None
    previous: HealthState | None
    """The state in status (None: never judged)."""
    suspect_for: float
    """Seconds since the host became Suspect (0 when it is not)."""
    heartbeat: Heartbeat | None = None
    """Its datastore heartbeat: still changing, stopped, or None (no shared pool, no file, nobody to read it,
    or not watched long enough to tell)."""
    failure_timeout: float = FAILURE_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Judgement:
    state: HealthState
    message: str
    fence: bool = False
    """Power the host off now (Redfish ForceOff): it is Failed, power-managed and not Off."""


def judge(s: HealthSignals) -> Judgement:
    """The host's health from its signals (see the module docstring)."""
    if s.connected:
        if s.previous in ("Failed", "Fenced", "Recovering"):
            return Judgement("Recovering", "libvirt answers again: removing the domains of VMs that run elsewhere now")
        return Judgement("Healthy", "libvirt answers")
    if s.previous is None:
        return Judgement("Healthy", "never connected: no VM runs here yet")
    if s.power == "Off":
        return Judgement("Fenced", "libvirt does not answer and the Redfish service reports the host Off: its VMs "
                         "restart on other hosts")  # fmt: skip
    if s.previous == "Fenced":  # powered on again but libvirt not back yet: fenced it stays (nothing can run)
        return Judgement("Fenced", f"powering on (Redfish: {s.power or s.power_error}); libvirt does not answer yet")
    if s.previous == "Failed":  # its VMs may run elsewhere now: Failed it stays until it answers (Recovering)
        # Fenced only while it is still hung: a host whose heartbeat goes on again is coming back, not killed.
        fence = s.power_managed and s.power in ("On", "PoweringOn", "PoweringOff") and s.heartbeat == "stale"
        return Judgement("Failed", "libvirt still does not answer; the host stays Failed until it answers and its "
                         f"stale domains are removed{'; powering it off to fence it' if fence else ''}",
                         fence=fence)  # fmt: skip
    if s.heartbeat == "alive":
        return Judgement("Suspect", "libvirt does not answer but the host's datastore heartbeat goes on: a "
                         "partition or a stuck libvirtd; its VMs are left where they are")  # fmt: skip
    if s.heartbeat == "stale":
        if s.power in ("On", "PoweringOn", "PoweringOff"):
            return Judgement("Failed", f"libvirt does not answer and the datastore heartbeat stopped, but the "
                             f"Redfish service reports the host {s.power}: hung; powering it off to fence it",
                             fence=True)  # fmt: skip
        missing = (f"the Redfish service cannot confirm it is off ({s.power_error or s.power})" if s.power_managed
                   else "no spec.powerManagement to fence it with")  # fmt: skip
        return Judgement("Failed", f"libvirt does not answer and the datastore heartbeat stopped; not fenced: "
                         f"{missing}, so its VMs are not restarted elsewhere (they stay Unknown)")  # fmt: skip
    if s.power in ("On", "PoweringOn", "PoweringOff"):
        return Judgement("Suspect", f"libvirt does not answer but the Redfish service reports the host {s.power}: "
                         "a partition or a stuck libvirtd; its VMs are left where they are")  # fmt: skip
    if s.suspect_for < s.failure_timeout:
        why = (f"its Redfish service cannot tell ({s.power_error or s.power})" if s.power_managed
               else "no spec.powerManagement to ask")  # fmt: skip
        return Judgement("Suspect", f"libvirt does not answer; {why}; Failed {s.failure_timeout:.0f}s after this began")
    missing = (f"the Redfish service cannot confirm it is off ({s.power_error or s.power})" if s.power_managed
               else "no spec.powerManagement to fence it with")  # fmt: skip
    silent = f"libvirt has not answered for over {s.failure_timeout:.0f}s"
    return Judgement("Failed", f"{silent}; not fenced: {missing}, so its VMs are not restarted elsewhere (they stay "
                     "Unknown)")  # fmt: skip


PRIORITY_RANK = {"Disabled": 0, "Low": 1, "Medium": 2, "High": 3, "Highest": 4}


@dataclass(frozen=True)
class RestartCandidate:
    """A VM placed on a fenced host, as HA sees it."""

    namespace: str
    name: str
    priority: str
    wants_running: bool
    pinned: bool
    local_pools: tuple[str, ...]
    """Pools of its disks that are not shared (their data stays on the dead host)."""
    restart_after: tuple[str, ...] = ()


def refusal(vm: RestartCandidate, host: str) -> str | None:
    """Why ``vm`` cannot be restarted elsewhere after ``host`` was fenced, or None."""
    if vm.priority == "Disabled":
        return f"host {host} failed and is fenced; spec.availability.restartPriority is Disabled: not restarted"
    if vm.pinned:
        return f"host {host} failed and is fenced; the VM is pinned to it (spec.host): not restarted elsewhere"
    if vm.local_pools:
        return (f"host {host} failed and is fenced; the VM's disks are on pool(s) {', '.join(vm.local_pools)} that "
                "only that host holds: it cannot restart elsewhere until the host is back")  # fmt: skip
    return None


def waiting_for(vm: RestartCandidate, others: list[RestartCandidate], running: set[tuple[str, str]]) -> str | None:
    """What ``vm``'s restart waits for: a VM of a higher priority from the same failed host still to restart,
    or a VM of its restart order not Running yet. ``others``: the restartable VMs still on the fenced host;
    ``running``: (namespace, name) of the VMs Running now."""
    rank = PRIORITY_RANK[vm.priority]
    ahead = sorted(f"{o.namespace}/{o.name}" for o in others if PRIORITY_RANK[o.priority] > rank)
    if ahead:
        return f"VMs of a higher restart priority first: {', '.join(ahead[:5])}"
    after = [n for n in vm.restart_after if (vm.namespace, n) not in running]
    if after:
        return f"restart order: waiting for {', '.join(after)} to be Running"
    return None
