"""Host: keep one connection per Host and report what the host is and holds.

``host_status`` is the pure part: (spec, observation) -> status. ``HostController`` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import kubernetes

from vdc.api.conditions import READY, RECONCILING, STALLED, Condition, set_condition
from vdc.api.host import Host, HostDomainCounts, HostResources, HostSpec, HostStatus
from vdc.api.quantity import format_bytes_mi, to_bytes
from vdc.kube.cache import Key, ObjectCache
from vdc.kube.client import KubeWriter
from vdc.libvirt.connection import ConnectionManager
from vdc.libvirt.credentials import CredentialsError, effective_uri
from vdc.libvirt.errors import LibvirtFailure
from vdc.libvirt.host_facts import HostFacts, read_host_facts

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0


@dataclass(frozen=True)
class HostObservation:
    connected: bool
    error: str | None = None
    facts: HostFacts | None = None
    domains_total: int = 0
    domains_managed: int = 0
    domains_running: int = 0
    allocated_cpus: int = 0
    allocated_memory: int = 0
    last_seen: datetime | None = None


def _rfc3339(when: datetime | None) -> str | None:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z") if when else None


def allocatable(spec: HostSpec, facts: HostFacts) -> tuple[int, int]:
    """(vCPUs, memory bytes) offered to VMs: capacity less reservations, times overcommit."""
    # Decimal of the written ratio: 100 CPUs x 1.15 is 115, not float's 114.99999.
    cpus = int(max(0, facts.cpus - spec.reserved.cpus) * Decimal(str(spec.cpu_overcommit)))
    memory = int(max(0, facts.memory_bytes - to_bytes(spec.reserved.memory)) * Decimal(str(spec.memory_overcommit)))
    return cpus, memory


def host_status(
    spec: HostSpec, generation: int | None, observed: HostObservation, old: HostStatus | None
) -> HostStatus:
    conditions: list[Condition] = list(old.conditions) if old else []
    status = HostStatus(observed_generation=generation, conditions=conditions)
    if old is not None:
        # What the host was stays known while it is unreachable; only Ready says it is gone.
        status = old.model_copy(update={"observed_generation": generation})
    if observed.connected and observed.facts is not None:
        facts = observed.facts
        cpus, memory = allocatable(spec, facts)
        status = status.model_copy(
            update={
                "hostname": facts.hostname,
                "host_uuid": facts.host_uuid,
                "libvirt_version": facts.libvirt_version,
                "hypervisor": facts.hypervisor,
                "hypervisor_version": facts.hypervisor_version,
                "capacity": HostResources(cpus=facts.cpus, memory=format_bytes_mi(facts.memory_bytes)),
                "allocatable": HostResources(cpus=cpus, memory=format_bytes_mi(memory)),
                "allocated": HostResources(
                    cpus=observed.allocated_cpus, memory=format_bytes_mi(observed.allocated_memory)
                ),
                "domains": HostDomainCounts(
                    total=observed.domains_total, managed=observed.domains_managed, running=observed.domains_running
                ),
                "phase": "Maintenance" if spec.maintenance else "Ready",
            }
        )
        conditions = set_condition(
            status.conditions,
            READY,
            "True",
            "Connected",
            f"libvirt {facts.libvirt_version} on {facts.hostname} answers",
            observed_generation=generation,
        )
        conditions = set_condition(conditions, STALLED, "False", "Connected", observed_generation=generation)
    else:
        reason = "Connecting" if old is None or old.phase in (None, "Connecting") else "Disconnected"
        status = status.model_copy(update={"phase": "Connecting" if reason == "Connecting" else "NotReady"})
        message = f"cannot reach libvirt: {observed.error}" if observed.error else "connecting to libvirt"
        conditions = set_condition(status.conditions, READY, "False", reason, message, observed_generation=generation)
        conditions = set_condition(conditions, STALLED, "False", reason, observed_generation=generation)
    conditions = set_condition(conditions, RECONCILING, "False", "Observed", observed_generation=generation)
    status = status.model_copy(update={"conditions": conditions})
    if observed.last_seen is not None:
        status = status.model_copy(update={"last_seen": _rfc3339(observed.last_seen)})
    return status


def host_is_schedulable(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == READY), None)
    return bool(ready and ready.get("status") == "True")


class HostController:
    """Reconciles Host objects: connection, facts, counts, status."""

    def __init__(
        self,
        hosts: ObjectCache,
        vms: ObjectCache,
        connections: ConnectionManager,
        writer: KubeWriter,
    ) -> None:
        self.hosts = hosts
        self.vms = vms
        self.connections = connections
        self.writer = writer
        self._facts: dict[str, HostFacts] = {}

    async def _effective_uri(self, name: str, host: Host) -> str:
        """The URI with credential files from the Secret written out (none needed for unix sockets)."""
        ref = host.spec.credentials_secret_ref
        if ref is None:
            return host.spec.uri
        data = await self.writer.secret_data(ref.namespace, ref.name)
        return await asyncio.to_thread(effective_uri, name, host.spec.uri, data)

    def facts(self, host: str) -> HostFacts | None:
        return self._facts.get(host)

    def allocated_on(self, host: str) -> tuple[int, int]:
        cpus = memory = 0
        for vm in self.vms:
            if (vm.get("status") or {}).get("host") == host:
                spec = vm.get("spec", {})
                cpus += int(spec.get("cpu", {}).get("count", 1))
                memory += to_bytes(spec.get("memory", {}).get("size", "0"))
        return cpus, memory

    async def reconcile(self, key: Key) -> float | None:
        body = self.hosts.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            await self.connections.remove(key[1])
            self._facts.pop(key[1], None)
            return None
        host = Host.model_validate(body)
        name = key[1]
        try:
            uri = await self._effective_uri(name, host)
        except (CredentialsError, kubernetes.client.ApiException) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            message = f"host credentials: {reason}; fix spec.credentialsSecretRef or the Secret"
            status = host_status(host.spec, body["metadata"].get("generation"),
                                 HostObservation(connected=False, error=message), host.status)  # fmt: skip
            conds = set_condition(status.conditions, STALLED, "True", "CredentialsInvalid", message)
            wire = status.model_copy(update={"conditions": conds}).to_wire()
            if _worth_writing(body.get("status") or {}, wire) and (
                sent := await self.writer.patch_status(Host.KIND, body, wire)
            ):
                self.hosts.note_status(key, sent)
                await self.writer.event(Host.KIND, body, "CredentialsInvalid", message, warning=True)
            return RESYNC_SECONDS
        conn = await self.connections.ensure(name, uri)
        observation = HostObservation(connected=False, error=conn.last_error)
        if conn.connected:
            try:
                facts = self._facts.get(name)
                if facts is None:
                    facts = self._facts[name] = await conn.call(read_host_facts)
                known = {vm["metadata"]["uid"] for vm in self.vms}
                total, managed, running = await conn.call(lambda c: _count_domains(c, known))
                cpus, memory = self.allocated_on(name)
                observation = HostObservation(
                    connected=True,
                    facts=facts,
                    domains_total=total,
                    domains_managed=managed,
                    domains_running=running,
                    allocated_cpus=cpus,
                    allocated_memory=memory,
                    last_seen=conn.last_seen,
                )
            except LibvirtFailure as exc:
                self._facts.pop(name, None)
                observation = HostObservation(connected=False, error=str(exc))
        else:
            self._facts.pop(name, None)
        status = host_status(host.spec, body["metadata"].get("generation"), observation, host.status)
        wire = status.to_wire()
        old_wire = body.get("status") or {}
        if _worth_writing(old_wire, wire) and (sent := await self.writer.patch_status(Host.KIND, body, wire)):
            self.hosts.note_status(key, sent)
            if old_wire.get("phase") != wire.get("phase"):
                ready = next(c for c in wire["conditions"] if c["type"] == READY)
                await self.writer.event(
                    Host.KIND,
                    body,
                    f"Host{wire.get('phase')}",
                    ready["message"],
                    warning=wire.get("phase") == "NotReady",
                )
        return RESYNC_SECONDS


def _worth_writing(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """lastSeen alone moving (it does on every resync) is not worth an API write."""
    return {k: v for k, v in new.items() if k != "lastSeen"} != {k: v for k, v in old.items() if k != "lastSeen"}


def _count_domains(conn: Any, known_uids: set[str]) -> tuple[int, int, int]:

    domains = conn.listAllDomains(0)
    managed = [d for d in domains if d.UUIDString() in known_uids]
    running = sum(1 for d in managed if d.isActive())
    return len(domains), len(managed), running
