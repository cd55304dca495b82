"""HA's judgement of a Host at each reconcile (the I/O around vdc.controllers.host_health's pure rules): its
datastore heartbeat read through the other hosts, the state and its Events, and the removal of the stale
domains a host that comes back holds of VMs restarted elsewhere."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import libvirt

from vdc.api.conditions import now_rfc3339
from vdc.api.host import HEARTBEAT_FILE_PREFIX, ORPHANS_LISTED, Host, HostHealth, HostPower
from vdc.controllers.host_health import FAILURE_TIMEOUT_SECONDS, HealthSignals, Heartbeat, Judgement, judge
from vdc.controllers.orphans import POOL_PREFIX
from vdc.controllers.vm_vapp import parse_time
from vdc.kube.cache import ObjectCache
from vdc.kube.client import KubeWriter
from vdc.libvirt import domains as libvirt_domains
from vdc.libvirt import inventory, storage
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.errors import LibvirtFailure

log = logging.getLogger(__name__)

HEARTBEAT_STALE_SECONDS = 12.0
"""A datastore heartbeat file unchanged this long (the host rewrites it every 2 s) has stopped."""


class HostHa:
    """HA's view of each Host, kept by the Host controller."""

    def __init__(
        self,
        vms: ObjectCache,
        pools: Iterable[dict[str, Any]],
        connections: ConnectionManager,
        writer: KubeWriter,
        on_change: Callable[[str, str], None],
    ) -> None:
        """``on_change(host, state)``: HA's judgement of a host changed (its VMs look again)."""
        self.vms = vms
        self.pools = pools
        self.connections = connections
        self.writer = writer
        self.on_change = on_change
        self.failure_timeout = FAILURE_TIMEOUT_SECONDS
        self._beats: dict[str, tuple[str, float]] = {}
        """host -> (its heartbeat file's mtime, when the operator saw it change), while it is unreachable."""

    async def heartbeat(self, name: str) -> Heartbeat | None:
        """The host's datastore heartbeat, read through another host's libvirt: alive (its file changed
        since the last look), stale (unchanged for HEARTBEAT_STALE_SECONDS), or None (cannot tell yet)."""
        shared = sorted(str(b["metadata"]["name"]) for b in self.pools if (b.get("spec") or {}).get("shared"))
        file = HEARTBEAT_FILE_PREFIX + name
        for pool in shared:
            for peer in sorted(self.connections.names()):
                peer_conn = self.connections.get(peer)
                if peer == name or peer_conn is None or not peer_conn.connected:
                    continue
                try:
                    mtime = await peer_conn.call(functools.partial(_file_mtime, pool=POOL_PREFIX + pool, name=file))
                except LibvirtFailure:
                    continue
                if mtime is None:
                    continue
                now = time.monotonic()
                seen = self._beats.get(name)
                if seen is None or seen[0] != mtime:
                    self._beats[name] = (mtime, now)
                    return "alive" if seen is not None else None
                return "stale" if now - seen[1] >= HEARTBEAT_STALE_SECONDS else None
        return None

    async def judge(
        self, name: str, host: Host, conn: HostConnection, power: HostPower | None, connected: bool
    ) -> tuple[HostHealth, bool]:
        """HA's judgement of the host now, and whether to fence it."""
        old = host.status.ha if host.status else None
        now = time.time()
        if not connected and conn.last_error is None and old is not None:
            return old, False  # still connecting (an operator restart): nothing new to judge yet
        if connected:
            self._beats.pop(name, None)
        elif previous_state(old) in ("Fenced", "Failed") and power is not None and power.state == "On":
            conn.retry_now()  # powered on again: its libvirtd is looked for now, not after the backoff
        heartbeat = None if connected else await self.heartbeat(name)
        if heartbeat == "alive" and previous_state(old) in ("Fenced", "Failed"):
            conn.retry_now()  # it lives again: its libvirtd is looked for now
        previous = old.state if old else None
        since = _since(old)
        suspect_for = now - since if previous == "Suspect" and since is not None else 0.0
        judged: Judgement = judge(HealthSignals(
            connected=connected, power_managed=host.spec.power_management is not None,
            power=power.state if power else None, power_error=power.error if power else None,
            previous=previous, suspect_for=suspect_for, heartbeat=heartbeat,
            failure_timeout=self.failure_timeout))  # fmt: skip
        removed: list[str] = list(old.stale_domains_removed) if old and judged.state == previous else []
        if judged.state == "Recovering":
            try:
                removed = await self._remove_stale(name, conn)
                judged = Judgement("Healthy", f"back after a failure; {len(removed)} stale domain(s) of VMs that "
                                   "run elsewhere now removed")  # fmt: skip
            except LibvirtFailure as exc:
                judged = Judgement("Recovering", f"removing the stale domains of VMs that run elsewhere now: {exc}")
        when = old.since if old is not None and judged.state == previous else now_rfc3339()
        health = HostHealth(state=judged.state, since=when, message=judged.message,
                            stale_domains_removed=removed[:ORPHANS_LISTED])  # fmt: skip
        return health, judged.fence and host.spec.power_management is not None

    async def _remove_stale(self, name: str, conn: HostConnection) -> list[str]:
        """Destroy and undefine this host's domains of VMs placed on another host now (HA restarted them
        there while this host was down). A VM an operation holds (a migration) is left alone."""
        elsewhere = {
            str(body["metadata"].get("uid")): f"{body['metadata'].get('namespace')}/{body['metadata'].get('name')}"
            for body in self.vms
            if (st := body.get("status") or {}).get("host") not in (None, name) and not st.get("operation")
        }

        def remove(c: libvirt.virConnect) -> list[str]:
            gone = []
            for domain in inventory.list_domains(c, known=set(elsewhere)):
                if domain.uuid in elsewhere and libvirt_domains.remove(c, domain.uuid):
                    gone.append(f"{domain.name} ({elsewhere[domain.uuid]})")
            return gone

        removed = await conn.call(remove)
        if removed:
            log.warning("host %s: stale domains removed: %s", name, ", ".join(removed))
        return removed

    async def report_change(self, body: dict[str, Any], name: str, old: HostHealth | None, new: HostHealth) -> None:
        previous = old.state if old else None
        if previous == new.state:
            return
        if new.state in ("Suspect", "Failed", "Fenced"):
            await self.writer.event(Host.KIND, body, f"Host{new.state}", new.message, warning=True)
        elif new.state == "Healthy" and previous in ("Failed", "Fenced", "Recovering"):
            await self.writer.event(Host.KIND, body, "HostRecovered", new.message)
        self.on_change(name, new.state)


def _since(old: HostHealth | None) -> float | None:
    try:
        return parse_time(old.since) if old is not None and old.since else None
    except ValueError:
        return None


def previous_state(old: HostHealth | None) -> str | None:
    return old.state if old is not None else None


def _file_mtime(conn: libvirt.virConnect, pool: str, name: str) -> str | None:
    return storage.file_mtime(conn, pool, name)
